"""DIQ difficulty: a 1-5 difficulty of each sample from one perspective (arXiv 2508.01450).

Perspectives (the paper's three): ``knowledge`` (how specialised the domain knowledge
needed is), ``reasoning`` (how many inference steps the answer takes; the strongest single
one in the paper) and ``overall``. The chosen perspective is a recipe option.

Two readers:
- ``judge`` (default): a local causal LM (the target model unless ``judge_model`` names any
  other model reference) is asked for one digit 1-5 from the perspective's rubric (the
  project's own wording), and the score is the expected value of the next-token
  distribution over the digit tokens, ``sum_d d p(d) / sum_d p(d)``: one forward pass, no
  decoding, finer than a generated integer (as in 3DS's expected-score rating).
- ``classifier``: any Hugging Face sequence-classification checkpoint directory (the paper
  fine-tunes BiomedBERT on medical QA). 5 labels = difficulty 1..5 (or the numbers its
  ``id2label`` spells), read as the expected value of the softmax; 15 labels = three
  5-way heads in the order knowledge, reasoning, overall; 1 label = a regression output
  clipped to [1, 5].

Higher = harder. Columns: ``diq_difficulty_score`` (1-5), ``diq_difficulty_raw`` (JSON:
the digit distribution and its probability mass, or the classifier's probabilities),
``diq_difficulty_status``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

from syllabus import registry
from syllabus.models.chat import (encode_text, has_chat_template, instruction_text, mark_data, render_chat,
                                  tokenize_text, unmark_data)
from syllabus.scoring.base import Failed, Scorer, ScorerConfig, error_status, in_batches, per_item_fallback

log = logging.getLogger(__name__)

Perspective = Literal["knowledge", "reasoning", "overall"]
PERSPECTIVES: tuple[str, ...] = ("knowledge", "reasoning", "overall")

ASPECT = {
    "knowledge": "how much specialised {domain} knowledge is needed to answer it: facts a layperson knows are easy; "
                 "details only a specialist knows are hard",
    "reasoning": "how much reasoning is needed to answer it: recalling one fact is easy; combining several findings, "
                 "weighing alternatives or working through several steps is hard",
    "overall": "how hard it is overall to answer it well, counting both the {domain} knowledge and the reasoning it "
               "needs",
}
RUBRIC = """You are an experienced {domain} educator. Rate the difficulty of the question below from the \
{perspective} perspective, that is, {aspect}.

Scale:
1 = very easy, 2 = easy, 3 = moderate, 4 = hard, 5 = very hard.

Question:
{question}
{answer_block}
Reply with one digit from 1 to 5 and nothing else."""


class DIQDifficultyConfig(ScorerConfig):
    perspective: Perspective = "reasoning"
    reader: Literal["judge", "classifier"] = "judge"
    judge_model: str | None = None  # any model reference; None = the target model
    classifier: str | None = None  # a sequence-classification checkpoint directory (reader "classifier")
    domain: str = "medical"
    include_answer: bool = True  # show the reference answer to the rater
    max_answer_tokens: int = 512
    cutoff: int = 2048
    batch_size: int = 8
    max_batch_tokens: int = 16384


def _rating_prompt_spans(tokenizer: Any, sample: Any, cfg: DIQDifficultyConfig) -> tuple[str, list[tuple[int, int]]]:
    """The rating prompt and the character spans of the sample's text in it (the question and
    the answer are data: special-token spellings in them stay text)."""
    answer = ""
    if cfg.include_answer:
        text = sample.get("output") or ""
        ids = tokenize_text(tokenizer, text)
        if len(ids) > cfg.max_answer_tokens:
            text = tokenizer.decode(ids[: cfg.max_answer_tokens]) + " ..."
        answer = f"\nReference answer:\n{mark_data(text)}\n"
    content = RUBRIC.format(domain=cfg.domain, perspective=cfg.perspective,
                            aspect=ASPECT[cfg.perspective].format(domain=cfg.domain),
                            question=mark_data(instruction_text(sample)), answer_block=answer)
    if not has_chat_template(tokenizer):
        return unmark_data(content + "\nDifficulty: ")
    return render_chat(tokenizer, [{"role": "user", "content": content}], contents_are_data=False)


def rating_prompt(tokenizer: Any, sample: Any, cfg: DIQDifficultyConfig) -> str:
    return _rating_prompt_spans(tokenizer, sample, cfg)[0]


def rating_prompt_ids(tokenizer: Any, sample: Any, cfg: DIQDifficultyConfig) -> list[int]:
    """Token ids of :func:`rating_prompt`; the template's markers are its only special tokens."""
    text, spans = _rating_prompt_spans(tokenizer, sample, cfg)
    return encode_text(tokenizer, text, spans, add_special_tokens=not has_chat_template(tokenizer))[0]


