"""Shard identity is content plus a stable source name (issue 17, finding 4): the same file,
typed relatively or absolutely from any working folder, gives the same shard hashes and pool
fingerprint, so no scorer rescores it."""

from __future__ import annotations

import json
from pathlib import Path

from syllabus.pool.ingest import ingest_pool
from syllabus.pool.manifest import read_pool
from syllabus.store import Store


def alpaca(i: int) -> dict:
    return {"instruction": f"Explain condition number {i}.", "input": "", "output": f"Condition {i} is explained here."}


def _ingest(inputs: list[str], store_dir: Path) -> dict:
    return ingest_pool(inputs, Store(str(store_dir)), shard_size=10, progress=False).manifest


def test_one_file_typed_three_ways_from_three_folders_has_one_fingerprint(tmp_path, monkeypatch):
    work = tmp_path / "work"
    pools = work / "pools"
    elsewhere = tmp_path / "elsewhere"
    pools.mkdir(parents=True)
    elsewhere.mkdir()
    (pools / "good.jsonl").write_text("".join(json.dumps(alpaca(i)) + "\n" for i in range(25)))

    monkeypatch.chdir(pools)
    bare = _ingest(["good.jsonl"], tmp_path / "s1")
    monkeypatch.chdir(work)
    relative = _ingest(["pools/good.jsonl"], tmp_path / "s2")
    monkeypatch.chdir(elsewhere)
    absolute = _ingest([str(pools / "good.jsonl")], tmp_path / "s3")
    dotted = _ingest(["../work/pools/./good.jsonl"], tmp_path / "s4")

    manifests = [bare, relative, absolute, dotted]
    assert len({m["pool_fingerprint"] for m in manifests}) == 1
    assert len({tuple(s["content_hash"] for s in m["shards"]) for m in manifests}) == 1
    assert len({tuple(s["name"] for s in m["shards"]) for m in manifests}) == 1  # score manifests refer to shards by name
    # The rows still say where each sample came from, and ids stay content hashes.
    table = read_pool(absolute)
    assert set(table.column("source").to_pylist()) == {"good.jsonl"}
    assert table.column("sample_id").to_pylist() == read_pool(bare).column("sample_id").to_pylist()


def test_a_directory_typed_two_ways_and_files_inside_it_keep_their_relative_names(tmp_path, monkeypatch):
    pools = tmp_path / "work" / "pools"
    (pools / "sub").mkdir(parents=True)
    (pools / "a.jsonl").write_text("".join(json.dumps(alpaca(i)) + "\n" for i in range(12)))
    (pools / "sub" / "a.jsonl").write_text("".join(json.dumps(alpaca(i)) + "\n" for i in range(100, 105)))
    monkeypatch.chdir(tmp_path / "work")
    from_work = _ingest(["pools/"], tmp_path / "s1")
    monkeypatch.chdir(tmp_path)
    from_root = _ingest([str(pools)], tmp_path / "s2")
    assert from_work["pool_fingerprint"] == from_root["pool_fingerprint"]
    assert [s["name"] for s in from_work["shards"]] == [s["name"] for s in from_root["shards"]]
    assert set(read_pool(from_root).column("source").to_pylist()) == {"a.jsonl", "sub/a.jsonl"}


def test_two_inputs_with_one_source_name_keep_distinct_shard_names(tmp_path):
    for folder, start in (("x", 0), ("y", 100)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "data.jsonl").write_text("".join(json.dumps(alpaca(i)) + "\n" for i in range(start, start + 5)))
    m = _ingest([str(tmp_path / "x"), str(tmp_path / "y")], tmp_path / "s")
    names = [s["name"] for s in m["shards"]]
    assert len(names) == len(set(names)) == 2
    assert [s["file"] for s in m["shards"]] == [str(tmp_path / "x" / "data.jsonl"), str(tmp_path / "y" / "data.jsonl")]


def test_a_saved_dataset_keeps_its_split_in_the_source(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list([alpaca(1), alpaca(2)])}).save_to_disk(str(tmp_path / "saved"))
    m = _ingest([str(tmp_path / "saved")], tmp_path / "s")
    assert set(read_pool(m).column("source").to_pylist()) == {"saved[train]"}


def test_a_file_name_that_is_not_utf8_is_ingested_and_named(tmp_path):
    import os

    folder = tmp_path / "pool"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.jsonl")  # a Latin-1 file name on a UTF-8 system
    (folder / name).write_text(json.dumps(alpaca(1)) + "\n{oops\n")
    result = ingest_pool([str(folder)], Store(str(tmp_path / "s")), progress=False)
    assert set(read_pool(result.manifest).column("source").to_pylist()) == {"caf\ufffd.jsonl"}
    store, key = Store.open_url(result.quarantine_url)
    (entry,) = [json.loads(line) for line in store.read_committed(key).decode("utf-8").splitlines()]
    assert entry["location"] == f"{folder}/{name} line 2"  # the real name, escaped in the file
