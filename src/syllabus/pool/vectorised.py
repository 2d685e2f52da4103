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
covers are written with the json module's own string encoder, in the forms
:func:`canonical.messages_hash`, :func:`canonical.dedup_key`, :func:`canonical.normalise` and
:func:`ingest.shard_content_hash` use, so ids, shard hashes and pool fingerprints are those of
the per-record path (``tests/unit/pool/test_vectorised_golden.py`` holds both paths to it).
"""

from __future__ import annotations

import codecs
import hashlib
import re
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _esc  # json.dumps(text, ensure_ascii=False) for a str
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from syllabus.pool.canonical import FieldMap, dedup_text
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
_PAIR = '[{"role":"user","content":%s},{"role":"assistant","content":%s}]'
_PAIR_INNER = '[{"role":"user","content":"%s"},{"role":"assistant","content":"%s"}]'
_ROW_INNER = ('{"input":"%s","instruction":"%s","messages":[{"content":"%s","role":"user"},{"content":"%s","role":"assistant"}],'
              '"metadata":"%s","output":"%s","sample_id":"%s","source":%s}\n')
_ROW = ('{"input":%s,"instruction":%s,"messages":[{"content":%s,"role":"user"},{"content":%s,"role":"assistant"}],'
        '"metadata":%s,"output":%s,"sample_id":%s,"source":%s}\n')


@dataclass
class Prepared:
    """A block's records in file order: ``items`` holds, per record, either an ``int`` (the
    index of a plain record in ``rows``) or the :class:`RawRecord` for the per-record path."""

    items: list[Any] = field(default_factory=list)
    # Per plain record: the sharder's row (sample_id, source, instruction, input, output, user
    # turn, None for the turns, metadata JSON, the row's line as the shard hash covers it), then
    # its content hash, its dedup key and where it is (file, line, row).
    rows: list[tuple] = field(default_factory=list)
    record: Callable[[int], RawRecord] | None = None  # a plain record's RawRecord, for the quarantine


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


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
            mask &= ~_numpy(pc.fill_null(pc.match_substring_regex(col, _CONTROL_OR_SPECIAL if name in texts else _CONTROL), False))
        elif name in fields.id and pa.types.is_integer(col.type):
            keep.append(name)
        else:
            mask &= ~valid  # a number, boolean, list or object: its JSON form is the per-record path's
    return mask & ~(some_null if absent is None else some_null & ~absent), keep


def _plain_text(col: pa.ChunkedArray) -> np.ndarray:
    """Per value: ASCII text that :func:`canonical.dedup_text` leaves as it is and that is not
    blank (no whitespace but single inner spaces, not empty)."""
    same = pc.and_(pc.string_is_ascii(col), pc.invert(pc.match_substring_regex(col, _WHITESPACE_CHANGES)))
    return _numpy(pc.fill_null(pc.and_(same, pc.greater(pc.utf8_length(col), 0)), False))


def _numpy(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean result as numpy (np.asarray of a ChunkedArray takes a slow path, 0.5 us a value)."""
    return values.to_numpy() if isinstance(values, pa.ChunkedArray) else values.to_numpy(zero_copy_only=False)


def _escape_all(values: list[str]) -> list[str]:
    """What the json encoder writes between the quotes of each value (no value holds _JOIN)."""
    return _esc(_JOIN.join(values))[1:-1].split(_JOIN)


