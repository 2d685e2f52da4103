"""Influence through the score flow: the validation gradients are computed by the first shard,
committed to the store, and read by every other shard (each shard task builds its own scorer)."""

from __future__ import annotations

import json

import pytest

from flow_helpers import write_pool
from syllabus.pipeline.config import IngestConfig
from syllabus.pipeline.stages import ingest
from syllabus.scoring import gradients as gradients_module
from syllabus.scoring import influence as influence_module

pytestmark = pytest.mark.flow

VAL = [{"question": "Which organ makes insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"], "answer": "B"},
       {"question": "What does an ECG record?", "options": ["Heart activity", "Brain waves", "Lung volume", "Sugar"],
        "answer": "A"}]


def test_validation_gradients_are_computed_once_for_all_shards(tmp_path, tiny_model_dir, monkeypatch):
    from syllabus_flows.score import score

    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps(r) + "\n" for r in VAL))
    store = str(tmp_path / "store")
    manifest = ingest(IngestConfig(inputs=[write_pool(tmp_path / "pool.jsonl", 9)], shard_size=3), store)["manifest"]  # 3 shards
    calls = []
    real = gradients_module.gradient_features

    def counting(lm, samples, *args, **kwargs):
        calls.append(len(samples))
        return real(lm, samples, *args, **kwargs)

    # every gradient pass is counted: the validation set's (2 items; validation imports it at
    # call time) and each shard's (3; influence imported it with the module)
    monkeypatch.setattr(gradients_module, "gradient_features", counting)
    monkeypatch.setattr(influence_module, "gradient_features", counting)
    config = {"gradients": {"lora": {"rank": 4}, "projection": {"dim": 256}}, "validation": {"source": str(val)}}
    out = score(manifest, {"influence": config}, tiny_model_dir, store)["influence"]
    assert out["shards_scored"] == 3 and not out["missing"]
    assert sorted(calls) == [len(VAL), 3, 3, 3]  # the validation set once, not once per shard
