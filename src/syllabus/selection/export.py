"""Export a selected subset for any trainer: plain JSONL, Alpaca or ShareGPT JSON with a
LLaMA-Factory ``dataset_info.json`` entry, or a ``datasets.save_to_disk`` directory.

    syllabus export SELECTION --format {jsonl,alpaca,sharegpt,hf} --out DIR [--name NAME]

SELECTION is what ``syllabus select`` commits: the ``report.json`` or the ``selected.parquet``
URL. Rows keep the selection's rank order and every turn of a conversation:

- ``jsonl`` and ``hf``: one row per sample with the canonical columns (``sample_id``,
  ``rank``, ``source``, ``instruction``, ``input``, ``output``, ``messages``, ``metadata``)
  and the selection's scalar score columns; ``syllabus ingest`` reads either back into the
  same samples (same ids, same messages).
- ``sharegpt``: ``conversations`` as ``{"from": "human"|"gpt", "value"}`` turns, a leading
  system turn in ``system``.
- ``alpaca``: the last user turn as ``instruction`` (with ``input`` kept apart for Alpaca
  sources), the final answer as ``output``, earlier turns as ``history`` pairs (LLaMA-Factory
  trains on those answers too), a leading system turn in ``system``.

LLaMA-Factory's formats need strictly alternating user/assistant turns; a conversation that
does not alternate cannot be written as Alpaca or ShareGPT, so it is left out of those two
formats and named in the summary's ``skipped`` (jsonl and hf keep it as it is).

The subset's fingerprint is a hash of its sample ids in rank order: the same value is the
digest of the subset's dataset in MLflow, so an exported file can be matched to its run.

An export never destroys what is there: an existing target (the ``hf`` folder, the JSONL or
JSON file, or the name's entry in ``dataset_info.json``) is refused unless ``--overwrite`` is
given, and every target is written under a temporary name in the same folder and renamed into
place, so an interrupted export leaves the old target (or none), never a half-written one.

The text formats are streamed: the selected Parquet is read in record batches of
``BATCH_ROWS`` and each batch's JSON is built with pyarrow string kernels (escaping, joining),
so memory stays flat in the subset's size and no Python object is made per row. The bytes are
those that ``json.dumps`` (``ensure_ascii=False``) writes for the per-row definitions below
(:func:`plain_rows`, :func:`to_alpaca`, :func:`to_sharegpt`), which stay the reference: a golden
test compares the two. Only rows that need it take a per-row path (a reason for a skipped
conversation, a string with a rare control character, a column type without a kernel).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

if TYPE_CHECKING:  # pyarrow is imported where it is used: `syllabus --help` loads this module
    import pyarrow as pa

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "alpaca", "sharegpt", "hf")
DATASET_INFO = "dataset_info.json"
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt"}
# Rows per record batch of a streamed export: a few MB of text, whatever the subset's size.
BATCH_ROWS = 16_384


def selection_fingerprint(sample_ids: Iterable[str]) -> str:
    """A stable hash of a subset: its sample ids in rank order (20 hex digits, like the pool's)."""
    from syllabus.store import content_hash

    return content_hash([str(s) for s in sample_ids], 20)


def selected_url(selection: str) -> str:
    """The ``selected.parquet`` URL of a selection given as that file or as its ``report.json``."""
    from syllabus.selection.scores import read_url_bytes

    if selection.endswith(".parquet"):
        return selection
    if not selection.endswith(".json"):
        raise ValueError(f"{selection} is neither a selection report (.json) nor a selected subset (.parquet); "
                         "pass the `report` or `selected` URL that `syllabus select --json` printed")
    report = json.loads(read_url_bytes(selection))
    url = report.get("outputs", {}).get("selected") if isinstance(report, dict) else None
    if not url:
        raise ValueError(f"{selection} is not a selection report (it has no outputs.selected); pass the report.json "
                         "or selected.parquet that `syllabus select --json` printed")
    return url


def read_selection(selection: str, columns: Sequence[str] | None = None) -> tuple[pa.Table, str]:
    """The selected rows in rank order and the ``selected.parquet`` URL they came from; with
    ``columns``, only those columns are decoded (a 500k-row subset's ids, not its texts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from syllabus.selection.scores import read_url_bytes

    url = selected_url(selection)
    # ParquetFile.read decodes on the calling thread (see store.read_parquet_bytes).
    reader = pq.ParquetFile(pa.BufferReader(read_url_bytes(url)), pre_buffer=False)
    names = reader.schema_arrow.names
    missing = [c for c in ("sample_id", "messages") if c not in names]
    if missing:
        raise ValueError(f"{url} has no {', '.join(missing)} column; it is not a subset written by `syllabus select`")
    wanted = None if columns is None else list(dict.fromkeys([*columns, *(["rank"] if "rank" in names else [])]))
    table = reader.read(columns=wanted, use_threads=False)
    if "rank" in table.column_names:
        table = table.sort_by("rank")
    return table, url


def default_name(url: str) -> str:
    """``selections/3ds/3ds-0123abcd/selected.parquet`` -> ``3ds-0123abcd``: the selection's own key."""
    parts = url.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 and parts[-1] == "selected.parquet" else Path(parts[-1]).stem


def _plain_columns(table: pa.Table | pa.Schema) -> list[str]:
    """Canonical columns and rank first, then scalar score columns (vectors such as
    embeddings are left out: they are model internals, not training data)."""
    import pyarrow as pa

    from syllabus.pool.canonical import COLUMNS as CANONICAL_COLUMNS

    schema = table if isinstance(table, pa.Schema) else table.schema
    head = [c for c in ("sample_id", "rank", *CANONICAL_COLUMNS[1:]) if c in schema.names]
    scores = [f.name for f in schema
              if f.name not in head and not (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
                                              or pa.types.is_struct(f.type) or pa.types.is_fixed_size_list(f.type))]
    return head + scores


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing score is null
    return value


def plain_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The jsonl rows as Python dicts: the reference the streamed writer matches."""
    return [{k: _json_value(v) for k, v in row.items()} for row in table.select(_plain_columns(table)).to_pylist()]


def _split_turns(row: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """``(system prompt, alternating user/assistant turns)``; raises ValueError with the reason
    when the conversation cannot be written in LLaMA-Factory's turn order."""
    turns = list(row["messages"] or [])
    system = ""
    if turns and turns[0]["role"] == "system":
        system, turns = turns[0]["content"], turns[1:]
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn["role"] != expected:
            raise ValueError(f"turn {i + 1} is from {turn['role']} where LLaMA-Factory expects {expected} "
                             "(turns must alternate user/assistant after one optional leading system turn); "
                             "export it as jsonl or hf, which keep any turn order")
    if not turns or len(turns) % 2:
        raise ValueError("the conversation does not end with an assistant answer")
    return system, turns


def to_sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    system, turns = _split_turns(row)
    return {"sample_id": row["sample_id"],
            "conversations": [{"from": SHAREGPT_ROLES[t["role"]], "value": t["content"]} for t in turns],
            "system": system}


def to_alpaca(row: dict[str, Any]) -> dict[str, Any]:
    system, turns = _split_turns(row)
    instruction, query = row.get("instruction") or "", row.get("input") or ""
    alpaca_sourced = len(turns) == 2 and query.strip() and turns[0]["content"] == f"{instruction}\n\n{query}"
    if not alpaca_sourced:  # an Alpaca-sourced sample keeps its instruction and input apart, as they came
        instruction, query = turns[-2]["content"], ""
    history = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 2, 2)]
    return {"sample_id": row["sample_id"], "instruction": instruction, "input": query, "output": turns[-1]["content"],
            "system": system, "history": history}


