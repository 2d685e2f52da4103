"""Plain one-sample-at-a-time implementations of the methods.md definitions, used as the
reference the batched scorers must match: batch size 1, eager attention with every layer's
attention returned, full logits, separate passes per metric."""

from __future__ import annotations

import math

import torch

from syllabus.models.chat import encode_pair
from syllabus.scoring.difficulty import is_content_text


def full_forward(model, ids):
    """Eager forward of one sequence with all attentions; returns (logits, attentions, hidden)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model(input_ids=x, output_attentions=True, output_hidden_states=True)
    return out.logits[0], out.attentions, out.hidden_states[-1][0]


def nll_list(logits, ids):
    logp = torch.log_softmax(logits.double(), -1)
    return [math.nan] + [float(-logp[t - 1, ids[t]]) for t in range(1, len(ids))]


def d1_plain(model, tok, sample, cutoff=1024):
    enc = encode_pair(tok, sample, cutoff=cutoff)
    p_ids = enc.input_ids[: enc.prompt_len]  # a separate pass over P alone
    logits, _, _ = full_forward(model, p_ids)
    nll = nll_list(logits, p_ids)
    vals = [nll[j] for j in enc.instruction_positions if j > 0]
    return math.exp(sum(vals) / len(vals))


def wd_plain(model, tok, sample, response=None, cutoff=1024):
    enc = encode_pair(tok, sample, response=response, cutoff=cutoff)
    ids = enc.input_ids
    logits, attentions, _ = full_forward(model, ids)
    nll = nll_list(logits, ids)
    a = attentions[-1][0].double()  # [H, L, L] of the last layer
    length = len(ids)
    special = set(tok.all_special_ids)
    positions = [
        j for j in range(enc.prompt_len, length)
        if ids[j] not in special and is_content_text(tok.decode([ids[j]], skip_special_tokens=True))
    ]
    imp = {}
    for j in positions:
        per_head = [float(a[h, j:, j].sum()) / (length - j) for h in range(a.shape[0])]
        imp[j] = sum(per_head) / len(per_head)
    total = sum(imp.values())
    return math.exp(sum(imp[j] / total * nll[j] for j in positions))


def embedding_plain(model, tok, sample, cutoff=1024):
    enc = encode_pair(tok, sample, cutoff=cutoff)
    _, _, hidden = full_forward(model, enc.input_ids[: enc.prompt_len])
    return hidden.mean(0)


def greedy_plain(model, tok, prompt_ids, max_new_tokens, stop):
    ids = list(prompt_ids)
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt in stop:
                break
            ids.append(nxt)
            new.append(nxt)
    return new
