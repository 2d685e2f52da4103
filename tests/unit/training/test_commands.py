"""`syllabus finetune` then `syllabus evaluate --adapter` end to end on a tiny model saved to disk."""

from __future__ import annotations

import json
import uuid

import pytest

from tiny_models import make_tiny_llama
from syllabus.cli import main


@pytest.fixture(scope="module")
def seed3_tiny_model_dir(tmp_path_factory, smol_tokenizer):
    """Like the shared ``tiny_model_dir`` but with its own weights (seed 3), saved once for this module."""
    path = tmp_path_factory.mktemp("tiny-model-seed3")
    make_tiny_llama(len(smol_tokenizer), seed=3).save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return str(path)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_finetune_then_evaluate_with_adapter(tmp_path, seed3_tiny_model_dir, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is condition {i}?", "answer": f"Condition {i} is a disease."})
                              for i in range(6)))
    bench = tmp_path / "mc.jsonl"
    bench.write_text("\n".join(json.dumps({"question": f"Pick {i}", "options": ["yes", "no"], "answer": "A"}) for i in range(3)))
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What is condition 9?", "answer": "Condition 9 is a disease."}))
    store = f"memory://cli-{uuid.uuid4().hex[:8]}"

    assert main(["finetune", "--data", str(data), "--model", seed3_tiny_model_dir, "--store", store, "--batch-size", "3",
                 "--lr", "1e-2", "--json", "--exclude-bench", str(qa)]) == 0
    out = _last_json(capsys)
    assert out["adapter"].startswith("memory://") and out["samples"] == 6 and out["steps"] == 2
    assert out["train_loss"] > 0 and out["seconds"] >= 0 and out["decontamination"]["dropped"] == 0

    assert main(["evaluate", "--model", seed3_tiny_model_dir, "--adapter", out["adapter"], "--bench", str(bench), str(qa),
                 "--mc", "both", "--max-new-tokens", "3", "--store", store, "--json"]) == 0
    ev = _last_json(capsys)
    assert ev["results"].endswith("results.parquet") and ev["rows"] == 3 + 3 + 1
    assert 0.0 <= ev["metrics"]["mc.jsonl/cloze/accuracy"] <= 1.0
    assert ev["metrics"]["qa.jsonl/open_qa/ref_nll"] > 0

    assert main(["evaluate", "--model", seed3_tiny_model_dir, "--bench", str(qa), "--max-new-tokens", "3", "--store", store,
                 "--json"]) == 0
    base = _last_json(capsys)
    assert base["metrics"]["qa.jsonl/open_qa/ref_nll"] != ev["metrics"]["qa.jsonl/open_qa/ref_nll"]


def test_decontamination_drops_training_samples(tmp_path, seed3_tiny_model_dir, capsys):
    data = tmp_path / "train.jsonl"
    rows = [{"question": "What is the first-line treatment for uncomplicated hypertension in adults today?", "answer": "x"},
            {"question": "How do I treat a sunburn?", "answer": "Cool it."}]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"question": rows[0]["question"], "options": ["a", "b"], "answer": 0}))
    store = f"memory://cli-{uuid.uuid4().hex[:8]}"
    assert main(["finetune", "--data", str(data), "--model", seed3_tiny_model_dir, "--store", store, "--json",
                 "--exclude-bench", str(bench)]) == 0
    out = _last_json(capsys)
    assert out["samples"] == 1 and out["decontamination"]["dropped"] == 1


def test_bad_values_are_sentences(tmp_path, seed3_tiny_model_dir, capsys):
    assert main(["evaluate", "--model", seed3_tiny_model_dir, "--bench", "no-such-bench", "--store", "memory://x"]) == 1
    assert "neither a built-in name" in capsys.readouterr().err
    assert main(["finetune", "--data", str(tmp_path / "missing.jsonl"), "--model", seed3_tiny_model_dir]) == 1
    assert "does not exist" in capsys.readouterr().err
