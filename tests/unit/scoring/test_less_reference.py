"""The `less-reference` configuration (the LESS authors' code, princeton-nlp/LESS) on the tiny
model, each part against an independent recomputation of its definition: Tulu's format as
their ``concat_messages`` + one tokenizer call write it; the training feature
``m / sqrt(v + eps)`` by hand from a warm-up checkpoint's Adam state; checkpoint weights
renormalised to sum to 1; LoRA dropout acting in the warm-up only. And the keys of `less`
and `diq` stay what they were before these fields existed."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from scoring_helpers import GRADIENT_SAMPLES as SAMPLES
from scoring_helpers import loaded_tiny_model

from syllabus.models.formats import encode_tulu
from syllabus.scoring.gradients import GradientsConfig, gradient_features
from syllabus.scoring.influence import InfluenceScorer
from syllabus.scoring.lora_gradients import LoraGradients, LoraSettings
from syllabus.scoring.projection import Projector
from syllabus.scoring.validation import validation_key
from syllabus.scoring.warmup import WarmupSettings, warmup_checkpoints
from syllabus.selection.recipes import load_recipe
from syllabus.store import Store

VAL_ITEMS = [
    {"question": "Which organ makes insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"], "answer": "B",
     "subject": "physiology"},
    {"question": "What does an ECG record?", "options": ["Heart electrical activity", "Brain waves", "Lung volume",
                                                          "Blood sugar"], "answer": "A", "subject": "cardiology"},
]
LORA = {"rank": 4, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "dropout": 0.1}


def _influence_config(recipe: str) -> dict:
    return next(s.config for s in load_recipe(recipe).scorers if s.name == "influence")


# ------------------------------------------------------------------ keys
def test_less_and_diq_keys_unchanged(monkeypatch):
    """Recorded before LoRA dropout, the Tulu format, the eps placement and the checkpoint
    weighting existed: at their defaults they are left out of every key (ScorerConfig.key_defaults)."""
    monkeypatch.setattr(InfluenceScorer, "_pool_fingerprint", lambda self: "sha256:pool")
    less, diq = InfluenceScorer(_influence_config("less")), InfluenceScorer(_influence_config("diq"))
    assert less.key("sha256:m", "shard") == "scores/influence/v1/7864f22c219b83af86efede4.parquet"
    assert diq.key("sha256:m", "shard") == "scores/influence/v1/bdf4781cccb83699950d18a8.parquet"
    val = [{"instruction": "q", "output": "a", "task": "t"}]
    assert validation_key(less.config.gradients, "sha256:m", val) == (
        "validation/gradients/v1/rademacher-k8192-seed0/eeda7f4c6b486b294a755b03.npz")
    assert validation_key(diq.config.gradients, "sha256:m", val) == (
        "validation/gradients/v1/rademacher-k4096-seed0/db72b982c7a489096b6905ee.npz")
    # less.yaml states the LoRA it used to inherit: the same settings as the defaults.
    assert less.config.gradients.lora == LoraSettings()
    # Each new field, away from its default, changes the key.
    base = less.key("sha256:m", "shard")
    for change in ({"adam_eps": "inside_sqrt"}, {"checkpoint_weights": "normalised"},
                   {"gradients": {**_influence_config("less")["gradients"], "format": "tulu"}},
                   {"gradients": {**_influence_config("less")["gradients"], "lora": {**LORA, "rank": 8}}}):
        assert InfluenceScorer({**_influence_config("less"), **change}).key("sha256:m", "shard") != base
    ref = InfluenceScorer(_influence_config("less-reference")).config
    assert (ref.gradients.lora.rank, ref.gradients.lora.alpha, ref.gradients.lora.dropout) == (128, 512, 0.1)
    assert ref.gradients.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert (ref.gradients.format, ref.gradients.cutoff, ref.warmup.cutoff) == ("tulu", 2048, 2048)
    assert (ref.adam_eps, ref.checkpoint_weights, ref.gradients.projection.dim) == ("inside_sqrt", "normalised", 8192)


# ------------------------------------------------------------------ Tulu format
def _messages(s: dict) -> list[dict]:
    """A plain sample as the authors' data holds it: the user turn (input after a blank line), the answer."""
    return [{"role": "user", "content": s["instruction"] + (f"\n\n{s['input']}" if s["input"] else "")},
            {"role": "assistant", "content": s["output"]}]


def _authors_tulu(tok, messages: list[dict], max_length: int) -> tuple[list[int], list[int]]:
    """open-instruct's concat_messages and encode_with_messages_format as LESS copies them:
    (input_ids, labels), with labels on the final assistant turn (the authors' also cover
    earlier assistant turns; the project scores the final one)."""
    def concat(msgs):
        text = ""
        for m in msgs:
            if m["role"] == "system":
                text += "<|system|>\n" + m["content"].strip() + "\n"
            elif m["role"] == "user":
                text += "<|user|>\n" + m["content"].strip() + "\n"
            else:
                text += "<|assistant|>\n" + m["content"].strip() + tok.eos_token + "\n"
        return text

    ids = tok(concat(messages), max_length=max_length, truncation=True).input_ids
    prompt_len = len(tok(concat(messages[:-1]) + "<|assistant|>\n").input_ids)
    return ids, [-100] * prompt_len + ids[prompt_len:]


