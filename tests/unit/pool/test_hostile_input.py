"""Hostile and damaged input (issue 17, finding 1): no record and no damaged file takes the
other records of an ingest down; what one record may cost is bounded while it is read."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import tracemalloc
import uuid
from pathlib import Path

import pytest

from syllabus.pool import readers
from syllabus.pool.ingest import NothingValidError, ingest_pool
from syllabus.pool.manifest import read_pool
from syllabus.store import Store


def alpaca(i: int, **extra) -> dict:
    return {"instruction": f"Explain condition number {i}.", "input": "", "output": f"Condition {i} is explained here.", **extra}


def lines_of(records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def quarantine_at(url: str) -> list[dict]:
    store, key = Store.open_url(url)
    return [json.loads(line) for line in store.read_committed(key).decode("utf-8").splitlines()]


def accounted(result) -> None:
    s = result.summary()
    assert s["records_in"] == s["records_ok"] + s["records_rejected"] + s["duplicates"]
    assert len(read_pool(result.manifest)) + len(quarantine_at(result.quarantine_url)) == s["records_in"]


@pytest.fixture
def store(tmp_path_factory):
    return Store(str(tmp_path_factory.mktemp("store")))


def test_a_json_line_nested_5000_levels_is_quarantined_not_fatal(tmp_path, store):
    deep = '{"instruction": "x", "output": "y", "meta": ' + "[" * 5000 + "]" * 5000 + "}"
    assert len(deep) > 10_000
    middle = '{"instruction": "x", "output": "y", "meta": ' + "[" * 150 + "]" * 150 + "}"  # parses, but too deep
    (tmp_path / "p.jsonl").write_text(lines_of([alpaca(1), deep, middle, alpaca(2)]))
    result = ingest_pool([str(tmp_path / "p.jsonl")], store, progress=False)
    assert result.summary()["records_ok"] == 2
    by_line = {q["line"]: q for q in quarantine_at(result.quarantine_url)}
    assert by_line[2]["code"] == by_line[3]["code"] == "too_deep"
    assert f"at most {readers.MAX_DEPTH} levels" in by_line[2]["reason"]
    accounted(result)


def test_a_deep_record_in_a_json_array_rejects_only_itself(tmp_path, store):
    deep = '{"nested": ' * 3000 + '{"question": "q ] }", "answer": "a"}' + "}" * 3000  # brackets in a string too
    text = "[" + json.dumps({"question": "q1", "answer": "a1"}) + ", " + deep + ", " + json.dumps({"question": "q2", "answer": "a2"}) + "]"
    (tmp_path / "arr.json").write_text(text)
    result = ingest_pool([str(tmp_path / "arr.json")], store, progress=False)
    s = result.summary()
    assert (s["records_in"], s["records_ok"], s["rejected_by_reason"]) == (3, 2, {"too_deep": 1})
    (entry,) = quarantine_at(result.quarantine_url)
    assert entry["row"] == 1


def test_numbers_and_escapes_python_refuses_are_one_record_each(tmp_path, store):
    huge_int = '{"instruction": "x", "output": "y", "n": ' + "9" * 5000 + "}"  # over int's 4,300 digits
    surrogate = '{"instruction": "a\\ud800b", "output": "y"}'  # a lone surrogate cannot be UTF-8
    nested_surrogate = '{"instruction": "ok", "output": "y", "meta": {"k\\udfff": [1]}}'
    (tmp_path / "p.jsonl").write_text(lines_of([alpaca(1), huge_int, surrogate, nested_surrogate, alpaca(2)]))
    result = ingest_pool([str(tmp_path / "p.jsonl")], store, progress=False)
    s = result.summary()
    assert s["records_ok"] == 2 and s["rejected_by_reason"] == {"invalid_utf8": 2, "malformed_json": 1}
    by_line = {q["line"]: q for q in quarantine_at(result.quarantine_url)}
    assert "4300" in by_line[2]["reason"] and "lone surrogate" in by_line[3]["reason"]
    accounted(result)


def test_csv_fields_past_pythons_field_limit(tmp_path, store):
    path = tmp_path / "c.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "answer"])
        w.writerow(["short", "fine"])
        w.writerow(["big but allowed", "b" * 150_000])  # over csv's 131,072, under --max-chars 200,000
        w.writerow(["too big", "line one\n" + "c" * 300_000 + "\nlast, line"])  # a quoted field over 3 lines
        w.writerow(["after", "still read"])
    result = ingest_pool([str(path)], store, progress=False, max_chars=200_000)
    s = result.summary()
    assert s["records_ok"] == 3, s
    assert s["rejected_by_reason"] == {"too_long": 1}
    (entry,) = quarantine_at(result.quarantine_url)
    assert entry["line"] == 4
    assert set(read_pool(result.manifest).column("instruction").to_pylist()) == {"short", "big but allowed", "after"}


def test_a_csv_line_past_the_read_limit_is_skipped_in_chunks(tmp_path, store):
    path = tmp_path / "c.csv"
    path.write_text("question,answer\nq1,a1\nq2," + "x" * 3_000_000 + "\nq3,a3\n")
    result = ingest_pool([str(path)], store, progress=False, max_chars=1000)
    s = result.summary()
    assert (s["records_ok"], s["rejected_by_reason"]) == (2, {"too_long": 1})
    (entry,) = quarantine_at(result.quarantine_url)
    assert entry["line"] == 3 and entry["raw_prefix"].startswith("q2,xxx")


def test_a_long_line_is_never_held_whole(tmp_path, store):
    path = tmp_path / "p.jsonl"
    with open(path, "w") as fh:
        fh.write(json.dumps(alpaca(1)) + "\n")
        fh.write('{"instruction": "long", "output": "' + "y" * 40_000_000 + '"}\n')
        fh.write(json.dumps(alpaca(2)) + "\n")
    tracemalloc.start()
    try:
        result = ingest_pool([str(path)], store, progress=False, max_chars=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"peak {peak:,} bytes: the 40 MB line was held whole"
    assert result.summary()["records_ok"] == 2
    (entry,) = quarantine_at(result.quarantine_url)
    assert entry["code"] == "too_long" and entry["line"] == 2
    assert entry["offset"] == len(json.dumps(alpaca(1))) + 1
    assert "40,000,0" in entry["reason"] and entry["raw_prefix"].startswith('{"instruction": "long"')


def test_an_endless_line_ends_the_file_not_the_process(tmp_path, store, monkeypatch):
    monkeypatch.setattr(readers, "MAX_SKIP_BYTES", 16 << 20)
    # A sparse file of zero bytes with no newline: an endless line, read as one would be. (A
    # link to /dev/zero itself is refused before it is opened: tests/unit/test_special_inputs.py.)
    with open(tmp_path / "zero.jsonl", "wb") as fh:
        fh.truncate(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(NothingValidError) as err:
            ingest_pool([str(tmp_path / "zero.jsonl")], store, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12_000_000
    assert err.value.quarantine_url and err.value.quarantine_url in str(err.value)
    (entry,) = quarantine_at(err.value.quarantine_url)
    assert entry["code"] == "damaged_file" and "no end in sight" in entry["reason"]


def _gzip_records(path: Path, n: int) -> bytes:
    with gzip.open(path, "wt") as fh:
        for i in range(n):
            fh.write(json.dumps(alpaca(i, pad=f"{i:08d}" * 30)) + "\n")
    return path.read_bytes()


def test_a_truncated_gz_keeps_the_records_before_the_damage(tmp_path, store):
    whole = _gzip_records(tmp_path / "whole.jsonl.gz", 3000)
    cut = tmp_path / "pool" / "cut.jsonl.gz"
    cut.parent.mkdir()
    cut.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "pool" / "other.jsonl").write_text(lines_of([alpaca(10_000)]))
    result = ingest_pool([str(tmp_path / "pool")], store, progress=False)
    s = result.summary()
    kept = result.manifest["per_file"][str(cut)]["records_ok"]
    assert 0 < kept < 3000 and s["records_ok"] == kept + 1
    (entry,) = quarantine_at(result.quarantine_url)
    assert entry["code"] == "damaged_file" and entry["line"] == kept + 1
    assert entry["offset"] == sum(len(line) for line in gzip.decompress(whole).splitlines(keepends=True)[:kept])
    assert f"uncompressed byte offset {entry['offset']:,}" in entry["reason"] and "Compressed file ended" in entry["reason"]
    accounted(result)


def test_corrupt_gz_and_parquet_are_damaged_files_not_fatal(tmp_path, store):
    whole = bytearray(_gzip_records(tmp_path / "src.gz", 2000))
    whole[len(whole) // 2 : len(whole) // 2 + 64] = b"\x00" * 64
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "flipped.jsonl.gz").write_bytes(bytes(whole))
    (tmp_path / "pool" / "fake.parquet").write_bytes(b"this is not parquet at all")
    (tmp_path / "pool" / "fine.jsonl").write_text(lines_of([alpaca(50_000)]))
    result = ingest_pool([str(tmp_path / "pool")], store, progress=False)
    damaged = {Path(q["file"]).name: q for q in quarantine_at(result.quarantine_url) if q["code"] == "damaged_file"}
    assert set(damaged) == {"flipped.jsonl.gz", "fake.parquet"}
    assert result.manifest["per_file"][str(tmp_path / "pool" / "flipped.jsonl.gz")]["records_ok"] > 0
    accounted(result)


def test_the_quarantine_is_written_when_nothing_is_valid(tmp_path):
    store_dir = tmp_path / "st"
    (tmp_path / "bad.jsonl").write_text(lines_of(["{oops", {"instruction": ""}]))
    with pytest.raises(NothingValidError) as err:
        ingest_pool([str(tmp_path / "bad.jsonl")], Store(str(store_dir)), progress=False)
    entries = quarantine_at(err.value.quarantine_url)
    assert [(q["line"], q["code"]) for q in entries] == [(1, "malformed_json"), (2, "missing_field")]
    # The command: still a failure (docs/ingest.md: non-zero when nothing valid was read), naming the file.
    proc = subprocess.run(
        [sys.executable, "-m", "syllabus.cli", "ingest", str(tmp_path / "bad.jsonl"), "--store", f"memory://q-{uuid.uuid4().hex[:6]}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2 and "quarantine.jsonl" in proc.stderr, proc.stderr


def test_a_max_chars_below_one_is_refused_before_reading(tmp_path, store):
    (tmp_path / "p.jsonl").write_text(lines_of([alpaca(1)]))
    with pytest.raises(ValueError, match="--max-chars 0 must be at least 1"):
        ingest_pool([str(tmp_path / "p.jsonl")], store, max_chars=0, progress=False)
    assert store.list() == []


def test_an_own_id_equal_to_another_records_content_hash_is_a_duplicate_id(tmp_path, store):
    from syllabus.pool.canonical import normalise

    hashed = normalise(alpaca(1), "p.jsonl").sample_id
    (tmp_path / "p.jsonl").write_text(lines_of([alpaca(1), alpaca(2, id=hashed)]))
    (tmp_path / "q.jsonl").write_text(lines_of([alpaca(3, id=normalise(alpaca(4), "q").sample_id), alpaca(4)]))
    result = ingest_pool([str(tmp_path / "p.jsonl"), str(tmp_path / "q.jsonl")], store, progress=False)
    assert result.summary()["rejected_by_reason"] == {"duplicate_id": 2}
    ids = read_pool(result.manifest).column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)) == 2


def test_quarantine_lines_survive_splitlines(tmp_path, store):
    # U+0085 and U+2028 are line breaks to str.splitlines(); found by the property test.
    (tmp_path / "p.jsonl").write_text(lines_of([alpaca(1), {"instruction": "", "output": "\x85"}, {"instruction": "\u2028", "output": ""}]), encoding="utf-8")
    result = ingest_pool([str(tmp_path / "p.jsonl")], store, progress=False)
    entries = quarantine_at(result.quarantine_url)
    assert [e["line"] for e in entries] == [2, 3] and json.loads(entries[0]["raw"])["output"] == "\x85"