def _make_rows(prep: Prepared, table: pa.Table, fields: FieldMap, max_chars: int, source: str, where: list) -> list[bool]:
    """Append the canonical rows of ``table`` (all plain as far as columns tell) to ``prep``;
    returns, per row, whether it was taken (a missing or blank text or id, or a record over
    ``max_chars``, sends it on). A null is a field the record does not have.

    Rows whose texts are ASCII, with one column per role and every metadata field present, are
    made column by column (_simple_made); the others one by one."""
    n = table.num_rows
    names = table.column_names
    values = {name: table.column(name).to_pylist() for name in names}
    roles = [[name for name in candidates if name in values]
             for candidates in (fields.instruction, fields.output, fields.input, fields.id)]
    # When no role has two candidate fields (the usual case), each role is one column and the
    # metadata fields are the others; otherwise each row takes its first present candidate.
    single = all(len(role) <= 1 for role in roles)
    if single:
        picked = [(values[role[0]] if role else [None] * n, None) for role in roles]
        role_names = {role[0] for role in roles if role}
    else:
        picked = []
        for role in roles:
            pairs = [next(((name, values[name][j]) for name in role if values[name][j] is not None), (None, None))
                     for j in range(n)]
            picked.append(([v for _, v in pairs], [k for k, _ in pairs]))
        role_names = set()
    (ins, ins_names), (out, out_names), (inp, inp_names), (ids, id_names) = picked
    meta = [(_esc(name), name, values[name]) for name in sorted(names) if name not in role_names and name not in fields.messages]
    esrc = _esc(source)
    made: list[tuple | None] = [None] * n
    simple, clean = _simple_rows(table, roles, [name for _, name, _ in meta], max_chars) if single else (np.zeros(n, bool), [])
    if simple.any():
        at = np.flatnonzero(simple).tolist()
        for j, row in zip(at, _simple_made(at, ins, out, inp, ids, meta, source, where, clean)):
            made[j] = row
    sha = hashlib.sha256
    for j in np.flatnonzero(~simple).tolist():
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
        made[j] = (sid, source, a, x, o, user, None, meta_json,
                   _ROW % (_esc(x), _esc(a), eu, eo, _esc(meta_json), eo, _esc(sid), esrc), content, key, where[j])
    prep.rows.extend(row for row in made if row is not None)
    return [row is not None for row in made]


def _simple_rows(table: pa.Table, roles: list[list[str]], meta_names: list[str], max_chars: int) -> tuple[np.ndarray, list]:
    """Rows of one column per role whose texts (instruction, output, input, a text id) are
    ASCII or absent, that fit ``max_chars`` and have every metadata field (see _simple_made);
    and, per row, whether the instruction, the output and the input are clean (_plain_text)."""
    n = table.num_rows
    none = np.zeros(n, bool), []
    ins, out, inp, ids = (role[0] if role else None for role in roles)
    if ins is None or out is None or not (_is_text(table.schema.field(ins).type) and _is_text(table.schema.field(out).type)):
        return none
    ascii_ = lambda col: _numpy(pc.fill_null(pc.string_is_ascii(col), False))  # noqa: E731
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


