"""LESS's warm-up on the tiny model, driven by the training module's loop: golden checkpoint
keys, an epoch's steps never run into the next (the checkpoint's lr is the mean of its own
epoch's schedule), and golden LESS numbers (recorded before the warm-up shared the loop)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch
from tiny_models import make_tiny_llama

from syllabus.models.loading import LoadedModel
from syllabus.scoring.influence import InfluenceScorer
from syllabus.scoring.lora_gradients import LoraSettings
from syllabus.scoring.warmup import WarmupSettings, warmup_checkpoints
from syllabus.store import Store

SAMPLES = [{"sample_id": f"s{i}", "instruction": f"Question {i}: what is {w}?", "input": "",
            "output": f"{w} is a thing number {i}, explained at some length.", "messages": None}
           for i, w in enumerate(["anemia", "fever", "insulin", "asthma", "gout", "a stroke", "sepsis"])]
LONG = {"sample_id": "long", "instruction": "word " * 300, "input": "", "output": "x", "messages": None}
VAL = [{"question": "Which organ makes insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"], "answer": "B",
        "subject": "physiology"},
       {"question": "What does an ECG record?", "options": ["Heart", "Brain", "Lung", "Sugar"], "answer": "A",
        "subject": "cardiology"}]


def _lm(tok) -> LoadedModel:
    return LoadedModel(ref=None, model=make_tiny_llama(len(tok)), tokenizer=tok, fingerprint="sha256:tiny",
                       device="cpu", dtype=torch.float32)


def test_checkpoints_keys_and_learning_rates(smol_tokenizer, tmp_path):
    warm = WarmupSettings(fraction=1.0, epochs=3, learning_rate=1e-2, batch_size=3, micro_batch_size=2,
                          warmup_ratio=0.2, cutoff=128)
    store = Store(str(tmp_path / "store"))
    cks = warmup_checkpoints(_lm(smol_tokenizer), SAMPLES, LoraSettings(rank=4), warm, store, progress=False)
    # A change here means every committed warm-up is retrained: bump WARMUP_VERSION on purpose.
    assert [c.url.split("/store/", 1)[1] for c in cks] == [
        f"influence/warmup/v1/889aeac8809b193b347a0c96/checkpoint-{e}.pt" for e in (1, 2, 3)]
    # 7 samples in steps of 3: 3 steps an epoch (the last of one sample), 9 in all; linear decay
    # after ceil(0.2 * 9) = 2 warm-up steps, so step t has lr0 * t / 2 (t < 2), then lr0 * (9 - t) / 7.
    lr0 = 1e-2
    assert [c.lr for c in cks] == pytest.approx([lr0 * (0 + 0.5 + 1) / 3, lr0 * (6 + 5 + 4) / 21, lr0 * (3 + 2 + 1) / 21])
    assert [c.epoch for c in cks] == [1, 2, 3]
    b = [name for name in cks[0].weights if name.endswith("lora_B")]
    assert b and all(bool(cks[0].weights[n].any()) for n in b)  # trained: B moved off zero
    assert all(set(c.moments) == set(c.weights) for c in cks)
    again = warmup_checkpoints(_lm(smol_tokenizer), SAMPLES, LoraSettings(rank=4), warm, store, progress=False)
    assert [c.url for c in again] == [c.url for c in cks]
    assert all(torch.equal(a.weights[n], c.weights[n]) for a, c in zip(again, cks) for n in c.weights)


def test_less_golden_numbers(smol_tokenizer, tmp_path):
    from syllabus.pool.ingest import ingest_pool

    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps(r) + "\n" for r in VAL))
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({k: s[k] for k in ("instruction", "input", "output")}) + "\n" for s in SAMPLES))
    store = Store(str(tmp_path / "store"))
    manifest = ingest_pool([str(pool)], store).manifest_url
    cfg = {"gradients": {"lora": {"rank": 4}, "projection": {"dim": 256}, "batch_size": 3, "cutoff": 128},
           "validation": {"source": str(val)},
           "warmup": {"fraction": 1.0, "epochs": 2, "learning_rate": 1e-2, "batch_size": 2, "micro_batch_size": 2,
                      "warmup_ratio": 0.0, "cutoff": 128}}
    out = InfluenceScorer(cfg).attach(store=store, pool_manifest=manifest).score(
        pa.Table.from_pylist(SAMPLES + [LONG]), _lm(smol_tokenizer))
    assert out.column("influence_status").to_pylist() == ["ok"] * 7 + ["too_long"]
    dot = [-0.42161790923106907, -0.27493128573593123, -0.05076661458782917, -0.3241679715825594,
           -0.40125559902945135, -0.3094360094983494, -0.2583349581557316]
    less = [0.00020569458788579479, 0.0008500821564098278, 0.00041106739048379107, 0.00042249502246156174,
            0.00035106733574831277, 0.00032399732162869077, 0.0003115772628718697]
    assert out.column("influence_dot").to_pylist()[:7] == pytest.approx(dot, rel=1e-4)
    assert out.column("influence_less").to_pylist()[:7] == pytest.approx(less, rel=1e-4)
