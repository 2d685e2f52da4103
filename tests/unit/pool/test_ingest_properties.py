"""Property: whatever the pool holds (any records, any bytes, any encoding, any supported
format, compressed or not), ingest raises nothing but "no valid record" and accounts for
every record: in a shard or in the quarantine, never both, never neither (issue 17)."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syllabus.pool.ingest import NothingValidError, ingest_pool
from syllabus.pool.manifest import read_pool
from syllabus.store import Store

text = st.text(max_size=40)  # any code point but lone surrogates (those come as JSON escapes below)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8)
roles = st.sampled_from(["user", "assistant", "system", "human", "gpt", "wizard", "", None])
turn = st.fixed_dictionaries({"role": roles, "content": text | st.none() | st.integers()})
record = st.one_of(
    st.fixed_dictionaries({"instruction": text, "output": text}, optional={"input": text | st.none(), "id": text | st.integers(), "meta": json_values}),
    st.fixed_dictionaries({"question": text, "answer": text | st.integers()}),
    st.fixed_dictionaries({"messages": st.lists(turn, max_size=4)}),
    st.fixed_dictionaries({"conversations": st.lists(st.fixed_dictionaries({"from": roles, "value": text}), max_size=4)}),
    st.dictionaries(text, json_values, max_size=4),
    json_values,
)
# Lines a JSONL file may hold besides JSON documents: escapes Python's json accepts but
# UTF-8 cannot hold, numbers int() refuses, deep nesting, raw bytes.
odd_line = st.one_of(
    st.builds(lambda s: '{"instruction": "' + s + '\\ud800", "output": "x"}', st.text(alphabet="abc", max_size=5)),
    st.builds(lambda n: '{"instruction": "i", "output": "o", "n": ' + "7" * n + "}", st.integers(4000, 6000)),
    st.builds(lambda n: '{"instruction": "i", "output": "o", "deep": ' + "[" * n + "]" * n + "}", st.integers(90, 3000)),
    st.binary(max_size=60).filter(lambda b: b"\n" not in b),
)
FORMATS = ["jsonl", "json", "csv", "tsv", "parquet"]
ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "utf-16"]


def _encode(data: str, encoding: str) -> bytes:
    # latin-1 cannot hold every code point: the unencodable ones become "?" (the file is still
    # a latin-1 file, which is what is being tested).
    return codecs.encode(data, encoding, errors="replace")


def _jsonl(records: list, odd: list[str | bytes], encoding: str) -> bytes:
    out = []
    for i, r in enumerate(records):
        out.append(_encode(json.dumps(r, ensure_ascii=False), encoding))
        if i < len(odd):
            o = odd[i]
            out.append(o if isinstance(o, bytes) else _encode(o, encoding))
    out += [o if isinstance(o, bytes) else _encode(o, encoding) for o in odd[len(records):]]
    newline = _encode("\n", encoding) if encoding == "utf-16" else b"\n"
    return newline.join(out) + newline


def _table_text(records: list, delimiter: str) -> str:
    buf = io.StringIO()
    keys = sorted({k for r in records if isinstance(r, dict) for k in r} | {"instruction"})
    w = csv.writer(buf, delimiter=delimiter)
    w.writerow(keys)
    for r in records:
        if isinstance(r, dict):
            w.writerow(["" if r.get(k) is None else (r[k] if isinstance(r[k], str) else json.dumps(r[k])) for k in keys])
        else:
            w.writerow([json.dumps(r)])
    return buf.getvalue()


def _parquet(records: list) -> bytes:
    # Parquet needs one schema: every value becomes its JSON text, as a column of strings.
    keys = sorted({k for r in records if isinstance(r, dict) for k in r} | {"instruction"})
    rows = [{k: (None if not isinstance(r, dict) or k not in r else r[k] if isinstance(r[k], str) else json.dumps(r[k])) for k in keys} for r in records]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(k, pa.string()) for k in keys])), sink)
    return sink.getvalue()


@st.composite
def pool_files(draw):
    files = []
    for i in range(draw(st.integers(1, 3))):
        fmt = draw(st.sampled_from(FORMATS))
        records = draw(st.lists(record, max_size=12))
        encoding = draw(st.sampled_from(ENCODINGS))
        if fmt == "jsonl":
            data = _jsonl(records, draw(st.lists(odd_line, max_size=4)), encoding)
        elif fmt == "json":
            data = _encode(json.dumps(records, ensure_ascii=False), encoding)
        elif fmt in ("csv", "tsv"):
            data = _encode(_table_text(records, "," if fmt == "csv" else "\t"), encoding)
        else:
            data = _parquet(records)
        damage = draw(st.sampled_from(["none", "none", "gzip", "truncated_gzip", "cut"]))
        name = f"f{i}.{fmt}"
        if damage in ("gzip", "truncated_gzip"):
            data, name = gzip.compress(data), name + ".gz"
            if damage == "truncated_gzip":
                data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
        elif damage == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        files.append((name, data, fmt, encoding, damage))
    return files


BOM = codecs.BOM_UTF8


def _expected_jsonl_records(data: bytes) -> int:
    # The reader's contract: every line that is not blank (a byte order mark before it does not
    # count) is one record, unless the file is one JSON array opened on its first line (a .json
    # file under the wrong name): then each element is.
    if data.split(b"\n")[0].removeprefix(BOM).lstrip().startswith(b"["):
        try:
            value = json.loads(data.decode("utf-8", "surrogateescape").lstrip("\ufeff"))
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, list):
            return len(value)
    return sum(1 for line in data.split(b"\n") if line.strip().removeprefix(BOM).strip())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(files=pool_files(), shard_size=st.integers(1, 7), max_chars=st.sampled_from([50, 200_000]))
def test_every_record_is_accounted_for_and_nothing_raises(files, shard_size, max_chars):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data, *_ in files:
            (root / name).write_bytes(data)
        store = Store(f"memory://prop-{uuid.uuid4().hex}")
        try:
            result = ingest_pool([tmp], store, shard_size=shard_size, max_chars=max_chars, progress=False)
        except NothingValidError as exc:
            if exc.quarantine_url:  # every rejected record is still written down
                qstore, key = Store.open_url(exc.quarantine_url)
                assert qstore.read_committed(key).decode("utf-8").count("\n") >= 1
            return
        m = result.manifest
        assert m["records_in"] == m["records_ok"] + m["records_rejected"] + m["duplicates"]
        table = read_pool(m)
        qstore, key = Store.open_url(result.quarantine_url)
        quarantined = [json.loads(line) for line in qstore.read_committed(key).decode("utf-8").splitlines()]
        assert table.num_rows + len(quarantined) == m["records_in"] == m["records_ok"] + len(quarantined)
        assert all(q["code"] and q["reason"] and q["location"] for q in quarantined)
        assert len(set(table.column("sample_id").to_pylist())) == table.num_rows
        for name, data, fmt, encoding, damage in files:
            if fmt == "jsonl" and damage in ("none", "cut") and encoding != "utf-16":
                assert m["per_file"][str(root / name)]["records_in"] == _expected_jsonl_records(data)
