"""The vectorised ingest path against the per-record path and against the ingest of before it
(issue 28 item 2): a fixed pool of plain records and of every kind of bad, duplicate, hostile and
unusual record gives byte-identical shards (Parquet bytes and content hashes), sample ids,
quarantine lines, manifest and pool fingerprint whichever path reads it, in blocks of any size.

The GOLDEN figures were computed by the ingest of commit 872eba7 (before the vectorised path
existed) on the same files; they pin both paths to it. Since then one change moved a record: one
that names a key twice is quarantined (``duplicate_key``) instead of kept with the last value;
every other record, id, shard row and quarantine line is as 872eba7 made it (compared record by
record when the figures were recomputed).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syllabus.pool import readers, vectorised
from syllabus.pool.canonical import FieldMap, normalise
from syllabus.pool.ingest import _row_line, ingest_pool
from syllabus.pool.vectorised import prepare_lines
from syllabus.store import Store

MAX_CHARS = 400


def _alpaca(i: int, **kw) -> dict:
    rec = {"instruction": f"Explain finding {i} in a patient with fever.", "input": "" if i % 2 else f"Age {30 + i}.",
           "output": f"Finding {i} usually means the infection is resolving; check again in {i} days."}
    rec.update(kw)
    return rec


def golden_lines() -> list[bytes]:
    """One JSONL file's lines (bytes, without newlines): plain records first and throughout, and
    each kind of record that the vectorised path must hand to the per-record path or get right."""
    J = lambda obj, **kw: json.dumps(obj, **kw).encode()  # noqa: E731
    nfc = "Describe the café diet for a naïve patient."
    lines = [J(_alpaca(i)) for i in range(6)]
    lines += [
        J(_alpaca(6, output='He said "rest", then\ttook C:\\drugs\\x; next\nline\r\nend.')),  # escapes
        J({"instruction": nfc, "output": "Crème fraîche is fine 🙂."}, ensure_ascii=False),  # raw UTF-8
        J({"instruction": nfc, "output": "Crème fraîche is fine 🙂."}),  # the same, \u-escaped: duplicate
        J({"instruction": unicodedata.normalize("NFD", nfc), "output": "Crème fraîche is fine 🙂."}),  # NFD: duplicate
        J({"instruction": "Explain finding\u200b 1 in a patient with fever.", "input": "", "output": _alpaca(1)["output"]}),  # zero-width: dup
        J({"instruction": "Explain  finding 3 in a patient with fever. ", "output": _alpaca(3)["output"]}),  # whitespace: new (no input)
        J({"instruction": "全角ＡＢＣ and ﬁne ligatures", "input": "\u3000", "output": "ok"}, ensure_ascii=False),  # NFKC, wide space input
        J(_alpaca(0)),  # exact duplicate
        J({"instruction": "Stop here.<|im_end|>", "output": "fine"}),  # special token
        J({"instruction": "[INST] be nice [/INST]", "output": "sure", "input": "x"}),  # special tokens
        J({"instruction": "tokens <|reserved_special_token_7|>", "output": "reserved"}),
        J({"question": "What is gout?", "answer": "A form of arthritis.", "focus": "gout", "qtype": "information"}),  # Q&A with metadata
        J({"question": "What is gout?", "answer": "A form of arthritis.", "focus": "gout", "qtype": "other"}),  # duplicate, other metadata
        J({"instruction": "Both fields", "question": "goes to metadata", "output": "instruction wins"}),
        J({"instruction": "Context field", "context": "a context", "output": "used as input"}),
        J({"instruction": "Input and context", "input": "the input", "context": "metadata then", "output": "ok"}),
        J({"instruction": "own id", "output": "one", "id": "rec-1"}),
        J({"instruction": "own id again", "output": "two", "id": "rec-1"}),  # duplicate id, other content
        J({"instruction": "integer id", "output": "three", "id": 17}),
        J({"instruction": "big integer id", "output": "four", "id": 123456789012345678901234567890}),
        J({"instruction": "float id", "output": "five", "id": 5.0}),  # wrong type
        J({"instruction": "bool id", "output": "six", "id": True}),  # wrong type
        J({"instruction": "blank id", "output": "seven", "id": "  "}),  # wrong type
        J({"instruction": "id equal to a content hash", "output": "eight", "id": "0"}),
        J({"instruction": "explicit null input", "input": None, "output": "null goes to metadata"}),
        J({"instruction": "null metadata", "output": "kept as null", "extra": None}),
        J({"instruction": "the word null in text", "output": "null hypothesis"}),
        J({"instruction": "nested metadata", "output": "x", "meta": {"a": [1, 2]}}),
        J({"instruction": "numeric metadata", "output": "x", "score": 1.5, "rank": 3, "ok": True}),
        J({"instruction": "timestamp metadata", "output": "x", "when": "2020-01-01 00:00:00"}),
        J({"instruction": "control \u0001 char", "output": "kept, escaped in JSON"}),
        J({"instruction": "NUL \u0000 byte", "output": "rejected"}),
        b'{"instruction": "lone \\ud800 surrogate", "output": "rejected"}',
        b'{"instruction": "caf\xe9", "output": "latin-1 byte"}',  # invalid UTF-8
        b'{"instruction": "encoded surrogate \xed\xa0\x80", "output": "x"}',  # invalid UTF-8 (CESU)
        b'{"instruction": "dup key", "instruction": "second wins", "output": "x"}',  # quarantined: duplicate_key
        b'{"instr\\u0075ction": "escaped key", "output": "x"}',
        b'{"instruction": "broken", "output": ',  # malformed
        b'{"instruction": "two", "output": "objects"} {"instruction": "on", "output": "a line"}',
        b'{"instruction": "trailing", "output": "garbage"} x',
        b'[1, 2]',
        b'"a string"',
        b'{"instruction": "NaN metadata", "output": "x", "v": NaN}',
        b'   {"instruction": "leading spaces", "output": "x"}   ',
        b'{"instruction": "crlf line", "output": "x"}\r',
        b'',
        b'   ',
        J({"instruction": "", "output": "empty instruction"}),
        J({"instruction": "   ", "output": "blank instruction"}),
        J({"instruction": "\u200b\u200d", "output": "invisible instruction"}),
        J({"instruction": "missing output"}),
        J({"input": "missing instruction", "output": "x"}),
        J({"instruction": 42, "output": "wrong type"}),
        J({"instruction": "x" * 300, "output": "y" * 101}),  # over max_chars (400)
        J({"instruction": "x" * 300, "input": "z" * 48, "output": "y" * 50}),  # 400 exactly with "\n\n"
        J({"instruction": "x" * 300, "input": " ", "output": "y" * 100}),  # 400: the blank input is not joined
        J({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
        J({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "id": "conv-1"}),
        J({"messages": [{"role": "user", "content": "no answer"}]}),
        J({"instruction": "a conversation field that is text", "output": "x", "messages": "hello"}),
        b'{"instruction": "deep", "output": "x", "m": ' + b"[" * 120 + b"]" * 120 + b"}",
        b'{"instruction": "long line", "output": "' + b"y" * (readers.line_limit(MAX_CHARS) + 10) + b'"}',  # too long a line
        J({"instruction": "wide\u2028line\u2029seps", "output": "kept \x85 as text"}, ensure_ascii=False),
    ]
    lines += [J(_alpaca(i)) for i in range(100, 140)]
    return lines


def golden_files(folder: Path) -> list[str]:
    (folder / "golden.jsonl").write_bytes(b"\n".join(golden_lines()) + b"\n")
    # A second file: a duplicate of the first file's record, a new one, no final newline.
    (folder / "second.jsonl").write_bytes(json.dumps(_alpaca(2)).encode() + b"\n" + json.dumps(_alpaca(7)).encode())
    table = pa.table({
        "instruction": ["pq one", "pq two", None, "pq four", "Explain finding 4 in a patient with fever.", "pq six"],
        "output": ["a", "b", "c", "d", _alpaca(4)["output"], "f <|eot_id|>"],
        "input": ["", None, "", "in", _alpaca(4)["input"], ""],
        "uid": [1, 2, 3, 4, 5, 6],
        "tag": ["t", "t", "t", None, "t", "t"],
    })
    pq.write_table(table, folder / "golden.parquet")
    return ["golden.jsonl", "second.jsonl", "golden.parquet"]


# From the ingest of commit 872eba7 with the duplicate key quarantined (see the
# module docstring), by golden_figures below.
GOLDEN = {
    "keep": {"pool_fingerprint": "7617ff0d7943c5035f0d", "manifest": "9913c241e81c7ea0", "quarantine": "a7df011c572afb86",
             "parquet": "2724fb5ab933934c", "sample_ids": "e1ac2458f7b71844", "counts": [115, 81, 26, 8, 13]},
    "quarantine": {"pool_fingerprint": "00a40e76753139f0f689", "manifest": "795b01df2e0552ca", "quarantine": "76aa2274ce170510",
                   "parquet": "e058449302f1a0f8", "sample_ids": "4122e7e0c06f79c2", "counts": [115, 77, 30, 8, 13]},
}


def golden_figures(result) -> dict:
    """What must not change, in short: hashes of the manifest (less its timings and store
    URLs), the quarantine file, every shard's Parquet bytes and all sample ids, and the counts."""
    m = dict(result.manifest)
    for k in ("seconds", "store", "quarantine"):
        m.pop(k)
    m["shards"] = [{k: v for k, v in s.items() if k != "url"} for s in m["shards"]]
    store, key = Store.open_url(result.quarantine_url)
    quarantine = store.read_committed(key)
    parquet, ids = {}, []
    for s in result.manifest["shards"]:
        store, key = Store.open_url(s["url"])
        data = store.read_committed(key)
        parquet[s["content_hash"]] = hashlib.sha256(data).hexdigest()[:16]
        ids += pq.read_table(pa.BufferReader(data)).column("sample_id").to_pylist()
    return {
        "pool_fingerprint": m["pool_fingerprint"],
        "manifest": hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()[:16],
        "quarantine": hashlib.sha256(quarantine).hexdigest()[:16],
        "parquet": hashlib.sha256(json.dumps(parquet, sort_keys=True).encode()).hexdigest()[:16],
        "sample_ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
        "counts": [m["records_in"], m["records_ok"], m["records_rejected"], m["duplicates"], len(m["shards"])],
    }


