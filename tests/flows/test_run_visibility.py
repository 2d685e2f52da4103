"""What a team sees in Prefect and MLflow (issue 16): library log lines and a scoring progress
artifact in the run, artifacts on the run the user started as well as on the subflow, and
MLflow runs ended as FAILED or KILLED when their flow run fails, crashes or is cancelled."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest
from prefect import flow

from flow_helpers import write_pool
from syllabus.pipeline.config import IngestConfig
from syllabus.pipeline.stages import ingest as ingest_pool

pytestmark = pytest.mark.flow


def _api(coro_fn):
    from prefect.client.orchestration import get_client

    async def main():
        async with get_client() as client:
            return await coro_fn(client)

    return asyncio.run(main())


def logs_of(flow_run_id) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs go to the API in batches from a background worker: send what is queued
    return _api(lambda c: c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(str(flow_run_id))]))))


def artifacts_of(flow_run_id) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return _api(lambda c: c.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))]))))


def test_library_logs_and_scoring_progress_reach_the_run(tmp_path, tiny_model_dir):
    from syllabus_flows.score import score

    pool = write_pool(tmp_path / "pool.jsonl", 12)
    store = str(tmp_path / "store")
    manifest = ingest_pool(IngestConfig(inputs=[pool], shard_size=4), store)["manifest"]
    faults = tmp_path / "faults"
    faults.mkdir()
    state = score(manifest, {"fault": {"fault_dir": str(faults)}}, tiny_model_dir, store, return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id

    logs = logs_of(run_id)
    # A line logged by src/syllabus (not by Prefect, not by print) is in the run's logs in the API.
    library = [entry for entry in logs if entry.name.startswith("syllabus.")]
    assert any("fault: scored 4 samples" in entry.message for entry in library), [(e.name, e.message) for e in logs]
    assert any(entry.name == "flows.score" and "scoring: 3/3 shards" in entry.message for entry in logs)

    progress = [a for a in artifacts_of(run_id) if a.type == "progress"]
    assert len(progress) == 1 and float(progress[0].data) == 100.0
    assert "3/3 shards (0 cached, 0 failed)" in progress[0].description and "samples/s" in progress[0].description
    assert "time left 0 s" in progress[0].description
    tables = [a for a in artifacts_of(run_id) if a.key == "scores"]
    assert tables and "scores/manifests" in tables[0].data


def test_stage_artifacts_land_on_the_run_the_user_started_and_the_result_is_persisted(tmp_path):
    from syllabus_flows.stages import ingest

    pool = write_pool(tmp_path / "pool.jsonl", 5)
    store = str(tmp_path / "store")

    @flow(name="user-started")
    def started_by_user() -> str:
        sub = ingest([pool], store, 2, return_state=True)
        return str(sub.state_details.flow_run_id)

    parent_state = started_by_user(return_state=True)
    child_id = parent_state.result()
    parent_id = parent_state.state_details.flow_run_id
    for run_id in (child_id, parent_id):
        keyed = [a for a in artifacts_of(run_id) if a.key == "ingest"]
        assert len(keyed) == 1, run_id
        assert "ingests/" in keyed[0].data and "| records_ok | 5 |" in keyed[0].data


    child = _api(lambda c: c.read_flow_run(UUID(child_id)))
    assert child.state.is_completed()
    persisted = child.state.result()
    assert persisted["records_ok"] == 5 and persisted["manifest"].endswith("manifest.json")


def test_a_failed_flow_ends_its_mlflow_runs_as_failed(tmp_path):
    import mlflow

    from syllabus_flows.hooks import end_mlflow_runs_as_failed, root_flow_run_id
    from syllabus.tracking.lineage import Lineage

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen = {}

    @flow(name="dies-mid-run", on_failure=[end_mlflow_runs_as_failed])
    def dies(params: dict) -> None:
        from prefect.runtime import flow_run

        lineage = Lineage(uri, "hooks")
        # Started without a `with` block, as a killed or cancelled process leaves it: RUNNING.
        run = lineage.mlflow.start_run(experiment_id=lineage.experiment_id, tags={
            "prefect.flow_run_id": str(flow_run.id), "prefect.root_flow_run_id": root_flow_run_id()})
        seen["run_id"] = run.info.run_id
        raise RuntimeError("the scorer's GPU fell off the bus")

    state = dies({"tracking_uri": uri}, return_state=True)
    assert state.is_failed()
    run = mlflow.tracking.MlflowClient(uri).get_run(seen["run_id"])
    mlflow.end_run("FAILED")  # pops the run the flow left on this thread's active-run stack
    assert run.info.status == "FAILED"
    assert "GPU fell off the bus" in run.data.tags["error"]


def test_watch_refuses_to_run_without_a_pool(tmp_path):
    from syllabus_flows.watch import watch
    from syllabus.pipeline.config import PipelineParams

    state = watch(PipelineParams(pool=[""], store=str(tmp_path / "store")), return_state=True)
    assert state.is_failed() and "watch needs params.pool" in state.message
    assert not (tmp_path / "store").exists()  # refused before ingesting anything


def test_evaluation_keeps_a_progress_artifact(tmp_path, tiny_model_dir):
    import json

    from syllabus_flows.stages import evaluate

    bench = tmp_path / "mc.jsonl"
    bench.write_text("".join(json.dumps({"question": f"Which number is {i}?", "options": [str(i), str(i + 1)],
                                         "answer": "A", "subject": "toy"}) + "\n" for i in range(5)))
    state = evaluate(tiny_model_dir, None, [str(bench)], {"generate": False, "bootstrap": 10}, str(tmp_path / "store"),
                     return_state=True)
    assert state.is_completed()
    bars = [a for a in artifacts_of(state.state_details.flow_run_id) if a.type == "progress"]
    assert len(bars) == 1 and float(bars[0].data) == 100.0
    import re

    assert re.match(r"evaluation, \w+ pass: (\d+)/\1 items, [\d.]+ items/s", bars[0].description), bars[0].description


def test_watch_run_gets_the_pipeline_artifacts_and_its_mlflow_runs_carry_its_id(tmp_path, tiny_model_dir):
    """The user starts `watch`; the pipeline is its subflow. The results table and the MLflow
    link land on the watch run too, and the MLflow runs carry the watch run's id, which is how
    a cancelled watch run's hook finds them."""
    import json

    from mlflow.tracking import MlflowClient

    from syllabus_flows.watch import watch
    from syllabus.pipeline.config import PipelineParams

    bench = tmp_path / "mc.jsonl"
    bench.write_text("".join(json.dumps({"question": f"Which number is {i}?", "options": [str(i), str(i + 1)],
                                         "answer": "A", "subject": "toy"}) + "\n" for i in range(4)))
    params = PipelineParams(
        pool=[write_pool(tmp_path / "pool.jsonl", 8)], shard_size=4, model=tiny_model_dir, methods=["random"],
        budget={"count": 4}, store=str(tmp_path / "store"), scorer_configs={}, selector_overrides={}, evaluate_base=False,
        finetune={"batch_size": 2, "micro_batch_size": 2, "cutoff": 64}, benches=[str(bench)],
        eval={"generate": False, "bootstrap": 10}, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="watch")
    state = watch(params, return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["ran"] is True
    watch_id = str(state.state_details.flow_run_id)
    keys = {a.key for a in artifacts_of(watch_id)}
    assert {"mlflow-run", "pipeline-results"} <= keys, keys
    run = MlflowClient(params.tracking_uri).get_run(result["mlflow_run_id"])
    assert run.data.tags["prefect.root_flow_run_id"] == watch_id
    assert run.data.tags["prefect.flow_run_id"] != watch_id  # the pipeline subflow's own id

    again = watch(params, return_state=True).result()
    assert again["ran"] is False  # the fingerprint of a clean run was recorded


def test_watch_after_a_partial_pipeline_ends_partial_and_retries_next_time(tmp_path, monkeypatch):
    import syllabus_flows.watch
    from syllabus_flows.outcome import finish
    from syllabus_flows.watch import watch
    from syllabus.pipeline.config import PipelineParams

    calls = []

    @flow(name="pipeline")
    def partial_pipeline(params):
        calls.append(params.pool)
        return finish({"mlflow_run_id": "r1", "mlflow_run_url": "http://mlflow/r1"},
                      ["scorer ifd: 1 of 2 shards failed after their retries: pool.jsonl-00001 (OSError: disk gone)."])

    monkeypatch.setattr(syllabus_flows.watch, "pipeline", partial_pipeline)
    params = PipelineParams(pool=[write_pool(tmp_path / "pool.jsonl", 8)], shard_size=4, methods=["random"],
                            store=str(tmp_path / "store"))
    state = watch(params, return_state=True)
    assert state.is_failed() and state.name == "Partially failed"
    assert "pool.jsonl-00001 (OSError: disk gone)" in state.message and "next watch run retries" in state.message
    assert watch(params, return_state=True).is_failed()
    assert len(calls) == 2  # no fingerprint was recorded, so the unchanged pool ran again


def test_unknown_method_from_a_form_fails_before_any_work(tmp_path):
    """A deployment's form sends JSON: an unknown method fails the run while its parameters are
    validated, before ingest, scoring or an MLflow run."""
    from syllabus_flows.pipeline import pipeline

    state = pipeline({"methods": ["3dss"], "store": str(tmp_path / "store"),
                      "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, return_state=True)
    assert state.is_failed() and "3dss" in state.message
    assert not (tmp_path / "store").exists() and not (tmp_path / "mlflow.db").exists()
    # so does a bad scorer setting: every scorer config is checked when the parameters are built
    state = pipeline({"methods": ["ifd"], "scorer_configs": {"ifd": {"cutoff": 0}}, "store": str(tmp_path / "store"),
                      "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, return_state=True)
    assert state.is_failed() and "cutoff = 0" in state.message
    assert not (tmp_path / "store").exists() and not (tmp_path / "mlflow.db").exists()