def digit_token_ids(tokenizer: Any) -> dict[int, list[int]]:
    """Token ids that spell each digit 1-5 as the first token of a reply (bare and with a
    leading space, when those are single distinct tokens)."""
    out: dict[int, list[int]] = {}
    for d in range(1, 6):
        ids = []
        for text in (str(d), f" {d}"):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        if not ids:
            raise ValueError(f"the judge tokenizer spells the digit {d} with several tokens; use reader 'classifier'")
        out[d] = ids
    return out


def expected_digit(logits: Any, digits: dict[int, list[int]]) -> tuple[float, dict]:
    """Expected digit under the next-token distribution restricted to the digit tokens."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    p = {d: float(sum(torch.exp(logp[i]) for i in ids)) for d, ids in digits.items()}
    mass = sum(p.values())
    if not mass > 0:
        raise ValueError("the judge puts no probability on the digits 1-5")
    score = sum(d * v for d, v in p.items()) / mass
    return score, {"p": {str(d): round(v / mass, 5) for d, v in p.items()}, "mass": round(mass, 5)}


def label_values(config: Any) -> list[float] | None:
    """Numbers spelled by a classifier's labels (``"1".."5"``, ``"LABEL_3"`` does not count)."""
    labels = getattr(config, "id2label", None) or {}
    try:
        return [float(labels[i]) for i in range(len(labels))]
    except (KeyError, ValueError, TypeError):
        return None


def classifier_scores(logits: Any, config: Any, perspective: str) -> tuple[list[float], list[dict]]:
    """Difficulty from sequence-classification logits ``[n, num_labels]`` (module docstring)."""
    import torch

    n_labels = logits.shape[-1]
    logits = logits.float()
    if n_labels == 1:
        vals = logits[:, 0].clamp(1.0, 5.0)
        return vals.tolist(), [{"regression": round(float(v), 5)} for v in logits[:, 0]]
    if n_labels == 15:
        k = PERSPECTIVES.index(perspective)
        logits = logits[:, 5 * k : 5 * k + 5]
        values = [1.0, 2.0, 3.0, 4.0, 5.0]
    else:
        values = label_values(config)
        if values is None:
            if n_labels != 5:
                raise ValueError(f"the classifier has {n_labels} labels whose names are not numbers; expected 1, 5 or "
                                 "15 labels, or id2label naming the difficulty of each label")
            values = [1.0, 2.0, 3.0, 4.0, 5.0]
    probs = torch.softmax(logits, dim=-1)
    scores = (probs * torch.tensor(values)).sum(-1)
    raws = [{"p": [round(float(x), 5) for x in row]} for row in probs]
    return scores.tolist(), raws