def ingest_golden(folder: Path, policy: str, **kw):
    """The golden pool, ingested from ``folder`` (the working folder) into a store there."""
    files = golden_files(folder)
    return ingest_pool(files, Store(str(folder / f"store-{policy}")), shard_size=7, max_chars=MAX_CHARS,
                       special_tokens=policy, progress=False, **kw)


@pytest.fixture(autouse=True)
def small_blocks_vectorised(monkeypatch):
    """The test files are small: let blocks of any size take the vectorised path."""
    monkeypatch.setattr(vectorised, "MIN_ROWS", 1)


@pytest.mark.parametrize("policy", ["keep", "quarantine"])
@pytest.mark.parametrize("path", ["vectorised", "per-record", "vectorised-from-64-rows"])
def test_both_paths_give_the_golden_pool(tmp_path, monkeypatch, policy, path):
    monkeypatch.chdir(tmp_path)
    if path == "vectorised-from-64-rows":  # the default: the small files take the per-record path
        monkeypatch.setattr(vectorised, "MIN_ROWS", 64)
    result = ingest_golden(tmp_path, policy, vectorised=path != "per-record")
    assert golden_figures(result) == GOLDEN[policy]


@pytest.mark.parametrize("block_bytes", [1, 97, 4096])
def test_block_boundaries_change_nothing(tmp_path, monkeypatch, block_bytes):
    """Lines cut across blocks, a block of one line, and a too-long line spanning thousands of
    blocks (it is skipped as the per-line reader skips it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(readers, "BLOCK_BYTES", block_bytes)
    result = ingest_golden(tmp_path, "keep", vectorised=True)
    assert golden_figures(result) == GOLDEN["keep"]


def test_plain_records_take_the_vectorised_path(tmp_path):
    """The golden file's plain records are made by the vectorised path (so the golden figures
    test it), and each record that needs it by the per-record path."""
    path = tmp_path / "golden.jsonl"
    path.write_bytes(b"\n".join(golden_lines()) + b"\n")
    items = []
    for block in readers.read_blocks(str(path), "jsonl", max_chars=MAX_CHARS):
        if isinstance(block, readers.RawRecord):
            items.append(block)
            continue
        items += prepare_lines(block, "golden.jsonl", FieldMap(), MAX_CHARS).items
    assert len(items) == 107  # the file's records: its lines less the 2 blank ones
    plain = [i for i in items if isinstance(i, int)]
    sent_on = [i for i in items if not isinstance(i, int)]
    # Alpaca records and their duplicates, Q&A pairs, own ids, absent fields, the records of 400
    # characters, and the raw and escaped UTF-8, NFD and zero-width variants. Four plain records
    # go on because of their neighbours in the block: the integer id after string ids (pyarrow
    # refuses the type change), the escaped key and the CRLF line (parsed after a refused line,
    # beside absent fields and the NaN), the word null where other records' fields are absent.
    assert len(plain) == 66
    lines = {rec.line for rec in sent_on}
    for what in (b"<|im_end|>", b"[INST]", b"reserved_special", b'"input": null', b'"extra": null',
                 b'"meta": {', b'"score": 1.5', b"NaN", b"\\u0001", b"\\u0000", b"\\ud800", b"caf\xe9", b"\xed\xa0",
                 b"dup key", b"broken", b'"two", "output": "objects"', b"trailing", b"[1, 2]", b"leading spaces",
                 b'"messages"', b'"conversations"', b"big integer", b"float id", b"bool id", b"blank id",
                 b'"instruction": ""', b'"instruction": "   "', b"missing output", b'"instruction": 42', b"y" * 101, b"deep", b"long line"):
        where = [i + 1 for i, line in enumerate(golden_lines()) if what in line]
        assert where and set(where) <= lines, f"{what!r} (line {where}) should take the per-record path"


_text = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30),
    st.text(st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u3000\u200bab\"\\<|>[]{}é\u0301")), max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(st.fixed_dictionaries(
    {"instruction": _text, "output": _text},
    optional={"input": _text, "id": st.one_of(_text, st.integers(-2**63, 2**63 - 1)), "question": _text,
              "context": _text, "note": _text, "\u00e9t\u00e9": _text, "z": _text}), min_size=1, max_size=12))
def test_any_text_gives_the_per_record_row(tmp_path_factory, records):
    """Whatever the text (escapes, control characters, invisible and non-ASCII characters,
    blank fields, keys in any order), a record the vectorised path takes has exactly the
    per-record path's sample id, dedup key, row and shard-hash line."""
    folder = tmp_path_factory.mktemp("any")
    path = folder / "any.jsonl"
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=bool(i % 2)).encode() + b"\n" for i, r in enumerate(records)))
    for block in readers.read_blocks(str(path), "jsonl", max_chars=MAX_CHARS):
        prep = prepare_lines(block, "any.jsonl", FieldMap(), MAX_CHARS)
        for item in prep.items:
            if not isinstance(item, int):
                continue
            rec = prep.record(item)
            sample = normalise(rec.value, "any.jsonl", FieldMap(), MAX_CHARS)
            row = sample.row()
            sample_id, source, instruction, input_text, output, user, turns, metadata, line, content, key, where = prep.rows[item]
            assert source == "any.jsonl" and turns is None
            assert (sample_id, content, key) == (sample.sample_id, sample.content_hash, sample.dedup_key)
            assert (instruction, input_text, output, metadata) == (row["instruction"], row["input"], row["output"], row["metadata"])
            assert [{"role": "user", "content": user}, {"role": "assistant", "content": output}] == row["messages"]
            assert line == _row_line(row)
            assert where == (str(path), rec.line, None)


