"""The canonical sample, and the normalisation and validation of one raw record into it.

Every pool format ends here: Alpaca (instruction/input/output), question/answer pairs (or any
field names mapped with :class:`FieldMap`), and ShareGPT/OpenAI conversations
(``conversations``/``messages``; multi-turn kept). A record that cannot become a sample
raises :class:`RecordRejected` with a machine code and a sentence saying what to fix.

Two keys, for two jobs:

- The **sample id** is the record's own id, or else :func:`messages_hash` of its messages
  exactly as written. Shards, pool fingerprints and every cache key depend on it, so it never
  normalises anything.
- The **dedup key** (:func:`dedup_key`) is the same hash over each turn's text as
  :func:`dedup_text` writes it: invisible characters removed (every Unicode format character,
  category Cf, such as zero-width spaces and joiners, bidi controls, soft hyphens and the byte
  order mark, plus the other default-ignorable code points such as variation selectors and
  Hangul fillers: :data:`IGNORABLE`), then Unicode NFKC normalisation (NFC and NFD spellings,
  full-width letters and ligatures become one spelling), then every run of whitespace collapsed
  to one space and the ends stripped. Two records with the same roles and the same dedup key are
  duplicates. For text already in that form the dedup key equals the content-hash id.

A required text (the instruction, the answer, every non-system turn) that is empty under
:func:`dedup_text` (only whitespace and invisible characters) is rejected as ``empty_field``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping

import pyarrow as pa

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("source", pa.string()),
        ("instruction", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("metadata", pa.string()),
    ]
)
COLUMNS = SCHEMA.names

DEFAULT_MAX_CHARS = 200_000
# Lone surrogates: undecodable bytes kept by surrogateescape (\udc80-\udcff) or a JSON
# "\ud800" escape. Neither can be written as UTF-8, so Parquet would refuse the whole shard.
_SURROGATE = re.compile("[\ud800-\udfff]")
# The characters the dedup key ignores: every format character (Unicode category Cf) and the
# other default-ignorable code points (DerivedCoreProperties.txt), as (first, last) ranges.
# A test checks that every Cf character of the running Python's Unicode tables is covered.
IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
_IGNORABLE_RE = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" if a != b else chr(a) for a, b in IGNORABLE) + "]+")
_ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "system": "system",
}


class RecordRejected(ValueError):
    """A raw record that cannot become a sample. ``code`` groups reasons for summaries."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class FieldMap:
    """Which raw fields hold what. Each role lists candidates, the first present one wins."""

    instruction: tuple[str, ...] = ("instruction", "question", "prompt", "query", "problem")
    input: tuple[str, ...] = ("input", "context")
    output: tuple[str, ...] = ("output", "answer", "response", "completion", "solution")
    messages: tuple[str, ...] = ("messages", "conversations", "conversation")
    id: tuple[str, ...] = ("id", "sample_id", "uid", "uuid", "_id")

    @functools.cached_property
    def folded(self) -> bool:
        """Whether case-folding leaves every name as it is (then only a record key that folding
        changes can be another spelling of one)."""
        return all(name == name.casefold() for role in (self.instruction, self.input, self.output, self.messages, self.id)
                   for name in role)

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, str] | None) -> "FieldMap":
        """``{"instruction": "Q", "output": "A"}`` makes those the only candidates for their roles."""
        if not overrides:
            return cls()
        roles = {f for f in cls.__dataclass_fields__}
        unknown = set(overrides) - roles
        if unknown:
            raise ValueError(
                f"unknown field role(s) {', '.join(sorted(unknown))}; use one of {', '.join(sorted(roles))}, "
                "e.g. --field instruction=question_text"
            )
        return cls(**{k: (v,) for k, v in overrides.items()})


@dataclass
class Sample:
    sample_id: str
    source: str
    instruction: str
    input: str
    output: str
    messages: list[dict[str, str]]
    metadata: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""
    metadata_json: str | None = None  # the stored form, when normalise already made it
    dedup_key: str = ""  # messages_hash of the normalised text: see the module docstring

    def row(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "source": self.source,
            "instruction": self.instruction,
            "input": self.input,
            "output": self.output,
            "messages": self.messages,
            "metadata": self.metadata_json if self.metadata_json is not None
            else json.dumps(self.metadata, ensure_ascii=False, sort_keys=True, default=str),
        }


