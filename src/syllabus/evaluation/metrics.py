"""Evaluation metrics: accuracy with a bootstrap interval, BLEU-1/BLEU-4 and ROUGE.

- Accuracy intervals are percentile bootstrap intervals (Efron & Tibshirani 1993): resample
  the per-item 0/1 outcomes with replacement ``n_resamples`` times (seeded) and take the
  2.5th and 97.5th percentiles of the resampled means. Higher accuracy is better.
- BLEU (Papineni et al., ACL 2002) comes from sacrebleu (Post, WMT 2018), corpus level:
  BLEU-1 is BLEU with ``max_ngram_order=1``, BLEU-4 the standard four-gram BLEU, both with
  the brevity penalty, on the 0-100 scale. Chinese text uses sacrebleu's ``zh`` tokenizer
  (one token per CJK character); everything else its default ``13a``.
- ROUGE-1/2/L F-measure (Lin, 2004) comes from Google's rouge-score, averaged over items,
  on the 0-1 scale. Its default tokenizer keeps only ``[a-z0-9]`` and would erase Chinese,
  so Chinese text is scored on characters instead (the usual practice for Chinese ROUGE).
Higher is better for all of them.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def is_chinese(text: str, threshold: float = 0.3) -> bool:
    """True when at least ``threshold`` of the non-space characters are CJK ideographs."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return False
    return sum(1 for c in chars if _CJK.match(c)) / len(chars) >= threshold


def detect_language(texts: Sequence[str]) -> str:
    """``"zh"`` when most texts are Chinese, else ``"en"`` (the tokenisation choice, not a classifier)."""
    if not texts:
        return "en"
    return "zh" if sum(is_chinese(t) for t in texts) * 2 > len(texts) else "en"


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``; ``(nan, nan)`` when empty."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_resamples, arr.size))
    means = arr[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def accuracy_summary(
    correct: Sequence[bool | float],
    subjects: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Overall and per-subject accuracy, each with its count and bootstrap 95% interval.

    Overall accuracy is micro-averaged (every item counts once), as MMLU papers report it.
    """
    values = np.asarray(correct, dtype=np.float64)

    def one(v: np.ndarray) -> dict:
        lo, hi = bootstrap_ci(v, n_resamples=n_resamples, seed=seed)
        return {"accuracy": float(v.mean()) if v.size else float("nan"), "n": int(v.size), "ci_low": lo, "ci_high": hi}

    out = one(values)
    if subjects is not None:
        subj = np.asarray(list(subjects), dtype=object)
        out["per_subject"] = {str(s): one(values[subj == s]) for s in sorted(set(subj.tolist()))}
    return out


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str], lang: str | None = None) -> dict:
    """Corpus BLEU-1 and BLEU-4 (0-100) with one reference per hypothesis."""
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references; pass one reference each")
    lang = lang or detect_language(references)
    tokenize = "zh" if lang == "zh" else "13a"
    refs = [list(references)]
    bleu1 = BLEU(max_ngram_order=1, tokenize=tokenize).corpus_score(list(hypotheses), refs)
    bleu4 = BLEU(max_ngram_order=4, tokenize=tokenize).corpus_score(list(hypotheses), refs)
    return {"bleu1": float(bleu1.score), "bleu4": float(bleu4.score)}


def sentence_bleu(hypothesis: str, reference: str, lang: str | None = None) -> dict:
    """Per-item BLEU-1/BLEU-4 (sacrebleu's sentence BLEU, exponential smoothing) for results tables."""
    from sacrebleu.metrics import BLEU

    lang = lang or ("zh" if is_chinese(reference) else "en")
    tokenize = "zh" if lang == "zh" else "13a"
    b1 = BLEU(max_ngram_order=1, tokenize=tokenize, effective_order=True).sentence_score(hypothesis, [reference])
    b4 = BLEU(max_ngram_order=4, tokenize=tokenize, effective_order=True).sentence_score(hypothesis, [reference])
    return {"bleu1": float(b1.score), "bleu4": float(b4.score)}


class _CharTokenizer:
    """rouge-score tokenizer for Chinese: one token per non-space character."""

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


def rouge_per_item(hypotheses: Sequence[str], references: Sequence[str], lang: str | None = None) -> list[dict]:
    """ROUGE-1, ROUGE-2, ROUGE-L F-measures (0-1) for each (hypothesis, reference) pair."""
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references; pass one reference each")
    lang = lang or detect_language(references)
    tokenizer = _CharTokenizer() if lang == "zh" else None
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False, tokenizer=tokenizer)
    out = []
    for hyp, ref in zip(hypotheses, references):
        s = scorer.score(ref, hyp)  # rouge-score takes (target, prediction)
        out.append({k: float(v.fmeasure) for k, v in s.items()})
    return out


def rouge_scores(hypotheses: Sequence[str], references: Sequence[str], lang: str | None = None) -> dict:
    """Mean ROUGE-1/2/L F-measure over items."""
    per = rouge_per_item(hypotheses, references, lang=lang)
    if not per:
        return {"rouge1": float("nan"), "rouge2": float("nan"), "rougeL": float("nan")}
    return {k: float(np.mean([p[k] for p in per])) for k in ("rouge1", "rouge2", "rougeL")}
