"""Two methods that need one scorer in different configs run side by side: DIQ and LESS both
use the influence scorer (4,096 vs 8,192 dims, LESS with a warm-up), as the instances
``influence@diq`` and ``influence@less``; and ``syllabus score --method less`` scores the
pool with the pipeline's configs, so the pipeline finds its shards cached."""

from __future__ import annotations

import json

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow

VAL = [{"question": "Which organ makes insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"], "answer": "B"},
       {"question": "What does an ECG record?", "options": ["Heart activity", "Brain waves", "Lung volume", "Sugar"],
        "answer": "A"}]

# Small enough for a tiny model on CPU; the instance-named change only reaches LESS's scorer.
SCORERS = {
    "influence": {"gradients": {"lora": {"rank": 4}, "projection": {"dim": 256}}},
    "influence@less": {"warmup": {"fraction": 1.0, "epochs": 1, "batch_size": 2, "micro_batch_size": 2}},
}


def test_diq_and_less_in_one_pipeline_and_less_from_the_cli(tmp_path, tiny_model_dir, capsys):
    from syllabus.cli import main
    from syllabus.pipeline.config import PipelineParams
    from syllabus_flows.pipeline import pipeline

    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps(r) + "\n" for r in VAL))
    pool = write_pool(tmp_path / "pool.jsonl", 8)
    store = str(tmp_path / "store")
    scorers = {**SCORERS, "influence": {**SCORERS["influence"], "validation": {"source": str(val)}}}

    # The CLI first, with the same changes as --set paths: LESS's scores land under the pipeline's keys.
    sets = ["--set", f"influence.validation.source={val}", "--set", "influence.gradients.lora.rank=4",
            "--set", "influence.gradients.projection.dim=256", "--set", "influence.warmup.fraction=1.0",
            "--set", "influence.warmup.epochs=1", "--set", "influence.warmup.batch_size=2",
            "--set", "influence.warmup.micro_batch_size=2"]
    assert main(["ingest", pool, "--store", store, "--shard-size", "4", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["manifest"]
    assert main(["score", "--pool", manifest, "--method", "less", "--model", tiny_model_dir, "--store", store,
                 "--json", *sets]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli["stages"]["influence"]["ok"] == 8 and cli["stages"]["influence"]["skipped_shards"] == 0

    params = PipelineParams(pool=[pool], shard_size=4, model=tiny_model_dir, methods=["diq", "less"],
                            budget={"count": 3}, store=store, scorer_configs=scorers, selector_overrides={},
                            stop_after="select", evaluate_base=False, benches=[str(val)],
                            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="plan-instances")
    assert set(params.plan().scorers) == {"diq_difficulty", "influence@diq", "influence@less"}
    result = pipeline(params)
    rows = {r["method"]: r for r in result["results"]}
    assert rows["diq"]["error"] is None and rows["less"]["error"] is None, result["results"]
    assert rows["diq"]["selected"] == rows["less"]["selected"] == 3
    assert set(result["scores"]) == {"diq_difficulty", "influence@diq", "influence@less"}

    manifests = {}
    for name, url in result["scores"].items():
        s, key = __import__("syllabus.store", fromlist=["Store"]).Store.open_url(url)
        manifests[name] = json.loads(s.read_committed(key))
    assert manifests["influence@diq"]["config"]["gradients"]["projection"]["kind"] == "rademacher"
    assert manifests["influence@diq"]["config"]["warmup"] is None
    assert manifests["influence@less"]["config"]["warmup"]["epochs"] == 1
    assert manifests["influence@less"]["instance"] == "influence@less"
    # The CLI scored LESS with the same config: every one of the pipeline's LESS shards was cached.
    assert manifests["influence@less"]["shards_cached"] == 2 and manifests["influence@less"]["shards_scored"] == 0
    assert manifests["influence@diq"]["shards_scored"] == 2
