"""Multiple-choice scoring: cloze (option text likelihood) and letter (answer letter).

Both put the question in the user turn of the model's chat template (``render_prompt`` /
``encode_pair`` from :mod:`syllabus.models.chat`, the same templating training uses).

- **cloze** (default; the right protocol for small models, which cannot yet map content to
  letters): the response is each option's text; its score is the log-likelihood of the
  option tokens given ``P`` (the end-of-turn token is not scored), length-normalised. The
  default normalisation divides by the option's character count (lm-evaluation-harness'
  ``acc_norm`` uses bytes; OLMES calls this ``per_char``); ``token`` divides by the token
  count, ``none`` keeps the sum. The highest score is the prediction. Accuracies under all
  three normalisations are recorded from the same forward passes.
- **letter** (the paper's exact-match protocol): the options are listed as ``A. ...`` and
  the model answers at ``P``. ``letter_acc`` is the argmax over the answer-letter tokens of
  the next-token distribution (Hendrycks et al.'s MMLU protocol); ``letter_exact`` counts an
  item right only when the unconstrained greedy first token is the correct letter, i.e. the
  exact match a one-token greedy generation would give.
Higher accuracy is better.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from syllabus.evaluation.benchmarks import LETTERS, MCItem
from syllabus.models.chat import encode_pair, encode_prompt

log = logging.getLogger(__name__)

Normalisation = Literal["char", "token", "none"]
LETTER_INSTRUCTION = "Answer with the letter of the correct option."


class MCConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    normalisation: Normalisation = Field("char", description="cloze: how option log-likelihoods are normalised for length")
    cutoff: int = Field(1024, ge=8, description="max tokens of question + option")
    letter_instruction: str = Field(LETTER_INSTRUCTION, description="letter method: the instruction after the options")


def letter_question(item: MCItem, instruction: str = LETTER_INSTRUCTION) -> str:
    options = "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(item.options))
    return f"{item.question}\n\n{options}\n\n{instruction}"


def _end_of_turn_len(tokenizer: Any, cutoff: int) -> int:
    """How many tokens the template appends after a response (``E``; EOS without a template)."""
    empty = encode_pair(tokenizer, {"instruction": "x"}, response="", cutoff=cutoff)
    return len(empty.input_ids) - empty.prompt_len


def option_logliks(model: Any, prompt_ids: Sequence[int], options_ids: Sequence[Sequence[int]], pad_id: int) -> list[float]:
    """``log p(option | P)`` summed over each option's tokens, sharing one forward pass of ``P``.

    ``P`` runs once and its key/value cache is repeated for the options (the options of an
    item differ only after ``P``, and causal attention makes the prompt's states identical),
    so an item costs ``len(P) + 4 * len(option)`` tokens instead of ``4 * (len(P) + len(option))``.
    The first option token is read from ``P``'s last logits, the rest from the option pass
    through the shared :func:`syllabus.models.losses.token_nll`.
    """
    import torch

    from syllabus.models.losses import token_nll

    device = next(model.parameters()).device
    present = [k for k, o in enumerate(options_ids) if len(o) > 0]
    out_ll = [-math.inf] * len(options_ids)
    if not present:
        return out_ll
    with torch.inference_mode():
        prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
        first = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        first_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        cache = first.past_key_values
        cache.batch_repeat_interleave(len(present))
        width = max(len(options_ids[k]) for k in present)
        ids = torch.full((len(present), width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(present), len(prompt_ids) + width), dtype=torch.long, device=device)
        mask[:, : len(prompt_ids)] = 1
        for row, k in enumerate(present):
            ids[row, : len(options_ids[k])] = torch.tensor(list(options_ids[k]), dtype=torch.long)
            mask[row, len(prompt_ids) : len(prompt_ids) + len(options_ids[k])] = 1
        logits = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=False).logits
        nll = token_nll(logits, ids)
    for row, k in enumerate(present):
        n = len(options_ids[k])
        rest = float(nll[row, 1:n].double().sum()) if n > 1 else 0.0
        out_ll[k] = float(first_logp[options_ids[k][0]]) - rest
    return out_ll


def score_cloze(engine: Any, items: Sequence[MCItem], config: MCConfig | None = None) -> list[dict]:
    """One row per item: the option log-likelihoods, the prediction and whether it is right."""
    from tqdm.auto import tqdm

    config = config or MCConfig()
    tok = engine.tokenizer
    n_eot = _end_of_turn_len(tok, config.cutoff)
    loglik: list[list[float]] = []
    ntok: list[list[int]] = []
    status: dict[int, str] = {}
    for i, item in enumerate(tqdm(items, desc="cloze", unit="item", disable=not getattr(engine, "progress", True))):
        prompt_ids: list[int] | None = None
        options_ids = []
        for option in item.options:
            enc = encode_pair(tok, {"instruction": item.question}, response=option, cutoff=config.cutoff)
            if enc.status != "ok":
                status[i] = enc.status
            end = len(enc.input_ids) if enc.truncated else len(enc.input_ids) - n_eot
            prompt_ids = enc.input_ids[: enc.prompt_len]
            options_ids.append(enc.input_ids[enc.prompt_len : max(enc.prompt_len, end)])
        loglik.append(option_logliks(engine.model, prompt_ids or [], options_ids, engine.pad_id)
                      if i not in status else [-math.inf] * len(item.options))
        ntok.append([len(o) for o in options_ids])
        if getattr(engine, "on_progress", None) is not None:  # one item at a time here, not map_batches
            engine.on_progress(i + 1, len(items), "cloze")

    rows = []
    for i, item in enumerate(items):
        ll = np.asarray(loglik[i])
        chars = np.asarray([max(1, len(o)) for o in item.options], dtype=np.float64)
        toks = np.maximum(1, np.asarray(ntok[i], dtype=np.float64))
        scores = {"none": ll, "char": ll / chars, "token": ll / toks}
        preds = {k: int(np.argmax(v)) for k, v in scores.items()}
        pred = preds[config.normalisation]
        rows.append({
            "item_id": item.item_id,
            "subject": item.subject,
            "method": "cloze",
            "answer": item.answer,
            "pred": pred,
            "correct": pred == item.answer,
            "correct_char": preds["char"] == item.answer,
            "correct_token": preds["token"] == item.answer,
            "correct_none": preds["none"] == item.answer,
            "option_loglik": [float(x) for x in ll],
            "option_tokens": [int(x) for x in ntok[i]],
            "status": status.get(i, "ok"),
        })
    return rows


def letter_token_ids(tokenizer: Any, n: int) -> list[list[int]]:
    """For each answer letter, the single-token spellings ``"A"`` and ``" A"`` the model may use."""
    out = []
    for letter in LETTERS[:n]:
        ids = set()
        for text in (letter, " " + letter):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1:
                ids.add(int(enc[0]))
        if not ids:
            raise ValueError(f"the tokenizer has no single token for the answer letter {letter!r}; use cloze scoring")
        out.append(sorted(ids))
    return out


def score_letter(engine: Any, items: Sequence[MCItem], config: MCConfig | None = None) -> list[dict]:
    """One row per item from the next-token distribution at the end of the prompt."""
    import torch

    from syllabus.models.engines import decoder_and_head

    config = config or MCConfig()
    tok = engine.tokenizer
    prompts = [encode_prompt(tok, {"instruction": letter_question(it, config.letter_instruction)}, cutoff=config.cutoff)
               for it in items]
    # A prompt over the cutoff keeps its last ``cutoff`` tokens: the options and the request.
    seqs = [p.input_ids[-config.cutoff:] for p in prompts]
    max_options = max((len(it.options) for it in items), default=0)
    letter_ids = letter_token_ids(tok, max_options) if items else []
    body, head = decoder_and_head(engine.model)

    def run(idx: list[int]) -> list[np.ndarray]:
        ids, mask = engine.pad([seqs[i] for i in idx])
        with torch.inference_mode():
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
            last = mask.sum(dim=1) - 1
            logits = head(hidden[torch.arange(len(idx), device=hidden.device), last]).float()
            logp = torch.log_softmax(logits, dim=-1)
        return [logp[b].cpu().numpy() for b in range(len(idx))]

    dists = engine.map_batches([len(s) for s in seqs], run, desc="letter")
    rows = []
    for item, logp, prompt in zip(items, dists, prompts):
        n = len(item.options)
        letter_lp = [float(np.logaddexp.reduce(logp[letter_ids[k]])) for k in range(n)]
        pred = int(np.argmax(letter_lp))
        top = int(np.argmax(logp))
        greedy = tok.decode([top]).strip()
        rows.append({
            "item_id": item.item_id,
            "subject": item.subject,
            "method": "letter",
            "answer": item.answer,
            "pred": pred,
            "correct": pred == item.answer,
            "exact_match": greedy == LETTERS[item.answer],
            "greedy_token": greedy,
            "letter_mass": float(np.exp(np.logaddexp.reduce(letter_lp))),
            "option_loglik": letter_lp,
            "status": prompt.status,
        })
    return rows
