"""A worker's life with a real Prefect server, `prefect worker start` (through
``python -m syllabus_flows.worker``, from a folder of its own) and a real `mlflow server`,
deployments from deployments/prefect.yaml (issue 30):

- Retry on a partially failed pipeline run (what the UI's Retry button does: the same flow run
  set AwaitingRetry) continues the same MLflow parent run and per-method runs, which end
  FINISHED without the first attempt's failure tags: no second parent run with the same name.
- SIGTERM to the worker while a pipeline runs: the worker exits within a bound, the flow run
  ends Cancelled and its MLflow runs KILLED (Prefect 3.8.8's own worker turns SIGTERM into a
  SIGINT and waits for the run however long it takes; its run process outlives a SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flow_helpers import fault_recipe, free_port, serve, uncommitted_code_allowed, write_pool
from test_team_deployment import SITECUSTOMIZE, Api, _branch, _mlflow_statuses_settle, _pids_of, _pipeline_params

pytestmark = pytest.mark.flow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STOP_BOUND_SECONDS = 150  # the worker's own --stop-seconds is 90: the rest is its exit on a loaded machine


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Prefect server, MLflow server (local artifacts), the work pool and the deployments."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    prefect_port, mlflow_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "SYLLABUS_", "MLFLOW_")) and k not in ("AWS_ENDPOINT_URL",)}
    prefect_env = dict(base, PREFECT_HOME=str(tmp / "server-home"), PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api",
                       PREFECT_SERVER_ANALYTICS_ENABLED="false")
    tracking = f"http://127.0.0.1:{mlflow_port}"
    mlflow_cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
                  "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "mlartifacts")]
    with serve([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
               f"{prefect_env['PREFECT_API_URL']}/health", prefect_env, timeout=300), \
            serve(mlflow_cmd, f"{tracking}/health", base, timeout=300):
        deployer = dict(prefect_env, SYLLABUS_GIT_URL=str(ROOT), SYLLABUS_GIT_BRANCH=_branch(),
                        SYLLABUS_STORE=str(tmp / "store"), MLFLOW_TRACKING_URI=tracking)
        for args in (["work-pool", "create", "syllabus-process", "--type", "process"],
                     ["--no-prompt", "deploy", "--name", "pipeline", "--prefect-file", "deployments/prefect.yaml"]):
            out = subprocess.run([str(BIN / "prefect"), *args], env=deployer, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stdout + out.stderr
        yield {"api": Api(prefect_env["PREFECT_API_URL"]), "tracking": tracking, "base": base, "tmp": tmp}


def _start_worker(servers, folder: Path) -> subprocess.Popen:
    """``python -m syllabus_flows.worker`` in a folder of its own, with none of the Syllabus settings; returns
    once its Prefect worker answers its health check."""
    (folder / "site").mkdir(parents=True)
    (folder / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)  # the fault scorer in every run process
    health = free_port()
    env = dict(servers["base"], PREFECT_API_URL=servers["api"].url, PREFECT_HOME=str(folder / "prefect-home"),
               PREFECT_WORKER_WEBSERVER_PORT=str(health), SYLLABUS_RETRY_BASE_SECONDS="0",
               PYTHONPATH=os.pathsep.join([str(folder / "site"), str(Path(__file__).parent)]), **uncommitted_code_allowed())
    cmd = [sys.executable, "-m", "syllabus_flows.worker", "--stop-seconds", "90", "--pool", "syllabus-process",
           "--with-healthcheck"]
    server = serve(cmd, f"http://127.0.0.1:{health}/health", env, timeout=300, cwd=folder, log=folder / "worker.log")
    server.__enter__()
    return server


def _alive(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its parent to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _parents(mlflow, experiment_id: str, flow_run_id) -> list:
    return mlflow.search_runs([experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run_id}' and tags.`mlflow.parentRunId` IS NULL")


def test_retry_continues_the_same_mlflow_run(servers, tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient
    from prefect.states import AwaitingRetry

    from syllabus.pipeline.config import IngestConfig
    from syllabus.pipeline.stages import ingest
    from syllabus.pool.manifest import load_manifest

    api, mlflow = servers["api"], MlflowClient(servers["tracking"])
    faults = tmp_path / "faults"
    faults.mkdir()
    pool = write_pool(tmp_path / "pool.jsonl", 8)
    shard = load_manifest(ingest(IngestConfig(inputs=[pool], shard_size=4), str(tmp_path / "probe-store"))["manifest"])["shards"][1]
    fault = faults / f"fail-{shard['first_sample_id']}"
    fault.touch()  # the second shard fails on every attempt of the first run
    recipe = fault_recipe(tmp_path / "longest.yaml", "longest", faults)
    params = {"pool": [pool], "shard_size": 4, "model": tiny_model_dir, "methods": [recipe], "budget": {"count": 2},
              "scorer_configs": {}, "selector_overrides": {}, "benches": [], "evaluate_base": False,
              "stop_after": "select", "experiment": "retry"}
    worker = _start_worker(servers, tmp_path / "elsewhere")
    try:
        run_id = api.start("pipeline/pipeline", {"params": params})
        run = api.wait(run_id)
        assert run.state.type.value == "FAILED" and run.state.name == "Partially failed", run.state
        experiment_id = mlflow.get_experiment_by_name("retry").experiment_id
        (first,) = _parents(mlflow, experiment_id, run_id)
        assert first.info.status == "FAILED" and shard["name"] in first.data.tags["syllabus.missing_shards"]

        fault.unlink()  # the fault is fixed; the user presses Retry (the UI forces AwaitingRetry on the same run)
        api(lambda c: c.set_flow_run_state(run_id, AwaitingRetry(message="Retry from the UI"), force=True))
        run = api.wait(run_id)
        assert run.state.type.value == "COMPLETED", (run.state, [e.message for e in api.logs(run_id)][-15:])
        assert run.run_count >= 2, run.run_count
    finally:
        worker.__exit__()

    parents = _parents(mlflow, experiment_id, run_id)
    assert [p.info.run_id for p in parents] == [first.info.run_id], "the retry added a second parent run"
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == first.info.run_name
    assert parent.data.tags["syllabus.attempt"] == "2"
    assert not {"error", "syllabus.missing_shards", "syllabus.failed_methods"} & set(parent.data.tags), parent.data.tags
    assert parent.data.metrics["score/fault/shards_missing"] == 0
    assert not parent.data.tags["mlflow.note.content"].startswith("**Partially failed.**")
    children = mlflow.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [(c.data.tags["method"], c.info.status) for c in children] == [("longest", "FINISHED")]
    assert "error" not in children[0].data.tags and children[0].data.metrics["select/n_selected"] == 2
    continuing = [e.message for e in api.logs(run_id) if "continuing MLflow run" in e.message]
    assert continuing and parent.info.run_id in continuing[0], "the retry's log does not say which MLflow run it continues"


def test_sigterm_cancels_the_running_flow_and_stops_the_worker(servers, tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    api, mlflow = servers["api"], MlflowClient(servers["tracking"])
    slow = _pipeline_params(tmp_path, tiny_model_dir, methods=["random"], experiment="sigterm",
                            finetune={"batch_size": 1, "micro_batch_size": 1, "cutoff": 64, "epochs": 2000})
    worker = _start_worker(servers, tmp_path / "elsewhere")
    try:
        run_id = api.start("pipeline/pipeline", {"params": slow})
        deadline, runs = time.time() + 300, []
        while time.time() < deadline and not runs:
            experiment = mlflow.get_experiment_by_name("sigterm")
            runs = mlflow.search_runs([experiment.experiment_id], f"tags.`prefect.flow_run_id` = '{run_id}'") if experiment else []
            time.sleep(2)
        assert runs and runs[0].info.status == "RUNNING", "the pipeline never opened its MLflow run"
        pids = _pids_of(run_id)
        assert pids, "the flow run's process was not found"
        time.sleep(5)

        sent = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        try:
            worker.proc.wait(timeout=STOP_BOUND_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not exit within {STOP_BOUND_SECONDS} s of SIGTERM:\n"
                        + (tmp_path / "elsewhere" / "worker.log").read_text()[-3000:])
        took = time.monotonic() - sent
    finally:
        worker.__exit__()
    print(f"the worker exited {took:.1f} s after SIGTERM")
    run = api.run(run_id)
    assert run.state.type.value in ("CANCELLED", "CRASHED"), run.state
    assert "received SIGTERM" in (run.state.message or "") or run.state.type.value == "CANCELLED", run.state
    assert not [p for p in pids if _alive(p)], "the flow run's processes outlived the worker"
    statuses = _mlflow_statuses_settle(mlflow, runs[0].info.experiment_id, run_id, "KILLED", timeout=60)
    assert statuses and set(statuses.values()) == {"KILLED"}, statuses