def test_a_damaged_gzip_reads_as_the_per_line_reader_reads_it(tmp_path, monkeypatch):
    """A truncated .gz breaks inside a block: the records before the damage and the
    damaged_file record (its line and byte offset) are the per-line reader's."""
    import gzip

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(readers, "BLOCK_BYTES", 5000)
    data = gzip.compress(b"".join(json.dumps(_alpaca(i)).encode() + b"\n" for i in range(2000)))
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    figures = {}
    for vectorised in (True, False):
        result = ingest_pool(["cut.jsonl.gz"], Store(str(tmp_path / f"s{vectorised}")), shard_size=100,
                             progress=False, vectorised=vectorised)
        figures[vectorised] = golden_figures(result)
        store, key = Store.open_url(result.quarantine_url)
        [damaged] = [json.loads(line) for line in store.read_committed(key).decode().splitlines()]
        assert damaged["code"] == "damaged_file" and damaged["line"] > 100
    assert figures[True] == figures[False]


def test_crlf_lines_and_absent_fields_stay_on_the_vectorised_path(tmp_path):
    """Windows line ends, records with and without an input or metadata field, and an integer
    id column are all plain; a line that spells null beside absent fields is not."""
    recs = [{"instruction": f"q{i}", "output": f"a{i}", "id": i} | ({"input": "x"} if i % 2 else {"tag": "t"}) for i in range(6)]
    lines = [json.dumps(r).encode() + b"\r\n" for r in recs]
    lines.append(b'{"instruction": "null", "output": "x", "id": 7}\r\n')
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"".join(lines))
    [block] = readers.read_blocks(str(path), "jsonl")
    prep = prepare_lines(block, "crlf.jsonl", FieldMap(), 1000)
    assert prep.items[:6] == list(range(6)) and isinstance(prep.items[6], readers.RawRecord)
    assert [r[0] for r in prep.rows] == [str(i) for i in range(6)]
    assert [r[7] for r in prep.rows[:2]] == ['{"tag": "t"}', "{}"]  # the metadata JSON


