"""Pipeline stages and parameters (Prefect-free; flows/ and tasks/ wrap them)."""
