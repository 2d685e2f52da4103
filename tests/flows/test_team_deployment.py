"""A team's setup, for real (issue 16): a Prefect server, a process worker started from an empty
folder with none of the Syllabus settings in its environment, moto's S3 server as the shared
store and `mlflow server` as the shared tracking server. Deployments come from
deployments/prefect.yaml; the settings reach the runs through its job variables and the code
through its git-clone pull step.

One worker serves four runs: the pipeline (results in the shared store and on the tracking
server, library logs in the API), a score run with a shard that keeps failing (Partially
failed, the shard named), a budget with both count and ratio (the run fails in one sentence),
and a cancelled pipeline (its MLflow run ends KILLED)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest

from flow_helpers import free_port, serve, uncommitted_code_allowed, write_pool

pytestmark = pytest.mark.flow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}

# Registers the fault-injection scorer in every Python process of the worker (flow runs are
# subprocesses): Python imports `sitecustomize` from the path at start-up.
SITECUSTOMIZE = "from syllabus import registry\nregistry.register('scorer', 'fault', 'fault_scorer:FaultScorer')\n"


def _branch() -> str:
    return subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


class Api:
    """The Prefect API of the test's own server (not the session's test harness)."""

    def __init__(self, url: str):
        self.url = url

    def __call__(self, fn):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        async def main():
            async with get_client() as client:
                return await fn(client)

        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            return asyncio.run(main())

    def start(self, deployment: str, parameters: dict) -> UUID:
        async def go(client):
            dep = await client.read_deployment_by_name(deployment)
            return (await client.create_flow_run_from_deployment(dep.id, parameters=parameters)).id

        return self(go)

    def run(self, run_id: UUID):
        return self(lambda c: c.read_flow_run(run_id))

    def wait(self, run_id: UUID, timeout: float = 420) -> object:
        deadline = time.time() + timeout
        while time.time() < deadline:
            run = self.run(run_id)
            if run.state and run.state.type.value in FINAL:
                return run
            time.sleep(2)
        raise AssertionError(f"flow run {run_id} did not finish within {timeout:.0f} s (last state {run.state})")

    def logs(self, run_id: UUID) -> list:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        return self(lambda c: c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))))

    def logs_once(self, run_id: UUID, found, timeout: float = 60) -> list:
        """The run's logs once ``found(logs)`` holds: the final state can be recorded before the
        run's last batch of log lines reaches the server (seen on a loaded machine)."""
        deadline = time.time() + timeout
        while True:
            logs = self.logs(run_id)
            if found(logs) or time.time() > deadline:
                return logs
            time.sleep(1)

    def artifacts(self, run_id: UUID) -> list:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        return self(lambda c: c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))))