@registry.scorer("diq_difficulty")
class DIQDifficultyScorer(Scorer):
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = DIQDifficultyConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._classifier: tuple[Any, Any] | None = None

    def columns(self) -> list[str]:
        return ["diq_difficulty_score", "diq_difficulty_raw", "diq_difficulty_status"]

    def key_parts(self, model_fingerprint: str, shard_hash: str) -> dict[str, Any]:
        """The rater's own content fingerprint: a judge model or classifier directory can
        change under the same name."""
        from syllabus.models.ref import fingerprint, resolve

        parts = super().key_parts(model_fingerprint, shard_hash)
        cfg: DIQDifficultyConfig = self.config
        if cfg.reader == "classifier":
            if not cfg.classifier:
                raise ValueError("diq_difficulty reader 'classifier' needs classifier: a sequence-classification "
                                 "checkpoint directory")
            parts["rater"] = fingerprint(resolve(cfg.classifier))
            parts["model"] = None  # the target model plays no part
        elif cfg.judge_model:
            parts["rater"] = fingerprint(resolve(cfg.judge_model))
        return parts

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        cfg: DIQDifficultyConfig = self.config
        rows = table.to_pylist()
        if cfg.reader == "classifier":
            scores, raws, status = self._score_classifier(rows, lm)
        else:
            judge = lm if not cfg.judge_model else _load_judge(cfg.judge_model, lm)
            scores, raws, status = self._score_judge(rows, judge)
        ok = [s for s, st in zip(scores, status) if st == "ok"]
        self.last_stats = {"perspective": cfg.perspective, "reader": cfg.reader,
                           "mean": round(float(np.mean(ok)), 4) if ok else None,
                           "std": round(float(np.std(ok)), 4) if ok else None}
        return pa.table({
            "sample_id": table.column("sample_id"),
            "diq_difficulty_score": pa.array(scores, pa.float64()),
            "diq_difficulty_raw": pa.array(raws, pa.string()),
            "diq_difficulty_status": pa.array(status, pa.string()),
        })

    # -- judge -------------------------------------------------------------------------------
    def _score_judge(self, rows: list[dict], judge: Any) -> tuple[list[float], list[str | None], list[str]]:
        import torch

        from syllabus.models.engines import TransformersEngine, decoder_and_head

        cfg: DIQDifficultyConfig = self.config
        tok = judge.tokenizer
        digits = digit_token_ids(tok)
        n = len(rows)
        scores, raws, status = [math.nan] * n, [None] * n, ["ok"] * n
        seqs: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            try:
                ids = rating_prompt_ids(tok, row, cfg)
            except Exception as exc:
                status[i] = error_status(exc)
                continue
            if len(ids) > cfg.cutoff:
                status[i] = "too_long"
                continue
            seqs[i] = list(ids)
        order = sorted(seqs)
        engine = TransformersEngine(judge.model, tok, batch_size=cfg.batch_size, max_batch_tokens=cfg.max_batch_tokens)
        body, head = decoder_and_head(judge.model)

        def run(idx: list[int]) -> list[Any]:
            batch = [seqs[order[j]] for j in idx]
            ids, mask = engine.pad(batch)
            with torch.no_grad():
                hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                last = hidden[torch.arange(len(batch), device=hidden.device), mask.sum(1) - 1]
                logits = head(last)
            return [expected_digit(logits[b], digits) for b in range(len(batch))]

        results = engine.map_batches([len(seqs[i]) for i in order], per_item_fallback(run), desc="diq difficulty")
        for i, res in zip(order, results):
            if isinstance(res, Failed):
                status[i] = res.status
            else:
                scores[i], raw = res
                raws[i] = json.dumps(raw, sort_keys=True)
        return scores, raws, status

    # -- classifier --------------------------------------------------------------------------
    def _load_classifier(self, device: Any) -> tuple[Any, Any]:
        if self._classifier is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            path = self.config.classifier
            if not path:
                raise ValueError("diq_difficulty reader 'classifier' needs classifier: a sequence-classification "
                                 "checkpoint directory")
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            # Right padding: decoder classifiers read the last non-pad token, and left padding
            # would shift their position ids.
            tok.padding_side = "right"
            model.config.pad_token_id = tok.pad_token_id
            self._classifier = (model, tok)
        return self._classifier

    def _score_classifier(self, rows: list[dict], lm: Any) -> tuple[list[float], list[str | None], list[str]]:
        import torch

        cfg: DIQDifficultyConfig = self.config
        model, tok = self._load_classifier(getattr(lm, "device", "cpu") if lm is not None else "cpu")
        device = next(model.parameters()).device
        limit = min(cfg.cutoff, getattr(model.config, "max_position_embeddings", cfg.cutoff) or cfg.cutoff)
        n = len(rows)
        scores, raws = [math.nan] * n, [None] * n

        def run(idx: list[int]) -> list[Any]:
            questions = [instruction_text(rows[i]) for i in idx]
            answers = [rows[i].get("output") or "" for i in idx]
            # split_special_tokens: a sample that spells "[SEP]" gets those characters, not the token.
            enc = tok(questions, answers if cfg.include_answer else None, truncation=True, max_length=limit,
                      padding=True, return_tensors="pt", split_special_tokens=True)
            with torch.no_grad():
                logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
            vals, raw = classifier_scores(logits, model.config, cfg.perspective)
            return list(zip(vals, raw))

        results, status = in_batches(n, cfg.batch_size, run)
        for i, res in enumerate(results):
            if res is not None:
                scores[i] = float(res[0])
                raws[i] = json.dumps(res[1], sort_keys=True)
        return scores, raws, status


def _load_judge(spec: str, lm: Any) -> Any:
    from syllabus.models import load_model

    return load_model(spec, device=getattr(lm, "device", None))
