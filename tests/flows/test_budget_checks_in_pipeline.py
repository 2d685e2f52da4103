"""The pipeline's budget checks (issue 33): after ingest, a count above the pool fails the run
before any scoring, naming both numbers; after scoring, a fixed cut-off that the scores
cannot meet is logged with the percentile that keeps enough, before selection."""

from __future__ import annotations

import logging

import pytest

from flow_helpers import fault_recipe, write_pool

pytestmark = pytest.mark.flow


def _params(tmp_path, model, methods, budget):
    from syllabus.pipeline.config import PipelineParams

    return PipelineParams(pool=[write_pool(tmp_path / "pool.jsonl", 8)], shard_size=4, model=model, methods=methods,
                          budget=budget, store=str(tmp_path / "store"), scorer_configs={}, selector_overrides={},
                          benches=[], evaluate_base=False, stop_after="select",
                          tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="budget-checks")


def test_a_budget_above_the_pool_fails_after_ingest_before_scoring(tmp_path, tiny_model_dir):
    from syllabus.selection.base import BudgetTooLargeError
    from syllabus_flows.pipeline import pipeline

    faults = tmp_path / "faults"
    faults.mkdir()
    params = _params(tmp_path, tiny_model_dir, [fault_recipe(tmp_path / "fixed.yaml", "fixed", faults, "min_value: 0"), "full"], {"count": 20})
    state = pipeline(params, return_state=True)
    assert state.is_failed()
    with pytest.raises(BudgetTooLargeError) as info:
        state.result()
    assert str(info.value).startswith("the budget for fixed of 20 samples is larger than the pool of 8 candidates"), info.value
    assert "budget: {count: 8} or less" in str(info.value)
    assert not (faults / "attempts.log").exists()  # the scorer never ran


def test_a_fixed_cutoff_the_scores_cannot_meet_is_logged_before_selection(tmp_path, tiny_model_dir, caplog):
    from syllabus.cli.run import _outcome
    from syllabus_flows.pipeline import pipeline

    faults = tmp_path / "faults"
    faults.mkdir()
    caplog.set_level(logging.WARNING, logger="flows.pipeline")
    params = _params(tmp_path, tiny_model_dir, [fault_recipe(tmp_path / "fixed.yaml", "fixed", faults, "min_value: 1000"), "random"], {"count": 2})
    _, partial = _outcome(pipeline(params, return_state=True))
    warnings = [r.getMessage() for r in caplog.records if r.name == "flows.pipeline" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once, for the one method with a fixed cut-off
    assert warnings[0].startswith("fixed: stage 1 (threshold) keeps fault_chars >= 1000, which 0 of the 8 scored "
                                  "samples reach (0.0%); the budget of 2 needs 2 to pass it"), warnings
    assert "min_percentile" in warnings[0] and "selector_overrides.fixed.threshold.min_percentile" in warnings[0]
    assert partial and "fixed" in partial  # and the selection then fails as empty, as before

    caplog.clear()  # a cut-off the scores meet says nothing
    params = _params(tmp_path, tiny_model_dir, [fault_recipe(tmp_path / "fixed.yaml", "fixed", faults, "min_value: 0")], {"count": 2})
    _, partial = _outcome(pipeline(params, return_state=True))
    assert partial is None
    assert not [r for r in caplog.records if r.name == "flows.pipeline" and r.levelno == logging.WARNING]
