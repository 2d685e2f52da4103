"""Plain, one-sample-at-a-time implementations of the methods.md definitions.

They are the yardstick the batched scorers are checked and benchmarked against: batch size
1, no padding, full-vocabulary logits, every layer's attention returned by an eager-attention
model (``output_attentions=True``), a separate forward pass per metric and one generation per
sample. Slow on purpose; never used for scoring a pool.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from syllabus.models.chat import encode_pair, encode_prompt
from syllabus.scoring.difficulty import is_content_text


def full_forward(model: Any, ids: list[int]):
    """One sequence through the model with all attentions and hidden states:
    ``(logits [L, V], attentions per layer, last hidden state [L, H])``."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], device=model.device), output_attentions=True,
                    output_hidden_states=True)
    return out.logits[0], out.attentions, out.hidden_states[-1][0]


def nll_list(logits: torch.Tensor, ids: list[int]) -> list[float]:
    """``NLL_t`` for every position (nan at 0) from full logits, in float64."""
    logp = torch.log_softmax(logits.double(), -1)
    return [math.nan] + [float(-logp[t - 1, ids[t]]) for t in range(1, len(ids))]


def d1_plain(model: Any, tok: Any, sample: Any, cutoff: int = 1024) -> float:
    """D1 from a separate pass over ``P`` alone."""
    enc = encode_pair(tok, sample, cutoff=cutoff)
    p_ids = enc.input_ids[: enc.prompt_len]
    logits, _, _ = full_forward(model, p_ids)
    nll = nll_list(logits, p_ids)
    vals = [nll[j] for j in enc.instruction_positions if j > 0]
    return math.exp(sum(vals) / len(vals))


def wd_plain(model: Any, tok: Any, sample: Any, response: str | None = None, cutoff: int = 1024) -> float:
    """``WD(r)`` with importance from the last entry of ``output_attentions``."""
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
    if not positions:
        return math.nan
    imp = {}
    for j in positions:
        per_head = [float(a[h, j:, j].sum()) / (length - j) for h in range(a.shape[0])]
        imp[j] = sum(per_head) / len(per_head)
    total = sum(imp.values())
    return math.exp(sum(imp[j] / total * nll[j] for j in positions))


def embedding_plain(model: Any, tok: Any, sample: Any, cutoff: int = 1024) -> torch.Tensor:
    enc = encode_pair(tok, sample, cutoff=cutoff)
    _, _, hidden = full_forward(model, enc.input_ids[: enc.prompt_len])
    return hidden.float().mean(0)


def greedy_plain(model: Any, tok: Any, prompt_ids: list[int], max_new_tokens: int, stop: set[int]) -> list[int]:
    """Greedy decoding by full re-forwards (no cache), one token at a time."""
    ids = list(prompt_ids)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt in stop:
                break
            ids.append(nxt)
            new.append(nxt)
    return new


def generate_one(model: Any, tok: Any, prompt_ids: list[int], max_new_tokens: int, stop: list[int]) -> list[int]:
    """One ``model.generate`` call for one prompt (greedy, KV cache), cut at the first stop id."""
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt_ids], device=model.device), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=stop, pad_token_id=stop[0])
    row = out[0, len(prompt_ids):].tolist()
    cut = next((k for k, t in enumerate(row) if t in stop), len(row))
    return row[:cut]


def difficulty_plain(model: Any, tok: Any, sample: Any, max_new_tokens: int, stop: list[int],
                     cutoff: int = 1024) -> dict:
    """Stage 2 the straightforward way: D1 and the embedding from a pass over ``P``, D3 from a
    pass over ``T(y)``, one generation, D2 from a pass over ``T(r_hat)``."""
    d1 = d1_plain(model, tok, sample, cutoff)
    emb = embedding_plain(model, tok, sample, cutoff)
    d3 = wd_plain(model, tok, sample, cutoff=cutoff)
    prompt = encode_prompt(tok, sample, cutoff=cutoff).input_ids
    response = tok.decode(generate_one(model, tok, prompt, max_new_tokens, stop), skip_special_tokens=True)
    d2 = wd_plain(model, tok, sample, response=response, cutoff=cutoff)
    return {"d1": d1, "d2": d2, "d3": d3, "embedding": emb, "response": response}


def expected_quality_plain(model: Any, tok: Any, cfg: Any, sample: Any) -> float:
    """The expected score by separate plain forwards: the prompt, the prompt + each first
    digit, the prompt + "10" (12 forwards)."""
    from syllabus.scoring.quality import ScoreReader, rating_prompts

    prompts = rating_prompts(tok, cfg)
    reader = ScoreReader(tok)
    full = prompts.prefix_ids + prompts.rest_ids(sample)

    def next_probs(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1].float(), -1)

    if reader.kind == "numbers":
        return reader.expectation(next_probs(full)[None])[0]
    rows = [next_probs(full)] + [next_probs(full + [d]) for d in reader.digit_ids]
    rows.append(next_probs(full + [reader.digit_ids[1], reader.digit_ids[0]]))
    return reader.expectation(torch.stack(rows).cpu())[0]


def quality_generate_plain(model: Any, tok: Any, cfg: Any, sample: Any, stop: list[int]) -> tuple[float | None, str]:
    """Paper-mode rating for one sample: the full rating prompt, one greedy generation, parse."""
    from syllabus.scoring.quality import parse_score, rating_prompts

    prompts = rating_prompts(tok, cfg)
    ids = prompts.prefix_ids + prompts.rest_ids(sample)
    reply = tok.decode(generate_one(model, tok, ids, cfg.max_new_tokens, stop), skip_special_tokens=True)
    return parse_score(reply), reply
