"""Model judges: pairwise win rate and the clinical rubric.

A judge answers a prompt with one of a few short choices (``A``/``B``, or a digit ``1``-``5``)
and returns a probability for each choice, read from the next-token distribution (the
expected-score reading of methods.md, 3DS stage 1 "ours"): finer than one sampled token and
needs no decoding. Two kinds:

- :class:`LocalJudge`: any local causal LM, one forward pass per prompt through its chat template;
- :class:`OpenAIJudge`: any OpenAI-compatible ``/chat/completions`` endpoint over plain HTTP
  (``base_url`` and the key from the config or ``SYLLABUS_JUDGE_BASE_URL`` /
  ``SYLLABUS_JUDGE_API_KEY``), asking for ``top_logprobs`` of the first token; a server that
  returns no log-probabilities falls back to the choice named in the reply text.

**Pairwise win rate** (AlpacaEval/MT-Bench style): for each question the two answers are
shown in a seeded random order (judges favour a position); the probability that model 1's
answer is better is read back in model 1's terms. The outcome is 1 when that probability is
above 1/2, 0 below, 1/2 at a tie; the win rate is their mean, with a bootstrap 95% interval.
Higher favours model 1.

**Clinical rubric** (the DIQ paper's clinical judge dimensions, arXiv 2508.01450):
differential diagnosis, safety check, evidence citation, each rated 1-5; the score is the
expected rating. Higher is better. The prompt wording is ours.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import urllib.error
import urllib.request
from typing import Any, Literal, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from syllabus.evaluation.metrics import bootstrap_ci

log = logging.getLogger(__name__)

RUBRIC: dict[str, str] = {
    "differential_diagnosis": (
        "Differential diagnosis: does the answer consider the plausible alternative causes or conditions, "
        "and say how they would be told apart, instead of fixing on one explanation?"
    ),
    "safety_check": (
        "Safety check: does the answer flag red-flag symptoms, contraindications and when to seek urgent care, "
        "and avoid advice that could harm the patient?"
    ),
    "evidence_citation": (
        "Evidence citation: does the answer ground its claims in established guidelines, studies or accepted "
        "medical knowledge, naming them where it matters, rather than asserting without support?"
    ),
}
SCORES = ("1", "2", "3", "4", "5")

PAIRWISE_PROMPT = """You are an expert physician comparing two answers to a patient's medical question.

Question:
{question}

Answer A:
{answer_a}

Answer B:
{answer_b}

Which answer is more accurate, complete and safe for the patient? Reply with the single letter A or B."""

RUBRIC_PROMPT = """You are an expert physician grading an answer to a medical question on one criterion.

Question:
{question}

Answer:
{answer}

Criterion. {criterion}

Rate the answer on this criterion from 1 (very poor) to 5 (excellent). Reply with a single digit from 1 to 5."""


class Judge(Protocol):
    def choice_probs(self, prompt: str, choices: Sequence[str]) -> list[float]:
        """Probabilities of each choice as the reply's first token (renormalised to sum to 1)."""


class JudgeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["local", "openai"] = "local"
    model: str = "smollm2-135m"
    base_url: str | None = None  # openai: e.g. http://127.0.0.1:8000/v1
    api_key: str | None = None  # openai: default $SYLLABUS_JUDGE_API_KEY
    timeout: float = Field(60.0, gt=0)
    top_logprobs: int = Field(20, ge=1, le=20)
    seed: int = 0


def _normalise(masses: Sequence[float]) -> list[float]:
    total = float(sum(masses))
    if not math.isfinite(total) or total <= 0:
        return [math.nan] * len(masses)
    return [float(m) / total for m in masses]


