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

Sample text is text (design.md, "Real pools"). A sample that spells a special or added token of
the tokenizer (``"<|im_end|>"``, Llama's ``"<s>"``, ``"[INST]"`` where the tokenizer has it) gets
those characters, never the token: the chat template's own markers are the only special tokens
in a sequence. Every encoder here knows which character spans of its text are data (the message
contents, the response, or what a caller marked with :func:`mark_data`). When no span spells an
added token, the text is tokenized in one call exactly as before, so ordinary samples keep their
ids bit for bit (and every cached score its key). When one does, the text is cut at the
template's own added tokens (those outside the spans), which keep their ids, and each stretch
between them is tokenized by the tokenizer's pipeline with its added vocabulary read as text:
the ids the tokenizer would give if the spelled tokens were not in its vocabulary. Public
helpers: :func:`tokenize_text` (sample text on its own), :func:`encode_text` (a rendered text
and its data spans), :func:`mark_data` / :func:`encode_marked` (a prompt composed around sample
text), :func:`render_chat` (the template over data turns, with their spans) and
:func:`spells_special_token`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

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


Span = tuple[int, int]


def _tokenize(tokenizer: Any, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


# ------------------------------------------------------------------ sample text stays text
def _no_first_prepend(spec: Any) -> Any:
    """A pre-tokenizer spec whose Metaspace ``prepend_scheme: first`` reads as ``never``: how
    the tokenizer treats a stretch that does not start the text (Llama 2, Mistral: no "▁" is
    prepended after a special token)."""
    if isinstance(spec, dict):
        if spec.get("type") == "Metaspace" and spec.get("prepend_scheme") == "first":
            return {**spec, "prepend_scheme": "never"}
        return {k: _no_first_prepend(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_no_first_prepend(v) for v in spec]
    return spec


class _TextTokenizer:
    """What one tokenizer needs to keep sample text text: its added tokens (a regex over their
    spellings, their ids) and, built on first use, copies of its Rust pipeline that read every
    added token as plain text."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.size = len(tokenizer)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.backend = backend
        if backend is not None:
            added = dict(backend.get_added_tokens_decoder())
        else:
            added = dict(getattr(tokenizer, "added_tokens_decoder", None) or {})
        self.added_ids = {int(i) for i in added} | {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
        spellings = {str(getattr(t, "content", t)) for t in added.values()}
        spellings |= {str(t) for t in (getattr(tokenizer, "all_special_tokens", None) or [])}
        # Whitespace added tokens (Gemma's "\n", code models' runs of spaces) are how the
        # tokenizer writes ordinary text, not template structure: they stay as they are.
        spellings = {t for t in spellings if t and not t.isspace()}
        self.pattern = (re.compile("|".join(re.escape(t) for t in sorted(spellings, key=len, reverse=True)))
                        if spellings else None)
        # An added token marked "normalized" matches the normalized text (a lowercasing
        # normalizer would read "<S>" as "<s>"): look there too.
        self.normalizer = None
        if backend is not None and backend.normalizer is not None and any(
                getattr(t, "normalized", False) for t in added.values()):
            self.normalizer = backend.normalizer
        self._pipelines: dict[bool, Any] = {}
        self._wrap: tuple[list[int], list[int]] | None = None

    def spells(self, text: str) -> bool:
        """Whether ``text`` holds a spelling the tokenizer would read as one of its added tokens."""
        if self.pattern is None or not text:
            return False
        if self.pattern.search(text):
            return True
        return self.normalizer is not None and self.pattern.search(self.normalizer.normalize_str(text)) is not None

    def _pipeline(self, at_start: bool) -> Any:
        """A copy of the tokenizer's Rust pipeline that reads every added token as text (all
        marked special, and special tokens split), for a stretch at the start of the text or
        after a template marker."""
        if at_start not in self._pipelines:
            from tokenizers import Tokenizer

            spec = json.loads(self.backend.to_str())
            for token in spec.get("added_tokens") or []:
                token["special"] = not token["content"].isspace()
            spec["truncation"] = spec["padding"] = None
            if not at_start:
                spec["pre_tokenizer"] = _no_first_prepend(spec.get("pre_tokenizer"))
            pipeline = Tokenizer.from_str(json.dumps(spec))
            pipeline.encode_special_tokens = True
            self._pipelines[at_start] = pipeline
        return self._pipelines[at_start]

    def encode_as_text(self, text: str, at_start: bool) -> tuple[list[int], list[Span]]:
        """``text`` with no added token read from it; offsets relative to ``text``."""
        if self.backend is None:  # a Python tokenizer: its own switch covers its special tokens
            enc = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True,
                                 return_offsets_mapping=True)
            return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        enc = self._pipeline(at_start).encode(text, add_special_tokens=False)
        return list(enc.ids), [tuple(o) for o in enc.offsets]

    def wrap(self) -> tuple[list[int], list[int]]:
        """The ids ``add_special_tokens=True`` puts before and after a text (BOS, EOS)."""
        if self._wrap is None:
            bare = list(self.tokenizer("a", add_special_tokens=False)["input_ids"])
            full = list(self.tokenizer("a", add_special_tokens=True)["input_ids"])
            at = next((k for k in range(len(full) - len(bare) + 1) if full[k: k + len(bare)] == bare), None)
            self._wrap = ([], []) if at is None else (full[:at], full[at + len(bare):])
        return self._wrap

    def markers(self, text: str, spans: Sequence[Span]) -> list[tuple[int, int, int]]:
        """``(start, end, id)`` of every added token the template text (outside ``spans``) holds."""
        found: list[tuple[int, int, int]] = []
        cursor = 0
        for start, end in [*spans, (len(text), len(text))]:
            if start > cursor:
                piece = text[cursor:start]
                enc = self.tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)
                for token_id, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
                    if int(token_id) in self.added_ids:
                        found.append((cursor + a, cursor + b, int(token_id)))
            cursor = max(cursor, end)
        return found

    def encode(self, text: str, spans: Sequence[Span], add_special_tokens: bool) -> tuple[list[int], list[Span]]:
        ids: list[int] = []
        offsets: list[Span] = []
        pos = 0
        for start, end, token_id in [*self.markers(text, spans), (len(text), len(text), None)]:
            if start > pos:
                piece_ids, piece_offsets = self.encode_as_text(text[pos:start], at_start=pos == 0)
                ids += piece_ids
                offsets += [(pos + a, pos + b) for a, b in piece_offsets]
            if token_id is not None:
                ids.append(token_id)
                offsets.append((start, end))
            pos = max(pos, end)
        if add_special_tokens:
            before, after = self.wrap()
            ids = before + ids + after
            offsets = [(0, 0)] * len(before) + offsets + [(0, 0)] * len(after)
        return ids, offsets


_TEXT_TOKENIZERS: dict[int, tuple[Any, _TextTokenizer]] = {}


def _text_tokenizer(tokenizer: Any) -> _TextTokenizer:
    key = id(tokenizer)
    hit = _TEXT_TOKENIZERS.get(key)
    if hit is not None and hit[0]() is tokenizer and hit[1].size == len(tokenizer):
        return hit[1]
    info = _TextTokenizer(tokenizer)
    try:
        ref = weakref.ref(tokenizer, functools.partial(_forget, _TEXT_TOKENIZERS, key))
    except TypeError:  # not weak-referenceable: not cached
        return info
    _TEXT_TOKENIZERS[key] = (ref, info)
    return info


def _forget(cache: dict, key: int, ref: Any) -> None:
    # The cache is bound, not looked up: at interpreter exit the module's globals may be gone
    # already. Only this tokenizer's entry goes (its id may have been reused since).
    if cache.get(key, (None,))[0] is ref:
        del cache[key]


def spells_special_token(tokenizer: Any, text: str) -> bool:
    """Whether ``text`` spells a special or added token of ``tokenizer`` (``"<|im_end|>"`` for
    SmolLM2): such text is tokenized as its characters by every encoder here."""
    return _text_tokenizer(tokenizer).spells(text)


def _merged(spans: Sequence[Span]) -> list[Span]:
    out: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in spans if e > s):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def encode_text(tokenizer: Any, text: str, data_spans: Sequence[Span] = (),
                add_special_tokens: bool = False) -> tuple[list[int], list[Span]]:
    """Token ids and character offsets of ``text``, whose ``data_spans`` are sample text: a
    special-token spelling inside a span is encoded as its characters, while the rest of the
    text (the template and the prompt's own words) keeps its special tokens. When no span
    spells one, this is exactly ``tokenizer(text, add_special_tokens=...)``."""
    info = _text_tokenizer(tokenizer)
    spans = _merged(data_spans)
    if not any(info.spells(text[s:e]) for s, e in spans):
        return _tokenize(tokenizer, text, add_special_tokens)
    return info.encode(text, spans, add_special_tokens)


def tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """The ids of sample text on its own (no BOS/EOS added), special-token spellings kept as
    characters. Identical to ``tokenizer(text, add_special_tokens=False)["input_ids"]`` for
    text that spells no special or added token."""
    info = _text_tokenizer(tokenizer)
    if not info.spells(text):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return info.encode(text, [(0, len(text))], False)[0]


# Markers around sample text inside a prompt the caller composes; the nonce keeps a sample
# from forging them.
_NONCE = secrets.token_hex(6)
_DATA_OPEN = f"\ue000data:{_NONCE}\ue001"
_DATA_CLOSE = f"\ue002data:{_NONCE}\ue003"
_DATA_MARK = re.compile(f"{re.escape(_DATA_OPEN)}|{re.escape(_DATA_CLOSE)}")


def mark_data(text: str) -> str:
    """``text`` between markers that :func:`encode_marked` and :func:`render_chat` turn into a
    data span (and remove): compose a prompt around sample text with this."""
    if _DATA_OPEN in text or _DATA_CLOSE in text:
        raise ValueError("sample text holds Syllabus's data markers; it cannot be encoded safely")
    return f"{_DATA_OPEN}{text}{_DATA_CLOSE}"


def unmark_data(text: str) -> tuple[str, list[Span]]:
    """``text`` without the markers of :func:`mark_data`, and the spans they enclosed."""
    out: list[str] = []
    spans: list[Span] = []
    length = 0
    start: int | None = None
    pos = 0
    for m in _DATA_MARK.finditer(text):
        out.append(text[pos:m.start()])
        length += m.start() - pos
        pos = m.end()
        if m.group() == _DATA_OPEN:
            if start is not None:
                raise ValueError("nested data markers: mark each piece of sample text once")
            start = length
        else:
            if start is None:
                raise ValueError("a data marker closes no open one: the template split a marked text")
            spans.append((start, length))
            start = None
    if start is not None:
        raise ValueError("a data marker is never closed: the template cut a marked text")
    out.append(text[pos:])
    return "".join(out), spans


def encode_marked(tokenizer: Any, marked: str, add_special_tokens: bool = False
                  ) -> tuple[list[int], list[Span], str, list[Span]]:
    """``(ids, offsets, text, data_spans)`` of a prompt whose sample text was wrapped with
    :func:`mark_data`: :func:`encode_text` over the unmarked text."""
    text, spans = unmark_data(marked)
    ids, offsets = encode_text(tokenizer, text, spans, add_special_tokens)
    return ids, offsets, text, spans


def _render_turns(tokenizer: Any, turns: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if not has_chat_template(tokenizer):
        return "\n".join(t["content"] for t in turns) + "\n"
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=add_generation_prompt)


def render_chat(tokenizer: Any, turns: list[dict[str, str]], add_generation_prompt: bool = True,
                contents_are_data: bool = True) -> tuple[str, list[Span]]:
    """The chat template over ``turns`` and the character spans of its data: every turn's
    content (``contents_are_data``), else what the contents marked with :func:`mark_data`. The
    text is exactly the template's rendering of the unmarked turns."""
    if contents_are_data:
        marked = [{**t, "content": mark_data(t["content"])} for t in turns]
        plain_turns = turns
    else:
        marked = turns
        plain_turns = [{**t, "content": unmark_data(t["content"])[0]} for t in turns]
    plain = _render_turns(tokenizer, plain_turns, add_generation_prompt)
    text, spans = unmark_data(_render_turns(tokenizer, marked, add_generation_prompt))
    if text == plain:
        return plain, spans
    # The template rewrote the marked text (a "| trim" around it): find each data piece, as
    # the template wrote it, in order in the plain rendering.
    pieces = ([t["content"] for t in turns] if contents_are_data
              else [d for t in turns for d in _marked_pieces(t["content"])])
    spans, cursor = [], 0
    for piece in pieces:
        for candidate in (piece, piece.strip()):
            at = plain.find(candidate, cursor) if candidate else -1
            if at >= 0:
                spans.append((at, at + len(candidate)))
                cursor = at + len(candidate)
                break
        else:
            if piece.strip():
                raise ValueError("the chat template changes the message text in a way Syllabus cannot follow, "
                                 "so sample text cannot be kept apart from the template's special tokens; "
                                 "use a model whose template copies message contents verbatim")
    return plain, spans


def _marked_pieces(content: str) -> list[str]:
    text, spans = unmark_data(content)
    return [text[s:e] for s, e in spans]


def _data_spans(tokenizer: Any, turns: list[dict[str, str]], texts: Sequence[str]) -> list[Span] | None:
    """The data spans of ``P`` when a turn or one of ``texts`` spells an added token; None when
    nothing does (the plain one-call tokenization applies)."""
    info = _text_tokenizer(tokenizer)
    if not any(info.spells(t["content"]) for t in turns) and not any(info.spells(t) for t in texts):
        return None
    return render_chat(tokenizer, turns)[1]


def _encode(tokenizer: Any, text: str, add_special_tokens: bool, spans: Sequence[Span] | None
            ) -> tuple[list[int], list[Span]]:
    if spans is None:
        return _tokenize(tokenizer, text, add_special_tokens)
    return encode_text(tokenizer, text, spans, add_special_tokens)


def encode_pair(
    tokenizer: Any, sample: Any, response: str | None = None, cutoff: int = DEFAULT_CUTOFF
) -> EncodedPair:
    """Encode ``T = P + r + E`` for ``sample`` and response ``r`` (the reference output when
    ``response`` is None), truncated to ``cutoff`` tokens from the end of the response. The
    turns' contents and ``r`` are data: special-token spellings in them stay text."""
    response = (_get(sample, "output", "") or "") if response is None else response
    turns = prompt_messages(sample)
    templated = has_chat_template(tokenizer)
    prompt = render_prompt(tokenizer, sample)
    spans = _data_spans(tokenizer, turns, [response])
    # A template writes its own BOS into the text; a bare prompt gets the tokenizer's specials.
    add_special = not templated
    p_ids, p_offsets = _encode(tokenizer, prompt, add_special, spans)
    span = _instruction_span(prompt, turns)
    instruction_positions = (
        [i for i, (s, e) in enumerate(p_offsets) if e > s and s < span[1] and e > span[0]] if span else []
    )
    if len(p_ids) > cutoff:
        return EncodedPair(p_ids[:cutoff], cutoff, [i for i in instruction_positions if i < cutoff], "too_long",
                           True, prompt, response)
    eot = end_of_turn_text(tokenizer)
    full = prompt + response + (eot or "")
    full_spans = None if spans is None else [*spans, (len(prompt), len(prompt) + len(response))]
    t_ids, t_offsets = _encode(tokenizer, full, add_special, full_spans)
    if t_ids[: len(p_ids)] == p_ids:
        ids = t_ids
    else:  # boundary merge: keep tokenize(P) as the exact prefix, tokenize the rest alone
        r_ids, _ = _encode(tokenizer, response + (eot or ""), False, None if spans is None else [(0, len(response))])
        ids = p_ids + r_ids
    if eot is None and tokenizer.eos_token_id is not None:
        ids = ids + [int(tokenizer.eos_token_id)]
    truncated = len(ids) > cutoff
    return EncodedPair(ids[:cutoff], len(p_ids), instruction_positions, "ok", truncated, prompt, response)


def encode_prompt(tokenizer: Any, sample: Any, cutoff: int = DEFAULT_CUTOFF) -> EncodedPair:
    """Just ``P`` (for generation): ``input_ids`` are the prompt tokens, ``prompt_len`` their count."""
    prompt = render_prompt(tokenizer, sample)
    turns = prompt_messages(sample)
    ids, offsets = _encode(tokenizer, prompt, not has_chat_template(tokenizer), _data_spans(tokenizer, turns, []))
    span = _instruction_span(prompt, turns)
    inst = [i for i, (s, e) in enumerate(offsets) if span and e > s and s < span[1] and e > span[0]]
    status = "too_long" if len(ids) > cutoff else "ok"
    return EncodedPair(ids, len(ids), inst, status, False, prompt, "")
