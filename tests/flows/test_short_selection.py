"""A selection short of its budget fails its arm in the pipeline, as ``syllabus select`` exits 1
for it (issue 33 item 4), unless the budget says what to do: ``allow_short: true`` accepts the
rows the stages kept, ``fill: rank`` fills the rest by rank. The embedded demo's budget says
``allow_short: true`` (its 3DS keeps about 9 of 16)."""

from __future__ import annotations

import pytest

from flow_helpers import fault_recipe, write_pool

pytestmark = pytest.mark.flow

BUDGET = 8


def test_a_short_selection_fails_its_arm_unless_the_budget_allows_it(tmp_path, tiny_model_dir):
    from syllabus.cli.run import _outcome
    from syllabus.pipeline.config import PipelineParams
    from syllabus_flows.pipeline import pipeline

    faults = tmp_path / "faults"
    faults.mkdir()
    # The threshold keeps the longest quarter of the outputs, fewer than the budget of 8 from 16.
    recipe = fault_recipe(tmp_path / "short.yaml", "short", faults, "min_value: null, min_percentile: 75")
    base = dict(pool=[write_pool(tmp_path / "pool.jsonl", 16)], shard_size=8, model=tiny_model_dir, methods=[recipe],
                store=str(tmp_path / "store"), scorer_configs={}, selector_overrides={}, benches=[],
                evaluate_base=False, stop_after="select", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                experiment="short")

    result, partial = _outcome(pipeline(PipelineParams(**base, budget={"count": BUDGET}), return_state=True))
    row = next(r for r in result["results"] if r["method"] == "short")
    assert partial and "short" in partial, partial  # the run ends Partially failed, naming the arm
    error = row["error"]
    assert error and f"of the {BUDGET} asked (its budget) from 16 candidates" in error, error
    assert "stage 1 (threshold) kept" in error and "allow_short: true" in error and "fill: rank" in error, error
    assert "--set budget.allow_short=true" in error and "report.json" in error, error
    kept = int(error.split("short selected ")[1].split(" ")[0])
    assert 0 < kept < BUDGET

    result, partial = _outcome(pipeline(PipelineParams(**base, budget={"count": BUDGET, "allow_short": True}),
                                        return_state=True))
    row = next(r for r in result["results"] if r["method"] == "short")
    assert partial is None and row["error"] is None, (partial, row["error"])
    assert row["selected"] == kept

    result, partial = _outcome(pipeline(PipelineParams(**base, budget={"count": BUDGET, "fill": "rank"}),
                                        return_state=True))
    row = next(r for r in result["results"] if r["method"] == "short")
    assert partial is None and row["error"] is None, (partial, row["error"])
    assert row["selected"] == BUDGET


def test_the_demo_budget_accepts_a_short_selection():
    from syllabus.pipeline.config import CompareParams, PipelineParams

    for params in (PipelineParams(), CompareParams()):
        assert params.budget.count == 16 and params.budget.allow_short and params.budget.fill is None
    # a budget of one's own says its own policy: none, so a short selection fails
    assert not PipelineParams(budget={"count": 16}).budget.allow_short
