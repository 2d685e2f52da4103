"""The vectorised ingest path: a block of JSONL lines, or a batch of Parquet rows, is parsed by
pyarrow as one table and checked column by column; its plain records become canonical rows in
one tight pass, and every other record goes through the per-record path
(:func:`readers.jsonl_record`, :func:`canonical.normalise`), so its quarantine reason is that
path's own.

A record is plain, and taken here, when all of this holds; otherwise it is sent on:

- (JSONL) its line fits the line limit, starts with ``{`` and ends with ``}`` (a ``\\r``
  before the newline allowed), is valid UTF-8, and pyarrow parses it as exactly one row
  (a line pyarrow refuses, such as a duplicate key, goes on alone; the rest are parsed again);
- every field it has is a string (the id may be an integer): a nested value, a number, a
  boolean or a null goes on, since the per-record path keeps its exact JSON form in the
  metadata (fields that other records of the block have and it lacks are fine, unless its
  line spells ``null`` anywhere: then pyarrow's null could be a JSON null);
- no more than :data:`MAX_OPENINGS` ``[`` and ``{`` on its line (pyarrow's reader recurses);
- Alpaca or question/answer fields (a record with a conversation field goes on);
- no control character but tab, newline and carriage return in any field;
- no spelling of a chat-template token (:mod:`syllabus.pool.special_tokens`);
- at most ``max_chars`` characters, and no required text that is blank or only invisible.

A block of fewer than :data:`MIN_ROWS` records (a small file) goes on whole.

For a plain record the sample id, the dedup key, the metadata JSON and the line the shard hash
covers are written in the forms :func:`canonical.messages_hash`, :func:`canonical.dedup_key`,
:func:`canonical.normalise` and :func:`ingest.shard_content_hash` use, so ids, shard hashes and
pool fingerprints are those of the per-record path (``tests/unit/pool/test_vectorised_golden.py``
holds both paths to it). Records of ASCII texts, one field per role and every metadata field
(the usual case) are made column by column with pyarrow compute functions: the json encoder's
escapes of text with no control character but tab, newline and carriage return are five
substring replacements, and the strings hashed are joined in Arrow and hashed from its buffers;
the block's rows stay Arrow columns (:attr:`Prepared.columns`) that the sharder cuts shards from.
Other plain records are made one by one with the json module's own string encoder.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import re
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _esc  # json.dumps(text, ensure_ascii=False) for a str
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from syllabus.pool.canonical import _ROLE_ALIASES, SCHEMA, FieldMap, dedup_text
from syllabus.pool.dedup import code_of, codes
from syllabus.pool.readers import LineBlock, RawRecord, RowBatch, jsonl_record, too_long_record
from syllabus.pool.special_tokens import FAMILY_OF

# Control characters the json module escapes as \u00XX (and NUL, which canonical rejects), and
# U+FFFF: records holding one take the per-record path.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x{ffff}]"
_CONTROL_PY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\uffff]")  # the same, for field names
# U+FFFF (a noncharacter) joins a column's values so that the json encoder escapes them in one
# call (_escape_all); a value holding it takes the per-record path.
_JOIN = "\uffff"
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def _re2_literal(text: str) -> str:
    return _RE2_SPECIAL.sub(r"\\\1", text)


# Every text in which special_tokens.spelled_tokens can find a token matches this (a reserved
# Llama 3 token by its fixed start: RE2's \d is narrower than Python's).
SPECIAL_TOKEN_FILTER = "|".join(
    [_re2_literal("<|reserved_special_token_")] + [_re2_literal(t) for t in sorted(FAMILY_OF) if "*" not in t]
)
MAX_OPENINGS = 256
# Below this many records a block takes the per-record path: pyarrow's reader and the column
# checks cost about 2.5 ms a block whatever its size, the per-record path about 25 us a record.
MIN_ROWS = 64
# What makes canonical.dedup_text change ASCII text: whitespace but single inner spaces.
_WHITESPACE_CHANGES = r"[\t\n\x0b\x0c\r\x1c-\x1f]|  |^ | $"
_CONTROL_OR_SPECIAL = _CONTROL + "|" + SPECIAL_TOKEN_FILTER
# The bytes the json encoder escapes in text whose only control characters are tab, newline and
# carriage return, and their escapes (backslash first).
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_PAIR = '[{"role":"user","content":%s},{"role":"assistant","content":%s}]'
_PAIR_INNER = '[{"role":"user","content":"%s"},{"role":"assistant","content":"%s"}]'
_ROW_INNER = ('{"input":"%s","instruction":"%s","messages":[{"content":"%s","role":"user"},{"content":"%s","role":"assistant"}],'
              '"metadata":"%s","output":"%s","sample_id":"%s","source":%s}\n')
_ROW = ('{"input":%s,"instruction":%s,"messages":[{"content":%s,"role":"user"},{"content":%s,"role":"assistant"}],'
        '"metadata":%s,"output":%s,"sample_id":%s,"source":%s}\n')


# The columns of a block's plain rows (Prepared.columns), in this order: the shard's columns
# (canonical.SCHEMA), then the row's line as the shard hash covers it.
ROW_COLUMNS = ("sample_id", "source", "instruction", "input", "output", "messages", "metadata", "line")


@dataclass
class Prepared:
    """A block's records in file order, as ``runs``: each a :class:`RawRecord` for the
    per-record path, or a ``(first, stop)`` range of plain records (their indices ``k``).

    A plain record ``k`` is row ``k`` of ``columns`` (:data:`ROW_COLUMNS`: the shard's row and
    ``line``, the row's line as the shard hash covers it) and entry ``k`` of ``sample_ids``,
    ``contents`` (content hashes), ``keys`` (dedup keys) and ``wheres`` ((file, line, row));
    ``record(k)`` is its RawRecord.

    The same in numbers, for the ingest's deduplication (:mod:`syllabus.pool.dedup`):
    ``key_codes`` (each key's 64 bits), ``own`` (the records whose sample id is not their key,
    in order; ``own_hex`` and ``own_codes``: which of those ids are 16 hex digits, and their
    numbers) and ``positions`` (each record's line, or row, in the file). A Prepared sent to
    another process carries only these and ``columns``: the lists are made again on first use,
    so a block whose records are all new costs no Python object per record there. One made
    by a worker process (:func:`prepare_lines_detached`) comes without ``record``;
    :func:`attach` gives it back from the block."""

    runs: list[Any] = field(default_factory=list)
    columns: pa.Table | None = None
    sample_ids: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    record: Callable[[int], RawRecord] | None = None  # a plain record's RawRecord, for the quarantine
    line_of: np.ndarray | None = None  # per plain record, its line's index in the block (JSONL)
    key_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    own: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    own_hex: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per own id: 16 hex digits
    own_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # their numbers (0 for others)
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    file: str = ""
    by_row: bool = False  # positions are rows (Parquet), not lines
    _chunks: list[pa.Table] = field(default_factory=list)
    _positions: list[np.ndarray] = field(default_factory=list)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in _LAZY}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __getattr__(self, name: str) -> Any:
        # Only for the lists made on first use (a missing attribute ends here).
        if name not in _LAZY or "_content_codes" not in self.__dict__:
            raise AttributeError(name)
        if name == "sample_ids":
            value = self.columns.column("sample_id").to_pylist() if self.columns is not None else []
        elif name == "contents":
            value = [f"{c:016x}" for c in self._content_codes.tolist()]
        elif name == "keys":
            value = [f"{c:016x}" for c in self.key_codes.tolist()]
        else:
            value = [self.where(k) for k in range(len(self.positions))]
        self.__dict__[name] = value
        return value

    def where(self, k: int) -> tuple:
        """Record ``k``'s (file, line, row)."""
        at = int(self.positions[k])
        return (self.file, None, at) if self.by_row else (self.file, at, None)

    def sample_id(self, k: int) -> str:
        return self.columns.column("sample_id")[k].as_py()

    def content(self, k: int) -> str:
        """Record ``k``'s content hash (without making the list of them all)."""
        return f"{int(self._content_codes[k]):016x}"

    def key(self, k: int) -> str:
        """Record ``k``'s dedup key (without making the list of them all)."""
        return f"{int(self.key_codes[k]):016x}"

    @property
    def items(self) -> list[Any]:
        """Per record, in file order: the index ``k`` of a plain record, or its RawRecord."""
        return [k for run in self.runs for k in (range(*run) if isinstance(run, tuple) else (run,))]

    @property
    def rows(self) -> list[tuple]:
        """Per plain record: (sample_id, source, instruction, input, output, user turn, None,
        metadata JSON, line, content hash, dedup key, where), as the per-record path makes them."""
        if self.columns is None:
            return []
        cols = [self.columns.column(name).to_pylist() for name in ROW_COLUMNS]
        sid, src, a, x, o, turns, m, line = cols
        u = [t[0]["content"] for t in turns]
        return list(zip(sid, src, a, x, o, u, [None] * len(sid), m, line, self.contents, self.keys, self.wheres))

    def _add(self, chunk: pa.Table, sample_ids: list[str], contents: list[str], keys: list[str], positions: np.ndarray) -> None:
        self._chunks.append(chunk)
        self.sample_ids += sample_ids
        self.contents += contents
        self.keys += keys
        self._positions.append(positions)

    def _finish(self) -> None:
        if self._chunks:
            self.columns = pa.concat_tables(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = []
        self.key_codes = codes(self.keys)
        self._content_codes = codes(self.contents)
        sids, contents = self.sample_ids, self.contents
        own = [k for k, (i, key) in enumerate(zip(sids, self.keys)) if i != key]
        self.own = np.array(own, np.int64)
        # An own id is mostly the record's content hash (its dedup key is another): that number
        # is at hand; any other id is read (or found to be no key) one by one.
        spelled = [int(self._content_codes[k]) if sids[k] == contents[k] else code_of(sids[k]) for k in own]
        self.own_hex = np.array([c is not None for c in spelled], bool)
        self.own_codes = np.array([c or 0 for c in spelled], np.uint64)
        if self._positions:
            self.positions = np.concatenate(self._positions).astype(np.int64)
        self._positions = []


_LAZY = ("sample_ids", "contents", "keys", "wheres")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _role_columns(table: pa.Table, fields: FieldMap) -> pa.Table | None:
    """``table`` with each column that spells a field name in other case (``Question``) renamed
    to that name, as :func:`canonical.normalise` matches names ignoring case; ``None`` (every
    row goes on) when a name has its exact column too, or two other spellings, where the
    per-record path picks per record."""
    names = table.column_names
    renames: dict[str, str] = {}
    for candidate in (*fields.instruction, *fields.output, *fields.input, *fields.id, *fields.messages):
        folded = candidate.casefold()
        variants = [n for n in names if n != candidate and n.casefold() == folded]
        if not variants:
            continue
        if candidate in names or len(variants) > 1 or variants[0] in renames:
            return None
        renames[variants[0]] = candidate
    return table.rename_columns([renames.get(n, n) for n in names]) if renames else table


_USERS = pa.array(sorted(a for a, r in _ROLE_ALIASES.items() if r == "user"))
_ASSISTANTS = pa.array(sorted(a for a, r in _ROLE_ALIASES.items() if r == "assistant"))


def _flat_conversations(table: pa.Table, fields: FieldMap) -> tuple[pa.Table, np.ndarray | None]:
    """A conversation column whose rows are one user turn and its answer, as the instruction
    and output columns the per-record path makes of them (:func:`canonical.normalise`: the
    same messages, sample id and row), and which rows those are. ``(table, None)`` as it is
    (:func:`_plain_rows` then sends every row that has a conversation on) without a
    conversation column, or with one whose rows cannot be read column by column: turns with
    other keys than a role and a text, or a table that also has instruction, output or input
    columns (the per-record path keeps those as metadata beside a conversation)."""
    names = table.column_names
    convs = [name for name in names if name in fields.messages]
    if not convs:
        return table, None
    roles_text = [*fields.instruction, *fields.output, *fields.input]
    if len(convs) > 1 or any(name in roles_text for name in names):
        return table, None
    col = table.column(convs[0])
    kind = col.type
    if not (pa.types.is_list(kind) and pa.types.is_struct(kind.value_type)):
        return table, None
    keys = {f.name: f.type for f in kind.value_type}
    role = next((k for k in ("role", "from") if k in keys), None)
    text = next((k for k in ("content", "value") if k in keys), None)
    if len(keys) != 2 or role is None or text is None or not (_is_text(keys[role]) and _is_text(keys[text])):
        return table, None
    turns = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    two = _numpy(pc.fill_null(pc.equal(pc.list_value_length(turns), 2), False))
    first = np.asarray(turns.offsets)[:-1].astype(np.int64)
    first = np.where(two, first, 0)
    flat = turns.values  # every turn of every row
    if len(flat) == 0:
        return table, None
    at0, at1 = pa.array(first), pa.array(np.where(two, first + 1, 0))
    roles, texts, present = flat.field(role), flat.field(text), flat.is_valid()
    ok = two.copy()
    picked = []  # the user turn's text, then the answer's
    for at, allowed in ((at0, _USERS), (at1, _ASSISTANTS)):
        r, t = roles.take(at), texts.take(at)
        ok &= _numpy(pc.fill_null(pc.is_in(pc.utf8_lower(r), value_set=allowed), False)) & _ascii(r)
        ok &= _numpy(present.take(at)) & _numpy(t.is_valid())
        picked.append(t)
    mask = pa.array(ok)
    user, answer = (pc.if_else(mask, t, pa.scalar(None, texts.type)) for t in picked)
    out = table.drop_columns([convs[0]]).append_column(fields.instruction[0], user).append_column(fields.output[0], answer)
    return out, ok


def _plain_rows(table: pa.Table, fields: FieldMap, absent: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """Which rows of ``table`` may be plain (see the module docstring), as far as columns tell,
    and the columns they may have values in (text, and integer ids).

    ``absent``: per row, whether a null stands for a field the record does not have (a JSON
    line without the ``null`` token); ``None`` when nulls are values (Parquet), which the
    per-record path keeps in the metadata, so such rows are sent on."""
    n = table.num_rows
    names = table.column_names
    if len(set(names)) != len(names) or any(_CONTROL_PY.search(name) for name in names):
        return np.zeros(n, bool), []
    keep = []
    mask = np.ones(n, bool)
    some_null = np.zeros(n, bool)
    texts = set(fields.instruction) | set(fields.input) | set(fields.output)
    for name in names:
        col = table.column(name)
        valid = _numpy(pc.is_valid(col))
        some_null |= ~valid
        if name in fields.messages:
            mask &= ~valid  # a conversation: the per-record path
        elif _is_text(col.type):
            keep.append(name)
            # One pass per column: a control character anywhere, a special token in the texts.
            if _may_match(col, name in texts):
                mask &= ~_numpy(pc.fill_null(pc.match_substring_regex(col, _CONTROL_OR_SPECIAL if name in texts else _CONTROL), False))
        elif name in fields.id and pa.types.is_integer(col.type):
            keep.append(name)
        else:
            mask &= ~valid  # a number, boolean, list or object: its JSON form is the per-record path's
    return mask & ~(some_null if absent is None else some_null & ~absent), keep


def _plain_text(col: pa.ChunkedArray) -> np.ndarray:
    """Per value: ASCII text that :func:`canonical.dedup_text` leaves as it is and that is not
    blank (no whitespace but single inner spaces, not empty)."""
    same = _ascii(col) & ~_numpy(pc.fill_null(pc.match_substring_regex(col, _WHITESPACE_CHANGES), True))
    return same & _numpy(pc.fill_null(pc.greater(pc.utf8_length(col), 0), False))


def _ascii(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per value, whether it is ASCII text (False for a null)."""
    if all(int(data.max(initial=0)) < 0x80 for data in _data(col)):
        return _numpy(pc.is_valid(col))
    return _numpy(pc.fill_null(pc.string_is_ascii(col), False))


def _numpy(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean result as numpy (np.asarray of a ChunkedArray takes a slow path, 0.5 us a value)."""
    return values.to_numpy() if isinstance(values, pa.ChunkedArray) else values.to_numpy(zero_copy_only=False)


def _escape_all(values: list[str]) -> list[str]:
    """What the json encoder writes between the quotes of each value (no value holds _JOIN)."""
    return _esc(_JOIN.join(values))[1:-1].split(_JOIN)


def _data(col: pa.Array | pa.ChunkedArray) -> list[np.ndarray]:
    """The bytes of a text column's data buffers (each chunk's whole buffer: a superset of its
    values' bytes)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    return [np.frombuffer(c.buffers()[2], np.uint8) for c in chunks if c.buffers()[2] is not None]


def _holds(col: pa.Array | pa.ChunkedArray, byte: int) -> bool:
    """Whether a text column's data may hold ``byte``."""
    return any(bool((data == byte).any()) for data in _data(col))


def _may_match(col: pa.Array | pa.ChunkedArray, special: bool) -> bool:
    """Whether _CONTROL (``special``: _CONTROL_OR_SPECIAL) may match a value of a text column: its
    data holds a control character but tab, newline and carriage return, the first byte of
    U+FFFF's UTF-8 (EF BF BF), or (``special``) a "<" or "[", with which every token starts."""
    for data in _data(col):
        if int(np.count_nonzero(data < 0x20)) > sum(int(np.count_nonzero(data == c)) for c in (9, 10, 13)):
            return True
        if any(bool((data == c).any()) for c in ((0xEF, 0x3C, 0x5B) if special else (0xEF,))):
            return True
    return False


def _escape(col: pa.Array) -> pa.Array:
    """What the json encoder (``ensure_ascii=False``) writes between the quotes of each value,
    for text whose only control characters are tab, newline and carriage return (a
    replacement runs only when its byte is in the column's data)."""
    for raw, escaped in _ESCAPES:
        if _holds(col, ord(raw)):
            col = pc.replace_substring(col, raw, escaped)
    return col


# Python's str.strip() whitespace, as far as ASCII goes: a text holding none but these is blank.
_NOT_BLANK = r"[^ \t\n\r\x0b\x0c\x1c-\x1f]"


def _not_blank(col: pa.Array, where: np.ndarray | None = None) -> np.ndarray:
    """Per value, whether the text holds a character str.strip() keeps (only the rows of
    ``where`` are looked at; the others are False)."""
    if where is None:
        return _numpy(pc.fill_null(pc.match_substring_regex(col, _NOT_BLANK), False))
    out = np.zeros(len(col), bool)
    if where.any():
        at = np.flatnonzero(where)
        out[at] = _numpy(pc.fill_null(pc.match_substring_regex(col.take(pa.array(at)), _NOT_BLANK), False))
    return out


def _join(*parts: Any) -> pa.Array:
    """The element-wise concatenation of arrays and literal strings."""
    return pc.binary_join_element_wise(*[pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts], "")


def _sha16(col: pa.Array) -> list[str]:
    """The first 16 hex digits of each value's SHA-256 (hashed straight from the Arrow buffer)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    offsets = np.frombuffer(col.buffers()[1], np.int32, n + 1, col.offset * 4).tolist()
    data = memoryview(col.buffers()[2])
    sha = hashlib.sha256
    return [sha(data[a:b]).hexdigest()[:16] for a, b in zip(offsets, offsets[1:])]


def _make_rows(prep: Prepared, table: pa.Table, fields: FieldMap, max_chars: int, source: str, where: np.ndarray) -> list[bool]:
    """Append the canonical rows of ``table`` (all plain as far as columns tell) to ``prep``;
    returns, per row, whether it was taken (a missing or blank text or id, or a record over
    ``max_chars``, sends it on). A null is a field the record does not have. ``where``: each
    row's line (or row) in the file.

    Rows whose texts are ASCII, with one column per role and every metadata field present, are
    made column by column in Arrow (_simple_made); the others one by one."""
    n = table.num_rows
    names = table.column_names
    roles = [[name for name in candidates if name in names]
             for candidates in (fields.instruction, fields.output, fields.input, fields.id)]
    # When no role has two candidate fields (the usual case), each role is one column and the
    # metadata fields are the others; otherwise each row takes its first present candidate.
    single = all(len(role) <= 1 for role in roles)
    role_names = {role[0] for role in roles if role} if single else set()
    meta_names = [name for name in sorted(names) if name not in role_names and name not in fields.messages]
    simple, clean = _simple_rows(table, roles, meta_names, max_chars) if single else (np.zeros(n, bool), [])
    made = np.zeros(n, bool)
    parts = []  # (positions in table, columns, sample ids, contents, keys)
    if simple.any():
        at = np.flatnonzero(simple)
        columns, sids, contents, keys, ok = _simple_made(table.take(pa.array(at)), roles, meta_names, source,
                                                         [c[at] for c in clean])
        at = at[ok]
        made[at] = True
        parts.append((at, columns, sids, contents, keys))
    rest = np.flatnonzero(~simple)
    if len(rest):
        sub = table.take(pa.array(rest))
        values = {name: sub.column(name).to_pylist() for name in names}
        slow = _slow_made(values, len(rest), roles, single, meta_names, fields, max_chars, source)
        taken = [row is not None for row in slow]
        if any(taken):
            at = rest[np.asarray(taken, bool)]
            made[at] = True
            rows = [row for row in slow if row is not None]
            cols = list(zip(*rows))
            arrays = [pa.array(c, pa.string()) for c in cols[:8]]
            arrays[5] = pair_turns(arrays[5], arrays[4])  # the user turn and the output
            parts.append((at, pa.table(arrays, names=list(ROW_COLUMNS)), list(cols[0]), list(cols[8]), list(cols[9])))
    if parts:
        if len(parts) == 1:
            at, columns, sids, contents, keys = parts[0]
        else:
            order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
            at = np.concatenate([p[0] for p in parts])[order]
            columns = pa.concat_tables([p[1] for p in parts]).take(pa.array(order))
            pick = order.tolist()
            sids, contents, keys = ([flat[j] for j in pick] for flat in ([v for p in parts for v in p[i]] for i in (2, 3, 4)))
        prep._add(columns, sids, contents, keys, where[at])
    return made.tolist()


def _slow_made(values: dict[str, list], n: int, roles: list[list[str]], single: bool, meta_names: list[str],
               fields: FieldMap, max_chars: int, source: str) -> list[tuple | None]:
    """Rows one by one: (sample_id, source, instruction, input, output, user turn, metadata
    JSON, line, content hash, dedup key), or None for a record the per-record path must see."""
    if single:
        picked = [(values[role[0]] if role else [None] * n, None) for role in roles]
    else:
        picked = []
        for role in roles:
            pairs = [next(((name, values[name][j]) for name in role if values[name][j] is not None), (None, None))
                     for j in range(n)]
            picked.append(([v for _, v in pairs], [k for k, _ in pairs]))
    (ins, ins_names), (out, out_names), (inp, inp_names), (ids, id_names) = picked
    meta = [(_esc(name), name, values[name]) for name in meta_names]
    esrc = _esc(source)
    sha = hashlib.sha256
    made: list[tuple | None] = [None] * n
    for j in range(n):
        a, o, x = ins[j], out[j], inp[j]
        if (type(a) is not str or type(o) is not str or not a.strip() or not o.strip()
                or (not a.isascii() and not dedup_text(a)) or (not o.isascii() and not dedup_text(o))):
            continue
        if x is None:
            x = ""
        elif type(x) is not str:
            continue
        user = f"{a}\n\n{x}" if x.strip() else a
        if len(user) + len(o) > max_chars:
            continue
        sid = ids[j]
        if sid is not None:
            if type(sid) is not str:
                sid = str(sid)
            elif not sid.strip() or (not sid.isascii() and not dedup_text(sid)):
                continue
        eu, eo = _esc(user), _esc(o)
        content = sha((_PAIR % (eu, eo)).encode()).hexdigest()[:16]
        du, do = dedup_text(user), dedup_text(o)
        key = content if du == user and do == o else sha((_PAIR % (_esc(du), _esc(do))).encode()).hexdigest()[:16]
        if sid is None:
            sid = content
        used = () if single else (ins_names[j], out_names[j], inp_names[j], id_names[j])
        meta_json = "{" + ", ".join([k + ": " + (_esc(v) if type(v) is str else str(v))
                                     for k, name, column in meta if (v := column[j]) is not None and name not in used]) + "}"
        made[j] = (sid, source, a, x, o, user, meta_json,
                   _ROW % (_esc(x), _esc(a), eu, eo, _esc(meta_json), eo, _esc(sid), esrc), content, key)
    return made


def _simple_rows(table: pa.Table, roles: list[list[str]], meta_names: list[str], max_chars: int) -> tuple[np.ndarray, list]:
    """Rows of one column per role whose texts (instruction, output, input, a text id) are
    ASCII or absent, that fit ``max_chars`` and have every metadata field (see _simple_made);
    and, per row, whether the instruction, the output and the input are clean (_plain_text)."""
    n = table.num_rows
    none = np.zeros(n, bool), []
    ins, out, inp, ids = (role[0] if role else None for role in roles)
    if ins is None or out is None or not (_is_text(table.schema.field(ins).type) and _is_text(table.schema.field(out).type)):
        return none
    ascii_ = _ascii
    ins_col, out_col = table.column(ins), table.column(out)
    mask = ascii_(ins_col) & ascii_(out_col)
    clean = [_plain_text(ins_col), _plain_text(out_col)]
    size = pc.add(pc.utf8_length(ins_col), pc.utf8_length(out_col))
    if inp is not None:
        col = table.column(inp)
        length = pc.fill_null(pc.utf8_length(col), 0)
        mask &= ascii_(col) | (_numpy(length) == 0)
        size = pc.add(size, pc.if_else(pc.greater(length, 0), pc.add(length, 2), 0))
        clean.append(_plain_text(col))
    else:
        clean.append(np.zeros(n, bool))
    if ids is not None and _is_text(table.schema.field(ids).type):
        col = table.column(ids)
        mask &= ascii_(col) | ~_numpy(pc.is_valid(col))
    mask &= _numpy(pc.fill_null(pc.less_equal(size, max_chars), False))
    for name in meta_names:
        mask &= _numpy(pc.is_valid(table.column(name)))
    return mask, clean


def _simple_made(table: pa.Table, roles: list[list[str]], meta_names: list[str], source: str,
                 clean: list[np.ndarray]) -> tuple[pa.Table, list[str], list[str], list[str], np.ndarray]:
    """The rows of _simple_rows, column by column: their columns (:data:`ROW_COLUMNS`), sample
    ids, content hashes and dedup keys, for the rows of ``ok`` (False for a blank instruction,
    output or id: the per-record path rejects it). For ASCII text, dedup_text only collapses
    whitespace; for clean texts (no whitespace but single inner spaces) the user turn is the
    instruction and the input joined by a blank line and its dedup text by one space, so the
    escaped forms are joined the same way."""
    ins, out, inp, ids = (role[0] if role else None for role in roles)
    n = table.num_rows
    A, O = table.column(ins).combine_chunks(), table.column(out).combine_chunks()
    X = pc.fill_null(table.column(inp).combine_chunks(), "") if inp is not None else pa.array([""] * n, pa.string())
    CA, CO, CX = clean
    ok = (CA | _not_blank(A, ~CA)) & (CO | _not_blank(O, ~CO))
    ID = table.column(ids).combine_chunks() if ids is not None else None
    if ID is not None and _is_text(ID.type):
        ok &= _not_blank(ID) | ~_numpy(pc.is_valid(ID))
    if not ok.all():
        keep = pa.array(ok)
        A, O, X = A.filter(keep), O.filter(keep), X.filter(keep)
        ID = ID.filter(keep) if ID is not None else None
        CA, CO, CX = CA[ok], CO[ok], CX[ok]
        table = table.filter(keep)
        n = len(A)
    xlen = _numpy(pc.utf8_length(X))
    joined = (xlen > 0) & (CX | _not_blank(X, ~CX))  # a non-blank input
    eA, eO, eX = _escape(A), _escape(O), _escape(X)
    jmask = pa.array(joined)
    U = pc.if_else(jmask, _join(A, "\n\n", X), A)
    eU = pc.if_else(jmask, _join(eA, "\\n\\n", eX), eA)
    content = _sha16(_join('[{"role":"user","content":"', eU, '"},{"role":"assistant","content":"', eO, '"}]'))
    # The dedup key: the content hash, the hash of the input joined by a space (clean texts), or
    # dedup_text's own (any other whitespace).
    key = list(content)
    spaced = CA & CO & CX & joined
    if spaced.any():
        at = np.flatnonzero(spaced)
        take = pa.array(at)
        hashed = _sha16(_join('[{"role":"user","content":"', _join(eA.take(take), " ", eX.take(take)),
                              '"},{"role":"assistant","content":"', eO.take(take), '"}]'))
        for j, h in zip(at.tolist(), hashed):
            key[j] = h
    other = ~(CA & CO & (CX | ~joined))
    if other.any():
        at = np.flatnonzero(other)
        take = pa.array(at)
        for j, u, o in zip(at.tolist(), U.take(take).to_pylist(), O.take(take).to_pylist()):
            du, do = dedup_text(u), dedup_text(o)
            if du != u or do != o:
                key[j] = hashlib.sha256((_PAIR % (_esc(du), _esc(do))).encode()).hexdigest()[:16]
    content_col = pa.array(content, pa.string())
    if ID is None or ID.null_count == len(ID):
        S, sids = content_col, content
    else:
        S = pc.coalesce(ID if _is_text(ID.type) else pc.cast(ID, pa.string()), content_col)
        sids = S.to_pylist()
    if meta_names:
        parts: list[Any] = ["{"]
        for i, name in enumerate(meta_names):
            parts += [(", " if i else "") + _esc(name) + ': "', _escape(table.column(name).combine_chunks()), '"']
        M = _join(*parts, "}")
    else:
        M = pa.array(["{}"] * n, pa.string())
    eO_ = eO
    line = _join('{"input":"', eX, '","instruction":"', eA, '","messages":[{"content":"', eU,
                 '","role":"user"},{"content":"', eO_, '","role":"assistant"}],"metadata":"', M if not meta_names else _escape(M),
                 '","output":"', eO_, '","sample_id":"', S if S is content_col else _escape(S), '","source":' + _esc(source) + "}\n")
    columns = pa.table([S, pa.array([source] * n, pa.string()), A, X, O, pair_turns(U, O), M, line], names=list(ROW_COLUMNS))
    return columns, sids, content, key, ok


_MESSAGES = SCHEMA.field("messages").type


def pair_turns(users: pa.Array, outputs: pa.Array) -> pa.Array:
    """The messages column of rows whose conversation is one user turn and its answer."""
    n = len(users)
    interleave = np.empty(2 * n, np.int64)
    interleave[0::2] = np.arange(n)
    interleave[1::2] = np.arange(n, 2 * n)
    contents = pa.concat_arrays([users, outputs]).take(pa.array(interleave))
    turns = pa.StructArray.from_arrays(
        [pa.array(["user", "assistant"] * n, pa.string()), contents], fields=list(_MESSAGES.value_type))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), turns, type=_MESSAGES)


def _parse(buf: memoryview, read_options_size: int) -> pa.Table:
    table = pa_json.read_json(
        pa.BufferReader(pa.py_buffer(buf)),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=max(read_options_size, 1)),
    )
    dated = [f.name for f in table.schema if pa.types.is_temporal(f.type)]
    if dated:  # a string that looks like a timestamp: read it as the string it is
        table = pa_json.read_json(
            pa.BufferReader(pa.py_buffer(buf)),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(read_options_size, 1)),
            parse_options=pa_json.ParseOptions(explicit_schema=pa.schema([(n, pa.string()) for n in dated])),
        )
    return table


_ROW_OF_ERROR = re.compile(r"\bin row (\d+)")


def _parse_ranges(buf: bytes, bstarts: np.ndarray) -> tuple[list[tuple[int, int, pa.Table]], set[int]]:
    """Parse lines ``[bstarts[i], bstarts[i + 1])`` of ``buf``: tables over ranges of lines, and
    the lines to send on. A line pyarrow refuses is sent on and the lines around it parsed
    again, so every line is parsed at most twice."""
    mv = memoryview(buf)
    tables: list[tuple[int, int, pa.Table]] = []
    refused: set[int] = set()
    stack = [(0, len(bstarts) - 1)]
    while stack:
        lo, hi = stack.pop()
        if lo >= hi:
            continue
        a, b = int(bstarts[lo]), int(bstarts[hi])
        try:
            table = _parse(mv[a:b], b - a + 1)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            m = _ROW_OF_ERROR.search(str(exc))
            row = int(m.group(1)) if m else -1
            if not 0 <= row < hi - lo:
                refused.update(range(lo, hi))
                continue
            refused.add(lo + row)
            stack.append((lo + row + 1, hi))  # popped after the lines before it: file order
            stack.append((lo, lo + row))
            continue
        if table.num_rows != hi - lo:  # a line holding two objects: send the range on
            refused.update(range(lo, hi))
            continue
        tables.append((lo, hi, table))
    return tables, refused


def _runs(line_of: np.ndarray, others: np.ndarray, record: Callable[[int], RawRecord | None]) -> list[Any]:
    """Prepared.runs: ``line_of`` holds the position (line or row) of each plain record, in
    order; ``others`` the positions of the records that go on, each made by ``record`` (None:
    not a record)."""
    runs: list[Any] = []
    k = 0
    for i in others.tolist():
        upto = int(np.searchsorted(line_of, i))  # the plain records before position i
        if upto > k:
            runs.append((k, upto))
            k = upto
        rec = record(i)
        if rec is not None:
            runs.append(rec)
    if len(line_of) > k:
        runs.append((k, len(line_of)))
    return runs


def prepare_lines(block: LineBlock, source: str, fields: FieldMap, max_chars: int) -> Prepared:
    """The records of a block of JSONL lines (see the module docstring)."""
    data, starts, limit = block.data, block.starts, block.limit
    n = len(starts) - 1
    prep = Prepared()
    if n == 0:
        return prep
    arr = np.frombuffer(data, np.uint8)
    begin, end = starts[:-1], starts[1:]
    newline = arr[end - 1] == 10
    too_long = _over_limit(end - begin, newline, limit)
    stop = end - newline  # the line's end without its newline
    stop = stop - ((stop > begin) & (arr[np.maximum(stop - 1, 0)] == 13))
    shaped = ~block.blank & ~too_long & (stop - begin >= 2) & (arr[begin] == ord("{")) & (arr[np.maximum(stop - 1, 0)] == ord("}"))
    if block.records < MIN_ROWS:
        shaped[:] = False  # a few records (a small file's): the per-record path is quicker
    # pyarrow's JSON reader recurses into nested values (50,000 levels crash it): a line with
    # more opening brackets than MAX_OPENINGS, in strings or not, goes on.
    # A shaped line has one "{" at least, so a line can hold more than MAX_OPENINGS only when
    # the block has that many beyond one per line.
    if data.count(b"[") + data.count(b"{") - int(shaped.sum()) >= MAX_OPENINGS:
        opens = np.add.reduceat(((arr == ord("[")) | (arr == ord("{"))).astype(np.int32), begin)
        shaped &= opens <= MAX_OPENINGS
    lines = np.flatnonzero(shaped)

    def bytes_of(idx: np.ndarray) -> tuple[bytes, np.ndarray]:
        if len(idx) == n and newline.all():
            return data, starts
        pieces = [data[begin[i]:end[i]] if newline[i] else data[begin[i]:end[i]] + b"\n" for i in idx]
        return b"".join(pieces), np.concatenate(([0], np.cumsum([len(p) for p in pieces])))

    buf, bstarts = bytes_of(lines)
    # Not valid UTF-8 (pyarrow does not check): those lines go on, to be quarantined as the
    # per-line reader does.
    bad, at = [], 0
    while at < len(buf):
        try:
            codecs.utf_8_decode(memoryview(buf)[at:], "strict", True)
            break
        except UnicodeDecodeError as exc:
            k = int(np.searchsorted(bstarts, at + exc.start, "right")) - 1
            bad.append(k)
            at = int(bstarts[k + 1])
    if bad:
        lines = np.delete(lines, bad)
        buf, bstarts = bytes_of(lines)
    tables, refused = _parse_ranges(buf, bstarts) if len(lines) else ([], set())

    # A null in pyarrow's table is an absent field, unless the line spells null (then the
    # record goes on, as its metadata keeps the null).
    absent = np.ones(len(lines), bool)
    at = buf.find(b"null")
    while at >= 0:
        k = int(np.searchsorted(bstarts, at, "right")) - 1
        absent[k] = False
        at = buf.find(b"null", int(bstarts[k + 1]))
    plain = np.zeros(n, np.int64) - 1  # line -> index of its row in prep, or -1
    first_line, offset = block.first_line, block.offset
    for lo, hi, table in tables:
        table = _role_columns(table, fields)
        if table is None:
            continue
        table, turns = _flat_conversations(table, fields)
        mask, keep = _plain_rows(table, fields, absent[lo:hi])
        if turns is not None:
            mask &= turns
        if not mask.any():
            continue
        rows = np.flatnonzero(mask)
        idx = lines[lo:hi][rows]
        prep.file = block.file
        where = idx + first_line
        before = len(prep.sample_ids)
        plain_table = table.select(keep) if len(rows) == table.num_rows else table.select(keep).take(pa.array(rows))
        taken = _make_rows(prep, plain_table, fields, max_chars, source, where)
        kept = idx[np.asarray(taken, bool)]
        plain[kept] = np.arange(before, before + len(kept))
    del refused  # every line not taken goes on, refused or not
    prep._finish()
    line_of = np.flatnonzero(plain >= 0)
    prep.runs = _runs(line_of, np.flatnonzero((plain < 0) & ~block.blank), functools.partial(_line_record, block))
    prep.line_of = line_of
    return attach(prep, block)


def _over_limit(length: Any, newline: Any, limit: int) -> Any:
    """Whether lines of ``length`` bytes (``newline``: ending in one, which is not counted) are
    over the read limit: for one line or, as arrays, for a block's."""
    return length > limit + newline


def _line_record(block: LineBlock, i: int) -> RawRecord:
    """Line ``i`` of ``block`` as the per-line reader reads it."""
    s, e = int(block.starts[i]), int(block.starts[i + 1])
    if _over_limit(e - s, block.data[e - 1] == 10, block.limit):
        return too_long_record(block.file, block.first_line + i, e - s, block.limit, block.data[s:s + 1000], block.offset + s)
    return jsonl_record(block.file, block.data[s:e], block.first_line + i, block.offset + s)


def _plain_record(block: LineBlock, line_of: np.ndarray, k: int) -> RawRecord:
    return _line_record(block, int(line_of[k]))


def attach(prep: Prepared, block: LineBlock) -> Prepared:
    """``prep`` (of ``block``'s lines) with its ``record``."""
    prep.record = functools.partial(_plain_record, block, prep.line_of)
    return prep


def prepare_lines_detached(block: LineBlock, source: str, fields: FieldMap, max_chars: int, min_rows: int) -> Prepared:
    """:func:`prepare_lines` for another process: the result holds none of the block, which the
    caller has (it gives ``record`` back with :func:`attach`). ``min_rows``: the caller's
    :data:`MIN_ROWS`, which a test may have changed."""
    global MIN_ROWS
    MIN_ROWS = min_rows
    prep = prepare_lines(block, source, fields, max_chars)
    prep.record = None
    return prep


def prepare_batch(batch: RowBatch, source: str, fields: FieldMap, max_chars: int) -> Prepared:
    """The records of a batch of Parquet rows (see the module docstring)."""
    table = pa.Table.from_batches([batch.batch])
    n = table.num_rows
    prep = Prepared()
    plain = np.zeros(n, np.int64) - 1
    renamed, turns = _role_columns(table, fields), None
    if renamed is not None:
        renamed, turns = _flat_conversations(renamed, fields)
    mask, keep = _plain_rows(renamed, fields, None) if n >= MIN_ROWS and renamed is not None else (np.zeros(n, bool), [])
    if turns is not None:
        mask &= turns
    if mask.any():
        rows = np.flatnonzero(mask)
        prep.file, prep.by_row = batch.file, True
        where = rows + batch.first_row
        taken = _make_rows(prep, renamed.select(keep).take(pa.array(rows)), fields, max_chars, source, where)
        kept = rows[np.asarray(taken, bool)]
        plain[kept] = np.arange(len(kept))
    prep._finish()
    other = np.flatnonzero(plain < 0)
    # The rows going on are read as the per-record reader reads them (RecordBatch.to_pylist, or
    # the saved dataset's own decoding).
    if not len(other):
        going = []
    elif batch.records is not None:
        going = batch.records((other + batch.first_row).tolist())
    else:
        going = [RawRecord(batch.file, None, batch.first_row + i, value=v)
                 for i, v in zip(other.tolist(), batch.batch.take(pa.array(other)).to_pylist())]
    record_of = dict(zip(other.tolist(), going))
    line_of = np.flatnonzero(plain >= 0)
    prep.runs = _runs(line_of, other, record_of.__getitem__)

    def record(k: int) -> RawRecord:
        i = int(line_of[k])
        if batch.records is not None:
            return batch.records([batch.first_row + i])[0]
        return RawRecord(batch.file, None, batch.first_row + i, value=table.slice(i, 1).to_pylist()[0])

    prep.record = record
    return prep
