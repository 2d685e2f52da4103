"""No validation leak: DIQ's influence scorer validates on benchmark items chosen by its own
``validation`` settings (here 1 item per subject, seed 7, not the default 20 and seed 0); the
pipeline evaluates every arm without exactly those items. Before, evaluation left out the
*default* validation items, so these were scored by the very benchmark they steered."""

from __future__ import annotations

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow


def test_evaluation_leaves_out_the_items_the_influence_scorer_validated_on(tmp_path, tiny_model_dir, monkeypatch):
    from syllabus.evaluation.heldout import ValidationConfig, default_held_out_ids, held_out_ids
    from syllabus.evaluation.runner import EvalConfig
    from syllabus.pipeline import stages
    from syllabus.pipeline.config import PipelineParams
    from syllabus_flows.pipeline import pipeline

    validation = {"per_task": 1, "seed": 7}
    ours = held_out_ids(ValidationConfig(**validation))
    (bench,) = ours
    default = default_held_out_ids()[bench]
    assert set(ours[bench]) - set(default), "the test needs held-out items the default set does not hold"

    seen = []
    real = stages.evaluate

    def recording(model, adapter, benches, config, store, on_progress=None):
        seen.append(EvalConfig(**config))
        return real(model, adapter, benches, config, store, on_progress=on_progress)

    monkeypatch.setattr(stages, "evaluate", recording)
    params = PipelineParams(
        pool=[write_pool(tmp_path / "pool.jsonl", 8)], shard_size=8, model=tiny_model_dir, methods=["diq"],
        budget={"count": 4}, store=str(tmp_path / "store"), selector_overrides={},
        scorer_configs={"influence": {"gradients": {"lora": {"rank": 4}, "projection": {"dim": 256}},
                                      "validation": validation}},
        finetune={"batch_size": 2, "micro_batch_size": 2, "cutoff": 64, "epochs": 1},
        benches=["mmlu-medical"], eval={"generate": False, "bootstrap": 20, "limit": 300, "cutoff": 128},
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="leak")
    result = pipeline(params)
    assert all(r["error"] is None for r in result["results"]), result["results"]
    assert len(seen) == 2  # the base model and the DIQ arm
    for config in seen:
        assert config.exclude_ids == {bench: tuple(sorted(ours[bench]))}
    # and the per-item results of both evaluations hold none of them
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in (tmp_path / "store" / "evaluations").rglob("*.parquet")]
    assert len(tables) == 2
    for table in tables:
        items = set(table.column("item_id").to_pylist())
        assert table.num_rows == 300 and not items & set(ours[bench])