@pytest.fixture
def team(tmp_path, s3_bucket, s3_endpoint):
    """Prefect server, MLflow server (artifacts proxied to the S3 bucket), deployments, and a worker elsewhere."""
    prefect_port, mlflow_port, health_port = free_port(), free_port(), free_port()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "SYLLABUS_", "MLFLOW_")) and k not in ("AWS_ENDPOINT_URL",)}
    prefect_env = dict(base, PREFECT_HOME=str(tmp_path / "server-home"), PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api",
                       PREFECT_SERVER_ANALYTICS_ENABLED="false")
    tracking = f"http://127.0.0.1:{mlflow_port}"
    store = f"{s3_bucket}/store"
    mlflow_env = dict(base, MLFLOW_S3_ENDPOINT_URL=s3_endpoint)
    mlflow_cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
                  "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", f"{s3_bucket}/mlflow"]
    with serve([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
               f"{prefect_env['PREFECT_API_URL']}/health", prefect_env, timeout=300), \
            serve(mlflow_cmd, f"{tracking}/health", mlflow_env, timeout=300):
        deployer = dict(prefect_env, SYLLABUS_GIT_URL=str(ROOT), SYLLABUS_GIT_BRANCH=_branch(), SYLLABUS_STORE=store,
                        AWS_ENDPOINT_URL=s3_endpoint, MLFLOW_TRACKING_URI=tracking)
        for args in (["work-pool", "create", "syllabus-process", "--type", "process"],
                     ["--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"]):
            out = subprocess.run([str(BIN / "prefect"), *args], env=deployer, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stdout + out.stderr

        elsewhere = tmp_path / "elsewhere"
        (elsewhere / "site").mkdir(parents=True)
        (elsewhere / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        worker_env = dict(base, PREFECT_API_URL=prefect_env["PREFECT_API_URL"], PREFECT_HOME=str(elsewhere / "prefect-home"),
                          PREFECT_WORKER_WEBSERVER_PORT=str(health_port), SYLLABUS_RETRY_BASE_SECONDS="0",
                          PYTHONPATH=os.pathsep.join([str(elsewhere / "site"), str(Path(__file__).parent)]),
                          AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                          **uncommitted_code_allowed())
        worker = [str(BIN / "prefect"), "worker", "start", "--pool", "syllabus-process", "--with-healthcheck"]
        with serve(worker, f"http://127.0.0.1:{health_port}/health", worker_env, timeout=300, cwd=elsewhere):
            yield {"api": Api(prefect_env["PREFECT_API_URL"]), "store": store, "tracking": tracking, "elsewhere": elsewhere}


def _pids_of(flow_run_id: UUID) -> list[int]:
    """The processes the worker started for this flow run (their environment names it)."""
    mine = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mine in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _pipeline_params(tmp_path, model: str, **changes) -> dict:
    pool = write_pool(tmp_path / "pool.jsonl", 8) if not (tmp_path / "pool.jsonl").exists() else str(tmp_path / "pool.jsonl")
    bench = tmp_path / "mc.jsonl"
    bench.write_text("".join(json.dumps({"question": f"Which number is {i}?", "options": [str(i), str(i + 1)],
                                         "answer": "A", "subject": "toy"}) + "\n" for i in range(4)))
    params = {"pool": [pool], "shard_size": 4, "model": model, "methods": ["ifd"], "budget": {"count": 4},
              "scorer_configs": {}, "selector_overrides": {}, "evaluate_base": False, "experiment": "team",
              "finetune": {"batch_size": 2, "micro_batch_size": 2, "cutoff": 64}, "benches": [str(bench)],
              "eval": {"generate": False, "bootstrap": 20}}
    return {**params, **changes}


def test_a_team_runs_syllabus_from_deployments_with_shared_settings(team, tmp_path, tiny_model_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    from syllabus.pool.manifest import load_manifest
    from syllabus.store import Store

    api = team["api"]
    mlflow = MlflowClient(team["tracking"])

    # 1. The pipeline: its results land in the shared store and on the tracking server.
    run_id = api.start("pipeline/pipeline", {"params": _pipeline_params(tmp_path, tiny_model_dir)})
    run = api.wait(run_id)
    assert run.state.type.value == "COMPLETED", (run.state, [e.message for e in api.logs(run_id)][-20:])
    store = Store(team["store"])
    pools = [k for k in store.list("ingests") if k.endswith("manifest.json")]
    assert len(pools) == 1
    assert [k for k in store.list("scores/manifests") if k.endswith(".json") and not k.endswith(".done.json")]
    (parent,) = mlflow.search_runs([mlflow.get_experiment_by_name("team").experiment_id],
                                   f"tags.`prefect.flow_run_id` = '{run_id}' and tags.`mlflow.parentRunId` IS NULL")
    assert parent.info.status == "FINISHED" and parent.data.metrics["pool/records_ok"] == 8
    assert parent.data.params["pool_manifest"] == store.url(pools[0])
    children = mlflow.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [c.data.tags["method"] for c in children] == ["ifd"]
    selection = {a.path for a in mlflow.list_artifacts(children[0].info.run_id, "selection")}
    assert "selection/selected.parquet" in selection  # served by the tracking server from the S3 bucket
    logs = api.logs_once(run_id, lambda logs: any(e.name.startswith("syllabus.") for e in logs))
    assert any(e.name.startswith("syllabus.") for e in logs), sorted({e.name for e in logs})
    links = [a for a in api.artifacts(run_id) if a.key == "mlflow-run"]
    assert links and parent.info.run_id in links[0].data and team["tracking"] in links[0].data
    assert not list(team["elsewhere"].glob("syllabus-store")) and not list(team["elsewhere"].glob("**/mlflow.db"))

    # 2. A score run whose second shard keeps failing: not green, the shard named, Retry named.
    manifest_url = store.url(pools[0])
    second = load_manifest(manifest_url)["shards"][1]
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / f"fail-{second['first_sample_id']}").touch()
    run_id = api.start("score/score", {"pool_manifest": manifest_url, "scorers": {"fault": {"fault_dir": str(faults)}},
                                       "model": tiny_model_dir})
    run = api.wait(run_id)
    assert run.state.type.value == "FAILED" and run.state.name == "Partially failed", run.state
    assert second["name"] in run.state.message and "injected permanent fault" in run.state.message
    assert "Press Retry" in run.state.message
    named = lambda logs: any(e.name == "flows.score" and second["name"] in e.message and "failed after retries" in e.message
                             for e in logs)  # noqa: E731
    messages = [(e.name, e.message) for e in api.logs_once(run_id, named)]
    assert any(name == "flows.score" and second["name"] in m and "failed after retries" in m for name, m in messages), messages
    assert any(name.startswith("syllabus.") and "fault: scored 4 samples" in m for name, m in messages), messages
    progress = [a for a in api.artifacts(run_id) if a.type == "progress"]
    assert progress and "2/2 shards (0 cached, 1 failed)" in progress[0].description
    failed_run_id = run_id
    scores = [a for a in api.artifacts(run_id) if a.key == "scores"]
    assert scores and "| fault | 4 | 1 | 0 | 1 |" in scores[0].data

    # 3. A budget with both count and ratio fails the run as it starts, in one sentence (the
    #    server's own check could only say it in jsonschema's words: "... is valid under each of").
    run_id = api.start("pipeline/pipeline", {"params": _pipeline_params(tmp_path, tiny_model_dir, budget={"count": 4, "ratio": 0.5})})
    run = api.wait(run_id, timeout=300)
    assert run.state.type.value == "FAILED", run.state
    assert "give exactly one of count or ratio; this budget gives both (count 4, ratio 0.5)" in run.state.message, run.state.message

    # 4. Cancelling a run ends its MLflow run as KILLED.
    slow = _pipeline_params(tmp_path, tiny_model_dir, methods=["random"], finetune={"batch_size": 1, "micro_batch_size": 1,
                                                                                        "cutoff": 64, "epochs": 2000})
    run_id = api.start("pipeline/pipeline", {"params": slow})
    deadline = time.time() + 300
    runs = []
    while time.time() < deadline and not runs:
        runs = mlflow.search_runs([parent.info.experiment_id], f"tags.`prefect.flow_run_id` = '{run_id}'")
        time.sleep(2)
    assert runs and runs[0].info.status == "RUNNING", "the pipeline never opened its MLflow run"
    time.sleep(5)

    from prefect.states import Cancelling

    api(lambda c: c.set_flow_run_state(run_id, Cancelling(), force=True))
    run = api.wait(run_id, timeout=300)
    assert run.state.type.value == "CANCELLED", run.state
    statuses = _mlflow_statuses_settle(mlflow, parent.info.experiment_id, run_id, "KILLED")
    assert statuses and set(statuses.values()) == {"KILLED"}, (statuses, [e.message for e in api.logs(run_id)
                                                                           if "hook" in e.message.lower() or "MLflow" in e.message])
    # 5. A flow-run process killed outright (SIGKILL: no Python left to unwind): the run is
    #    marked Crashed and its MLflow run ends FAILED, not RUNNING forever.
    run_id = api.start("pipeline/pipeline", {"params": slow})
    deadline = time.time() + 300
    runs = []
    while time.time() < deadline and not runs:
        runs = mlflow.search_runs([parent.info.experiment_id], f"tags.`prefect.flow_run_id` = '{run_id}'")
        time.sleep(2)
    assert runs and runs[0].info.status == "RUNNING", "the pipeline never opened its MLflow run"
    pids = [pid for pid in _pids_of(run_id)]
    assert pids, f"no process of flow run {run_id} found"
    for pid in pids:
        os.kill(pid, 9)
    run = api.wait(run_id, timeout=300)
    assert run.state.type.value == "CRASHED", run.state
    statuses = _mlflow_statuses_settle(mlflow, parent.info.experiment_id, run_id, "FAILED")
    assert statuses and set(statuses.values()) == {"FAILED"}, (statuses, [e.message for e in api.logs(run_id)][-15:])

    if os.environ.get("SYLLABUS_TEAM_SCREENSHOTS"):
        _screenshots(Path(os.environ["SYLLABUS_TEAM_SCREENSHOTS"]), api, team["tracking"], failed_run_id,
                     parent.info.experiment_id)


def _screenshots(out: Path, api: Api, tracking: str, failed_run_id: UUID, experiment_id: str) -> None:
    """docs/team.md's screenshots (SYLLABUS_TEAM_SCREENSHOTS=docs/screenshots): the failed-shard
    run, the pipeline deployment's Run form and the experiment's runs page, each checked to show
    what it should rather than a spinner."""
    from syllabus.tracking.screenshots import capture, mlflow_runs_url, prefect_flow_run_url

    ui = api.url.removesuffix("/api")
    deployment = api(lambda c: c.read_deployment_by_name("pipeline/pipeline"))
    shots = {
        "team-failed-shard-run": (prefect_flow_run_url(ui, str(failed_run_id)), "Partially failed: scorer fault"),
        "team-deployment-form": (f"{ui}/deployments/deployment/{deployment.id}/run", "samples per shard"),
        "team-mlflow-runs": (mlflow_runs_url(tracking, experiment_id), "pipeline-"),
    }
    for name, (url, expected) in shots.items():
        page = capture(url, out / f"{name}.png", wait_ms=30000)
        assert expected in page.dom, f"{name}: {url} does not show {expected!r}"


def _mlflow_statuses_settle(mlflow, experiment_id: str, flow_run_id: str, status: str, timeout: float = 120) -> dict:
    """The statuses of a flow run's MLflow runs once all are ``status`` (or as they are at the timeout)."""
    deadline = time.time() + timeout
    while True:
        statuses = {r.info.run_id: r.info.status for r in mlflow.search_runs(
            [experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run_id}'")}
        if (statuses and all(s == status for s in statuses.values())) or time.time() >= deadline:
            return statuses
        time.sleep(2)
