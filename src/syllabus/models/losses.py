"""Token losses over spans: the one function IFD, D1, D3, D2 and training/eval NLL share.

``NLL_t = -log p_M(token_t | tokens_<t)`` (methods.md notation) is read from the logits at
position ``t - 1``. Position 0 has no prediction and is ``nan``.

Two entry points compute the same numbers:
- :func:`token_nll` from logits (``[B, L, V]``), for callers that already have them;
- :func:`token_nll_from_hidden` from the last hidden state and the output head, computing
  logits only at the positions asked for, chunk by chunk. With a 49k vocabulary the full
  ``[B, L, V]`` logits of a batch are gigabytes and most rows (padding, template tokens) are
  never read; this path never materialises them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 1024


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token NLL ``[B, L]`` (float32) from logits ``[B, L, V]``; column 0 is nan."""
    if logits.dim() == 2:
        return token_nll(logits[None], input_ids[None])[0]
    b, length, _ = logits.shape
    out = torch.full((b, length), math.nan, dtype=torch.float32, device=logits.device)
    if length > 1:
        shifted = logits[:, :-1].float()
        out[:, 1:] = F.cross_entropy(
            shifted.reshape(-1, shifted.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
        ).view(b, length - 1)
    return out


def token_nll_from_hidden(
    hidden: torch.Tensor,
    lm_head: torch.nn.Module,
    input_ids: torch.Tensor,
    wanted: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    logit_scale: float | None = None,
) -> torch.Tensor:
    """Per-token NLL ``[B, L]`` from the final hidden state ``[B, L, H]`` (after the final
    norm) and the output head. ``wanted`` (bool ``[B, L]``) names the target positions to
    compute; the rest are nan. Only ``chunk_size`` rows of logits exist at a time."""
    b, length, hdim = hidden.shape
    out = torch.full((b, length), math.nan, dtype=torch.float32, device=hidden.device)
    mask = torch.zeros((b, length), dtype=torch.bool, device=hidden.device)
    if wanted is None:
        mask[:, 1:] = True
    else:
        mask[:, 1:] = wanted[:, 1:].to(hidden.device)
    bi, ti = mask.nonzero(as_tuple=True)
    if bi.numel() == 0:
        return out
    src = hidden[bi, ti - 1]  # the state that predicts token t
    targets = input_ids.to(hidden.device)[bi, ti]
    values = []
    for start in range(0, src.shape[0], chunk_size):
        logits = lm_head(src[start : start + chunk_size]).float()
        if logit_scale is not None:
            logits = logits * logit_scale
        values.append(F.cross_entropy(logits, targets[start : start + chunk_size], reduction="none"))
    out[bi, ti] = torch.cat(values)
    return out


def span_mean(nll_row: torch.Tensor | Sequence[float], positions: Sequence[int]) -> float:
    """Mean NLL over ``positions`` of one row; nan for an empty span."""
    positions = [p for p in positions if p > 0]  # position 0 has no prediction
    if not positions:
        return math.nan
    row = nll_row if isinstance(nll_row, torch.Tensor) else torch.tensor(nll_row)
    return float(row[list(positions)].double().mean())


def weighted_mean(nll: Sequence[float], weights: Sequence[float]) -> float:
    """``sum_j w_j * NLL_j / sum_k w_k``: the 3DS weighted difficulty before the ``exp`` (what the
    authors' code reports); nan when there is nothing to weigh."""
    total = float(sum(weights))
    if not nll or total <= 0 or not math.isfinite(total):
        return math.nan
    return sum(float(w) * float(v) for w, v in zip(weights, nll)) / total


def weighted_exp(nll: Sequence[float], weights: Sequence[float]) -> float:
    """``exp(sum_j w_j * NLL_j / sum_k w_k)``: the 3DS weighted difficulty (methods.md, Stage 2);
    nan when there is nothing to weigh."""
    value = weighted_mean(nll, weights)
    return math.exp(value) if math.isfinite(value) else math.nan


def perplexity(mean_nll: float) -> float:
    return math.exp(mean_nll) if math.isfinite(mean_nll) else math.nan