def dataset_info_entry(fmt: str, file_name: str) -> dict[str, Any]:
    """The entry LLaMA-Factory's ``dataset_info.json`` needs for a file this module wrote
    (fields as documented in LLaMA-Factory's data/README.md)."""
    if fmt == "alpaca":
        return {"file_name": file_name, "formatting": "alpaca",
                "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                            "history": "history"}}
    if fmt == "sharegpt":
        return {"file_name": file_name, "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system"},
                "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}
    raise ValueError(f"LLaMA-Factory's dataset_info.json describes alpaca and sharegpt files, not {fmt!r}")


# ---------------------------------------------------------------- JSON with pyarrow kernels
# json.dumps(ensure_ascii=False) escapes exactly '"', '\\' and the characters below U+0020:
# these five by name, the others as \u00XX; everything else (non-ASCII, U+2028, DEL) is kept.
_NAMED_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"),
                  ("\f", "\\f"))
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
_CONTROL = r"[\x00-\x1f]"


def _concat(*parts: Any) -> pa.Array:
    """Element-wise concatenation of string arrays and Python strings (null in, null out)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*[pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in parts],
                                       pa.scalar("", pa.large_string()))


def _json_strings(values: pa.Array) -> pa.Array:
    """Each string as ``json.dumps(s, ensure_ascii=False)`` writes it; null stays null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pc.cast(values, pa.large_string())
    if len(values) and pc.any(pc.match_substring_regex(values, _NEEDS_ESCAPE)).as_py():
        escaped = values
        for old, new in _NAMED_ESCAPES:
            escaped = pc.replace_substring(escaped, old, new)
        rare = pc.fill_null(pc.match_substring_regex(escaped, _CONTROL), False)
        if pc.any(rare).as_py():  # the other control characters: rare enough for json itself
            originals = values.filter(rare).to_pylist()
            escaped = pc.replace_with_mask(escaped, rare, pa.array([json.dumps(s, ensure_ascii=False)[1:-1]
                                                                    for s in originals], pa.large_string()))
        values = escaped
    return _concat('"', values, '"')


