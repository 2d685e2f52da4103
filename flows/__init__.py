"""Prefect flows composing the tasks; the entrypoints named in deployments/prefect.yaml."""

import prefect  # noqa: F401  (lazy: send_library_logs_to_prefect configures its logging before reusing its handlers)

from syllabus_flows.logs import send_library_logs_to_prefect

send_library_logs_to_prefect()
