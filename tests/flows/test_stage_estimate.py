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

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        if record.getMessage().lstrip().startswith(("plan:", "fault:", "expected:")):
            self.lines.append(record.getMessage())

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def test_the_score_flow_says_its_plan_and_learns_its_rate(tmp_path, tiny_model_dir, monkeypatch):
    from syllabus.pipeline.stages import ingest
    from syllabus_flows.score import score

    monkeypatch.setenv("SYLLABUS_RATES", str(tmp_path / "rates.json"))
    (tmp_path / "faults").mkdir()
    config = {"fault": {"fault_dir": str(tmp_path / "faults"), "sleep_seconds": 0.2}}  # a rate to measure
    store = str(tmp_path / "store")
    first = ingest([write_pool(tmp_path / "a.jsonl", 12)], store, 4)["manifest"]
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

    second = ingest([str(tmp_path / "a.jsonl"), write_pool(tmp_path / "b.jsonl", 8, start=100)], store, 4)["manifest"]
    score(second, config, tiny_model_dir, store)
    lines = seen.take()
    assert lines[1].startswith("  fault: 8 to score, 12 already in the store; about "), lines
    assert lines[1].endswith("measured by an earlier run on this machine)") and lines[2].startswith("  expected: about")
