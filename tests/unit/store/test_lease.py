"""Leases: one holder at a time, expiry hands a dead worker's key to the next, and two real
processes scoring one pool on one store (local and S3) start every shard once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from syllabus.store import Store
from syllabus.store.lease import Lease, create_exclusive

WORKER = str(Path(__file__).with_name("lease_worker.py"))


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    if request.param == "memory":
        return Store(f"memory://lease-{uuid.uuid4().hex[:8]}")
    return Store(f"{request.getfixturevalue('s3_bucket')}/prefix")


def test_create_exclusive_lets_exactly_one_writer_win(store):
    assert create_exclusive(store, "leases/k/00000000.json", b"first")
    assert not create_exclusive(store, "leases/k/00000000.json", b"second")
    assert store.read_bytes("leases/k/00000000.json") == b"first"


def test_one_holder_then_release_hands_over_at_once(store):
    a, b = Lease(store, "scores/x.parquet", seconds=60), Lease(store, "scores/x.parquet", seconds=60)
    assert a.acquire()
    assert not b.acquire() and b.holder()["owner"] == a.owner
    a.release()  # not committed: marked expired, so the next worker need not wait
    assert b.acquire() and b.generation == 1
    b.release(done=True)
    assert store.list("leases") == []


def test_a_dead_holders_lease_expires_and_is_taken_over(store):
    dead = Lease(store, "scores/y.parquet", seconds=1.0)
    assert dead.acquire()
    dead._stop.set()  # a killed worker stops renewing
    other = Lease(store, "scores/y.parquet", seconds=60)
    assert not other.acquire()
    time.sleep(1.3)
    assert other.acquire() and other.generation == 1
    other.release(done=True)


def test_a_live_holder_renews_past_its_first_expiry(store):
    live = Lease(store, "scores/z.parquet", seconds=1.0)
    assert live.acquire()
    time.sleep(1.6)  # renewed every third of a second-long lease
    assert not Lease(store, "scores/z.parquet", seconds=60).acquire()
    live.release(done=True)


def _pool(store: Store, tmp_path: Path, shards: int, per_shard: int = 2) -> str:
    from syllabus.pool.ingest import ingest_pool

    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"question {i}?", "output": f"answer {i}"}) + "\n"
                            for i in range(shards * per_shard)))
    return ingest_pool([str(path)], store, shard_size=per_shard, progress=False).manifest_url


def _worker(manifest: str, store: Store, attempts: Path, sleep: float, env: dict | None = None,
            barrier: list[str] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, WORKER, manifest, store.url(""), str(attempts), str(sleep), *barrier],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_two_processes_score_each_shard_once(kind, tmp_path, request):
    store = Store(str(tmp_path / "store")) if kind == "local" else Store(f"{request.getfixturevalue('s3_bucket')}/p")
    manifest = _pool(store, tmp_path, shards=6)
    attempts = tmp_path / "attempts.log"
    (tmp_path / "barrier").mkdir()
    workers = [_worker(manifest, store, attempts, 1.0, barrier=[str(tmp_path / "barrier"), "2"]) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    started = attempts.read_text().split()
    assert len(started) == 6 and len(set(started)) == 6, started  # every shard started once, by one of them
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outputs]
    assert results[0]["url"] == results[1]["url"]  # the same score manifest: all 6 shards each
    computed = [sum(not skipped for _, skipped in r["shards"]) for r in results]
    assert sum(computed) == 6 and min(computed) >= 1, computed  # the pool was split between them
    assert store.list("leases") == []


def test_a_killed_workers_shard_is_taken_over(tmp_path):
    """On the same machine its dead pid frees the shard at once; elsewhere its lease expires (3 s here)."""
    store = Store(str(tmp_path / "store"))
    manifest = _pool(store, tmp_path, shards=2)
    attempts = tmp_path / "attempts.log"
    doomed = _worker(manifest, store, attempts, 600.0, {"SYLLABUS_LEASE_SECONDS": "3"})
    deadline = time.time() + 120
    while not (attempts.exists() and attempts.read_text().strip()):
        assert time.time() < deadline and doomed.poll() is None, doomed.communicate()[1][-2000:]
        time.sleep(0.2)
    doomed.send_signal(signal.SIGKILL)  # mid-shard, its lease still on the store
    doomed.wait()
    survivor = _worker(manifest, store, attempts, 0.0)
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err[-2000:]
    started = attempts.read_text().split()
    assert len(started) == 3 and started.count(started[0]) == 2, started  # the killed shard started again
    assert all(not skipped for _, skipped in json.loads(out.strip().splitlines()[-1])["shards"])


def test_a_lease_of_a_dead_process_on_this_machine_is_free_at_once(store):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"owner": "gone", "host": socket.gethostname(), "pid": int(dead.stdout), "expires_at": time.time() + 3600}
    store.write_bytes("leases/scores/w.parquet/00000000.json", json.dumps(record).encode())
    remote = dict(record, host="another-machine")
    store.write_bytes("leases/scores/v.parquet/00000000.json", json.dumps(remote).encode())
    assert Lease(store, "scores/w.parquet").acquire()
    assert not Lease(store, "scores/v.parquet").acquire()  # elsewhere, only expiry says it is dead
