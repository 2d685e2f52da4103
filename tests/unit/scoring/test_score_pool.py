"""Cache keys (golden), commit/skip per shard, and `syllabus score` end to end on a tiny model."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from scoring_helpers import SAMPLES, loaded_tiny_model

from syllabus.scoring.base import score_shard
from syllabus.scoring.difficulty import DifficultyScorer
from syllabus.scoring.ifd import IFDScorer
from syllabus.scoring.quality import QualityScorer
from syllabus.store import Store

FP, SHARD = "sha256:0123456789abcdef0123", "feedfacecafebeef"


def test_golden_keys():
    # A change here means every cached score is recomputed: bump the scorer version on purpose.
    # the default layout keeps the first release key (issue 29: "tagged" is a choice, not the default)
    assert QualityScorer().key(FP, SHARD) == "scores/quality/v1/b82a8f47fc50d97ca0672c5e.parquet"
    # the opt-in guarded layout (issue 29): its own key, naming the injection rules' version
    assert QualityScorer(layout="guarded").key(FP, SHARD) == "scores/quality/v1/b3957dea586e61d547afaeda.parquet"
    # max_new_tokens 256 -> 48 (issue 33: one default for score and run): the key `syllabus run` had
    assert DifficultyScorer().key(FP, SHARD) == "scores/difficulty/v1/8dcd4287d5ede2d40f67e1c4.parquet"
    assert IFDScorer().key(FP, SHARD) == "scores/ifd/v2/d77a840d738bf4ad07dbd61d.parquet"  # v2: the truncation fix


def test_key_changes_with_every_part():
    base = IFDScorer().key(FP, SHARD)
    assert IFDScorer(cutoff=512).key(FP, SHARD) != base
    assert IFDScorer().key(FP[:-1] + "4", SHARD) != base
    assert IFDScorer().key(FP, SHARD[:-1] + "0") != base
    assert IFDScorer(batch_size=8).key(FP, SHARD) == base  # same config, same key


def test_score_shard_commits_then_skips(tiny_llama, smol_tokenizer):
    store = Store("memory://score-shard-test")
    lm = loaded_tiny_model(tiny_llama, smol_tokenizer)
    table = pa.Table.from_pylist(SAMPLES)
    key, marker = score_shard(IFDScorer(), lm, table, "abc", store)
    assert not marker["skipped"] and marker["ok"] == 3 and marker["failed"] == 0
    assert store.read_table(key).column("sample_id").to_pylist() == ["a", "b", "c"]
    key2, marker2 = score_shard(IFDScorer(), lm, table, "abc", store)
    assert key2 == key and marker2["skipped"]


def test_cli_score_3ds_json(tmp_path, tiny_model_dir, capsys):
    from syllabus.cli import main

    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({k: s[k] for k in ("instruction", "input", "output")}) for s in SAMPLES))
    store_url = str(tmp_path / "store")
    rc = main(["ingest", str(pool), "--store", store_url, "--json"])
    assert rc == 0
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["manifest"]
    rc = main(["score", "--pool", manifest, "--method", "3ds", "--model", tiny_model_dir, "--store", store_url,
               "--max-new-tokens", "3", "--limit", "2", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["samples"] == 2 and result["samples_per_second"] > 0
    store, key = Store.open_url(result["table"])
    table = store.read_table(key)
    for col in ("sample_id", "instruction", "output", "quality_score", "d1", "d2", "d3", "generated",
                "difficulty_embedding", "difficulty_status", "quality_status"):
        assert col in table.column_names
    assert table.column("difficulty_status").to_pylist() == ["ok", "ok"]
    composite = json.loads(Store.open_url(result["scores"])[0].read_committed(Store.open_url(result["scores"])[1]))
    assert set(composite["components"]) == {"quality", "difficulty"}
    # a rerun finds every shard committed and skips it
    rc = main(["score", "--pool", manifest, "--method", "ifd", "--model", tiny_model_dir, "--store", store_url,
               "--limit", "2", "--json"])
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rc = main(["score", "--pool", manifest, "--method", "ifd", "--model", tiny_model_dir, "--store", store_url,
               "--limit", "2", "--json"])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and again["stages"]["ifd"]["skipped_shards"] == 1 and first["stages"]["ifd"]["skipped_shards"] == 0
    assert again["table"] == first["table"]


def test_cli_rejects_bad_limit(capsys):
    from syllabus.cli import main

    with pytest.raises(SystemExit) as exit_info:  # argparse rejects it while parsing
        main(["score", "--pool", "x", "--method", "ifd", "--model", "m", "--limit", "0"])
    assert exit_info.value.code == 2
    assert "argument --limit: 0 is not allowed" in capsys.readouterr().err
