"""3DS Stage 2 on the tiny model: batched scorer == plain per-sample definitions."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch
from scoring_helpers import SAMPLES, loaded_tiny_model
from tiny_models import make_tiny_llama
from syllabus.scoring.reference import d1_plain, embedding_plain, greedy_plain, wd_plain

from syllabus.models.attention import LastLayerCapture, token_importance
from syllabus.models.chat import encode_pair, encode_prompt
from syllabus.models.engines import TransformersEngine, eos_ids
from syllabus.scoring.difficulty import DifficultyConfig, DifficultyScorer, is_content_text

@pytest.fixture(scope="module")
def eager_twin(tiny_llama, smol_tokenizer):
    """The same weights with the eager kernel, so attentions can be returned."""
    twin = make_tiny_llama(len(smol_tokenizer), attn_implementation="eager")
    twin.load_state_dict(tiny_llama.state_dict())
    return twin.eval()


def test_is_content_text():
    assert is_content_text("word") and is_content_text(" 42") and is_content_text("，好")
    assert not is_content_text("") and not is_content_text(" \n") and not is_content_text(" ...") \
        and not is_content_text("。")


def test_last_layer_attention_equals_eager_output_attentions_with_padding(tiny_llama, eager_twin, smol_tokenizer):
    tok = smol_tokenizer
    encs = [encode_pair(tok, s) for s in SAMPLES]  # mixed lengths: right padding in the batch
    engine = TransformersEngine(tiny_llama, tok, progress=False)
    ids, mask = engine.pad([e.input_ids for e in encs])
    with torch.no_grad(), LastLayerCapture(tiny_llama) as cap:
        tiny_llama(input_ids=ids, attention_mask=mask)
    for b, e in enumerate(encs):
        n = len(e.input_ids)
        with torch.no_grad():
            want = eager_twin(input_ids=torch.tensor([e.input_ids]), output_attentions=True).attentions[-1][0]
        got = cap.probs(b, n)
        assert got.shape == want.shape
        assert torch.allclose(got, want.float(), atol=1e-5)
        imp = token_importance(got)
        j = n // 2
        assert math.isclose(float(imp[j]), float(want[:, j:, j].sum(1).mean()) / (n - j), rel_tol=1e-4)


def test_batched_generation_equals_one_at_a_time(tiny_llama, smol_tokenizer):
    tok = smol_tokenizer
    prompts = [encode_prompt(tok, s).input_ids for s in SAMPLES]
    engine = TransformersEngine(tiny_llama, tok, batch_size=3, progress=False)
    got = engine.generate(prompts, max_new_tokens=6)
    stop = set(eos_ids(tiny_llama, tok))
    for p, g in zip(prompts, got):
        assert g == greedy_plain(tiny_llama, tok, p, 6, stop)


def test_scorer_matches_plain_definitions(tiny_llama, eager_twin, smol_tokenizer):
    tok = smol_tokenizer
    scorer = DifficultyScorer(DifficultyConfig(max_new_tokens=6, batch_size=3))
    out = scorer.score(pa.Table.from_pylist(SAMPLES), loaded_tiny_model(tiny_llama, tok))
    assert out.column_names == ["sample_id"] + scorer.columns()
    rows = out.to_pylist()
    for s, r in zip(SAMPLES, rows):
        assert r["sample_id"] == s["sample_id"]
        assert r["difficulty_status"] == "ok", r["difficulty_status"]
        # D1 from one pass over T(y) == a separate pass over P alone
        assert math.isclose(r["difficulty_d1"], d1_plain(eager_twin, tok, s), rel_tol=1e-4)
        assert math.isclose(r["difficulty_d3"], wd_plain(eager_twin, tok, s), rel_tol=1e-4)
        assert math.isclose(r["difficulty_d2"], wd_plain(eager_twin, tok, s, response=r["difficulty_response"]),
                            rel_tol=1e-4)
        emb = torch.tensor(r["difficulty_embedding"])
        assert torch.allclose(emb, embedding_plain(eager_twin, tok, s), atol=1e-4)
    assert scorer.last_stats["engine"]["batches"] >= 1


def test_bad_and_too_long_samples_get_a_status(tiny_llama, smol_tokenizer):
    bad = dict(SAMPLES[0], sample_id="bad", messages=[{"role": "user"}])  # no content: encoding fails
    long = dict(SAMPLES[1], sample_id="long", instruction="word " * 80)
    scorer = DifficultyScorer(max_new_tokens=4, cutoff=60)
    out = scorer.score(pa.Table.from_pylist([SAMPLES[0], bad, long]), loaded_tiny_model(tiny_llama, smol_tokenizer)).to_pylist()
    assert out[0]["difficulty_status"] == "ok"
    assert out[1]["difficulty_status"].startswith("error: ")
    assert out[2]["difficulty_status"] == "too_long" and out[2]["difficulty_d1"] != out[2]["difficulty_d1"]


def test_config_is_frozen_and_strict():
    with pytest.raises(Exception):
        DifficultyConfig(max_new_token=5)
    cfg = DifficultyConfig()
    with pytest.raises(Exception):
        cfg.cutoff = 5
