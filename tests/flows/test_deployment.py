"""Deploy from deployments/prefect.yaml to a real local Prefect server, trigger a run through
the API, and let a process worker pick it up and complete it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flow_helpers import free_port, serve, uncommitted_code_allowed

pytestmark = pytest.mark.flow
ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", SYLLABUS_GIT_URL=str(ROOT), SYLLABUS_GIT_BRANCH=_branch(),
               **uncommitted_code_allowed())
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    with serve([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], f"{env['PREFECT_API_URL']}/health", env):
        yield env


def _branch() -> str:
    return subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def _prefect(env, *args, timeout=180, cwd=ROOT) -> str:
    out = subprocess.run([PREFECT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_deploy_trigger_and_complete(prefect_server, tmp_path):
    env = prefect_server
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}"}) + "\n" for i in range(5)))
    store = tmp_path / "store"
    _prefect(env, "work-pool", "create", "syllabus-process", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "ingest")

    script = (
        "import json, sys\n"
        "from prefect.deployments import run_deployment\n"
        f"run = run_deployment('ingest/ingest', parameters={{'pool': [{str(pool)!r}], 'store': {str(store)!r}, 'shard_size': 2}}, timeout=0)\n"
        "print(json.dumps({'id': str(run.id)}))\n"
    )
    triggered = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert triggered.returncode == 0, triggered.stderr
    run_id = json.loads(triggered.stdout.strip().splitlines()[-1])["id"]

    # The pull step clones the repository into the worker's folder: not the repository itself.
    _prefect(env, "worker", "start", "--pool", "syllabus-process", "--run-once", timeout=300, cwd=tmp_path)

    check = (
        "import asyncio, json\n"
        "from prefect.client.orchestration import get_client\n"
        "async def main():\n"
        "    async with get_client() as c:\n"
        f"        run = await c.read_flow_run({run_id!r})\n"
        "        print(json.dumps({'state': run.state.type.value}))\n"
        "asyncio.run(main())\n"
    )
    state = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(state.stdout.strip().splitlines()[-1])["state"] == "COMPLETED", state.stderr
    manifests = list(store.glob("ingests/*/manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["records_ok"] == 5 and len(manifest["shards"]) == 3
