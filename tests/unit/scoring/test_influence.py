"""Influence on the tiny model: DIQ's dot approximates the unprojected gradient dot with the
mean validation gradient; LESS's score is the max over tasks of the mean cosine; shard-by-
shard scoring equals scoring everything at once; the warm-up's checkpoints are committed,
reused, and feed the Adam-preconditioned LESS score; the validation split is held out."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from scoring_helpers import GRADIENT_SAMPLES as SAMPLES
from scoring_helpers import loaded_tiny_model, one_backward_per_sample

from syllabus.evaluation.benchmarks import load_benchmark
from syllabus.models.chat import encode_pair
from syllabus.evaluation.heldout import ValidationConfig, held_out_ids, item_sample, validation_samples
from syllabus.scoring.influence import InfluenceScorer
from syllabus.scoring.lora_gradients import LoraGradients, LoraSettings
from syllabus.scoring.validation import summarise
from syllabus.scoring.warmup import in_fraction
from syllabus.store import Store

VAL_ITEMS = [
    {"question": "Which organ makes insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"], "answer": "B",
     "subject": "physiology"},
    {"question": "Which vitamin is made in the skin?", "options": ["A", "B12", "C", "D"], "answer": 3,
     "subject": "physiology"},
    {"question": "What does an ECG record?", "options": ["Heart electrical activity", "Brain waves", "Lung volume",
                                                          "Blood sugar"], "answer": "A", "subject": "cardiology"},
]


@pytest.fixture
def val_file(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in VAL_ITEMS) + "\n")
    return str(path)


def _cfg(val_file, dim=2048, **kw):
    return {"gradients": {"lora": {"rank": 4}, "projection": {"dim": dim}, "batch_size": 3},
            "validation": {"source": val_file}, **kw}


def test_validation_samples_from_a_file(val_file):
    vs = validation_samples(ValidationConfig(source=val_file))
    assert [v["task"] for v in vs] == ["physiology", "physiology", "cardiology"]
    assert vs[0]["output"] == "B. Pancreas" and vs[1]["output"] == "D. D"
    assert "A. Liver" in vs[0]["instruction"] and vs[0]["instruction"].startswith("Which organ makes insulin?")


def test_default_validation_is_a_held_out_seeded_mmlu_split():
    bench = load_benchmark("mmlu-medical")
    val, rest = bench.split_validation(5, seed=0)
    ids = {it.item_id for it in val.items}
    assert len(val) == 5 * len({it.subject for it in bench.items})
    assert len(ids) == len(val)
    assert ids.isdisjoint({it.item_id for it in rest.items})
    assert len(val) + len(rest) <= len(bench) and {it.item_id for it in bench.items} == ids | {it.item_id for it in rest.items}
    assert all(it.answer in range(4) for it in val.items)  # the header rows (answer "answer") are gone
    assert held_out_ids(ValidationConfig(per_task=5)) == {"mmlu-medical": sorted(ids)}
    assert {it.item_id for it in bench.split_validation(5, seed=1)[0].items} != ids
    vs = validation_samples(ValidationConfig(per_task=5))
    assert [v["sample_id"] for v in vs] == [f"val-{it.item_id}" for it in val.items]


def test_dot_approximates_unprojected_influence(tiny_llama, smol_tokenizer, val_file):
    """True value: the full (unprojected) per-sample gradient from one backward each, dotted
    with the mean full validation gradient; the projected score is within the JL error."""
    tok = smol_tokenizer
    lm = loaded_tiny_model(tiny_llama, tok)
    scorer = InfluenceScorer(_cfg(val_file, dim=4096))
    out = scorer.score(pa.Table.from_pylist(SAMPLES), lm).to_pylist()
    vals = validation_samples(ValidationConfig(source=val_file))
    with LoraGradients(tiny_llama, LoraSettings(rank=4)) as lora:
        def full(sample):
            e = encode_pair(tok, sample)
            g = one_backward_per_sample(lora, e.input_ids, e.prompt_len)
            return torch.cat([g[k] for k in sorted(g)]).double().numpy()

        gv = [full(v) for v in vals]
        g_val = np.mean(gv, axis=0)
        for s, r in zip(SAMPLES, out):
            g = full(s)
            true = float(g @ g_val)
            assert r["influence_status"] == "ok"
            # JL: |<Pa, Pb> - <a, b>| <= eps |a| |b|; k = 4096 gives a standard deviation of
            # about sqrt(2/k) = 0.022 relative to |a||b|.
            assert abs(r["influence_dot"] - true) <= 0.12 * np.linalg.norm(g) * np.linalg.norm(g_val)
            # LESS without a warm-up: max over the two tasks of the mean cosine.
            unit = [v / np.linalg.norm(v) for v in gv]
            cos = {t: np.mean([float(g @ u) / np.linalg.norm(g) for u, v in zip(unit, vals) if v["task"] == t])
                   for t in ("physiology", "cardiology")}
            assert abs(r["influence_less"] - max(cos.values())) <= 0.12


def test_shard_by_shard_equals_all_at_once(tiny_llama, smol_tokenizer, val_file):
    lm = loaded_tiny_model(tiny_llama, smol_tokenizer)
    scorer = InfluenceScorer(_cfg(val_file, dim=256))
    whole = scorer.score(pa.Table.from_pylist(SAMPLES), lm)
    parts = [scorer.score(pa.Table.from_pylist(SAMPLES[:2]), lm), scorer.score(pa.Table.from_pylist(SAMPLES[2:]), lm)]
    joined = pa.concat_tables(parts)
    for col in ("influence_dot", "influence_less"):
        assert np.allclose(whole.column(col).to_numpy(), joined.column(col).to_numpy(), rtol=1e-3, atol=1e-6)
    assert whole.column("influence_status").to_pylist() == ["ok"] * 4


def test_summarise_task_means_and_failures():
    v = np.array([[3.0, 4.0], [0.0, 2.0], [9.0, 9.0]], dtype=np.float32)
    out = summarise(v, ["a", "a", "b"], ["ok", "ok", "too_long"])
    assert np.allclose(out.mean, [1.5, 3.0])
    assert np.allclose(out.task_means["a"], [(0.6 + 0.0) / 2, (0.8 + 1.0) / 2])
    assert out.counts == {"a": 2} and out.failed == 1


def test_in_fraction_is_seeded_and_about_the_fraction():
    ids = [f"s{i}" for i in range(4000)]
    share = sum(in_fraction(i, 0.1, 0) for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert [in_fraction(i, 0.1, 0) for i in ids[:50]] == [in_fraction(i, 0.1, 0) for i in ids[:50]]
    assert [in_fraction(i, 0.1, 0) for i in ids] != [in_fraction(i, 0.1, 1) for i in ids]


def test_warmup_checkpoints_adam_less_and_reuse(tiny_llama, smol_tokenizer, val_file, tmp_path):
    from syllabus.pool.ingest import ingest_pool

    pool_file = tmp_path / "pool.jsonl"
    pool_file.write_text("\n".join(json.dumps({"instruction": s["instruction"], "input": s["input"],
                                               "output": s["output"]}) for s in SAMPLES * 1) + "\n")
    store = Store(str(tmp_path / "store"))
    manifest = ingest_pool([str(pool_file)], store).manifest_url
    cfg = _cfg(val_file, dim=256, warmup={"fraction": 1.0, "epochs": 2, "learning_rate": 1e-2, "batch_size": 2,
                                          "micro_batch_size": 2, "warmup_ratio": 0.0})
    scorer = InfluenceScorer(cfg).attach(store=store, pool_manifest=manifest)
    lm = loaded_tiny_model(tiny_llama, smol_tokenizer)
    out = scorer.score(pa.Table.from_pylist(SAMPLES), lm)
    cks = scorer._prepared[lm.fingerprint]["checkpoints"]
    assert [c.epoch for c in cks] == [1, 2] and all(c.url and Store.open_url(c.url)[0].is_committed(Store.open_url(c.url)[1]) for c in cks)
    assert cks[0].lr > cks[1].lr > 0  # linear decay: the second epoch's mean lr is lower
    assert any(bool(w.any()) for k, w in cks[1].weights.items() if k.endswith("lora_B"))  # trained: B != 0
    less = out.column("influence_less").to_numpy()
    assert np.isfinite(less).all() and (np.abs(less) <= sum(c.lr for c in cks) + 1e-9).all()
    # Adam preconditioning changes the LESS score but not the plain dot product.
    plain = InfluenceScorer(dict(cfg, adam_preconditioning=False)).attach(store=store, pool_manifest=manifest)
    out_plain = plain.score(pa.Table.from_pylist(SAMPLES), lm)
    assert np.allclose(out_plain.column("influence_dot").to_numpy(), out.column("influence_dot").to_numpy(), rtol=1e-4)
    assert not np.allclose(out_plain.column("influence_less").to_numpy(), less, rtol=1e-3)
    # A fresh scorer reads the committed checkpoints and gives the same numbers.
    again = InfluenceScorer(cfg).attach(store=store, pool_manifest=manifest).score(pa.Table.from_pylist(SAMPLES), lm)
    assert np.allclose(again.column("influence_less").to_numpy(), less, rtol=1e-5)
    # The warm-up pool is part of the key.
    assert "warmup_pool" in scorer.key_parts("m", "s")
    with pytest.raises(ValueError, match="attach"):
        InfluenceScorer(cfg).key_parts("m", "s")


def test_bad_sample_gets_a_status(tiny_llama, smol_tokenizer, val_file):
    rows = SAMPLES[:2] + [{"sample_id": "long", "instruction": "word " * 300, "input": "", "output": "x",
                           "messages": None}]
    cfg = _cfg(val_file, dim=256)
    cfg["gradients"]["cutoff"] = 128
    out = InfluenceScorer(cfg).score(pa.Table.from_pylist(rows), loaded_tiny_model(tiny_llama, smol_tokenizer)).to_pylist()
    assert [r["influence_status"] for r in out] == ["ok", "ok", "too_long"]
    assert math.isnan(out[2]["influence_dot"]) and math.isnan(out[2]["influence_less"])


def test_item_sample_open_qa():
    from syllabus.evaluation.benchmarks import QAItem

    s = item_sample(QAItem("q1", "nutrition", "What is fibre?", "Plant matter we cannot digest."))
    assert s["instruction"] == "What is fibre?" and s["output"] == "Plant matter we cannot digest." and s["task"] == "nutrition"