def _cased_keys(record: Mapping[str, Any]) -> dict[str, list[str]]:
    """The record's keys that case-folding changes (``Question``), by their folded form."""
    out: dict[str, list[str]] = {}
    for key in record:
        if isinstance(key, str) and key != (folded := key.casefold()):
            out.setdefault(folded, []).append(key)
    return out


def _first(record: Mapping[str, Any], names: tuple[str, ...], cased: dict[str, list[str]] | None) -> tuple[str | None, Any]:
    """The first of ``names`` the record has a value for, and that value. Names are compared
    ignoring case (spreadsheets write ``Question``), the exact spelling first; of two other
    spellings of one name, the record's first. ``cased``: :func:`_cased_keys` of the record, or
    None where no key can be another spelling of a name (see :attr:`FieldMap.folded`)."""
    for name in names:
        if name in record and record[name] is not None:
            return name, record[name]
        if cased is None:
            continue
        folded = name.casefold()
        if folded == name:  # the other spellings are keys that folding changes
            others = cased.get(folded, ())
        else:  # a name given in capitals (--field): any key may fold to it
            others = [k for k in record if isinstance(k, str) and k != name and k.casefold() == folded]
        for key in others:
            if record[key] is not None:
                return key, record[key]
    return None, None


def _check_text(name: str, value: Any, required: bool) -> str:
    if value is None:
        if required:
            raise RecordRejected("missing_field", f'field "{name}" is missing')
        return ""
    if not isinstance(value, str):
        raise RecordRejected(
            "wrong_type", f'field "{name}" is a {type(value).__name__}, expected text; convert it to a string'
        )
    if "\x00" in value:
        raise RecordRejected("nul_byte", f'field "{name}" contains a NUL byte; remove it and re-ingest')
    bad = _SURROGATE.search(value)
    if bad is not None:
        _reject_surrogate(name, bad.group())
    if required and (not value.strip() or (not value.isascii() and not dedup_text(value))):
        if value.strip():
            raise RecordRejected(
                "empty_field",
                f'field "{name}" holds only invisible characters (zero-width or format characters) and whitespace; '
                "give it visible text",
            )
        raise RecordRejected("empty_field", f'field "{name}" is empty')
    return value


def _reject_surrogate(name: str, char: str) -> None:
    if "\udc80" <= char <= "\udcff":
        raise RecordRejected(
            "invalid_utf8",
            f'field "{name}" is not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02x}); re-encode the file as UTF-8',
        )
    raise RecordRejected(
        "invalid_utf8",
        f'field "{name}" holds a lone surrogate (\\u{ord(char):04x}, e.g. from a JSON escape), which is not '
        "valid Unicode text; fix the escape and re-ingest",
    )


def _conversation(name: str, turns: Any) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise RecordRejected("bad_conversation", f'field "{name}" must be a non-empty list of turns')
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise RecordRejected("bad_conversation", f'{name}[{i}] is a {type(turn).__name__}, expected an object')
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        role_norm = _ROLE_ALIASES.get(str(role).lower()) if isinstance(role, str) else None
        if role_norm is None:
            raise RecordRejected(
                "bad_conversation",
                f"{name}[{i}] has role {role!r}; expected one of {', '.join(sorted(set(_ROLE_ALIASES)))}",
            )
        if isinstance(content, list):
            content = _text_parts(f"{name}[{i}].content", content)
        content = _check_text(f"{name}[{i}].content", content, required=role_norm != "system")
        out.append({"role": role_norm, "content": content})
    if out[-1]["role"] != "assistant":
        raise RecordRejected(
            "bad_conversation", f'the last turn of "{name}" is from {out[-1]["role"]}; it must be the assistant\'s answer'
        )
    if not any(t["role"] == "user" for t in out[:-1]):
        raise RecordRejected("bad_conversation", f'"{name}" has no user turn before the final answer')
    return out


def _text_parts(name: str, parts: list) -> str:
    """A turn's content given as parts (OpenAI's ``[{"type": "text", "text": ...}]``): their
    texts joined with nothing between them, as chat templates that take parts write them. A part
    that is not text (an image, audio) rejects the record: Syllabus trains on text."""
    texts = []
    for j, part in enumerate(parts):
        if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
            kind = f"a part of type {part.get('type')!r}" if isinstance(part, Mapping) else f"a {type(part).__name__}"
            raise RecordRejected("wrong_type", f'{name}[{j}] is {kind}, not a text part ({{"type": "text", "text": ...}}); '
                                               "Syllabus reads text only: drop the record or its other parts")
        texts.append(part["text"])
    return "".join(texts)