def _simple_made(at: list[int], ins: list, out: list, inp: list, ids: list, meta: list, source: str, where: list,
                 clean: list) -> list[tuple | None]:
    """The rows of _simple_rows, column by column (None for a row with a blank instruction,
    output or id: the per-record path rejects it). For ASCII text, dedup_text only collapses
    whitespace; for clean texts (no whitespace but single inner spaces) the user turn is the
    instruction and the input joined by a blank line and its dedup text by one space, so the
    escaped forms are joined the same way."""
    sha = hashlib.sha256
    everyone = len(at) == len(ins)  # the usual case: no copies
    pick = (lambda column: column) if everyone else (lambda column: [column[j] for j in at])  # noqa: E731
    A, O, X0, ID = pick(ins), pick(out), pick(inp), pick(ids)
    CA, CO, CX = (pick(c.tolist()) for c in clean)
    X = [x or "" for x in X0]
    ok = [(ca or bool(a.strip())) and (co or bool(o.strip())) and (type(i) is not str or bool(i.strip()))
          for a, o, i, ca, co in zip(A, O, ID, CA, CO)]
    joined = [bool(x) and (cx or bool(x.strip())) for x, cx in zip(X, CX)]  # a non-blank input
    eA, eO, eX = _escape_all(A), _escape_all(O), _escape_all(X)
    U = [f"{a}\n\n{x}" if j else a for a, x, j in zip(A, X, joined)]
    eU = [f"{a}\\n\\n{x}" if j else a for a, x, j in zip(eA, eX, joined)]
    content = [sha((_PAIR_INNER % (u, o)).encode()).hexdigest()[:16] for u, o in zip(eU, eO)]

    def key_of(c: str, u: str, o: str) -> str:
        du, do = dedup_text(u), dedup_text(o)
        return c if du == u and do == o else sha((_PAIR % (_esc(du), _esc(do))).encode()).hexdigest()[:16]

    key = [(sha((_PAIR_INNER % (f"{a} {x}", o)).encode()).hexdigest()[:16] if j else c)
           if ca and co and (cx or not j) else key_of(c, u, o_)
           for c, a, x, o, u, o_, j, ca, co, cx in zip(content, eA, eX, eO, U, O, joined, CA, CO, CX)]
    sid = content if all(i is None for i in ID) else \
        [c if i is None else i if type(i) is str else str(i) for c, i in zip(content, ID)]
    eS = _escape_all(sid)
    if meta:
        shape = "{" + ", ".join(k.replace("%", "%%") + ': "%s"' for k, _, _ in meta) + "}"
        escaped = [_escape_all(pick(column)) for _, _, column in meta]
        M = [shape % values for values in zip(*escaped)]
    else:
        M = ["{}"] * len(at)
    eM = _escape_all(M)
    esrc = _esc(source)
    lines = [_ROW_INNER % (x, a, u, o, m, o, s, esrc) for x, a, u, o, m, s in zip(eX, eA, eU, eO, eM, eS)]
    n = len(at)
    rows = zip(sid, [source] * n, A, X, O, U, [None] * n, M, lines, content, key, pick(where))
    return [row if good else None for row, good in zip(rows, ok)]


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
    too_long = (end - begin) > limit + newline
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
        mask, keep = _plain_rows(table, fields, absent[lo:hi])
        if not mask.any():
            continue
        rows = np.flatnonzero(mask)
        idx = lines[lo:hi][rows]
        where = [(block.file, i, None) for i in (idx + first_line).tolist()]
        before = len(prep.rows)
        taken = _make_rows(prep, table.select(keep).take(pa.array(rows)), fields, max_chars, source, where)
        kept = idx[np.asarray(taken, bool)]
        plain[kept] = np.arange(before, before + len(kept))
    del refused  # every line not taken goes on, refused or not

    def record(i: int) -> RawRecord:
        s, e = int(begin[i]), int(end[i])
        if too_long[i]:
            return too_long_record(block.file, first_line + i, e - s, limit, data[s:s + 1000], offset + s)
        return jsonl_record(block.file, data[s:e], first_line + i, offset + s)

    line_of = np.flatnonzero(plain >= 0)
    items = prep.items
    for i in range(n):
        k = int(plain[i])
        if k >= 0:
            items.append(k)
        elif not block.blank[i]:
            rec = record(i)
            if rec is not None:
                items.append(rec)
    prep.record = lambda k: record(int(line_of[k]))
    return prep


def prepare_batch(batch: RowBatch, source: str, fields: FieldMap, max_chars: int) -> Prepared:
    """The records of a batch of Parquet rows (see the module docstring)."""
    table = pa.Table.from_batches([batch.batch])
    n = table.num_rows
    prep = Prepared()
    plain = np.zeros(n, np.int64) - 1
    mask, keep = _plain_rows(table, fields, None) if n >= MIN_ROWS else (np.zeros(n, bool), [])
    if mask.any():
        rows = np.flatnonzero(mask)
        where = [(batch.file, None, i) for i in (rows + batch.first_row).tolist()]
        taken = _make_rows(prep, table.select(keep).take(pa.array(rows)), fields, max_chars, source, where)
        kept = rows[np.asarray(taken, bool)]
        plain[kept] = np.arange(len(kept))
    other = np.flatnonzero(plain < 0)
    # The rows going on are read as the per-record reader reads them (RecordBatch.to_pylist).
    values = batch.batch.to_pylist() if len(other) else []
    for i in range(n):
        k = int(plain[i])
        prep.items.append(k if k >= 0 else RawRecord(batch.file, None, batch.first_row + i, value=values[i]))
    line_of = np.flatnonzero(plain >= 0)

    def record(k: int) -> RawRecord:
        i = int(line_of[k])
        return RawRecord(batch.file, None, batch.first_row + i, value=table.slice(i, 1).to_pylist()[0])

    prep.record = record
    return prep
