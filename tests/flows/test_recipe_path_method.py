"""A recipe file path as a method (docs/configuration.md: "the path of a recipe .yaml file"), end to end
against a real ``mlflow server``: the run finishes, and the path becomes no metric, param or
run name (the recipe's ``name`` field does); MLflow refused ``time/<path>_seconds`` after all
the work was done."""

from __future__ import annotations

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow

RECIPE = """\
name: top ifd/v2
description: IFD's top samples, from a file outside the package.
scorers:
  - name: ifd
    config: {}
selectors:
  - name: topk
    config: {column: ifd_score, descending: true, drop_above: 1.0}
"""


def test_a_recipe_path_runs_as_a_method_with_sane_names(tmp_path, tiny_model_dir, mlflow_server):
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    from syllabus.pipeline.config import PipelineParams
    from syllabus_flows.pipeline import pipeline

    recipe = tmp_path / "my recipes" / "nested" / "top-ifd.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(RECIPE)
    path = str(recipe)  # absolute: "time/" + it would hold "//"
    params = PipelineParams(
        pool=[write_pool(tmp_path / "pool.jsonl", 16)], shard_size=8, model=tiny_model_dir, methods=[path, "random"],
        budget={"count": 4}, store=str(tmp_path / "store"), scorer_configs={},
        selector_overrides={path: {"topk": {"drop_above": 2.0}}},
        finetune={"batch_size": 4, "micro_batch_size": 4, "cutoff": 128, "learning_rate": 1e-3},
        benches=[], evaluate_base=False, eval={"generate": False}, tracking_uri=mlflow_server, experiment="recipe-path",
    )
    result = pipeline(params)
    rows = {r["method"]: r for r in result["results"]}
    assert set(rows) == {"top_ifd_v2", "random"}
    assert all(r["error"] is None for r in rows.values()), rows
    assert rows["top_ifd_v2"]["selected"] == 4

    client = MlflowClient(mlflow_server)
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {c.info.run_name for c in children} == {"top_ifd_v2", "random"}
    assert all(c.info.status == "FINISHED" for c in children)
    mine = next(c for c in children if c.info.run_name == "top_ifd_v2")
    assert mine.data.tags["recipe"] == path and mine.data.params["method"] == path  # values keep the path
    assert mine.data.metrics["select/n_selected"] == 4 and "finetune/train_loss" in mine.data.metrics
    assert "time/top_ifd_v2_seconds" in parent.data.metrics and "time/random_seconds" in parent.data.metrics

    for run in [parent, *children]:
        for name in list(run.data.metrics) + list(run.data.params):
            assert validate_param_and_metric_name(name) and not path_not_unique(name), name
        assert not [n for n in run.data.metrics if "yaml" in n], run.data.metrics.keys()
        # a param's structure is its dots: the path in a key (selector_overrides) does not nest it
        assert not [n for n in run.data.params if "/" in n], run.data.params.keys()
    overrides = [n for n in parent.data.params if n.startswith("params.selector_overrides.") and "top-ifd" in n]
    assert overrides and all(parent.data.params[n] == "2.0" for n in overrides), overrides