def _json_floats(values: pa.Array) -> pa.Array:
    """``float.__repr__`` of each value (what json writes for a float), null where it is
    missing or not finite (JSON has no NaN: :func:`_json_value`)."""
    import numpy as np
    import pyarrow as pa

    floats = values.to_numpy(zero_copy_only=False).astype(np.float64)  # float16/32 widen exactly, as to_pylist does
    finite = np.isfinite(floats)
    text = np.full(len(floats), None, dtype=object)
    text[finite] = list(map(float.__repr__, floats[finite].tolist()))
    return pa.array(text, pa.large_string())


def _json_python(values: pa.Array) -> pa.Array:
    """Any other type, value by value through json itself (the per-row path)."""
    import pyarrow as pa

    return pa.array([json.dumps(_json_value(v), ensure_ascii=False) for v in values.to_pylist()], pa.large_string())


def _json_values(values: pa.Array) -> pa.Array:
    """Each value of a jsonl column as json.dumps writes it inside a row (``"null"`` for null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = values.type
    if pa.types.is_dictionary(t):
        return _json_values(values.dictionary_decode())
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        out = _json_strings(values)
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        out = pc.cast(values, pa.large_string())  # decimal digits, true/false: as json writes them
    elif pa.types.is_floating(t):
        out = _json_floats(values)
    elif _is_messages(t):
        out = _json_messages(values)
    else:
        return _json_python(values)
    return pc.fill_null(out, "null")


def _is_messages(t: pa.DataType) -> bool:
    """A list of ``{role, content}`` string structs (the canonical messages column, whatever
    its list's field is named or whether its items may be null)."""
    import pyarrow as pa

    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(t.value_type):
        return False
    fields = t.value_type
    return ([fields.field(i).name for i in range(fields.num_fields)] == ["role", "content"]
            and all(pa.types.is_string(fields.field(i).type) for i in range(2)))


def _json_messages(messages: pa.Array) -> pa.Array:
    """``[{"role": ..., "content": ...}, ...]`` per row, as json.dumps writes the list."""
    import pyarrow as pa
    import pyarrow.compute as pc

    turns = pc.list_flatten(messages)
    role, content = turns.flatten()  # a null turn's fields come out null
    turn = _concat('{"role": ', pc.fill_null(_json_strings(role), "null"), ', "content": ',
                   pc.fill_null(_json_strings(content), "null"), "}")
    turn = pc.if_else(turns.is_valid(), turn, pa.scalar("null", pa.large_string()))
    lists = pa.LargeListArray.from_arrays(_offsets(messages), turn)
    joined = pc.binary_join(lists, pa.scalar(", ", pa.large_string()))
    return pc.if_else(messages.is_valid(), _concat("[", joined, "]"), pa.scalar(None, pa.large_string()))


def _offsets(lists: pa.Array) -> pa.Array:
    """int64 offsets of ``lists``' rows into their flattened values (a null row is empty)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int64())


def _text_bytes(text: pa.Array) -> memoryview:
    """The UTF-8 bytes of a string array without nulls, one value after the other (its data
    buffer, not a copy)."""
    import numpy as np
    import pyarrow as pa

    text = text.cast(pa.large_binary())
    if len(text) == 0:
        return memoryview(b"")
    bounds = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset: text.offset + len(text) + 1]
    return memoryview(text.buffers()[2])[int(bounds[0]): int(bounds[-1])]


def _jsonl_lines(batch: pa.RecordBatch) -> memoryview:
    """One batch of the jsonl file: ``json.dumps(row, ensure_ascii=False) + "\\n"`` per row."""
    parts: list[Any] = []
    for i, name in enumerate(batch.schema.names):  # sample_id at least: a subset has it
        parts += [("{" if i == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": ", _json_values(batch.column(i))]
    return _text_bytes(_concat(*parts, "}\n"))


class _Turns:
    """One batch's conversations, checked in LLaMA-Factory's turn order with array kernels.

    ``valid`` marks the rows :func:`_split_turns` accepts; for those, ``start`` and ``count``
    locate the user/assistant turns (after an optional system turn) in the flattened ``role``
    and ``content`` arrays, and ``system`` is the leading system prompt or ""."""

    def __init__(self, messages: pa.Array):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        turns = pc.list_flatten(messages)
        self.role, self.content = turns.field("role"), turns.field("content")
        # A null turn, role or content has no kernel reading here: the batch takes the per-row path.
        self.regular = turns.null_count == 0 and self.role.null_count == 0 and self.content.null_count == 0
        offsets = _offsets(messages).to_numpy()
        first, n = offsets[:-1], np.diff(offsets)

        def role_is(name: str) -> np.ndarray:
            return pc.fill_null(pc.equal(self.role, name), False).to_numpy(zero_copy_only=False).astype(bool)

        is_system, is_user, is_assistant = role_is("system"), role_is("user"), role_is("assistant")
        has_system = np.zeros(len(n), dtype=bool)
        nonempty = n > 0
        has_system[nonempty] = is_system[first[nonempty]]
        parent = np.repeat(np.arange(len(n)), n)
        j = np.arange(len(turns)) - first[parent] - has_system[parent]  # index among the turns after the system one
        wrong = (j >= 0) & ~np.where(j % 2 == 0, is_user, is_assistant)
        m = n - has_system
        self.valid = (np.bincount(parent[wrong], minlength=len(n)) == 0) & (m > 0) & (m % 2 == 0)
        self.start, self.count, self.has_system = first + has_system, m, has_system
        system_at = np.where(has_system, first, 0)
        self.system = pc.if_else(pa.array(has_system), self.content.take(pa.array(system_at)) if len(turns)
                                 else pa.nulls(len(n), pa.string()), pa.scalar("", pa.string()))


def _records_sharegpt(batch: pa.RecordBatch, turns: _Turns, rows: Any) -> pa.Array:
    """Each valid row as the indented ShareGPT record (json.dumps(records, indent=1))."""
    import numpy as np
    import pyarrow as pa

    start, count = turns.start[rows], turns.count[rows]
    index = _ranges(start, count)
    is_user = ((index - np.repeat(start, count)) % 2) == 0
    speaker = pa.array(np.where(is_user, '"human"', '"gpt"'), pa.large_string())
    value = _json_strings(turns.content.take(pa.array(index)))
    turn = _concat("   {\n    \"from\": ", speaker, ",\n    \"value\": ", value, "\n   }")
    conversations = _join_groups(turn, count, ",\n")
    return _concat(" {\n  \"sample_id\": ", _json_values(batch.column("sample_id").take(pa.array(rows))),
                   ",\n  \"conversations\": [\n", conversations, "\n  ],\n  \"system\": ",
                   _json_strings(turns.system.take(pa.array(rows))), "\n }")


def _ranges(start: Any, count: Any, step: int = 1) -> Any:
    """``concatenate([arange(s, s + step * c, step) for s, c in zip(start, count)])`` without the loop."""
    import numpy as np

    count = np.asarray(count, dtype=np.int64)
    within = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    return np.repeat(np.asarray(start, dtype=np.int64), count) + step * within


def _join_groups(values: pa.Array, counts: Any, separator: str) -> pa.Array:
    """``separator.join`` of consecutive groups of ``counts`` values (one string per group)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    return pc.binary_join(pa.LargeListArray.from_arrays(offsets, values), pa.scalar(separator, pa.large_string()))


def _records_alpaca(batch: pa.RecordBatch, turns: _Turns, rows: Any) -> pa.Array:
    """Each valid row as the indented Alpaca record (:func:`to_alpaca`, json.dumps(indent=1))."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    take = pa.array(rows, pa.int64())
    start, count = turns.start[rows], turns.count[rows]
    n = len(rows)

    def column(name: str) -> pa.Array:
        if name not in batch.schema.names:
            return pa.array([""] * n, pa.large_string())
        return pc.fill_null(pc.cast(batch.column(name).take(take), pa.large_string()), "")

    instruction, query = column("instruction"), column("input")
    first = turns.content.take(pa.array(start))
    # Alpaca-sourced: one exchange whose question is "instruction\n\ninput" with a non-blank
    # input; Python's str.strip decides "blank" (its whitespace), for the few rows it concerns.
    sourced = ((count == 2) & pc.fill_null(pc.equal(pc.cast(first, pa.large_string()),
                                                     _concat(instruction, "\n\n", query)), False).to_numpy(
        zero_copy_only=False) & (pc.binary_length(query).to_numpy(zero_copy_only=False) > 0))
    check = np.flatnonzero(sourced)
    if len(check):
        blank = np.array([not q.strip() for q in query.take(pa.array(check)).to_pylist()], dtype=bool)
        sourced[check[blank]] = False
    last = start + count - 1
    asked = pc.if_else(pa.array(sourced), instruction, pc.cast(turns.content.take(pa.array(last - 1)), pa.large_string()))
    query = pc.if_else(pa.array(sourced), query, pa.scalar("", pa.large_string()))
    pairs = (count - 2) // 2
    users = _ranges(start, pairs, step=2)
    pair = _concat("   [\n    ", _json_strings(turns.content.take(pa.array(users))), ",\n    ",
                   _json_strings(turns.content.take(pa.array(users + 1))), "\n   ]")
    history = pc.if_else(pa.array(pairs > 0), _concat("[\n", _join_groups(pair, pairs, ",\n"), "\n  ]"),
                         pa.scalar("[]", pa.large_string()))
    return _concat(" {\n  \"sample_id\": ", _json_values(batch.column("sample_id").take(take)),
                   ",\n  \"instruction\": ", _json_strings(asked), ",\n  \"input\": ", _json_strings(query),
                   ",\n  \"output\": ", _json_strings(turns.content.take(pa.array(last))),
                   ",\n  \"system\": ", _json_strings(turns.system.take(take)), ",\n  \"history\": ", history, "\n }")


def _converted_batch(batch: pa.RecordBatch, fmt: str) -> tuple[int, list[dict[str, Any]], list[Any]]:
    """(the number of records written, the rows left out with reasons, the records' JSON: one
    string array, or a list of str from the per-row path) for one batch of an alpaca or
    sharegpt export."""
    import numpy as np
    import pyarrow as pa

    messages = batch.column("messages") if "messages" in batch.schema.names else None
    turns = _Turns(messages) if messages is not None and _is_messages(messages.type) else None
    if turns is None or not turns.regular:  # no kernel reads this batch: the per-row definitions
        convert = to_alpaca if fmt == "alpaca" else to_sharegpt
        records, skipped = [], []
        for row in plain_rows(pa.Table.from_batches([batch])):
            try:
                records.append(convert(row))
            except ValueError as exc:
                skipped.append({"sample_id": row["sample_id"], "reason": str(exc)})
        pieces = [_indented_record(r) for r in records]
        return len(records), skipped, pieces
    rows = np.flatnonzero(turns.valid)
    skipped = []
    bad = np.flatnonzero(~turns.valid)
    if len(bad):
        for row in plain_rows(pa.Table.from_batches([batch]).take(pa.array(bad))):
            try:
                _split_turns(row)
            except ValueError as exc:
                skipped.append({"sample_id": row["sample_id"], "reason": str(exc)})
            else:  # the kernels and _split_turns disagree: a bug here, never a silent difference
                raise AssertionError(f"export {fmt}: sample {row['sample_id']} was judged invalid by the batch "
                                     "check but not by _split_turns")
    if not len(rows):
        return 0, skipped, []
    records = (_records_alpaca if fmt == "alpaca" else _records_sharegpt)(batch, turns, rows)
    return len(rows), skipped, [records]


def _indented_record(record: dict[str, Any]) -> str:
    """One record as it appears inside ``json.dumps(records, indent=1)``."""
    text = json.dumps(record, indent=1, ensure_ascii=False)
    return "\n".join(" " + line for line in text.split("\n"))


# ---------------------------------------------------------------- reading the subset in batches
class _Subset:
    """A selected Parquet opened for reading in rank order, batch by batch.

    Its checksum is verified first (streamed, when it has a commit marker, as every selection
    does); rows already in rank order (what ``syllabus select`` writes) are read
    ``BATCH_ROWS`` at a time, others are read whole and sorted (a hand-made file)."""

    def __init__(self, selection: str):
        import pyarrow.parquet as pq

        from syllabus.inputs import refuse_special_file
        from syllabus.store import Store

        self.url = selected_url(selection)
        refuse_special_file(self.url, "input")
        store, key = Store.open_url(self.url)
        _verify(store, key)
        self.file = store.path(key) if store.protocol == "file" else store.fs.open(store.path(key), "rb")
        self.parquet = pq.ParquetFile(self.file, pre_buffer=False)
        self.schema = self.parquet.schema_arrow
        missing = [c for c in ("sample_id", "messages") if c not in self.schema.names]
        if missing:
            raise ValueError(f"{self.url} has no {', '.join(missing)} column; it is not a subset written by `syllabus select`")
        self.columns = _plain_columns(self.schema)
        self.rows = self.parquet.metadata.num_rows
        self.in_order = True
        if "rank" in self.schema.names and self.rows > 1:
            import numpy as np

            rank = self.parquet.read(columns=["rank"], use_threads=False)["rank"]
            values = rank.to_numpy()
            self.in_order = rank.null_count == 0 and bool(np.all(values[1:] >= values[:-1]))

    def table(self) -> pa.Table:
        table = self.parquet.read(columns=self.columns, use_threads=False)
        return table if self.in_order else table.sort_by("rank")

    def batches(self) -> Iterator[pa.RecordBatch]:
        if not self.in_order:  # sort_by is stable: equal ranks keep the file's order, as before
            yield from self.table().to_batches(max_chunksize=BATCH_ROWS)
            return
        yield from self.parquet.iter_batches(batch_size=BATCH_ROWS, columns=self.columns, use_threads=False)

    def close(self) -> None:
        self.parquet.close()
        if not isinstance(self.file, str):
            self.file.close()


def _verify(store: Any, key: str) -> None:
    """The object's sha256 against its commit marker, read in chunks (no marker: not verified,
    as :func:`syllabus.selection.scores.read_url_bytes` does)."""
    from syllabus.store.store import CorruptObjectError, MissingObjectError

    marker = store.marker(key)
    if not store.exists(key):
        raise MissingObjectError(f"{store.url(key)} does not exist in the store")
    if marker is None:
        log.info("%s has no commit marker; read without checksum verification", store.url(key))
        return
    digest = hashlib.sha256()
    with store.fs.open(store.path(key), "rb") as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
    if digest.hexdigest() != marker.get("sha256"):
        raise CorruptObjectError(
            f"{store.url(key)} is corrupt: its sha256 is {digest.hexdigest()[:12]}... but its marker records "
            f"{str(marker.get('sha256'))[:12]}...; delete it or rerun to recompute"
        )


class _Fingerprint:
    """:func:`selection_fingerprint`, fed batch by batch: the same bytes go through sha256
    (``content_hash`` of the list of ids: ``["id1","id2",...]``)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256(b"[")
        self.first = True

    def add(self, ids: pa.Array) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not len(ids):
            return
        text = _json_strings(pc.fill_null(pc.cast(ids, pa.large_string()), "None"))  # str(None), as before
        data = _text_bytes(_concat(",", text))
        self.digest.update(data[1:] if self.first else data)
        self.first = False

    def hexdigest(self) -> str:
        digest = self.digest.copy()
        digest.update(b"]")
        return digest.hexdigest()[:20]


