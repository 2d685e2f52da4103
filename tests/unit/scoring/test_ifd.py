"""IFD on the tiny model: batched == plain per-sample loss ratio; too_long handled."""

from __future__ import annotations

import math

import pyarrow as pa
import torch
from syllabus.scoring.reference import full_forward, nll_list
from scoring_helpers import SAMPLES, loaded_tiny_model

from syllabus.models.chat import encode_pair
from syllabus.scoring.ifd import IFDScorer, response_alone_ids


def test_ifd_matches_plain_ratio(tiny_llama, smol_tokenizer):
    tok = smol_tokenizer
    out = IFDScorer(batch_size=2).score(pa.Table.from_pylist(SAMPLES), loaded_tiny_model(tiny_llama, tok)).to_pylist()
    for s, r in zip(SAMPLES, out):
        enc = encode_pair(tok, s)
        nll = nll_list(full_forward(tiny_llama, enc.input_ids)[0], enc.input_ids)
        cond = sum(nll[enc.prompt_len :]) / (len(enc.input_ids) - enc.prompt_len)
        alone_ids = response_alone_ids(tok, s["output"], 1024)
        nll_a = nll_list(full_forward(tiny_llama, alone_ids)[0], alone_ids)[1:]
        alone = sum(nll_a) / len(nll_a)
        assert r["ifd_status"] == "ok"
        assert math.isclose(r["ifd_nll_conditioned"], cond, rel_tol=1e-5)
        assert math.isclose(r["ifd_nll_alone"], alone, rel_tol=1e-5)
        assert math.isclose(r["ifd_score"], cond / alone, rel_tol=1e-5)


def test_response_alone_starts_with_start_token(smol_tokenizer):
    ids = response_alone_ids(smol_tokenizer, "Hello.", 1024)
    assert ids[0] == smol_tokenizer.bos_token_id
    assert smol_tokenizer.decode(ids[1:]) == "Hello.<|im_end|>"


def test_ifd_too_long(tiny_llama, smol_tokenizer):
    out = IFDScorer(cutoff=8).score(pa.Table.from_pylist(SAMPLES[:1]), loaded_tiny_model(tiny_llama, smol_tokenizer)).to_pylist()
    assert out[0]["ifd_status"] == "too_long" and math.isnan(out[0]["ifd_score"])


def test_a_cut_response_scores_the_same_answer_tokens_in_both_passes(tiny_llama, smol_tokenizer):
    """A response longer than the cutoff: the "alone" mean covers exactly the answer tokens the
    conditioned mean covers (version 1 cut both sequences at the cutoff, so the "alone" one
    ran on for up to the prompt's length more tokens); an uncut sample is unchanged."""
    tok = smol_tokenizer
    long = {"sample_id": "long", "instruction": "Describe how the kidneys filter blood.", "input": "",
            "output": " ".join(["The glomerulus filters plasma, and the tubules take back water and salts."] * 10),
            "messages": None}
    cutoff = 80
    out = IFDScorer(cutoff=cutoff).score(pa.Table.from_pylist([long, SAMPLES[0]]),
                                         loaded_tiny_model(tiny_llama, tok)).to_pylist()
    enc = encode_pair(tok, long, cutoff=cutoff)
    assert enc.truncated and len(enc.input_ids) == cutoff
    answer = enc.input_ids[enc.prompt_len:]
    alone_ids = [tok.bos_token_id] + tok(long["output"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
    alone_ids = alone_ids[: 1 + len(answer)]
    assert alone_ids[1:] == answer
    nll_c = nll_list(full_forward(tiny_llama, enc.input_ids)[0], enc.input_ids)[enc.prompt_len:]
    nll_a = nll_list(full_forward(tiny_llama, alone_ids)[0], alone_ids)[1:]
    cond, alone = sum(nll_c) / len(nll_c), sum(nll_a) / len(nll_a)
    assert out[0]["ifd_status"] == "ok"
    assert math.isclose(out[0]["ifd_nll_conditioned"], cond, rel_tol=1e-5)
    assert math.isclose(out[0]["ifd_nll_alone"], alone, rel_tol=1e-5)
    assert math.isclose(out[0]["ifd_score"], cond / alone, rel_tol=1e-5)
    # The uncut sample: "alone" is the whole [start] + y + E, as in version 1.
    ids = response_alone_ids(tok, SAMPLES[0]["output"], cutoff)
    nll_s = nll_list(full_forward(tiny_llama, ids)[0], ids)[1:]
    assert math.isclose(out[1]["ifd_nll_alone"], sum(nll_s) / len(nll_s), rel_tol=1e-5)
