"""Token losses over spans: the logits path and the hidden-state path agree with a plain loop."""

from __future__ import annotations

import math

import torch

from syllabus.models.losses import span_mean, token_nll, token_nll_from_hidden, weighted_exp


def _plain_nll(logits_row, ids_row):
    out = [math.nan]
    for t in range(1, len(ids_row)):
        logp = torch.log_softmax(logits_row[t - 1].double(), -1)
        out.append(float(-logp[ids_row[t]]))
    return out


def test_token_nll_matches_plain_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 11, generator=g)
    ids = torch.randint(0, 11, (2, 7), generator=g)
    got = token_nll(logits, ids)
    for b in range(2):
        want = _plain_nll(logits[b], ids[b].tolist())
        assert math.isnan(got[b, 0])
        assert torch.allclose(got[b, 1:].double(), torch.tensor(want[1:], dtype=torch.float64), atol=1e-5)


def test_token_nll_from_hidden_equals_logits_path_on_tiny_model(tiny_llama):
    ids = torch.randint(0, tiny_llama.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = tiny_llama(input_ids=ids, output_hidden_states=True)
        full = token_nll(out.logits, ids)
        wanted = torch.zeros_like(ids, dtype=torch.bool)
        wanted[0, 3:6] = True
        wanted[1, 1:] = True
        part = token_nll_from_hidden(out.hidden_states[-1], tiny_llama.lm_head, ids, wanted, chunk_size=4)
    assert torch.allclose(part[wanted], full[wanted], atol=1e-4)
    assert torch.isnan(part[~wanted]).all()
    # different token predictions give different losses (the fixture is not degenerate)
    assert full[1, 1:].std() > 0.1


def test_span_mean_and_weighted_exp():
    row = torch.tensor([math.nan, 1.0, 2.0, 4.0])
    assert span_mean(row, [1, 3]) == 2.5
    assert span_mean(row, [0]) != span_mean(row, [0])  # nan: position 0 has no prediction
    assert math.isclose(weighted_exp([1.0, 3.0], [1.0, 3.0]), math.exp(2.5))
    assert math.isnan(weighted_exp([], []))
