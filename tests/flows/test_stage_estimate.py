"""The score flow (what `syllabus run`, `compare` and the score deployment run) says its plan
and an expected time before the work, as `syllabus score` does (issue 33, item 2): samples
cached and left per scorer, from one listing of the store; the time from the rate an earlier
run recorded on this machine; and it records the rate it measured for the next run."""

from __future__ import annotations

import json
import logging

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow


class _Lines(logging.Handler):
    """The flow's log lines (Prefect's logging config does not propagate flows.score to caplog)."""

    def __init__(self, starts: tuple[str, ...] = ("plan:", "fault:", "expected:")):
        super().__init__(logging.INFO)
        self.starts, self.lines = starts, []

    def emit(self, record):
        if record.getMessage().lstrip().startswith(self.starts):
            self.lines.append(record.getMessage())

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def test_the_score_flow_says_its_plan_and_learns_its_rate(tmp_path, tiny_model_dir, monkeypatch):
    from syllabus.pipeline.config import IngestConfig
    from syllabus.pipeline.stages import ingest
    from syllabus_flows.score import score

    monkeypatch.setenv("SYLLABUS_RATES", str(tmp_path / "rates.json"))
    (tmp_path / "faults").mkdir()
    config = {"fault": {"fault_dir": str(tmp_path / "faults"), "sleep_seconds": 0.2}}  # a rate to measure
    store = str(tmp_path / "store")
    first = ingest(IngestConfig(inputs=[write_pool(tmp_path / "a.jsonl", 12)], shard_size=4), store)["manifest"]
    seen = _Lines()
    logger = logging.getLogger("flows.score")
    monkeypatch.setattr(logger, "handlers", [*logger.handlers])  # a copy: the handler leaves with the test
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(seen)

    score(first, config, tiny_model_dir, store)
    lines = seen.take()
    assert lines[0] == f"plan: score 12 samples for fault with {tiny_model_dir}", lines
    assert lines[1] == "  fault: 12 to score, 0 already in the store; no rate measured yet on this machine (printed when it finishes)"
    rates = json.loads((tmp_path / "rates.json").read_text())
    assert [r["scorer"] for r in rates.values()] == ["fault"] and next(iter(rates.values()))["samples"] == 12

    score(first, config, tiny_model_dir, store)  # everything cached: nothing to estimate or record
    assert seen.take()[1] == "  fault: 0 to score, 12 already in the store"
    assert json.loads((tmp_path / "rates.json").read_text()) == rates

    second = ingest(IngestConfig(inputs=[str(tmp_path / "a.jsonl"), write_pool(tmp_path / "b.jsonl", 8, start=100)], shard_size=4), store)["manifest"]
    score(second, config, tiny_model_dir, store)
    lines = seen.take()
    assert lines[1].startswith("  fault: 8 to score, 12 already in the store; about "), lines
    assert lines[1].endswith("measured by an earlier run on this machine)") and lines[2].startswith("  expected: about")


def test_a_first_run_is_calibrated_in_a_task_where_the_scoring_runs(tmp_path, tiny_model_dir, monkeypatch):
    """No recorded rate and enough samples left: the flow times a few samples in a `score-plan`
    task (where the scoring tasks run; the flow's own process loads no model) and says the
    expected time before the first batch."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from syllabus.pipeline.config import IngestConfig
    from syllabus.pipeline.stages import ingest
    from syllabus.scoring.preview import CALIBRATE_FROM, CALIBRATION_SAMPLES
    from syllabus_flows.score import score

    monkeypatch.setenv("SYLLABUS_RATES", str(tmp_path / "rates.json"))
    seen = _Lines(("plan:", "quality:", "expected:"))
    logger = logging.getLogger("flows.score")
    monkeypatch.setattr(logger, "handlers", [*logger.handlers])
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(seen)
    store = str(tmp_path / "store")
    manifest = ingest(IngestConfig(inputs=[write_pool(tmp_path / "a.jsonl", CALIBRATE_FROM)], shard_size=16), store)["manifest"]
    state = score(manifest, {"quality": {}}, tiny_model_dir, store, return_state=True)
    assert state.is_completed()
    lines = seen.take()
    assert lines[1].startswith(f"  quality: {CALIBRATE_FROM} to score, 0 already in the store; about "), lines
    assert lines[1].endswith(f"calibrated on {CALIBRATION_SAMPLES} samples)") and lines[2].startswith("  expected: about")
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    plans = [tr for tr in runs if tr.name.startswith("score-plan")]
    assert len(plans) == 1 and plans[0].state.is_completed(), sorted(tr.name for tr in runs)