@pytest.mark.s3
def test_s3_inputs_and_store_read_the_same_both_ways(tmp_path, s3_bucket):
    """JSONL (plain and gzip) and Parquet read from S3 (blocks through fsspec's buffered file),
    shards committed to S3 by the worker threads: the same figures on both paths."""
    import gzip

    import fsspec

    files = golden_files(tmp_path)
    fs = fsspec.filesystem("s3")
    urls = []
    for name in files:
        data = (tmp_path / name).read_bytes()
        if name == "golden.jsonl":
            name, data = "golden.jsonl.gz", gzip.compress(data)
        fs.pipe(f"{s3_bucket}/in/{name}", data)
        urls.append(f"{s3_bucket}/in/{name}")
    figures = {}
    for path in (True, False):
        result = ingest_pool(urls, Store(f"{s3_bucket}/store-{path}"), shard_size=7, max_chars=MAX_CHARS, progress=False,
                             vectorised=path)
        figures[path] = golden_figures(result)
    assert figures[True] == figures[False]
    assert figures[True]["counts"] == GOLDEN["keep"]["counts"]


def test_duplicates_across_blocks_are_found_by_the_run_test(tmp_path, monkeypatch):
    """A run of new records is deduplicated in one set test (ingest._all_new): a later block's
    copy of an earlier record, a record whose own id is an earlier record's content-hash id, and
    a repeated own id are quarantined exactly as the per-record path quarantines them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(readers, "BLOCK_BYTES", 4096)
    recs = [_alpaca(i) for i in range(400)]
    first_id = normalise(recs[0], "dups.jsonl", FieldMap(), MAX_CHARS).sample_id
    recs += [_alpaca(3), _alpaca(4, input="  Age 34.  "), {"instruction": "own id", "output": "x", "id": first_id},
             {"instruction": "own id two", "output": "y", "id": "r"}, {"instruction": "own id three", "output": "z", "id": "r"}]
    recs += [_alpaca(i) for i in range(400, 500)]
    (tmp_path / "dups.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in recs))
    figures = {}
    for path in (True, False):
        result = ingest_pool(["dups.jsonl"], Store(str(tmp_path / f"s{path}")), shard_size=64, max_chars=MAX_CHARS,
                             progress=False, vectorised=path)
        figures[path] = golden_figures(result)
        assert result.reasons == {"duplicate_content": 2, "duplicate_id": 2}
    assert figures[True] == figures[False]
