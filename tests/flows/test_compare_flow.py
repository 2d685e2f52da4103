"""``compare`` end to end on a tiny model: 3DS, random over two seeds and a difficulty window,
one comparison table with paired intervals, the report in the store and a directory, and
MLflow runs for the parent and every arm."""

from __future__ import annotations

import json

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow


def test_compare_end_to_end(tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    from syllabus_flows.compare import compare
    from syllabus.pipeline.config import CompareParams

    pool = write_pool(tmp_path / "pool.jsonl", 24)
    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"question": f"Which number is {i}?", "options": [str(i), str(i + 1), str(i + 2)],
                                      "answer": "A", "subject": "toy"}) + "\n" for i in range(8)))
    qa = tmp_path / "heldout.jsonl"
    qa.write_text("".join(json.dumps({"question": f"What helps symptom {i}?", "answer": f"Rest and fluids, case {i}."}) + "\n"
                          for i in range(10)))
    params = CompareParams(
        pool=[pool], shard_size=12, model=tiny_model_dir, methods=["3ds", "random"], seeds=2,
        windows={"hard": (50.0, 100.0)}, budget={"count": 4}, store=str(tmp_path / "store"),
        scorer_configs={"difficulty": {"max_new_tokens": 4}},
        selector_overrides={"3ds": {"threshold": {"min_percentile": 0}}},
        finetune={"batch_size": 4, "micro_batch_size": 2, "cutoff": 128, "learning_rate": 1e-3},
        benches=[str(mc), str(qa)], eval={"generate": False, "bootstrap": 50}, evaluate_base=True,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="compare-test", report_dir=str(tmp_path / "report"),
    )
    result = compare(params)
    arms = {a["name"]: a for a in result["comparison"]["arms"]}
    assert set(arms) == {"base model", "3ds", "random@0", "random@1", "3ds-hard"}
    assert all(a["error"] is None for a in arms.values()), {n: a["error"] for n, a in arms.items()}
    assert result["comparison"]["metrics"] == ["heldout.jsonl ref NLL", "mc.jsonl cloze acc"]
    cell = arms["3ds"]["values"]["heldout.jsonl ref NLL"]
    assert cell["n"] == cell["n_paired"] == 10 and cell["delta_ci"][0] <= cell["delta"] <= cell["delta_ci"][1]
    assert cell["verdict"] in {"better", "worse", "no detectable difference"}
    assert result["comparison"]["random"]["heldout.jsonl ref NLL"]["seeds"] == 2
    assert result["difficulty"]["n"] == 24 and set(result["difficulty"]["spearman"]) == {"D1-D2", "D1-D3", "D2-D3"}

    report = tmp_path / "report"
    assert {"report.md", "comparison.json", "comparison.png", "difficulty.png", "training_loss.png"} <= {p.name for p in report.iterdir()}
    text = (report / "report.md").read_text()
    assert "| 3ds-hard |" in text and "Δ random" in text and "Spearman" in text
    costs = {c["stage"]: c for c in result["costs"]}
    assert costs["score: difficulty"]["compute"] > 0 and costs["3ds-hard: fine-tune"]["compute"] > 0
    assert "cached" not in costs["random@1: evaluation"]["note"] and "| 3ds: fine-tune |" in text

    client = MlflowClient(params.tracking_uri)
    parent = client.get_run(result["mlflow_run_id"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/report.md", "comparison/comparison.png"} <= artifacts
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_arm = {c.data.tags["method"]: c for c in children}
    assert set(by_arm) == {"3ds", "random@0", "random@1", "3ds-hard"}
    assert by_arm["3ds-hard"].data.params["selector_overrides.band.low"] == "50.0"
    assert "compare/heldout.jsonl_ref_NLL/delta_vs_random" in by_arm["3ds"].data.metrics
