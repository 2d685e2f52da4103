"""IFD, Instruction-Following Difficulty (Li et al., NAACL 2024; arXiv 2308.12032).

``IFD = mean NLL(y | P) / mean NLL(y alone)`` (methods.md, "Baselines"). The conditioned
loss is over the response positions of ``T(y) = P + y + E``; the unconditioned one over the
tokens of ``y + E`` after a single start token (BOS, else EOS), so every response token has
a prediction (ours: the NAACL code relies on the tokenizer adding BOS). Both sequences are
truncated at the cutoff. IFD near or above 1 means the instruction does not help predict the
response; selection drops IFD > 1 and takes the highest. Higher = harder.

Both passes go through the engine's ``token_nll`` (the shared token-loss function), so the
transformers and vLLM engines compute the same numbers.

Columns: ``ifd_score``, ``ifd_nll_conditioned``, ``ifd_nll_alone``, ``ifd_status``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from syllabus import registry
from syllabus.models.chat import DEFAULT_CUTOFF, encode_pair, end_of_turn_text
from syllabus.models.engines import TransformersEngine
from syllabus.scoring.base import Scorer, ScorerConfig, error_status


class IFDConfig(ScorerConfig):
    cutoff: int = DEFAULT_CUTOFF
    batch_size: int = 8
    max_batch_tokens: int = 16384
    bucket: bool = True


def response_alone_ids(tokenizer: Any, response: str, cutoff: int) -> list[int]:
    """``[start] + tokenize(y + E)`` truncated at ``cutoff``."""
    eot = end_of_turn_text(tokenizer)
    ids = tokenizer(response + (eot or ""), add_special_tokens=False)["input_ids"]
    if eot is None and tokenizer.eos_token_id is not None:
        ids = ids + [int(tokenizer.eos_token_id)]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return ([int(start)] + list(ids))[:cutoff]


@registry.scorer("ifd")
class IFDScorer(Scorer):
    name: ClassVar[str] = "ifd"
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = IFDConfig

    def columns(self) -> list[str]:
        return ["ifd_score", "ifd_nll_conditioned", "ifd_nll_alone", "ifd_status"]

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        cfg: IFDConfig = self.config
        tok = lm.tokenizer
        engine = engine or TransformersEngine(lm.model, tok, batch_size=cfg.batch_size,
                                              max_batch_tokens=cfg.max_batch_tokens, bucket=cfg.bucket)
        rows = table.to_pylist()
        n = len(rows)
        status = ["ok"] * n
        seqs, wanted, owner = [], [], []
        for i, row in enumerate(rows):
            try:
                enc = encode_pair(tok, row, cutoff=cfg.cutoff)
                if enc.status != "ok":
                    status[i] = enc.status
                    continue
                alone = response_alone_ids(tok, row["output"], cfg.cutoff)
            except Exception as exc:
                status[i] = error_status(exc)
                continue
            seqs += [enc.input_ids, alone]
            wanted += [enc.response_positions, list(range(1, len(alone)))]
            owner.append(i)
        nll = engine.token_nll(seqs, wanted) if seqs else []
        cond = [math.nan] * n
        alone_nll = [math.nan] * n
        for k, i in enumerate(owner):
            c, a = nll[2 * k], nll[2 * k + 1]
            cond[i] = float(np.nanmean(c)) if np.isfinite(c).any() else math.nan
            alone_nll[i] = float(np.nanmean(a)) if np.isfinite(a).any() else math.nan
            if not (math.isfinite(cond[i]) and math.isfinite(alone_nll[i])):
                status[i] = "error: no response tokens within the cutoff"
        score = [c / a if math.isfinite(c) and math.isfinite(a) and a > 0 else math.nan
                 for c, a in zip(cond, alone_nll)]
        self.last_stats = {"engine": engine.stats.as_dict()}
        return pa.table(
            {
                "sample_id": table.column("sample_id"),
                "ifd_score": pa.array(score, pa.float64()),
                "ifd_nll_conditioned": pa.array(cond, pa.float64()),
                "ifd_nll_alone": pa.array(alone_nll, pa.float64()),
                "ifd_status": pa.array(status, pa.string()),
            }
        )