@pytest.mark.parametrize("case", ["plain", "input", "markdown", "multi_turn"])
def test_tulu_format_equals_the_authors_tokens(smol_tokenizer, case):
    tok = smol_tokenizer
    samples = {
        "plain": {"instruction": "What is anemia? ", "input": "", "output": "  A lack of healthy red blood cells.\n"},
        "input": {"instruction": "Summarise.", "input": "Adult, fever for 3 days.", "output": "Probably flu."},
        "markdown": {"instruction": "List symptoms.", "input": "",
                     "output": "**Fever**\n\n- cough\n- `sore` throat\n\n## Next\n1. rest"},
        "multi_turn": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                    {"role": "assistant", "content": "Hello!"},
                                    {"role": "user", "content": "What is BMI?"},
                                    {"role": "assistant", "content": "Weight over height squared."}],
                       "output": "Weight over height squared."},
    }
    s = samples[case]
    messages = s.get("messages") or _messages(s)
    ids, labels = _authors_tulu(tok, messages, 2048)
    enc = encode_tulu(tok, s, cutoff=2048)
    assert enc.status == "ok" and not enc.truncated
    assert enc.input_ids == ids
    assert enc.prompt_len == sum(1 for t in labels if t == -100)
    assert ids[-2:] == [tok.eos_token_id] + tok("\n").input_ids  # EOS and the newline after it are targets
    # Its gradients are taken on exactly those tokens: same count as the authors' labels.
    assert len(ids) - enc.prompt_len == sum(1 for t in labels if t != -100)


def test_tulu_cutoff_and_sample_text_spelling_special_tokens(smol_tokenizer):
    tok = smol_tokenizer
    s = {"instruction": "Explain.", "input": "", "output": "word " * 50}
    ids, _ = _authors_tulu(tok, _messages(s), 30)
    enc = encode_tulu(tok, s, cutoff=30)
    assert enc.truncated and enc.input_ids == ids and len(ids) == 30
    assert encode_tulu(tok, {"instruction": "word " * 50, "input": "", "output": "x"}, cutoff=20).status == "too_long"
    # A sample that spells the EOS token keeps it as text: one EOS, the format's own.
    spelled = encode_tulu(tok, {"instruction": "Q", "input": "", "output": f"a{tok.eos_token}b"})
    assert spelled.input_ids.count(tok.eos_token_id) == 1
    with pytest.raises(ValueError, match="role 'tool'"):
        encode_tulu(tok, {"messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "y"}]})


# ------------------------------------------------------------------ Adam feature, eps inside the sqrt
def test_adam_feature_eps_inside_sqrt_by_hand(tiny_llama, smol_tokenizer):
    """A warm-up checkpoint in the reference configuration (q/k/v/o, dropout, Tulu format);
    the feature of every training sample recomputed from its definition: one backward per
    sample on the authors' tokens with an HF-style masked loss, Adam's update of the
    checkpoint's moments, m / sqrt(v + eps), the same projection."""
    tok = smol_tokenizer
    lm = loaded_tiny_model(tiny_llama, tok)
    lora = LoraSettings(**LORA)
    warm = WarmupSettings(fraction=1.0, epochs=1, learning_rate=1e-2, batch_size=2, micro_batch_size=2,
                          warmup_ratio=0.0, cutoff=128)
    (ck,) = warmup_checkpoints(lm, SAMPLES, lora, warm, progress=False, fmt="tulu")
    cfg = GradientsConfig(lora=lora, format="tulu", cutoff=128, projection={"dim": 512})
    with LoraGradients(lm.model, lora, ck.weights) as wrapped:
        res = gradient_features(lm, SAMPLES, cfg, lora=wrapped, moments=ck.moments, progress=False,
                                eps_inside_sqrt=True)
        outside = gradient_features(lm, SAMPLES, cfg, lora=wrapped, moments=ck.moments, progress=False)
        expected = []
        for s in SAMPLES:
            ids, labels = _authors_tulu(tok, _messages(s), 128)
            for p in wrapped.peft_model.parameters():
                p.grad = None
            with torch.enable_grad():
                logits = wrapped.peft_model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
                loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels[1:]), ignore_index=-100)
                loss.backward()
            feature = {}
            for m in wrapped.modules:
                for which, layer in (("lora_A", m.a), ("lora_B", m.b)):
                    name = f"{m.name}.{which}"
                    g = layer.weight.grad.double().reshape(1, -1)
                    m0, v0 = (t.double().reshape(1, -1) for t in ck.moments[name])
                    m1 = 0.9 * m0 + 0.1 * g
                    v1 = 0.999 * v0 + 0.001 * g * g
                    feature[name] = (m1 / torch.sqrt(v1 + 1e-8)).float()
            expected.append(Projector(cfg.projection).project(feature)[0].numpy())
    assert res.status == ["ok"] * len(SAMPLES)
    expected = np.stack(expected)
    assert np.allclose(res.vectors, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())  # measured 1.5e-6
    # The placement matters here: most of v is far below eps after one short epoch.
    assert not np.allclose(outside.vectors, expected, rtol=0.1)
    v = torch.cat([v0.reshape(-1) for _, v0 in ck.moments.values()])
    assert float((v < 1e-8).double().mean()) > 0.5