def messages_hash(messages: list[dict[str, str]]) -> str:
    blob = json.dumps(messages, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def dedup_text(text: str) -> str:
    """``text`` as the dedup key compares it: invisible characters (:data:`IGNORABLE`) removed,
    NFKC-normalised, whitespace runs collapsed to one space, ends stripped."""
    if text.isascii():  # the common case, already NFKC and with nothing to remove: skip the scans
        return " ".join(text.split())
    text = _IGNORABLE_RE.sub("", text)
    if not unicodedata.is_normalized("NFKC", text):
        text = _IGNORABLE_RE.sub("", unicodedata.normalize("NFKC", text))
    return " ".join(text.split())


def dedup_key(messages: list[dict[str, str]], content: str | None = None) -> str:
    """The duplicate-detection key of a conversation: :func:`messages_hash` of its turns with
    each text replaced by :func:`dedup_text`; equal to the content hash for text already in
    that form (``content``, that hash when the caller has it, is then returned unhashed)."""
    turns = [{"role": t["role"], "content": dedup_text(t["content"])} for t in messages]
    if content is not None and all(n["content"] == t["content"] for n, t in zip(turns, messages)):
        return content
    return messages_hash(turns)


def normalise(
    record: Any, source: str, fields: FieldMap = FieldMap(), max_chars: int = DEFAULT_MAX_CHARS
) -> Sample:
    """Turn one raw record into a :class:`Sample` or raise :class:`RecordRejected`."""
    if not isinstance(record, Mapping):
        raise RecordRejected("wrong_type", f"the record is a JSON {type(record).__name__}, expected an object")
    used: set[str] = set()
    cased: dict[str, list[str]] | None = _cased_keys(record)
    if not cased and fields.folded:  # the usual record: only exact spellings can match
        cased = None
    msg_name, turns = _first(record, fields.messages, cased)
    if msg_name is not None:
        messages = _conversation(msg_name, turns)
        used.add(msg_name)
        last_user = max(i for i, t in enumerate(messages[:-1]) if t["role"] == "user")
        instruction, input_text, output = messages[last_user]["content"], "", messages[-1]["content"]
    else:
        ins_name, ins_val = _first(record, fields.instruction, cased)
        out_name, out_val = _first(record, fields.output, cased)
        if ins_name is None:
            raise RecordRejected(
                "missing_field",
                f"no instruction field (looked for {', '.join(fields.instruction)}); "
                "map yours with --field instruction=NAME",
            )
        if out_name is None:
            raise RecordRejected(
                "missing_field",
                f"no response field (looked for {', '.join(fields.output)}); map yours with --field output=NAME",
            )
        inp_name, inp_val = _first(record, fields.input, cased)
        instruction = _check_text(ins_name, ins_val, required=True)
        output = _check_text(out_name, out_val, required=True)
        input_text = _check_text(inp_name, inp_val, required=False) if inp_name else ""
        used.update(n for n in (ins_name, out_name, inp_name) if n)
        user = instruction if not input_text.strip() else f"{instruction}\n\n{input_text}"
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]

    size = sum(len(t["content"]) for t in messages)
    if size > max_chars:
        raise RecordRejected(
            "too_long", f"the record has {size:,} characters, over the limit of {max_chars:,} (--max-chars)"
        )
    id_name, id_val = _first(record, fields.id, cased)
    content = messages_hash(messages)
    if id_name is not None:
        if isinstance(id_val, bool) or not isinstance(id_val, (str, int)) or not str(id_val).strip():
            raise RecordRejected("wrong_type", f'id field "{id_name}" must be a non-empty string or integer')
        sample_id = str(id_val)
        _check_text(id_name, sample_id, required=True)
        used.add(id_name)
    else:
        sample_id = content
    metadata = {k: v for k, v in record.items() if k not in used}
    for key, value in metadata.items():
        if isinstance(value, str):
            _check_text(key, value, required=False)
    # Nested metadata and keys can hold lone surrogates too; the stored JSON is what must encode.
    metadata_json = json.dumps(metadata, ensure_ascii=False, sort_keys=True, default=str)
    bad = _SURROGATE.search(metadata_json)
    if bad is not None:
        where = next((k for k in metadata if _SURROGATE.search(str(k))), None)
        _reject_surrogate(f"metadata key {where}" if where is not None else "metadata", bad.group())
    return Sample(sample_id, source, instruction, input_text, output, messages, metadata, content, metadata_json,
                  dedup_key(messages, content))