def _jsonl_chunks(subset: _Subset, summary: dict[str, Any], fingerprint: _Fingerprint) -> Iterator[memoryview]:
    for batch in subset.batches():
        fingerprint.add(batch.column("sample_id"))
        summary["samples"] += batch.num_rows
        yield _jsonl_lines(batch)


def _json_array_chunks(subset: _Subset, fmt: str, summary: dict[str, Any],
                       fingerprint: _Fingerprint) -> Iterator[bytes | memoryview]:
    """The records of ``json.dumps(records, indent=1, ensure_ascii=False) + "\\n"``, batch by batch."""
    import pyarrow as pa

    started = False
    for batch in subset.batches():
        fingerprint.add(batch.column("sample_id"))
        written, skipped, pieces = _converted_batch(batch, fmt)
        for s in skipped:
            log.warning("export %s: sample %s left out: %s", fmt, s["sample_id"], s["reason"])
        summary["skipped"] += skipped
        summary["samples"] += written
        if not written:
            continue
        data = (_text_bytes(_concat(",\n", pieces[0])) if isinstance(pieces[0], pa.Array)
                else "".join(",\n" + p for p in pieces).encode("utf-8"))
        if not started:
            yield b"[\n"
            data, started = data[2:], True
        yield data
    yield b"\n]\n" if started else b"[]\n"


