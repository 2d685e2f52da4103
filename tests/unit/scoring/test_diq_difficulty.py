"""DIQ difficulty: the judge's expected digit equals the plain per-sample reading of the
next-token distribution; any sequence-classification checkpoint directory is read (5-way,
15-way with perspectives, regression); statuses; the key names the rater."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from scoring_helpers import GRADIENT_SAMPLES as SAMPLES
from scoring_helpers import loaded_tiny_model

from syllabus.models.chat import has_chat_template, instruction_text
from syllabus.scoring.diq_difficulty import (
    DIQDifficultyScorer,
    classifier_scores,
    digit_token_ids,
    rating_prompt,
)
from syllabus.scoring.diq_difficulty import DIQDifficultyConfig


def test_judge_expected_digit_matches_plain_reading(tiny_llama, smol_tokenizer):
    tok = smol_tokenizer
    cfg = DIQDifficultyConfig(perspective="knowledge", batch_size=3)
    out = DIQDifficultyScorer(cfg).score(pa.Table.from_pylist(SAMPLES), loaded_tiny_model(tiny_llama, tok)).to_pylist()
    digits = digit_token_ids(tok)
    for s, r in zip(SAMPLES, out):
        prompt = rating_prompt(tok, s, cfg)
        assert "knowledge perspective" in prompt and s["instruction"] in prompt and s["output"] in prompt
        ids = tok(prompt, add_special_tokens=not has_chat_template(tok))["input_ids"]
        with torch.no_grad():  # one sequence, no padding, full logits
            probs = torch.softmax(tiny_llama(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
        p = {d: sum(float(probs[i]) for i in digits[d]) for d in range(1, 6)}
        want = sum(d * v for d, v in p.items()) / sum(p.values())
        assert r["diq_difficulty_status"] == "ok"
        assert math.isclose(r["diq_difficulty_score"], want, rel_tol=1e-4)
        assert 1.0 <= r["diq_difficulty_score"] <= 5.0
        raw = json.loads(r["diq_difficulty_raw"])
        assert math.isclose(sum(raw["p"].values()), 1.0, abs_tol=1e-3)


def test_perspective_changes_the_prompt(smol_tokenizer):
    s = SAMPLES[0]
    texts = {p: rating_prompt(smol_tokenizer, s, DIQDifficultyConfig(perspective=p)) for p in ("knowledge", "reasoning", "overall")}
    assert len(set(texts.values())) == 3
    assert s["output"] not in rating_prompt(smol_tokenizer, s, DIQDifficultyConfig(include_answer=False))


def test_judge_too_long(tiny_llama, smol_tokenizer):
    out = DIQDifficultyScorer(cutoff=16).score(pa.Table.from_pylist(SAMPLES[:2]), loaded_tiny_model(tiny_llama, smol_tokenizer))
    assert out.column("diq_difficulty_status").to_pylist() == ["too_long", "too_long"]


def _save_classifier(tmp_path, arch: str, num_labels: int, id2label=None):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, LlamaConfig, \
        LlamaForSequenceClassification

    torch.manual_seed(0)
    path = tmp_path / f"{arch}-{num_labels}"
    extra = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    if arch == "bert":
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(97, 123)] + \
            ["what", "is", "anemia", "a", "of", "the", "cells", "blood", "red", "lack", "healthy"]
        path.mkdir()
        (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
        model = BertForSequenceClassification(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                                         num_attention_heads=2, intermediate_size=64,
                                                         num_labels=num_labels, **extra))
    else:
        from transformers import AutoTokenizer

        from syllabus.models.ref import resolve

        ref = resolve("smollm2-135m")
        tok = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
        tok.pad_token = tok.eos_token
        model = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                                           num_hidden_layers=2, num_attention_heads=2,
                                                           num_key_value_heads=2, num_labels=num_labels,
                                                           pad_token_id=tok.pad_token_id, **extra))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), model.eval(), tok


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_classifier_checkpoint_five_labels(tmp_path, arch):
    path, model, tok = _save_classifier(tmp_path, arch, 5)
    scorer = DIQDifficultyScorer(reader="classifier", classifier=path, batch_size=2)
    out = scorer.score(pa.Table.from_pylist(SAMPLES), None).to_pylist()
    for s, r in zip(SAMPLES, out):
        enc = tok(instruction_text(s), s["output"], return_tensors="pt")  # alone: no padding
        with torch.no_grad():
            probs = torch.softmax(model(**enc).logits[0].float(), -1).numpy()
        assert r["diq_difficulty_status"] == "ok"
        assert math.isclose(r["diq_difficulty_score"], float(np.dot(probs, [1, 2, 3, 4, 5])), rel_tol=1e-4)
    assert "rater" in scorer.key_parts("sha256:x", "s") and scorer.key_parts("sha256:x", "s")["model"] is None


def test_classifier_label_layouts():
    logits = torch.tensor([[0.0] * 5 + [10.0, 0, 0, 0, 0] + [0, 0, 0, 0, 10.0]])
    assert math.isclose(classifier_scores(logits, None, "knowledge")[0][0], 3.0, rel_tol=1e-6)  # uniform block
    assert classifier_scores(logits, None, "reasoning")[0][0] < 1.01
    assert classifier_scores(logits, None, "overall")[0][0] > 4.99
    reg = classifier_scores(torch.tensor([[7.0], [2.5]]), None, "reasoning")[0]
    assert reg == [5.0, 2.5]

    class Cfg:
        id2label = {0: "1", 1: "3", 2: "5"}

    assert math.isclose(classifier_scores(torch.tensor([[0.0, 0.0, 0.0]]), Cfg(), "overall")[0][0], 3.0)

    class Bad:
        id2label = {0: "easy", 1: "hard"}

    with pytest.raises(ValueError, match="labels"):
        classifier_scores(torch.tensor([[0.0, 1.0]]), Bad(), "overall")


def test_classifier_with_numeric_id2label_and_golden_key(tmp_path):
    path, _, _ = _save_classifier(tmp_path, "bert", 3, id2label={0: "1", 1: "3", 2: "5"})
    out = DIQDifficultyScorer(reader="classifier", classifier=path).score(pa.Table.from_pylist(SAMPLES[:1]), None)
    assert 1.0 <= out.column("diq_difficulty_score")[0].as_py() <= 5.0
    assert DIQDifficultyScorer().key("sha256:model", "shardhash").startswith("scores/diq_difficulty/v1/")
