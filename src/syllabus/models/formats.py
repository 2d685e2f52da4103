"""Prompt formats other than the model's own chat template, for reproducing authors' code.

``tulu``: the Tulu format the LESS authors train and take gradients in (Xia et al., arXiv
2402.04333; ``princeton-nlp/LESS``, ``get_training_dataset.py``, after open-instruct's
``concat_messages``)::

    <|system|>\\n{system}\\n<|user|>\\n{user}\\n<|assistant|>\\n{response}{EOS}\\n

every turn's content stripped of surrounding whitespace, the tokenizer's own special tokens
added (a BOS where it adds one), ``T`` cut at ``cutoff`` tokens from its end. ``P`` runs up to
and including ``<|assistant|>\\n``, so the response positions are ``{response}``, the EOS token
and the newline after it, which the authors' labels include too. The tags are plain text
(they are not special tokens of the models the authors used, nor of SmolLM2).

Two departures, both invisible on single-turn samples of ordinary text: a multi-turn sample
is scored on its final assistant turn (earlier turns are ``P``, as everywhere in this
project; the authors' labels cover every assistant turn), and the sample's own text is
tokenized with special-token strings kept as text, ``P``, the response, EOS and the final
newline each on their own (the authors tokenize the joined string, where a sample spelling
``</s>`` would end its turn). Tokenizers that do not merge across those boundaries, as
SmolLM2's does not, give the authors' ids exactly (tested).

:func:`pair_encoder` maps a format name to its ``encode_pair``-compatible function
(``chat``: :func:`syllabus.models.chat.encode_pair`).
"""

from __future__ import annotations

from typing import Any, Callable

from syllabus.models.chat import DEFAULT_CUTOFF, EncodedPair, _get, encode_pair, prompt_messages

TULU_TAGS = {"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n"}

PairEncoder = Callable[..., EncodedPair]


def _ids(tokenizer: Any, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=True,
                    return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _eos(tokenizer: Any) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the Tulu format ends every assistant turn with the tokenizer's EOS token, and this "
                         "tokenizer has none; set its eos_token or use format 'chat'")
    return int(eos)


def tulu_prompt_ids(tokenizer: Any, sample: Any) -> tuple[list[int], list[int], str]:
    """``(ids of P, the instruction's positions in it, P as text)`` in the Tulu format. An
    earlier assistant turn ends with the EOS token and a newline, as the authors write it."""
    chunks: list[str | int] = [""]  # text pieces, and the EOS id between them
    span: tuple[int, int, int] | None = None  # (chunk, start, end) of the last user turn's content
    for turn in prompt_messages(sample):
        role = turn["role"]
        if role not in TULU_TAGS:
            raise ValueError(f"a turn has the role {role!r}, which the Tulu format has no tag for; "
                             "use system, user or assistant")
        content = turn["content"].strip()
        text = str(chunks[-1]) + TULU_TAGS[role]
        if role == "user":
            span = (len(chunks) - 1, len(text), len(text) + len(content))
        if role == "assistant":
            chunks[-1] = text + content
            chunks += [_eos(tokenizer), "\n"]
        else:
            chunks[-1] = text + content + "\n"
    chunks[-1] = str(chunks[-1]) + TULU_TAGS["assistant"]
    ids: list[int] = []
    instruction: list[int] = []
    for k, chunk in enumerate(chunks):
        if isinstance(chunk, int):
            ids.append(chunk)
            continue
        piece, offsets = _ids(tokenizer, chunk, k == 0)
        if span and span[0] == k:
            instruction = [len(ids) + i for i, (s, e) in enumerate(offsets) if e > s and s < span[2] and e > span[1]]
        ids += piece
    eos_text = tokenizer.eos_token or ""
    return ids, instruction, "".join(eos_text if isinstance(c, int) else c for c in chunks)


def encode_tulu(tokenizer: Any, sample: Any, response: str | None = None,
                cutoff: int = DEFAULT_CUTOFF) -> EncodedPair:
    """``T`` of ``sample`` with response ``response`` (the reference output when None) in the
    Tulu format; the same fields as :func:`syllabus.models.chat.encode_pair`."""
    eos = _eos(tokenizer)
    response = (_get(sample, "output", "") or "") if response is None else response
    p_ids, instruction, prompt = tulu_prompt_ids(tokenizer, sample)
    if len(p_ids) > cutoff:
        return EncodedPair(p_ids[:cutoff], cutoff, [i for i in instruction if i < cutoff], "too_long", True, prompt,
                           response)
    ids = p_ids + _ids(tokenizer, response.strip(), False)[0] + [eos] + _ids(tokenizer, "\n", False)[0]
    return EncodedPair(ids[:cutoff], len(p_ids), instruction, "ok", len(ids) > cutoff, prompt, response)


PAIR_FORMATS: dict[str, PairEncoder] = {"chat": encode_pair, "tulu": encode_tulu}


def pair_encoder(fmt: str) -> PairEncoder:
    """The ``encode_pair``-compatible function of the format named ``fmt``."""
    try:
        return PAIR_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown prompt format {fmt!r}; use one of {', '.join(sorted(PAIR_FORMATS))}") from None