class LocalJudge:
    """A local causal LM as judge: next-token probabilities of the choices after ``P``."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def from_spec(cls, spec: str) -> "LocalJudge":
        from syllabus.models import load_model

        lm = load_model(spec)
        return cls(lm.model, lm.tokenizer)

    def _choice_ids(self, choice: str) -> list[int]:
        ids = set()
        for text in (choice, " " + choice):
            enc = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1:
                ids.add(int(enc[0]))
        if not ids:
            raise ValueError(f"judge choice {choice!r} is not a single token for this tokenizer; use one-token choices")
        return sorted(ids)

    def choice_probs(self, prompt: str, choices: Sequence[str]) -> list[float]:
        import torch

        from syllabus.models.chat import encode_prompt

        ids = encode_prompt(self.tokenizer, {"instruction": prompt}).input_ids
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=device), logits_to_keep=1).logits[0, -1]
            probs = torch.softmax(logits.float(), dim=-1)
        return _normalise([float(probs[self._choice_ids(c)].sum()) for c in choices])


class OpenAIJudge:
    """An OpenAI-compatible chat-completions endpoint as judge (stdlib HTTP, no SDK)."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 top_logprobs: int = 20):
        base_url = base_url or os.environ.get("SYLLABUS_JUDGE_BASE_URL")
        if not base_url:
            raise ValueError("the OpenAI-compatible judge needs a base URL: set judge base_url or SYLLABUS_JUDGE_BASE_URL, "
                             "e.g. http://127.0.0.1:8000/v1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("SYLLABUS_JUDGE_API_KEY", "")
        self.timeout = timeout
        self.top_logprobs = top_logprobs

    def _post(self, payload: dict) -> dict:
        data = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()[:300].decode("utf-8", "replace")
            raise RuntimeError(f"judge endpoint {self.url} answered HTTP {exc.code}: {body}; check the model name and key") from exc
        except urllib.error.URLError as exc:
            raise RuntimeError(f"judge endpoint {self.url} is unreachable ({exc.reason}); check the base URL") from exc

    def choice_probs(self, prompt: str, choices: Sequence[str]) -> list[float]:
        reply = self._post({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": 2,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        })
        choice = reply["choices"][0]
        content = ((choice.get("logprobs") or {}).get("content")) or []
        if content and content[0].get("top_logprobs"):
            masses = [0.0] * len(choices)
            for entry in content[0]["top_logprobs"]:
                token = str(entry["token"]).strip()
                if token in choices:
                    masses[choices.index(token)] += math.exp(float(entry["logprob"]))
            if sum(masses) > 0:
                return _normalise(masses)
        text = str((choice.get("message") or {}).get("content") or "").strip()
        for c in choices:
            if text.startswith(c):
                return [1.0 if x == c else 0.0 for x in choices]
        log.warning("judge reply %r names none of %s; recorded as parse_failed", text[:40], list(choices))
        return [math.nan] * len(choices)


def make_judge(config: JudgeConfig) -> Judge:
    if config.kind == "openai":
        return OpenAIJudge(config.model, config.base_url, config.api_key, config.timeout, config.top_logprobs)
    return LocalJudge.from_spec(config.model)


def expected_score(probs: Sequence[float], values: Sequence[float]) -> float:
    return float(sum(p * v for p, v in zip(probs, values)))


def pairwise_win_rate(
    judge: Judge,
    questions: Sequence[str],
    answers_1: Sequence[str],
    answers_2: Sequence[str],
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Model 1 vs model 2 on each question, answer order randomised; (per-item rows, summary)."""
    if not (len(questions) == len(answers_1) == len(answers_2)):
        raise ValueError(f"pairwise judging needs as many answers as questions: {len(questions)}, {len(answers_1)}, {len(answers_2)}")
    rng = random.Random(seed)
    rows = []
    for q, a1, a2 in tqdm(list(zip(questions, answers_1, answers_2)), desc="pairwise judge", disable=not progress):
        swapped = rng.random() < 0.5
        first, second = (a2, a1) if swapped else (a1, a2)
        p = judge.choice_probs(PAIRWISE_PROMPT.format(question=q, answer_a=first, answer_b=second), ["A", "B"])
        p1 = p[1] if swapped else p[0]
        outcome = math.nan if math.isnan(p1) else (1.0 if p1 > 0.5 else 0.0 if p1 < 0.5 else 0.5)
        rows.append({"swapped": swapped, "p_model1": p1, "outcome": outcome,
                     "status": "ok" if not math.isnan(p1) else "parse_failed"})
    outcomes = [r["outcome"] for r in rows if not math.isnan(r["outcome"])]
    lo, hi = bootstrap_ci(outcomes, seed=seed)
    summary = {
        "win_rate": float(np.mean(outcomes)) if outcomes else math.nan,
        "win_rate_ci_low": lo,
        "win_rate_ci_high": hi,
        "mean_p_model1": float(np.nanmean([r["p_model1"] for r in rows])) if outcomes else math.nan,
        "judged": len(outcomes),
        "parse_failed": len(rows) - len(outcomes),
    }
    return rows, summary


def clinical_rubric(
    judge: Judge, questions: Sequence[str], answers: Sequence[str], progress: bool = True
) -> tuple[list[dict], dict]:
    """Expected 1-5 rating of each answer on each rubric dimension; (per-item rows, means)."""
    rows = []
    values = [float(s) for s in SCORES]
    for q, a in tqdm(list(zip(questions, answers)), desc="rubric judge", disable=not progress):
        row = {}
        for dim, criterion in RUBRIC.items():
            probs = judge.choice_probs(RUBRIC_PROMPT.format(question=q, answer=a, criterion=criterion), SCORES)
            row[f"rubric_{dim}"] = expected_score(probs, values) if not math.isnan(probs[0]) else math.nan
        rows.append(row)
    summary = {}
    for dim in RUBRIC:
        vals = [r[f"rubric_{dim}"] for r in rows if not math.isnan(r[f"rubric_{dim}"])]
        summary[f"rubric_{dim}"] = float(np.mean(vals)) if vals else math.nan
    finite = [v for v in summary.values() if not math.isnan(v)]
    summary["rubric_mean"] = float(np.mean(finite)) if finite else math.nan
    return rows, summary
