"""Prefect flows composing the tasks; the entrypoints named in deployments/prefect.yaml."""
