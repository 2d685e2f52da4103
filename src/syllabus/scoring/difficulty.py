"""3DS Stage 2: decomposed difficulty (Ding et al., EMNLP 2025; arXiv 2410.10901).

Definitions (methods.md, "Stage 2"), all judged by the target model ``M`` itself:

- D1, instruction understanding: ``exp(mean NLL over the instruction positions of P)``.
- Token importance from the LAST layer's attention: ``I(j) = mean_h sum_{q>=j} A[h,q,j] / (L-j)``.
- ``WD(r) = exp(sum_j w_j NLL_j)``, ``w_j = I(j) / sum_k I(k)`` over response positions whose
  decoded text (special tokens skipped) is not empty, whitespace or punctuation only.
- D2, response confidence: ``WD(r_hat)``, ``r_hat`` the model's own greedy response.
- D3, response correctness: ``WD(y)`` on the reference response.
- Embedding: mean over the positions of ``P`` of the last-layer hidden state.

Higher = harder for all three. One forward pass over ``T(y)`` gives D1, D3 and the
embedding (causal attention: the prompt positions of ``T(y)`` are those of ``P``); one over
``T(r_hat)`` gives D2. Both run length-bucketed in batches with the sdpa kernel; the last
layer's attention probabilities are recomputed for that layer alone
(:mod:`syllabus.models.attention`).

Columns: ``difficulty_d1``, ``difficulty_d2``, ``difficulty_d3``, ``difficulty_embedding``
(list<float32>), ``difficulty_response`` (the generated ``r_hat``), ``difficulty_status``.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import torch

from syllabus.models.attention import LastLayerCapture, token_importance
from syllabus.models.chat import DEFAULT_CUTOFF, EncodedPair, encode_pair, encode_prompt
from syllabus.models.engines import TransformersEngine, decoder_and_head
from syllabus.models.losses import span_mean, token_nll_from_hidden, weighted_exp
from syllabus.scoring.base import Failed, Scorer, ScorerConfig, error_status, per_item_fallback

log = logging.getLogger(__name__)


class DifficultyConfig(ScorerConfig):
    cutoff: int = DEFAULT_CUTOFF
    max_new_tokens: int = 256
    batch_size: int = 8
    generate_batch_size: int = 32
    max_batch_tokens: int = 16384
    bucket: bool = True
    # "content": drop positions whose text is empty/whitespace/punctuation (ours, methods.md);
    # "all": weigh every response position.
    token_filter: Literal["content", "all"] = "content"
    embedding: bool = True


def is_content_text(text: str) -> bool:
    """Not empty, not whitespace only, not punctuation only (language-agnostic stand-in for
    the paper's part-of-speech filter)."""
    stripped = "".join(text.split())
    return bool(stripped) and not all(unicodedata.category(c).startswith("P") for c in stripped)


class _ContentTokens:
    """Memoised ``is_content_text(decode([id], skip_special_tokens=True))`` per token id."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.cache: dict[int, bool] = {}

    def __call__(self, token_id: int) -> bool:
        hit = self.cache.get(token_id)
        if hit is None:
            hit = token_id not in self.special and is_content_text(
                self.tokenizer.decode([token_id], skip_special_tokens=True)
            )
            self.cache[token_id] = hit
        return hit


@dataclass
class PassResult:
    """What one forward pass over ``T`` yields for one sequence."""

    d_instruction: float  # exp(mean NLL over instruction positions): D1 when T = T(y)
    d_response: float  # WD over the response: D3 for T(y), D2 for T(r_hat)
    embedding: np.ndarray | None
    response_tokens: int  # positions that carried weight


def analyse_batch(
    model: Any,
    engine: TransformersEngine,
    encs: list[EncodedPair],
    content: _ContentTokens | None,
    want_embedding: bool,
) -> list[PassResult]:
    """One sdpa forward over a right-padded batch of ``T`` sequences; D-values per sequence."""
    body, head = decoder_and_head(model)
    ids, mask = engine.pad([e.input_ids for e in encs])
    wanted = torch.zeros_like(mask, dtype=torch.bool)
    for b, e in enumerate(encs):
        wanted[b, e.instruction_positions] = True
        wanted[b, e.prompt_len : len(e.input_ids)] = True
    with torch.inference_mode(), LastLayerCapture(model) as cap:
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        nll = token_nll_from_hidden(hidden, head, ids, wanted)
        results = []
        for b, e in enumerate(encs):
            length = len(e.input_ids)
            d_inst = math.exp(span_mean(nll[b], e.instruction_positions)) if e.instruction_positions else math.nan
            positions = list(range(e.prompt_len, length))
            if content is not None:
                positions = [j for j in positions if content(e.input_ids[j])]
            d_resp = math.nan
            if positions:
                importance = token_importance(cap.probs(b, length))
                pos = torch.tensor(positions, device=importance.device)
                d_resp = weighted_exp(nll[b, pos].double().tolist(), importance[pos].double().tolist())
            emb = None
            if want_embedding:
                emb = hidden[b, : e.prompt_len].float().mean(dim=0).cpu().numpy().astype(np.float32)
            results.append(PassResult(d_inst, d_resp, emb, len(positions)))
    return results


class DifficultyScorer(Scorer):
    name: ClassVar[str] = "difficulty"
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = DifficultyConfig

    def columns(self) -> list[str]:
        return [f"difficulty_{c}" for c in ("d1", "d2", "d3", "embedding", "response", "status")]

    def score(self, table: pa.Table, lm: Any, engine: TransformersEngine | None = None) -> pa.Table:
        cfg: DifficultyConfig = self.config
        tok, model = lm.tokenizer, lm.model
        engine = engine or TransformersEngine(model, tok, batch_size=cfg.batch_size,
                                              generate_batch_size=cfg.generate_batch_size,
                                              max_batch_tokens=cfg.max_batch_tokens, bucket=cfg.bucket)
        rows = table.to_pylist()
        n = len(rows)
        status = ["ok"] * n
        d1 = [math.nan] * n
        d2 = [math.nan] * n
        d3 = [math.nan] * n
        emb: list[list[float] | None] = [None] * n
        generated: list[str | None] = [None] * n

        refs: dict[int, EncodedPair] = {}
        prompts: dict[int, EncodedPair] = {}
        for i, row in enumerate(rows):
            try:
                enc = encode_pair(tok, row, cutoff=cfg.cutoff)
                if enc.status != "ok":
                    status[i] = enc.status
                    continue
                refs[i] = enc
                prompts[i] = encode_prompt(tok, row, cutoff=cfg.cutoff)
            except Exception as exc:  # a malformed sample must not end the shard
                status[i] = error_status(exc)

        # r_hat: greedy, batched, bucketed by prompt length.
        order = sorted(prompts)
        gen_ids = engine.generate([prompts[i].input_ids for i in order], cfg.max_new_tokens) if order else []
        owns: dict[int, EncodedPair] = {}
        for i, ids in zip(order, gen_ids):
            generated[i] = tok.decode(ids, skip_special_tokens=True)
            owns[i] = encode_pair(tok, rows[i], response=generated[i], cutoff=cfg.cutoff)

        content = _ContentTokens(tok) if cfg.token_filter == "content" else None
        items = [(i, "ref", refs[i]) for i in sorted(refs)] + [(i, "own", owns[i]) for i in sorted(owns)]

        def run(idx: list[int]) -> list[PassResult]:
            encs = [items[k][2] for k in idx]
            want_emb = cfg.embedding and any(items[k][1] == "ref" for k in idx)
            return analyse_batch(model, engine, encs, content, want_emb)

        results = engine.map_batches([len(it[2].input_ids) for it in items], per_item_fallback(run),
                                     desc="difficulty forward")
        for (i, kind, _), res in zip(items, results):
            if isinstance(res, Failed):
                status[i] = res.status
                continue
            if kind == "ref":
                d1[i], d3[i] = res.d_instruction, res.d_response
                if res.embedding is not None:
                    emb[i] = res.embedding.tolist()
            else:
                d2[i] = res.d_response
        for i in refs:
            if status[i] != "ok":
                continue
            if not math.isfinite(d1[i]):
                status[i] = "error: no instruction tokens found in the prompt"
            elif not math.isfinite(d3[i]):
                status[i] = "error: the reference response has no content tokens within the cutoff"
            elif not math.isfinite(d2[i]):
                status[i] = "error: the model's own response is empty"
        self.last_stats = {"engine": engine.stats.as_dict()}
        return pa.table(
            {
                "sample_id": table.column("sample_id"),
                "difficulty_d1": pa.array(d1, pa.float64()),
                "difficulty_d2": pa.array(d2, pa.float64()),
                "difficulty_d3": pa.array(d3, pa.float64()),
                "difficulty_embedding": pa.array(emb, pa.list_(pa.float32())),
                "difficulty_response": pa.array(generated, pa.string()),
                "difficulty_status": pa.array(status, pa.string()),
            }
        )
