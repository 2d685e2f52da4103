"""Prefect flows composing the tasks; the entrypoints named in deployments/prefect.yaml."""

import prefect  # noqa: F401  (configures Prefect's logging, whose handlers are reused below)

from syllabus_flows.logs import send_library_logs_to_prefect

send_library_logs_to_prefect()
