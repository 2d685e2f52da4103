"""--pack-small-files (issue 28 item 2): many small files make full shards of the configured
size, each shard's manifest entry saying which files it holds rows of; appending a file changes
only the pool's last shard; off (the default), every file keeps shards of its own, so existing
pools keep their shard hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from syllabus.cli import main
from syllabus.pool.ingest import ingest_pool
from syllabus.store import Store


def write_files(folder: Path, count: int, per_file: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(start, start + count):
        recs = [{"instruction": f"Question {f}.{i}?", "output": f"Answer {f}.{i}."} for i in range(per_file)]
        if f % 5 == 3:
            recs.append({"instruction": "broken"})  # rejected: per-file accounting counts it
        (folder / f"part-{f:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def shard_rows(manifest: dict) -> list[list[dict]]:
    out = []
    for s in manifest["shards"]:
        store, key = Store.open_url(s["url"])
        out.append(pq.read_table(store.path(key)).select(["sample_id", "source"]).to_pylist())
    return out


def test_small_files_fill_shards_and_each_shard_lists_its_files(tmp_path):
    write_files(tmp_path / "pool", count=30, per_file=7)
    result = ingest_pool([str(tmp_path / "pool")], Store(str(tmp_path / "store")), shard_size=10, progress=False,
                         pack_small_files=True)
    m = result.manifest
    assert m["records_ok"] == 210 and m["records_rejected"] == 6 and m["pack_small_files"] is True
    assert [s["rows"] for s in m["shards"]] == [10] * 21  # not 30 shards of 7
    assert len({s["name"] for s in m["shards"]}) == 21
    rows = shard_rows(m)
    for shard, shard_rows_ in zip(m["shards"], rows):
        # The files list is the shard's rows, in order: each part's source is its rows' source.
        sources = [r["source"] for r in shard_rows_]
        expected = [part["source"] for part in shard["files"] for _ in range(part["rows"])]
        assert sources == expected
        assert shard["source"] == shard["files"][0]["source"] and shard["file"] == shard["files"][0]["file"]
    # Per-file accounting: the parts of each file add up to its valid records, and the manifest
    # still counts each file's records in, rejected and duplicated.
    per_file: dict[str, int] = {}
    for shard in m["shards"]:
        for part in shard["files"]:
            per_file[part["file"]] = per_file.get(part["file"], 0) + part["rows"]
    assert per_file == {f: s["records_ok"] for f, s in m["per_file"].items()}
    assert {s["records_in"] for s in m["per_file"].values()} == {7, 8}


def test_appending_a_file_changes_only_the_last_shard(tmp_path):
    write_files(tmp_path / "pool", count=12, per_file=7)
    store = Store(str(tmp_path / "store"))
    before = ingest_pool([str(tmp_path / "pool")], store, shard_size=10, progress=False, pack_small_files=True)
    write_files(tmp_path / "pool", count=1, per_file=7, start=12)  # part-012.jsonl sorts last
    after = ingest_pool([str(tmp_path / "pool")], store, shard_size=10, progress=False, pack_small_files=True)
    old = [s["content_hash"] for s in before.manifest["shards"]]
    new = [s["content_hash"] for s in after.manifest["shards"]]
    assert len(old) == 9 and old[-1] not in new  # 84 rows: the last shard of 4 rows gains the new file's first 6
    assert new[: len(old) - 1] == old[:-1]
    assert after.shards_reused == len(old) - 1 and after.shards_written == len(new) - len(old) + 1


@pytest.mark.parametrize("shard_size", [3, 100])
def test_packing_leaves_a_single_file_pool_as_it_was(tmp_path, shard_size):
    write_files(tmp_path / "pool", count=1, per_file=10)
    path = str(tmp_path / "pool" / "part-000.jsonl")
    plain = ingest_pool([path], Store(str(tmp_path / "a")), shard_size=shard_size, progress=False)
    packed = ingest_pool([path], Store(str(tmp_path / "b")), shard_size=shard_size, progress=False, pack_small_files=True)
    assert [s["content_hash"] for s in packed.manifest["shards"]] == [s["content_hash"] for s in plain.manifest["shards"]]
    assert packed.manifest["pool_fingerprint"] == plain.manifest["pool_fingerprint"]
    assert [s["name"] for s in packed.manifest["shards"]] == [s["name"] for s in plain.manifest["shards"]]
    assert "files" not in plain.manifest["shards"][0] and "pack_small_files" not in plain.manifest


def test_without_the_option_each_file_keeps_its_own_shards(tmp_path):
    write_files(tmp_path / "pool", count=4, per_file=7)
    result = ingest_pool([str(tmp_path / "pool")], Store(str(tmp_path / "store")), shard_size=10, progress=False)
    assert [s["rows"] for s in result.manifest["shards"]] == [7] * 4


def test_the_cli_option(tmp_path, capsys):
    write_files(tmp_path / "pool", count=6, per_file=5)
    store = str(tmp_path / "store")
    assert main(["ingest", str(tmp_path / "pool"), "--store", store, "--shard-size", "10", "--pack-small-files", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["shards"] == 3 and summary["records_ok"] == 30


def test_packing_gives_the_same_pool_on_both_paths(tmp_path, monkeypatch):
    """The golden pool's three files packed into shards of 7: the vectorised and per-record
    paths give the same shards, quarantine and manifest."""
    from test_vectorised_golden import golden_figures, golden_files  # this folder is on sys.path (pytest prepend)

    monkeypatch.chdir(tmp_path)
    files = golden_files(tmp_path)
    figures = {}
    for path in (True, False):
        result = ingest_pool(files, Store(str(tmp_path / f"store-{path}")), shard_size=7, max_chars=400, progress=False,
                             vectorised=path, pack_small_files=True)
        assert sum(len(s["files"]) > 1 for s in result.manifest["shards"]) >= 1  # a shard spans files
        figures[path] = golden_figures(result)
    assert figures[True] == figures[False]