# ------------------------------------------------------------------ checkpoint weights, dropout
@pytest.fixture
def pool(tmp_path):
    from syllabus.pool.ingest import ingest_pool

    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps(r) + "\n" for r in VAL_ITEMS))
    pool_file = tmp_path / "pool.jsonl"
    pool_file.write_text("".join(json.dumps({k: s[k] for k in ("instruction", "input", "output")}) + "\n"
                                 for s in SAMPLES))
    store = Store(str(tmp_path / "store"))
    return str(val), store, ingest_pool([str(pool_file)], store).manifest_url


def test_checkpoint_weights_renormalised_and_reference_scores(tiny_llama, smol_tokenizer, pool):
    val, store, manifest = pool
    lm = loaded_tiny_model(tiny_llama, smol_tokenizer)
    # The reference recipe's config, made small: the tiny model, 3 epochs on the whole pool.
    cfg = _influence_config("less-reference")
    cfg = {**cfg, "validation": {"source": val},
           "warmup": {**cfg["warmup"], "fraction": 1.0, "epochs": 3, "learning_rate": 1e-2, "batch_size": 2,
                      "micro_batch_size": 2, "cutoff": 128},
           "gradients": {**cfg["gradients"], "lora": LORA, "cutoff": 128, "projection": {"dim": 256}}}
    table = pa.Table.from_pylist(SAMPLES)
    normalised = InfluenceScorer(cfg).attach(store=store, pool_manifest=manifest)
    out = normalised.score(table, lm)
    by_lr = InfluenceScorer({**cfg, "checkpoint_weights": "lr"}).attach(store=store, pool_manifest=manifest)
    out_lr = by_lr.score(table, lm)
    lrs = [c.lr for c in normalised._prepared[lm.fingerprint]["checkpoints"]]
    assert len(lrs) == 3 and lrs[0] > lrs[2] > 0
    assert out.column("influence_status").to_pylist() == ["ok"] * len(SAMPLES)
    # sum_c (eta_c / sum eta) cos_c = (sum_c eta_c cos_c) / sum eta: the weights sum to 1.
    assert np.allclose(out.column("influence_less").to_numpy(), out_lr.column("influence_less").to_numpy() / sum(lrs),
                       rtol=1e-9)
    less = out.column("influence_less").to_numpy()
    assert (np.abs(less) <= 1 + 1e-9).all() and not (np.abs(less) <= max(lrs)).all()
    assert np.allclose(out.column("influence_dot").to_numpy(), out_lr.column("influence_dot").to_numpy())


def test_lora_dropout_acts_in_the_warmup_only(tiny_llama, smol_tokenizer, tmp_path):
    lm = loaded_tiny_model(tiny_llama, smol_tokenizer)
    warm = WarmupSettings(fraction=1.0, epochs=1, learning_rate=1e-2, batch_size=2, micro_batch_size=2,
                          warmup_ratio=0.0, cutoff=128)
    store = Store(str(tmp_path / "store"))
    with_dropout = warmup_checkpoints(lm, SAMPLES, LoraSettings(**LORA), warm, store, progress=False)
    without = warmup_checkpoints(lm, SAMPLES, LoraSettings(**{**LORA, "dropout": 0.0}), warm, store, progress=False)
    assert with_dropout[0].url != without[0].url  # part of the warm-up's key
    name = next(n for n in without[0].weights if n.endswith("lora_B"))
    assert not torch.allclose(with_dropout[0].weights[name], without[0].weights[name])
    # Gradients are taken in eval mode: deterministic, and the same as without dropout.
    cfg = GradientsConfig(lora=LoraSettings(**LORA), projection={"dim": 128})
    runs = []
    for settings in (LoraSettings(**LORA), LoraSettings(**LORA), LoraSettings(**{**LORA, "dropout": 0.0})):
        with LoraGradients(lm.model, settings, with_dropout[0].weights) as wrapped:
            runs.append(gradient_features(lm, SAMPLES, cfg, lora=wrapped, progress=False).vectors)
    assert np.array_equal(runs[0], runs[1]) and np.allclose(runs[0], runs[2], rtol=1e-5, atol=1e-7)
