"""Scheduled runs fire on a real Prefect server (issue 30): a deployment with a short interval
schedule gets a run that the server's own scheduler created, and a process worker completes it.

With SQLAlchemy 2.1 (which `make install` resolved before constraints.txt pinned 2.0), Prefect
3.8.8's scheduler logs `InvalidRequestError: Can't evaluate bulk DML statement` on every loop and
inserts no run, so nothing scheduled ever ran; every other deployment feature still worked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flow_helpers import free_port, serve

pytestmark = pytest.mark.flow
BIN = Path(sys.executable).parent
WAIT_S = 90  # from the deployment's creation to a completed scheduled run
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}

TICK = '''from prefect import flow


@flow(log_prints=True)
def tick() -> str:
    print("tick")
    return "tick"
'''

PREFECT_YAML = """name: tick
prefect-version: 3.8.8
build: null
push: null
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: {project}
deployments:
  - name: every-5s
    entrypoint: tick.py:tick
    work_pool:
      name: tick-pool
    schedules:
      - interval: 5
"""


def _server_errors(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [ln for ln in lines if "Error" in ln or "Traceback" in ln]
    return "\n".join(errors[-8:]) or "\n".join(lines[-8:])


def _runs(api_url: str, deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def main():
        async with get_client() as client:
            return await client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return asyncio.run(main())


def _wait_for_pool(api_url: str, pool: str, timeout: float = 120) -> None:
    """The worker creates its pool on its first loop, which can come after its health check answers."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def main():
        deadline = time.time() + timeout
        async with get_client() as client:
            while True:
                try:
                    return await client.read_work_pool(pool)
                except ObjectNotFound:
                    if time.time() > deadline:
                        raise AssertionError(f"the worker did not create work pool {pool!r} within {timeout:.0f} s")
                    await asyncio.sleep(1)

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        asyncio.run(main())


def test_a_deployment_with_an_interval_schedule_gets_runs_scheduled_and_completed(tmp_path):
    port, health_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SYLLABUS_", "MLFLOW_"))}
    server_env = dict(base, PREFECT_HOME=str(tmp_path / "server-home"), PREFECT_API_URL=api_url,
                      PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      # the defaults, stated: a deployment created within the last 5 s is scheduled
                      # on the next 5 s tick, every deployment once a minute
                      PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
                      PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="5",
                      PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="60")
    project = tmp_path / "project"
    project.mkdir()
    (project / "tick.py").write_text(TICK)
    (project / "prefect.yaml").write_text(PREFECT_YAML.format(project=project))
    worker_env = dict(base, PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path / "worker-home"),
                      PREFECT_WORKER_WEBSERVER_PORT=str(health_port), PREFECT_WORKER_QUERY_SECONDS="2")
    # one run at a time: the schedule fires every 5 s and each run is a Python process
    worker = [str(BIN / "prefect"), "worker", "start", "--pool", "tick-pool", "--type", "process", "--limit", "1",
              "--with-healthcheck"]
    server_log = tmp_path / "server.log"
    started = time.time()

    with serve([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
               f"{api_url}/health", server_env, timeout=300, log=server_log), \
            serve(worker, f"http://127.0.0.1:{health_port}/health", worker_env, timeout=300, cwd=tmp_path,
                  log=tmp_path / "worker.log"):
        _wait_for_pool(api_url, "tick-pool")
        out = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml"],
                             env=dict(base, PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path / "deployer-home")),
                             cwd=project, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        created = time.time()
        print(f"server, worker and deployment ready in {created - started:.0f} s")

        runs, done = [], None
        while done is None and time.time() - created < WAIT_S:
            time.sleep(2)
            runs = _runs(api_url, "every-5s")
            done = next((r for r in runs if r.state and r.state.type.value == "COMPLETED"), None)
        states = sorted(f"{r.name}: {r.state.type.value if r.state else None}" for r in runs)
        assert runs, (f"the scheduler created no run for a deployment scheduled every 5 s within {WAIT_S} s; "
                      f"server errors:\n{_server_errors(server_log)}")
        assert done is not None, (f"no scheduled run completed within {WAIT_S} s; runs: {states}; "
                                  f"server errors:\n{_server_errors(server_log)}")
        print(f"first scheduled run completed {time.time() - created:.0f} s after the deployment was created")

    # the test started no run itself: every run is the scheduler's, and the worker finished one
    assert all(r.auto_scheduled for r in runs), states
    assert done.expected_start_time is not None and done.expected_start_time.timestamp() >= started
    assert not [r for r in runs if r.state and r.state.type.value in FINAL - {"COMPLETED"}], states
