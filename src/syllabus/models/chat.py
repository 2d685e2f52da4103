"""Chat templating shared by every model-based metric (methods.md, "Templating").

- ``P`` (:func:`render_prompt`) is the model's chat template applied to the conversation
  before the final assistant turn, with the generation prompt added. A single-turn sample is
  ``[user: x]`` with ``x = instruction`` plus ``"\\n\\n" + input`` when there is an input. A
  tokenizer without a chat template gets ``x + "\\n"`` (turns joined by newlines).
- ``T = P + r + E`` (:func:`encode_pair`), ``E`` the end-of-turn text the template puts after
  an assistant message (:func:`end_of_turn_text`); without a template ``E`` is the EOS token.
- Response positions are those from ``prompt_len = len(tokenize(P))`` on. Instruction
  positions are the tokens of ``P`` whose character span overlaps ``x`` (the last user turn),
  from the fast tokenizer's offset mapping.
- ``T`` longer than the cutoff is truncated from the end of the response; a prompt that alone
  exceeds the cutoff gives status ``too_long``.

The first ``prompt_len`` ids of ``T`` are always exactly ``tokenize(P)``: when a tokenizer
would merge characters across the ``P``/``r`` boundary, the response part is re-tokenized on
its own. This keeps the one-pass D1/D3 computation (prompt positions of ``T`` are those of
``P`` under causal attention) exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

log = logging.getLogger(__name__)

DEFAULT_CUTOFF = 1024
_SENTINEL = "\u2063SYLLABUS-RESPONSE\u2063"


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of ``T = P + r + E`` and where its parts are."""

    input_ids: list[int]
    prompt_len: int  # response tokens start here
    instruction_positions: list[int]
    status: str  # "ok" | "too_long"
    truncated: bool = False  # response cut at the cutoff
    prompt_text: str = ""
    response_text: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def response_positions(self) -> list[int]:
        return list(range(self.prompt_len, len(self.input_ids)))


def _get(sample: Any, name: str, default: Any = None) -> Any:
    if isinstance(sample, Mapping):
        return sample.get(name, default)
    return getattr(sample, name, default)


def instruction_text(sample: Any) -> str:
    """``x``: the instruction, plus the input after a blank line when there is one."""
    instruction = _get(sample, "instruction", "") or ""
    inp = _get(sample, "input", "") or ""
    return instruction if not inp.strip() else f"{instruction}\n\n{inp}"


def prompt_messages(sample: Any) -> list[dict[str, str]]:
    """Every turn before the final assistant turn; ``[user: x]`` for a plain sample."""
    messages = _get(sample, "messages")
    if messages is not None and len(messages) > 0:
        turns = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
        if turns[-1]["role"] == "assistant":
            turns = turns[:-1]
        if any(t["role"] == "user" for t in turns):
            return turns
    return [{"role": "user", "content": instruction_text(sample)}]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: Any, sample: Any) -> str:
    """``P``: the chat template over the prompt turns with the generation prompt added."""
    turns = prompt_messages(sample)
    if not has_chat_template(tokenizer):
        return "\n".join(t["content"] for t in turns) + "\n"
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


_EOT_CACHE: dict[tuple[int, str], str | None] = {}


def end_of_turn_text(tokenizer: Any) -> str | None:
    """``E``: the text the template writes right after an assistant message, up to its first
    newline (``"<|im_end|>"`` for ChatML). ``None`` when the tokenizer has no template (the
    caller appends the EOS token id instead)."""
    if not has_chat_template(tokenizer):
        return None
    key = (id(tokenizer), str(tokenizer.chat_template))
    if key not in _EOT_CACHE:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        tail = rendered.split(_SENTINEL, 1)[1] if _SENTINEL in rendered else ""
        _EOT_CACHE[key] = tail.split("\n", 1)[0]
    return _EOT_CACHE[key]


def _instruction_span(prompt: str, turns: list[dict[str, str]]) -> tuple[int, int] | None:
    """Character span of the last user turn's content inside the rendered prompt."""
    users = [t["content"] for t in turns if t["role"] == "user"]
    if not users or not users[-1]:
        return None
    x = users[-1]
    start = prompt.rfind(x)
    if start < 0:  # a template that rewrites content (e.g. strips it): try the stripped text
        x = x.strip()
        start = prompt.rfind(x) if x else -1
    return (start, start + len(x)) if start >= 0 else None


def _tokenize(tokenizer: Any, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def encode_pair(
    tokenizer: Any, sample: Any, response: str | None = None, cutoff: int = DEFAULT_CUTOFF
) -> EncodedPair:
    """Encode ``T = P + r + E`` for ``sample`` and response ``r`` (the reference output when
    ``response`` is None), truncated to ``cutoff`` tokens from the end of the response."""
    response = (_get(sample, "output", "") or "") if response is None else response
    turns = prompt_messages(sample)
    templated = has_chat_template(tokenizer)
    prompt = render_prompt(tokenizer, sample)
    # A template writes its own BOS into the text; a bare prompt gets the tokenizer's specials.
    add_special = not templated
    p_ids, p_offsets = _tokenize(tokenizer, prompt, add_special)
    span = _instruction_span(prompt, turns)
    instruction_positions = (
        [i for i, (s, e) in enumerate(p_offsets) if e > s and s < span[1] and e > span[0]] if span else []
    )
    if len(p_ids) > cutoff:
        return EncodedPair(p_ids[:cutoff], cutoff, [i for i in instruction_positions if i < cutoff], "too_long",
                           True, prompt, response)
    eot = end_of_turn_text(tokenizer)
    full = prompt + response + (eot or "")
    t_ids, t_offsets = _tokenize(tokenizer, full, add_special)
    if t_ids[: len(p_ids)] == p_ids:
        ids = t_ids
    else:  # boundary merge: keep tokenize(P) as the exact prefix, tokenize the rest alone
        r_ids, _ = _tokenize(tokenizer, response + (eot or ""), False)
        ids = p_ids + r_ids
    if eot is None and tokenizer.eos_token_id is not None:
        ids = ids + [int(tokenizer.eos_token_id)]
    truncated = len(ids) > cutoff
    return EncodedPair(ids[:cutoff], len(p_ids), instruction_positions, "ok", truncated, prompt, response)


def encode_prompt(tokenizer: Any, sample: Any, cutoff: int = DEFAULT_CUTOFF) -> EncodedPair:
    """Just ``P`` (for generation): ``input_ids`` are the prompt tokens, ``prompt_len`` their count."""
    prompt = render_prompt(tokenizer, sample)
    ids, offsets = _tokenize(tokenizer, prompt, not has_chat_template(tokenizer))
    span = _instruction_span(prompt, prompt_messages(sample))
    inst = [i for i, (s, e) in enumerate(offsets) if span and e > s and s < span[1] and e > span[0]]
    status = "too_long" if len(ids) > cutoff else "ok"
    return EncodedPair(ids, len(ids), inst, status, False, prompt, "")
