"""Temporary files left by an interrupted write are removed by the next run, and only when they
are stale: old, and not covered by a live lease (a concurrent writer's temporaries stay)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from syllabus.pool.ingest import ingest_pool
from syllabus.store import Store
from syllabus.store.lease import Lease

HOUR = 3600


def temp_file(store: Store, key: str, age_s: float) -> str:
    """A temporary file as write_bytes names it, last modified ``age_s`` seconds ago."""
    path = f"{store.path(key)}.tmp-{uuid.uuid4().hex}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"half an object")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_the_first_write_into_a_folder_removes_its_stale_temporaries(tmp_path):
    store = Store(str(tmp_path / "store"))
    stale = temp_file(store, "shards/abc.parquet", 2 * HOUR)
    stale_marker = temp_file(store, "shards/abc.parquet.done.json", 2 * HOUR)
    fresh = temp_file(store, "shards/def.parquet", 60)  # a concurrent writer's, seconds old
    elsewhere = temp_file(store, "scores/x/abc.parquet", 2 * HOUR)
    lookalikes = [store.path("shards/notes.tmp-draft"), store.path("shards/y.tmp-" + "0" * 31)]
    for path in lookalikes:
        open(path, "wb").close()
        os.utime(path, (0, 0))
    store.write_bytes("shards/new.parquet", b"data")
    assert not os.path.exists(stale) and not os.path.exists(stale_marker)
    assert os.path.exists(fresh) and os.path.exists(elsewhere) and all(map(os.path.exists, lookalikes))
    assert store.read_bytes("shards/new.parquet") == b"data"
    # A store-wide sweep takes the other folders' stale ones; the fresh one is still too young.
    assert store.remove_stale_temps() == [os.path.relpath(elsewhere, store.root)]
    assert os.path.exists(fresh)
    assert store.remove_stale_temps(max_age=0) == [os.path.relpath(fresh, store.root)]


def test_a_temporary_under_a_live_lease_is_left_alone(tmp_path):
    store = Store(str(tmp_path / "store"))
    key = "scores/quality/shard-1.parquet"
    lease = Lease(store, key, seconds=60)
    assert lease.acquire()
    try:
        held = temp_file(store, key, 2 * HOUR)  # a writer stuck for hours, but alive: it renews its lease
        assert store.remove_stale_temps() == []
        assert os.path.exists(held)
    finally:
        lease.release()
    # Released without a commit: its holder is gone, so the temporary is stale now.
    assert store.remove_stale_temps() == [os.path.relpath(held, store.root)]


def test_the_age_limit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SYLLABUS_STALE_TEMP_SECONDS", "30")
    store = Store(str(tmp_path / "store"))
    young, old = temp_file(store, "a/x", 10), temp_file(store, "a/y", 40)
    store.write_bytes("a/z", b"z")
    assert os.path.exists(young) and not os.path.exists(old)


def test_a_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "store"))
    store.write_bytes("shards/first", b"ok")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        store.write_bytes("shards/second", b"x" * 1000)
    assert sorted(os.listdir(store.path("shards"))) == ["first"]


def test_a_rerun_of_ingest_removes_what_a_crashed_ingest_left(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"instruction": f"Q{i}?", "output": f"A{i}."}) + "\n" for i in range(5)))
    store = Store(str(tmp_path / "store"))
    first = ingest_pool([str(pool)], store, progress=False)
    shard_key = first.manifest["shards"][0]["key"]
    # The crash: a half-written shard left in the shards folder hours ago.
    left = temp_file(store, shard_key.replace(".parquet", "0.parquet"), 3 * HOUR)
    store.delete(shard_key)  # so the rerun writes into that folder again
    rerun = subprocess.run([str(Path(sys.executable).with_name("syllabus")), "ingest", str(pool), "--store", store.root],
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert not os.path.exists(left)
    assert not [n for n in os.listdir(os.path.dirname(left)) if ".tmp-" in n]
