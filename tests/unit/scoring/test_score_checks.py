"""`syllabus score` refuses bad settings before any work, names a pool data file given as
--pool, does not cache a shard that failed for a setting, and loads no model when every
shard is cached."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from scoring_helpers import SAMPLES, loaded_tiny_model

from syllabus.store import Store


@pytest.fixture
def pooled(tmp_path, capsys):
    from syllabus.cli import main

    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({k: s[k] for k in ("instruction", "input", "output")}) for s in SAMPLES))
    store_url = str(tmp_path / "store")
    assert main(["ingest", str(pool), "--store", store_url, "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["manifest"]
    return pool, store_url, manifest


@pytest.mark.parametrize("flag,value", [("--cutoff", "0"), ("--max-new-tokens", "-5"), ("--batch-size", "0"),
                                        ("--limit", "0")])
def test_bad_sizes_exit_2_while_parsing(flag, value, capsys, monkeypatch):
    from syllabus import models
    from syllabus.cli import main

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--pool", "x", "--method", "3ds", "--model", "m", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: {int(value)} is not allowed; give 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize("config", [{"cutoff": 0}, {"max_new_tokens": -5}, {"batch_size": 0}, {"generate_batch_size": 0}])
def test_scorer_configs_refuse_sizes_below_one(config):
    from syllabus.scoring.pool import make_scorer

    with pytest.raises(ValueError, match=f"{next(iter(config))} = {next(iter(config.values()))} must be at least 1"):
        make_scorer("difficulty", config)


def test_pool_data_file_given_as_manifest_is_named(pooled, capsys, monkeypatch):
    from syllabus import models
    from syllabus.cli import main

    pool, store_url, _ = pooled
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["score", "--pool", str(pool), "--method", "ifd", "--model", "m", "--store", store_url]) == 1
    err = capsys.readouterr().err
    assert f"--pool {pool} is not a pool manifest" in err and f"syllabus ingest {pool} --json" in err


def test_shard_failing_alike_for_a_setting_is_not_committed(tiny_llama, smol_tokenizer):
    from syllabus.scoring.base import ShardSettingError, score_shard
    from syllabus.scoring.ifd import IFDScorer

    store = Store("memory://setting-failure")
    scorer = IFDScorer(cutoff=2)  # below every sample's length: each one is too_long
    with pytest.raises(ShardSettingError, match="all 3 samples of shard abc failed with status 'too_long'"):
        score_shard(scorer, loaded_tiny_model(tiny_llama, smol_tokenizer), pa.Table.from_pylist(SAMPLES), "abc", store)
    key = scorer.key(loaded_tiny_model(tiny_llama, smol_tokenizer).fingerprint, "abc")
    assert not store.is_committed(key)
    from syllabus.store.lease import Lease

    assert Lease(store, key).acquire()  # the lease was given back: the next worker need not wait


def test_cli_exits_1_and_commits_nothing_when_a_setting_fails_every_sample(pooled, tiny_model_dir, capsys):
    from syllabus.cli import main

    _, store_url, manifest = pooled
    args = ["score", "--pool", manifest, "--method", "ifd", "--model", tiny_model_dir, "--store", store_url, "--cutoff", "2"]
    assert main(args) == 1
    assert "failed with status 'too_long'" in capsys.readouterr().err
    assert Store(store_url).list("scores") == []


def test_fully_cached_rerun_loads_no_model(pooled, tiny_model_dir, capsys, monkeypatch):
    from syllabus import models
    from syllabus.cli import main

    _, store_url, manifest = pooled
    args = ["score", "--pool", manifest, "--method", "ifd", "--model", tiny_model_dir, "--store", store_url, "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["model_loaded"] is True
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a fully cached rerun loaded the model"))
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["model_loaded"] is False and again["model_load_seconds"] == 0.0
    assert again["table"] == first["table"] and again["model_fingerprint"] == first["model_fingerprint"]
