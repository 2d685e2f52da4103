"""A script whose first Prefect import is ``syllabus_flows`` (as the CLI's is), with no
``PREFECT_LOGGING_EXTRA_LOGGERS``, still gets its library log lines into the run's logs.

``import prefect`` configures nothing in Prefect 3.8 (the package imports lazily), so the API
handler that ``syllabus_flows`` copies onto the library loggers did not exist yet at that import:
the lines were dropped, in a script, and in every test after the CLI test had imported
``syllabus_flows`` that way (tests/flows/test_failure_reading.py after test_credential_leak.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from uuid import UUID

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow

SCRIPT = """
import sys

import syllabus_flows  # the first import of anything of Prefect in this process
from syllabus_flows.stages import ingest

state = ingest([sys.argv[1]], sys.argv[2], 3, return_state=True)
assert state.is_completed(), state
print("FLOW_RUN", state.state_details.flow_run_id)
"""


def test_library_lines_reach_the_run_when_syllabus_flows_is_imported_first(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    pool = write_pool(tmp_path / "pool.jsonl", 6)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_EXTRA_LOGGERS"}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # the test harness's server
    done = subprocess.run([sys.executable, "-c", SCRIPT, pool, str(tmp_path / "store")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = UUID(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("FLOW_RUN")))

    deadline = time.time() + 30
    with get_client(sync_client=True) as client:
        while True:  # the process sent its queued lines on exit; the server may still be writing them
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any(e.name == "syllabus.pool.ingest" for e in logs) or time.time() > deadline:
                break
            time.sleep(1)
    assert any(e.name == "syllabus.pool.ingest" and "ingested 6 records: 6 ok" in e.message for e in logs), \
        [(e.name, e.message) for e in logs]
