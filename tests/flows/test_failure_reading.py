"""A partially failed pipeline, as its user reads it (issue 30), against a real Prefect server
(the test harness's) and a real ``mlflow server``: run as a deployment's worker runs it (the
engine asks the final state for its result), with a shard that keeps failing and a method
that selects nothing.

- no engine traceback (``TypeError: Unexpected result for failed state ... dict``);
- the pipeline run's own log names the missing shard, its error and the retry;
- its artifacts show the same, and each ends with "Next:";
- the MLflow parent run ends FAILED with the missing shards and the failed method in tags and
  its reason first in its description.
"""

from __future__ import annotations

import logging
import time

import pytest

from flow_helpers import fault_recipe, write_pool

pytestmark = pytest.mark.flow


def _poll(read, found, timeout: float = 60.0):
    """``read()`` once ``found`` holds of it (logs reach the API in batches), or as it is at the timeout."""
    deadline = time.time() + timeout
    while True:
        value = read()
        if found(value) or time.time() > deadline:
            return value
        time.sleep(1)


def test_a_partial_pipeline_reads_as_one(tmp_path, tiny_model_dir, mlflow_server, caplog):
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.flow_engine import flow_run_logger, run_flow

    from syllabus.pipeline.config import IngestConfig, PipelineParams
    from syllabus.pipeline.stages import ingest
    from syllabus.pool.manifest import load_manifest
    from syllabus_flows.outcome import PartialFailure
    from syllabus_flows.pipeline import pipeline

    faults = tmp_path / "faults"
    faults.mkdir()
    pool, store = write_pool(tmp_path / "pool.jsonl", 8), str(tmp_path / "store")
    shard = load_manifest(ingest(IngestConfig(inputs=[pool], shard_size=4), store)["manifest"])["shards"][1]
    (faults / f"fail-{shard['first_sample_id']}").touch()  # this shard fails on every attempt
    longest = fault_recipe(tmp_path / "longest.yaml", "longest", faults)
    strict = fault_recipe(tmp_path / "strict.yaml", "strict", faults, topk=", drop_below: 1000000000.0")  # selects nothing
    params = PipelineParams(pool=[pool], shard_size=4, model=tiny_model_dir, methods=[longest, strict],
                            budget={"count": 2}, store=store, scorer_configs={}, selector_overrides={}, benches=[],
                            evaluate_base=False, stop_after="select", tracking_uri=mlflow_server, experiment="partial")

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(pipeline, parameters={"params": params.model_dump(mode="json")})
    caplog.set_level(logging.INFO)
    with pytest.raises(PartialFailure) as raised:  # what `python -m prefect.engine` does for a worker
        run_flow(pipeline, flow_run=run, parameters=run.parameters, error_logger=flow_run_logger(run))
    result = raised.value.result
    assert not [r for r in caplog.records if "Unexpected result for failed state" in r.getMessage()
                or (r.exc_info and "Engine execution" in r.getMessage())], "an engine traceback was logged"

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
        tags = client.read_flow_run(run.id).tags
        logs = _poll(lambda: client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))),
                     lambda logs: any("is missing" in e.message for e in logs))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    assert state.type.value == "FAILED" and state.name == "Partially failed"
    assert shard["name"] in state.message and "injected permanent fault" in state.message and "strict" in state.message
    # The reason is on the run page's header (its tags), read without a click.
    reason = [t for t in tags if t.startswith("Partially failed: ")]
    assert len(reason) == 1 and "scorer fault" in reason[0] and len(reason[0]) <= 110, tags
    messages = [e.message for e in logs]
    assert not [m for m in messages if "Unexpected result for failed state" in m or "Traceback" in m], messages
    mine = [m for m in messages if shard["name"] in m and "is missing" in m]  # the pipeline run's own log, not the subflow's
    assert mine and "injected permanent fault" in mine[0] and "Run the same command again" in mine[0], messages

    by_key = {a.key: a.data for a in artifacts if a.type == "markdown"}
    scores, results = by_key["scores"], by_key["pipeline-results"]
    for page in (scores, results):
        assert "Partially failed" in page and shard["name"] in page and "injected permanent fault" in page, page
        assert page.rstrip().splitlines()[-1].startswith("Next:"), page
    assert "Run the same command again" in scores and "strict" in results

    client = MlflowClient(mlflow_server)
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FAILED"
    assert shard["name"] in parent.data.tags["syllabus.missing_shards"] and "fault" in parent.data.tags["syllabus.missing_shards"]
    assert parent.data.tags["syllabus.failed_methods"] == "strict"
    assert parent.data.tags["mlflow.note.content"].startswith("**Partially failed.** ")
    assert parent.data.metrics["score/fault/shards_missing"] == 1


def test_the_cli_and_result_of_unwrap_a_partial_result_and_raise_a_crash():
    from prefect.states import Failed

    from syllabus.cli.run import _outcome
    from syllabus.pipeline.partial import PartialFailure
    from syllabus_flows.outcome import PARTIAL, finish, result_of

    state = finish({"mlflow_run_id": "r1"}, ["scorer fault: 1 of 2 shards failed after their retries: s1 (boom).", None])
    assert state.is_failed() and state.name == PARTIAL and isinstance(state.data, PartialFailure)
    assert result_of(state) == {"mlflow_run_id": "r1"}
    assert _outcome(state) == ({"mlflow_run_id": "r1"}, "scorer fault: 1 of 2 shards failed after their retries: s1 (boom).")
    crashed = Failed(message="boom", data=ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        _outcome(crashed)
    with pytest.raises(ValueError, match="boom"):
        result_of(crashed)
