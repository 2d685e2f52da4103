"""Open QA against reference answers: reference NLL, and BLEU/ROUGE of generated answers.

- **Reference NLL**: the mean NLL of the reference answer's tokens (response positions of
  ``T = P + y + E``, the same positions and templating training uses) under the model. A
  smooth metric: it moves with small training effects that accuracy on ~1,000 items cannot
  resolve. Reported per item, as the mean of per-item means (``ref_nll``) and token-weighted
  (``ref_nll_token``, whose exp is the reference perplexity). Lower is better.
- **Generation metrics**: greedy answers (``max_new_tokens``) scored against the references
  with corpus BLEU-1/BLEU-4 and mean ROUGE-1/2/L F (see :mod:`syllabus.evaluation.metrics`;
  character level for Chinese). Higher is better.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from syllabus.evaluation import metrics
from syllabus.evaluation.benchmarks import QAItem
from syllabus.models.chat import encode_pair, encode_prompt

log = logging.getLogger(__name__)


def reference_nll(engine: Any, items: Sequence[QAItem], cutoff: int = 1024) -> list[dict]:
    """Per item: the mean and summed NLL of the reference's response tokens, and their count."""
    tok = engine.tokenizer
    encs = [encode_pair(tok, {"instruction": it.question}, response=it.reference, cutoff=cutoff) for it in items]
    ok = [k for k, e in enumerate(encs) if e.status == "ok" and len(e.input_ids) > e.prompt_len]
    nll = engine.token_nll([encs[k].input_ids for k in ok], [encs[k].response_positions for k in ok]) if ok else []
    by_item = dict(zip(ok, nll))
    rows = []
    for k, (item, enc) in enumerate(zip(items, encs)):
        if k in by_item:
            values = by_item[k][enc.response_positions]
            rows.append({"item_id": item.item_id, "subject": item.subject, "ref_nll": float(np.nanmean(values)),
                         "ref_nll_sum": float(np.nansum(values)), "ref_tokens": int(len(values)),
                         "truncated": enc.truncated, "status": "ok"})
        else:
            rows.append({"item_id": item.item_id, "subject": item.subject, "ref_nll": math.nan, "ref_nll_sum": math.nan,
                         "ref_tokens": 0, "truncated": enc.truncated, "status": enc.status})
    return rows


def generate_answers(engine: Any, questions: Sequence[str], max_new_tokens: int = 256, cutoff: int = 1024) -> list[str]:
    """Greedy answers to ``questions`` through the chat template."""
    tok = engine.tokenizer
    prompts = [encode_prompt(tok, {"instruction": q}, cutoff=cutoff).input_ids[-cutoff:] for q in questions]
    outs = engine.generate(prompts, max_new_tokens=max_new_tokens) if prompts else []
    return [tok.decode(o, skip_special_tokens=True).strip() for o in outs]


def summarise_nll(rows: Sequence[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return {"ref_nll": math.nan, "ref_nll_token": math.nan, "ref_ppl": math.nan, "ref_items": 0}
    per_item = [r["ref_nll"] for r in ok]
    lo, hi = metrics.bootstrap_ci(per_item)
    token_mean = sum(r["ref_nll_sum"] for r in ok) / sum(r["ref_tokens"] for r in ok)
    return {"ref_nll": float(np.mean(per_item)), "ref_nll_ci_low": lo, "ref_nll_ci_high": hi,
            "ref_nll_token": token_mean, "ref_ppl": math.exp(token_mean), "ref_items": len(ok)}


def score_generations(hypotheses: Sequence[str], references: Sequence[str], lang: str | None = None) -> tuple[list[dict], dict]:
    """Per-item sentence BLEU and ROUGE, and the corpus-level summary."""
    lang = lang or metrics.detect_language(references)
    per_rouge = metrics.rouge_per_item(hypotheses, references, lang=lang)
    per_item = [dict(metrics.sentence_bleu(h, r, lang=lang), **rg) for h, r, rg in zip(hypotheses, references, per_rouge)]
    summary = dict(metrics.bleu_scores(hypotheses, references, lang=lang))
    summary.update({k: float(np.mean([p[k] for p in per_rouge])) if per_rouge else math.nan for k in ("rouge1", "rouge2", "rougeL")})
    summary["lang"] = lang
    return per_item, summary
