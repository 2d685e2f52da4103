"""``compare --labels --stop-after select``: the defect-avoidance table for every arm from scores
alone (no fine-tuning), in the report, its plot and each arm's MLflow run."""

from __future__ import annotations

import json

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow


def test_compare_reports_defect_avoidance_without_fine_tuning(tmp_path, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    from syllabus_flows.compare import compare
    from syllabus.pipeline.config import CompareParams
    from syllabus.pool.defects import plant_defects, read_samples

    pool = write_pool(tmp_path / "pool.jsonl", 24)
    general = [(f"Name a colour number {i}.", f"Blue is colour number {i}.") for i in range(10)]
    records, labels = plant_defects(read_samples([pool]), fraction=0.25, seed=0, distractors=general,
                                    kinds=["truncated", "boilerplate", "off_domain", "shuffled"])
    (tmp_path / "noisy").mkdir()
    defects = tmp_path / "noisy" / "defects.jsonl"
    defects.write_text("".join(json.dumps(r) + "\n" for r in records))
    labels_path = tmp_path / "labels.jsonl"
    labels_path.write_text("".join(json.dumps(l) + "\n" for l in labels))
    params = CompareParams(
        pool=[pool, str(defects)], shard_size=12, model=tiny_model_dir, methods=["3ds", "random", "full"], seeds=2,
        windows={"easy": (0.0, 50.0)}, budget={"count": 6}, store=str(tmp_path / "store"),
        scorer_configs={"difficulty": {"max_new_tokens": 4}},
        selector_overrides={"3ds": {"threshold": {"min_percentile": 0}}},
        stop_after="select", labels=str(labels_path), benches=[],
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="defects-test", report_dir=str(tmp_path / "report"),
    )
    result = compare(params)
    audits = result["defects"]
    assert set(audits) == {"3ds", "random@0", "random@1", "full", "3ds-easy"}
    full = audits["full"]["selected"]
    assert full["n"] == 24 + len(records) and full["defects"] == len(records)  # full keeps the whole noisy pool
    assert audits["full"]["pool"] == full
    assert [s["stage"] for s in audits["3ds"]["stages"]] == ["1:threshold(quality_score)", "2:band", "3:kcenter"]
    assert all(a["selected"]["n"] <= 6 for name, a in audits.items() if name != "full")
    # scores only: no arm is fine-tuned or evaluated, nor is the base model
    assert not any("finetune" in r or "evaluation" in r for r in result["results"])
    assert "base model" not in {r.get("method") for r in result["results"]}

    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Defect avoidance" in text and "| pool (base rate) |" in text and "| 3ds | 3:kcenter |" in text
    assert (tmp_path / "report" / "defects.png").read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(params.tracking_uri)
    parent = client.get_run(result["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_arm = {c.data.tags["method"]: c for c in children}
    assert by_arm["full"].data.metrics["defects/share"] == pytest.approx(len(records) / (24 + len(records)))
    assert "defects/after_stage/1_threshold_quality_score" in by_arm["3ds"].data.metrics