class ExportTargetExistsError(FileExistsError):
    """An export target is already there and ``overwrite`` was not asked for."""


def _exists_error(what: str) -> ExportTargetExistsError:
    return ExportTargetExistsError(f"{what} already exists; pass --overwrite to replace it, or choose another --name or --out")


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` (a file or a folder, in ``path``'s folder) to ``path``."""
    if _present(path) and not overwrite:  # checked again: another process may have written it since
        raise _exists_error(str(path))
    if not _present(path) or not (tmp.is_dir() or (path.is_dir() and not path.is_symlink())):
        os.replace(tmp, path)  # atomic, over a file too
        return
    # Nothing is renamed over a folder (or a file over a folder): move the old one aside first,
    # and back if the new one cannot take its place.
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
    os.replace(path, old / path.name)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old / path.name, path)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _temp_beside(path: Path, suffix: str = "") -> Path:
    """A new, unused name next to ``path`` for a temporary file or folder. The caller creates it
    with ``os.open``/``mkdir``, which apply the umask as for any file (``mkstemp`` and
    ``mkdtemp`` make owner-only ones, and an export renamed into place must stay readable to a
    trainer that runs as another user)."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex}{suffix}"


def _write_atomic(path: Path, chunks: Iterable[str | bytes | memoryview], overwrite: bool) -> None:
    """Write ``chunks`` (text as UTF-8, or bytes) to a temporary file next to ``path``, then
    rename it into place; the temporary file is removed whatever stops the write."""
    tmp = _temp_beside(path, ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
            fh.flush()
            os.fsync(fh.fileno())
        _place(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def _read_dataset_info(out: Path) -> dict[str, Any]:
    path = out / DATASET_INFO
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or remove it, then export again") from exc
    if not isinstance(info, dict):
        raise ValueError(f"{path} is not a JSON object of dataset entries; fix or remove it, then export again")
    return info


def _merge_dataset_info(out: Path, name: str, entry: dict[str, Any]) -> Path:
    """Add (or, checked by the caller, replace) this dataset's entry, keeping every other entry
    of an existing file: ``--out`` may be LLaMA-Factory's own data directory."""
    path = out / DATASET_INFO
    info = _read_dataset_info(out)
    info[name] = entry
    # The shared index is rewritten on every export by design (other entries kept as they are).
    _write_atomic(path, [json.dumps(info, indent=2, ensure_ascii=False) + "\n"], overwrite=True)
    return path


def _check_targets(out: Path, fmt: str, name: str, overwrite: bool) -> None:
    """Refuse, before anything is written, a target that is already there (unless ``overwrite``)
    and a ``dataset_info.json`` that cannot be merged into."""
    info = _read_dataset_info(out) if fmt in ("alpaca", "sharegpt") else {}
    if overwrite:
        return
    target = out / (name if fmt == "hf" else f"{name}.jsonl" if fmt == "jsonl" else f"{name}.json")
    if _present(target):
        raise _exists_error(str(target))
    if name in info:
        raise _exists_error(f"the entry {name!r} of {out / DATASET_INFO}")


def _save_hf(subset: _Subset, path: Path, overwrite: bool, summary: dict[str, Any], fingerprint: _Fingerprint) -> None:
    """``datasets.save_to_disk`` of the subset, streamed: the batches go to an Arrow stream file
    next to the target, which ``datasets`` memory-maps and saves (the subset's own column types:
    the messages structs, the score dtypes), so the rows are never all in memory at once."""
    import datasets
    import pyarrow as pa

    rows = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.rows-"))
    tmp = _temp_beside(path)
    tmp.mkdir()
    try:
        schema = pa.schema([subset.schema.field(c) for c in subset.columns], metadata=subset.schema.metadata)
        with pa.ipc.new_stream(str(rows / "rows.arrow"), schema) as writer:
            for batch in subset.batches():
                fingerprint.add(batch.column("sample_id"))
                summary["samples"] += batch.num_rows
                writer.write_batch(batch)
        dataset = datasets.Dataset.from_file(str(rows / "rows.arrow"), in_memory=False)
        dataset.save_to_disk(str(tmp))
        del dataset  # its memory map, before the file goes
        _place(tmp, path, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(rows, ignore_errors=True)


def export_selection(selection: str, fmt: str, out_dir: str | Path, name: str | None = None,
                     overwrite: bool = False) -> dict[str, Any]:
    """Write the subset at ``selection`` to ``out_dir`` in ``fmt``; returns a summary with the
    files written, the row count, the fingerprint and the samples left out (with reasons).

    An existing target raises :class:`ExportTargetExistsError` naming it, before anything is
    written, unless ``overwrite``; targets are renamed into place only once complete."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    url = selected_url(selection)
    # Alpaca and ShareGPT both write NAME.json and a dataset_info.json key: by default each
    # format gets its own, so exporting both to one directory keeps both.
    name = name or default_name(url) + (f"-{fmt}" if fmt in ("alpaca", "sharegpt") else "")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"export name {name!r} must be a plain file name (no '/', no leading '.'); pass --name")
    subset = _Subset(url)
    try:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _check_targets(out, fmt, name, overwrite)
        summary: dict[str, Any] = {"format": fmt, "name": name, "selection": url, "samples": 0, "fingerprint": None,
                                   "skipped": []}
        fingerprint = _Fingerprint()
        if fmt == "jsonl":
            path = out / f"{name}.jsonl"
            _write_atomic(path, _jsonl_chunks(subset, summary, fingerprint), overwrite)
            summary["files"] = [str(path)]
        elif fmt == "hf":
            path = out / name
            _save_hf(subset, path, overwrite, summary, fingerprint)
            summary["files"] = [str(path)]
        else:
            path = out / f"{name}.json"
            _write_atomic(path, _json_array_chunks(subset, fmt, summary, fingerprint), overwrite)
            info = _merge_dataset_info(out, name, dataset_info_entry(fmt, path.name))
            summary["files"] = [str(path), str(info)]
            summary["dataset_info"] = {name: dataset_info_entry(fmt, path.name)}
        summary["fingerprint"] = fingerprint.hexdigest()
    finally:
        subset.close()
    log.info("exported %d samples of %s as %s to %s", summary["samples"], url, fmt, summary["files"][0])
    return summary
