"""Ingestion: every format, every kind of bad record accounted for, stable shards on append."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from syllabus.pool.canonical import FieldMap, RecordRejected, normalise
from syllabus.pool.ingest import NothingValidError, ingest_pool
from syllabus.pool.manifest import load_manifest, read_pool
from syllabus.pool.readers import PoolInputError
from syllabus.store import Store


def alpaca(i: int, **extra) -> dict:
    return {"instruction": f"Explain condition number {i}.", "input": "", "output": f"Condition {i} is explained here.", **extra}


def write_jsonl(path: Path, records: list, opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def quarantine_of(result) -> list[dict]:
    store, key = Store.open_url(result.quarantine_url)
    return [json.loads(line) for line in store.read_committed(key).decode().splitlines()]


@pytest.fixture
def store(tmp_path_factory):
    # Outside tmp_path: tests ingest the whole of tmp_path as a pool directory.
    return Store(str(tmp_path_factory.mktemp("store")))


# ---------------------------------------------------------------- formats


def test_alpaca_qa_and_conversation_formats_normalise_to_one_schema(tmp_path, store):
    write_jsonl(tmp_path / "a.jsonl", [alpaca(1), {"instruction": "Translate", "input": "fièvre", "output": "fever", "id": "own-7"}])
    (tmp_path / "qa.json").write_text(json.dumps([{"question": "What is BP?", "answer": "Blood pressure.", "topic": "cardio"}]))
    write_jsonl(tmp_path / "chat.jsonl", [
        {"conversations": [{"from": "system", "value": "Be careful."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                           {"from": "human", "value": "I have a cough."}, {"from": "gpt", "value": "How long?"}]},
        {"messages": [{"role": "user", "content": "Dose of X?"}, {"role": "assistant", "content": "Ask a pharmacist."}]},
    ])
    result = ingest_pool([str(tmp_path)], store, progress=False)
    table = read_pool(result.manifest)
    rows = {r["instruction"]: r for r in table.to_pylist()}
    assert result.manifest["records_ok"] == 5
    assert rows["Translate"]["sample_id"] == "own-7"  # the record's own id wins
    assert rows["Translate"]["messages"][0]["content"] == "Translate\n\nfièvre"
    assert json.loads(rows["What is BP?"]["metadata"]) == {"topic": "cardio"}
    multi = rows["I have a cough."]  # last user turn; every turn kept
    assert multi["output"] == "How long?" and len(multi["messages"]) == 5
    assert [m["role"] for m in multi["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert rows["Dose of X?"]["output"] == "Ask a pharmacist."


def test_parquet_csv_tsv_gzip_and_saved_dataset(tmp_path, store):
    pq.write_table(pa.Table.from_pylist([alpaca(1), alpaca(2)]), tmp_path / "p.parquet")
    with open(tmp_path / "c.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["question", "answer"])
        w.writeheader()
        w.writerow({"question": "Q, with comma", "answer": "A"})
    (tmp_path / "t.tsv").write_text("prompt\tresponse\nhello\tworld\n")
    write_jsonl(tmp_path / "z.jsonl.gz", [alpaca(3)], opener=gzip.open)
    import datasets

    datasets.Dataset.from_list([alpaca(4), alpaca(5)]).save_to_disk(str(tmp_path / "saved"))
    result = ingest_pool([str(tmp_path)], store, progress=False)
    m = result.manifest
    assert m["records_in"] == m["records_ok"] == 7
    sources = {Path(s).name for s in m["per_file"]}
    assert sources == {"p.parquet", "c.csv", "t.tsv", "z.jsonl.gz", "saved"}
    instructions = set(read_pool(m).column("instruction").to_pylist())
    assert {"Q, with comma", "hello", "Explain condition number 5."} <= instructions


def test_field_mapping_for_other_names(tmp_path, store):
    write_jsonl(tmp_path / "x.jsonl", [{"Q": "What is it?", "A": "It is this.", "key": 17}])
    with pytest.raises(NothingValidError, match="map them with --field"):
        ingest_pool([str(tmp_path / "x.jsonl")], store, progress=False)
    fields = FieldMap.from_overrides({"instruction": "Q", "output": "A", "id": "key"})
    result = ingest_pool([str(tmp_path / "x.jsonl")], store, fields=fields, progress=False)
    row = read_pool(result.manifest).to_pylist()[0]
    assert (row["sample_id"], row["instruction"], row["output"]) == ("17", "What is it?", "It is this.")
    with pytest.raises(ValueError, match="unknown field role"):
        FieldMap.from_overrides({"answer": "A"})


def test_sample_id_is_a_stable_content_hash():
    a = normalise(alpaca(1), "f1")
    b = normalise(alpaca(1), "another-file")
    assert a.sample_id == b.sample_id and len(a.sample_id) == 16
    assert normalise(alpaca(2), "f1").sample_id != a.sample_id


# ------------------------------------------------------------- bad records


def test_every_bad_record_is_accounted_for(tmp_path, store):
    good = [alpaca(i) for i in range(5)]
    lines: list[str | dict] = list(good)
    lines += [
        '{"instruction": "broken", "output": ',  # malformed JSON
        alpaca(99, output=""),  # empty response
        {"instruction": "no answer"},  # missing response
        {"input": "only input", "output": "x"},  # missing instruction
        {"instruction": 42, "output": "x"},  # wrong type
        {"instruction": "nul\u0000byte", "output": "x"},  # NUL byte
        {"instruction": "long", "output": "y" * 5000},  # absurdly long (max_chars=1000 below)
        alpaca(0),  # exact duplicate of the first record
        {"instruction": "Same id", "output": "first", "id": "dup"},
        {"instruction": "Same id", "output": "second", "id": "dup"},  # duplicate id, other content
        "[1, 2]",  # a JSON value that is not an object
        {"messages": [{"role": "user", "content": "hi"}]},  # conversation without an answer
        {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]},
    ]
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, lines)
    with open(path, "ab") as fh:
        fh.write(b'{"instruction": "caf\xe9", "output": "latin-1 byte"}\n')  # invalid UTF-8
        fh.write(b"\n   \n")  # blank lines are not records
    result = ingest_pool([str(path)], store, max_chars=1000, progress=False)
    s = result.summary()
    assert s["records_in"] == len(lines) + 1
    assert s["records_in"] == s["records_ok"] + s["records_rejected"] + s["duplicates"]
    assert s["records_ok"] == 6  # five good ones and the first "dup"
    assert s["duplicates"] == 1
    assert s["rejected_by_reason"] == {
        "bad_conversation": 2, "duplicate_content": 1, "duplicate_id": 1, "empty_field": 1, "invalid_utf8": 1,
        "malformed_json": 1, "missing_field": 2, "nul_byte": 1, "too_long": 1, "wrong_type": 2,
    }
    quarantined = quarantine_of(result)
    assert len(quarantined) == s["records_rejected"] + s["duplicates"]
    by_line = {q["line"]: q for q in quarantined}
    assert by_line[6]["code"] == "malformed_json" and by_line[6]["raw"].startswith('{"instruction": "broken"')
    assert by_line[7]["reason"] == 'field "output" is empty'
    assert by_line[13]["reason"].startswith("duplicate of the record at") and "line 1 (compared after" in by_line[13]["reason"]
    assert "distinct ids" in by_line[15]["reason"]
    utf8 = next(q for q in quarantined if q["code"] == "invalid_utf8")
    assert utf8["location"] == f"{path} line {len(lines) + 1}" and "raw_b64" in utf8  # the bytes are kept
    # Every record is either in a shard or in the quarantine, never both, never neither.
    in_shards = len(read_pool(result.manifest))
    assert in_shards + len(quarantined) == s["records_in"]


def test_bad_records_in_tabular_formats(tmp_path, store):
    (tmp_path / "c.csv").write_bytes(b"question,answer\nok,fine\n,empty question\ntoo,many,fields\ncaf\xe9,bad bytes\n")
    (tmp_path / "arr.json").write_bytes(b'[{"question": "q1", "answer": "a1"}, {"question": "q2"}, 7]')
    result = ingest_pool([str(tmp_path)], store, progress=False)
    s = result.summary()
    assert (s["records_in"], s["records_ok"], s["records_rejected"]) == (7, 2, 5)
    locations = {q["location"] for q in quarantine_of(result)}
    assert f"{tmp_path}/arr.json row 1" in locations and f"{tmp_path}/c.csv line 4" in locations


def test_unparseable_json_file_is_one_quarantined_record(tmp_path, store):
    (tmp_path / "broken.json").write_text('[{"question": "q", "answer": "a"},\n{"question": ')
    write_jsonl(tmp_path / "ok.jsonl", [alpaca(1)])
    result = ingest_pool([str(tmp_path)], store, progress=False)
    assert result.summary()["records_rejected"] == 1
    (entry,) = quarantine_of(result)
    assert entry["code"] == "malformed_json" and "no record could be read" in entry["reason"]


def test_inputs_that_cannot_be_opened_raise_a_sentence(tmp_path, store):
    with pytest.raises(PoolInputError, match="does not exist"):
        ingest_pool([str(tmp_path / "nope.jsonl")], store)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PoolInputError, match="unsupported file type"):
        ingest_pool([str(tmp_path / "notes.txt")], store)


def test_normalise_rejects_with_codes():
    with pytest.raises(RecordRejected) as err:
        normalise({"instruction": "x", "output": ["list"]}, "f")
    assert err.value.code == "wrong_type" and "is a list, expected text" in err.value.reason


# ------------------------------------------------------- shards and append


def test_appending_to_one_file_changes_only_its_last_shard(tmp_path, store):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(a, [alpaca(i) for i in range(25)])
    write_jsonl(b, [alpaca(i) for i in range(100, 110)])
    first = ingest_pool([str(tmp_path)], store, shard_size=10, progress=False).manifest
    assert [s["rows"] for s in first["shards"]] == [10, 10, 5, 10]
    with open(a, "a") as fh:
        for i in range(25, 28):
            fh.write(json.dumps(alpaca(i)) + "\n")
    second_result = ingest_pool([str(tmp_path)], store, shard_size=10, progress=False)
    second = second_result.manifest
    before = {s["name"]: s["content_hash"] for s in first["shards"]}
    after = {s["name"]: s["content_hash"] for s in second["shards"]}
    changed = sorted(n for n in after if before.get(n) != after[n])
    assert changed == [n for n in after if n.startswith("shard-") and "a.jsonl" in n and n.endswith("00002")]
    assert second_result.shards_written == 1 and second_result.shards_reused == 3
    assert second["pool_fingerprint"] != first["pool_fingerprint"]
    # A new file adds shards and leaves every existing one alone.
    write_jsonl(tmp_path / "c.jsonl", [alpaca(i) for i in range(200, 203)])
    third = ingest_pool([str(tmp_path)], store, shard_size=10, progress=False)
    assert third.shards_written == 1
    assert {s["content_hash"] for s in second["shards"]} <= {s["content_hash"] for s in third.manifest["shards"]}


def test_ingest_is_deterministic(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [alpaca(i) for i in range(30)])
    pool = str(tmp_path / "a.jsonl")
    m1 = ingest_pool([pool], Store(str(tmp_path / "s1")), shard_size=7, progress=False).manifest
    m2 = ingest_pool([pool], Store(str(tmp_path / "s2")), shard_size=7, progress=False).manifest
    assert m1["pool_fingerprint"] == m2["pool_fingerprint"]
    assert [s["content_hash"] for s in m1["shards"]] == [s["content_hash"] for s in m2["shards"]]
    loaded = load_manifest(ingest_pool([pool], Store(str(tmp_path / "s1")), shard_size=7, progress=False).manifest_url)
    assert loaded["pool_fingerprint"] == m1["pool_fingerprint"]


# --------------------------------------------------------------- S3 and CLI


@pytest.mark.s3
def test_ingest_from_and_to_s3(tmp_path, s3_bucket):
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    with fs.open(f"{s3_bucket}/raw/pool.jsonl", "w") as fh:
        fh.write("\n".join(json.dumps(alpaca(i)) for i in range(12)) + "\nnot json\n")
    store = Store(f"{s3_bucket}/store")
    result = ingest_pool([f"{s3_bucket}/raw"], store, shard_size=5, progress=False)
    s = result.summary()
    assert (s["records_in"], s["records_ok"], s["records_rejected"], s["shards"]) == (13, 12, 1, 3)
    assert result.manifest_url.startswith(f"{s3_bucket}/store/ingests/")
    assert len(read_pool(load_manifest(result.manifest_url))) == 12


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syllabus.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_json_contract_and_exit_codes(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [alpaca(1), alpaca(1), "{oops"])
    store = f"memory://cli-{uuid.uuid4().hex[:6]}"
    ok = _cli("ingest", str(tmp_path / "p.jsonl"), "--store", str(tmp_path / "st"), "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout.strip().splitlines()[-1])
    assert {"records_in", "records_ok", "records_rejected", "duplicates", "shards", "pool_fingerprint", "manifest", "quarantine"} <= set(out)
    assert (out["records_in"], out["records_ok"], out["records_rejected"], out["duplicates"]) == (3, 1, 1, 1)
    assert Path(out["manifest"]).exists() and Path(out["quarantine"]).exists()
    write_jsonl(tmp_path / "bad.jsonl", ["{oops", {"instruction": ""}])
    none_valid = _cli("ingest", str(tmp_path / "bad.jsonl"), "--store", store, cwd=tmp_path)
    assert none_valid.returncode != 0 and "no valid record was read" in none_valid.stderr
    missing = _cli("ingest", str(tmp_path / "missing.jsonl"), "--store", store, cwd=tmp_path)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
