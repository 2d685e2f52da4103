"""Per-stage timing: the clock's arithmetic, the pool summary, and `syllabus score` showing
where the time went (output, --json, the score manifest, MLflow) on the tiny model."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from scoring_helpers import SAMPLES

from syllabus.scoring.timing import StageClock, estimate_line, pool_stages, stage_metrics
from syllabus.store import Store


def test_stage_clock_reads_the_engine_counters_and_the_callers_tokens():
    engine = SimpleNamespace(stats=SimpleNamespace(real_tokens=100, padded_tokens=120))
    clock = StageClock()
    with clock.stage("forward", engine, samples=4):
        engine.stats.real_tokens += 300
        engine.stats.padded_tokens += 400
    with clock.stage("generation", engine, samples=4) as gen:
        engine.stats.real_tokens += 999  # the engine counts the full budget; the caller knows better
        engine.stats.padded_tokens += 200
        gen.tokens, gen.generated_tokens = 150, 50
    with clock.stage("forward", engine, samples=2):
        engine.stats.real_tokens += 100
        engine.stats.padded_tokens += 100
    out = clock.as_dict()
    assert out["forward"]["samples"] == 6 and out["forward"]["tokens"] == 400
    assert out["forward"]["computed_tokens"] == 500 and out["forward"]["padding_share"] == 0.2
    assert out["generation"]["tokens"] == 150 and out["generation"]["padding_share"] == 0.25
    assert out["generation"]["generated_tokens"] == 50
    for st in out.values():
        assert st["seconds"] >= 0


def test_pool_stages_add_up_to_the_shard_seconds_and_fall_back_for_untimed_scorers():
    timed = {"stages": {"forward": {"seconds": 3.0, "samples": 10, "tokens": 1000, "computed_tokens": 1250}}}
    entries = [
        {"rows": 10, "seconds": 4.0, "skipped": False, "stats": timed},
        {"rows": 10, "seconds": 6.0, "skipped": False,  # an untimed scorer: its engine's counters
         "stats": {"engine": {"seconds": 5.0, "real_tokens": 900, "padded_tokens": 1000}}},
        {"rows": 10, "seconds": 99.0, "skipped": True, "stats": timed},  # cached: not this run's cost
    ]
    out = pool_stages(entries)
    assert out["samples"] == 20 and math.isclose(out["seconds"], 10.0) and not out["from_cache"]
    assert out["stages"]["forward"]["seconds"] == 8.0 and out["stages"]["forward"]["tokens"] == 1900
    assert out["stages"]["forward"]["padding_share"] == round(1 - 1900 / 2250, 4)
    assert out["stages"]["other"]["seconds"] == 2.0  # 1 s + 1 s not inside a stage
    assert out["seconds_per_sample"] == 0.5
    cached = pool_stages([dict(entries[2])])
    assert cached["from_cache"] and cached["stages"]["forward"]["seconds"] == 3.0
    assert stage_metrics(out["stages"])["forward/tokens_per_second"] == out["stages"]["forward"]["tokens_per_second"]
    # a model loaded lazily inside the first shard is a one-off, not part of that shard's stages
    loaded = pool_stages([dict(entries[0], seconds=34.0, model_load_seconds=30.0), entries[1]])
    assert loaded["model_load_seconds"] == 30.0 and loaded["stages"] == out["stages"]
    assert loaded["seconds_per_sample"] == out["seconds_per_sample"]


def test_estimate_line():
    assert estimate_line(0.96, 10_000) == "at this rate, 10,000 samples take about 2 h 40 min"
    assert estimate_line(0.5, 100) == "at this rate, 100 samples take about 50 s"
    assert estimate_line(2.0, 1_000_000) == "at this rate, 1,000,000 samples take about 23.1 days"


@pytest.fixture(scope="module")
def unloaded_tiny_model_dir(tmp_path_factory, tiny_llama, smol_tokenizer):
    """The shared tiny model saved at a path no other test loads: this process caches loaded
    models by path, and the timing test must see this one load."""
    path = tmp_path_factory.mktemp("tiny-model-timing")
    tiny_llama.save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return str(path)


def _ingest(tmp_path, capsys):
    from syllabus.cli import main

    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({k: s[k] for k in ("instruction", "input", "output")}) for s in SAMPLES))
    store_url = str(tmp_path / "store")
    assert main(["ingest", str(pool), "--store", store_url, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["manifest"], store_url


def test_cli_score_reports_stages_estimate_and_logs_them_to_mlflow(tmp_path, unloaded_tiny_model_dir, capsys):
    from mlflow.tracking import MlflowClient

    from syllabus.cli import main

    manifest, store_url = _ingest(tmp_path, capsys)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["score", "--pool", manifest, "--method", "3ds", "--model", unloaded_tiny_model_dir,
               "--store", store_url, "--max-new-tokens", "3", "--limit", "2", "--json", "--tracking-uri", tracking])
    assert rc == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    diff = result["stages"]["difficulty"]["timing"]
    qual = result["stages"]["quality"]["timing"]
    assert set(diff["stages"]) >= {"generation", "forward"} and set(qual["stages"]) >= {"rating"}
    for st in (diff["stages"]["generation"], diff["stages"]["forward"], qual["stages"]["rating"]):
        assert st["seconds"] > 0 and st["samples"] == 2 and st["tokens_per_second"] > 0
        assert 0 <= st["padding_share"] < 1
    assert diff["stages"]["generation"]["generated_tokens"] <= 2 * 3
    # the model loads in quality's first shard: reported apart, once
    assert qual["model_load_seconds"] > 0 and diff["model_load_seconds"] == 0
    assert "quality model load:" in out
    # the stages add up to the shard times the manifest records (rounding aside)
    store, key = Store.open_url(result["stages"]["difficulty"]["scores"])
    manifest_doc = json.loads(store.read_committed(key))
    assert math.isclose(diff["seconds"], sum(e["seconds"] for e in manifest_doc["shards"]), abs_tol=0.01)
    assert manifest_doc["timing"]["stages"]["forward"] == diff["stages"]["forward"]
    # --limit 2 of a 3-sample pool: the estimate is for the whole pool
    assert result["estimate"]["samples"] == 3
    assert result["estimate"]["line"].startswith("at this rate, 3 samples take about")
    assert "where the time went:" in out and "  difficulty generation: " in out and "tokens/s" in out
    assert result["estimate"]["line"] in out

    run = MlflowClient(tracking).get_run(result["mlflow_run_id"])
    metrics = run.data.metrics
    for name in ("score/difficulty/generation/seconds", "score/difficulty/forward/tokens_per_second",
                 "score/difficulty/forward/padding_share", "score/quality/rating/samples_per_second",
                 "score/estimate_seconds", "score/quality/model_load_seconds"):
        assert name in metrics, sorted(metrics)
    assert metrics["score/difficulty/forward/tokens_per_second"] == pytest.approx(
        diff["stages"]["forward"]["tokens_per_second"])
    assert run.data.params["method"] == "3ds"


def test_cli_score_3ds_reference_uses_the_recipe_configs(tmp_path, tiny_model_dir, capsys):
    from syllabus.cli import main

    manifest, store_url = _ingest(tmp_path, capsys)
    rc = main(["score", "--pool", manifest, "--method", "3ds-reference", "--model", tiny_model_dir, "--store",
               store_url, "--max-new-tokens", "3", "--limit", "2", "--estimate", "500", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    configs = {}
    for name in ("quality", "difficulty"):
        store, key = Store.open_url(result["stages"][name]["scores"])
        configs[name] = json.loads(store.read_committed(key))["config"]
    assert configs["difficulty"]["preset"] == "reference" and configs["difficulty"]["token_filter"] == "pos"
    assert configs["difficulty"]["max_new_tokens"] == 3  # the command line on top of the recipe
    assert configs["quality"]["mode"] == "expected"
    assert result["estimate"]["samples"] == 500
    assert result["estimate"]["line"].startswith("at this rate, 500 samples take about")


def test_score_plan_puts_the_command_line_over_the_recipe():
    import argparse

    from syllabus.cli.score import register, score_config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["score", "--pool", "x", "--method", "3ds-reference", "--model", "m",
                              "--quality-mode", "generate", "--max-new-tokens", "7"])
    configs = score_config(args).scorer_configs()
    assert configs["difficulty"] == {"preset": "reference", "max_new_tokens": 7}
    assert configs["quality"] == {"mode": "generate", "max_new_tokens": 7}
    args = parser.parse_args(["score", "--pool", "x", "--method", "difficulty", "--model", "m", "--preset", "reference"])
    assert score_config(args).scorer_configs() == {"difficulty": {"preset": "reference"}}
    # --set reaches any field, nested ones deep-merged into the recipe's (LESS keeps its 8,192 dims)
    args = parser.parse_args(["score", "--pool", "x", "--method", "less", "--model", "m",
                              "--set", "influence.gradients.batch_size=2"])
    gradients = score_config(args).scorer_configs()["influence"]["gradients"]
    assert gradients["projection"] == {"kind": "rademacher", "dim": 8192} and gradients["batch_size"] == 2
    assert gradients["lora"]["rank"] == 8  # the recipe states its LoRA; --set left it alone


def test_pipeline_score_manifest_carries_the_stages(tmp_path, tiny_model_dir, capsys):
    """The pipeline's score stage (one task per shard, then a fan-in) writes the same timing."""
    from syllabus.pipeline.stages import score_shards, write_score_manifest
    from syllabus.pool.manifest import load_manifest
    from syllabus.scoring.pool import typed_configs

    manifest, store_url = _ingest(tmp_path, capsys)
    shard = load_manifest(manifest)["shards"][0]
    config = typed_configs({"difficulty": {"max_new_tokens": 2}})["difficulty"]  # as the flow types it, once
    (entry,) = score_shards([shard], "difficulty", config, tiny_model_dir, store_url, manifest)["entries"]
    out = write_score_manifest("difficulty", config, tiny_model_dir, manifest, [entry], [], store_url)
    assert out["config"]["max_new_tokens"] == 2
    stages = out["timing"]["stages"]
    assert stages["generation"]["samples"] == 3 and stages["forward"]["tokens"] > 0
    assert not out["timing"]["from_cache"]
    (cached,) = score_shards([shard], "difficulty", config, tiny_model_dir, store_url, manifest)["entries"]
    assert cached["skipped"]
    again = write_score_manifest("difficulty", config, tiny_model_dir, manifest, [cached], [], store_url)
    assert again["timing"]["from_cache"] and again["timing"]["stages"]["forward"] == stages["forward"]
