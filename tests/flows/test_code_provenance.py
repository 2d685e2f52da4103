"""A worker whose install is one commit behind (issue 30 item 2), for real: a Prefect server, the
``ingest`` deployment from deployments/prefect.yaml (its pull step clones the branch) and a
process worker whose environment has Syllabus installed (``pip install --target``) from the
commit before the branch's head. The run fails before any work, naming the package, where it was
imported from, the clone's commit, the changed file and the fix; with the head installed instead,
the same deployment completes.

The repository is a tmp git repo holding this checkout's committed package sources (commit A) and
a commit B that changes one file of ``syllabus_tasks``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flow_helpers import free_port, serve

pytestmark = pytest.mark.flow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def _install(repo: Path, commit: str, target: Path, scratch: Path) -> None:
    """``pip install`` the package at ``commit`` into ``target`` (a worker's environment), built
    from a separate clone so the repository stays clean."""
    subprocess.run(["git", "clone", "-q", str(repo), str(scratch)], check=True)
    _git(scratch, "checkout", "-q", commit)
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile",
                          "--target", str(target), str(scratch)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def _flow_run(api_url: str, run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def main():
        async with get_client() as client:
            return await client.read_flow_run(run_id)

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return asyncio.run(main())


def test_a_worker_one_commit_behind_fails_the_run_before_any_work(tmp_path):
    # The repository: this checkout's committed sources at A, and B changing one file.
    repo = tmp_path / "repo"
    repo.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "src", "flows", "tasks", "pyproject.toml",
                              "README.md", "deployments"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "A")
    commit_a = _git(repo, "rev-parse", "HEAD")
    changed = repo / "tasks" / "stages.py"
    changed.write_text(changed.read_text() + "\n# commit B: the worker's install does not have this line\n")
    _git(repo, "commit", "-q", "-am", "B")
    commit_b = _git(repo, "rev-parse", "HEAD")
    behind, current = tmp_path / "install-a", tmp_path / "install-b"
    _install(repo, commit_a, behind, tmp_path / "build-a")

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}"}) + "\n" for i in range(3)))
    store = tmp_path / "store"
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SYLLABUS_", "MLFLOW_"))}
    api_url = f"http://127.0.0.1:{port}/api"
    server_env = dict(base, PREFECT_HOME=str(tmp_path / "server-home"), PREFECT_API_URL=api_url,
                      PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with serve([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], f"{api_url}/health",
               server_env, timeout=300):
        deployer = dict(server_env, SYLLABUS_GIT_URL=str(repo), SYLLABUS_GIT_BRANCH="main", SYLLABUS_STORE=str(store))
        for args in (["work-pool", "create", "syllabus-process", "--type", "process"],
                     ["--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "ingest"]):
            out = subprocess.run([str(BIN / "prefect"), *args], env=deployer, cwd=repo, capture_output=True, text=True,
                                 timeout=300)
            assert out.returncode == 0, out.stdout + out.stderr

        def run_with_worker(install: Path) -> object:
            """Start an ingest run and let one worker, whose Syllabus is ``install``, pick it up."""
            from prefect.deployments import run_deployment
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                run = run_deployment("ingest/ingest", parameters={"pool": [str(pool)], "shard_size": 2}, timeout=0)
            workdir = tmp_path / f"worker-{install.name}"
            workdir.mkdir()
            worker_env = dict(base, PREFECT_API_URL=api_url, PREFECT_HOME=str(workdir / "prefect-home"),
                              PYTHONPATH=str(install))
            t0 = time.time()
            out = subprocess.run([str(BIN / "prefect"), "worker", "start", "--pool", "syllabus-process", "--run-once"],
                                 env=worker_env, cwd=workdir, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            print(f"worker with {install.name}: {time.time() - t0:.1f} s")
            return _flow_run(api_url, str(run.id))

        # The worker is one commit behind the branch its run clones: the run fails before any work.
        run = run_with_worker(behind)
        assert run.state.type.value == "FAILED", run.state
        message = run.state.message
        assert "CodeMismatchError" in message, message
        imported = (behind / "syllabus_tasks").resolve()
        assert f"package syllabus_tasks (imported from {imported}) differs from tasks/ in the checkout in 1 of" in message, message
        assert ".py and .yaml files (stages.py)" in message and f"commit {commit_b[:12]}" in message, message
        assert "`pip install -e " in message and "start the worker from an environment built from" in message, message
        assert "package syllabus " not in message and "package syllabus_flows" not in message, message
        assert not store.exists(), sorted(str(p) for p in store.rglob("*"))  # nothing was ingested

        # The same deployment on a worker installed from the branch's head completes.
        _install(repo, commit_b, current, tmp_path / "build-b")
        run = run_with_worker(current)
        assert run.state.type.value == "COMPLETED", run.state
        assert len(list(store.glob("ingests/*/manifest.json"))) == 1
