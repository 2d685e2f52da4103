"""A shard's retry takes back the lease its failed attempt released without reporting it as
"expired; taking it over" (it was handed back, not abandoned); a lease that did expire is
still reported as one."""

from __future__ import annotations

import logging
import time

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow


def _takeovers(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "syllabus.store.lease" and r.levelno >= logging.INFO]


def test_a_released_lease_is_taken_quietly_and_an_expired_one_is_reported(tmp_path, caplog):
    from syllabus.store import Store
    from syllabus.store.lease import Lease

    store = Store(str(tmp_path / "store"))
    caplog.set_level(logging.DEBUG, logger="syllabus.store.lease")
    first = Lease(store, "scores/a.parquet", seconds=60)
    assert first.acquire()
    first.release()  # a failed attempt hands it back
    retry = Lease(store, "scores/a.parquet", seconds=60)
    assert retry.acquire() and retry.generation == 1
    assert _takeovers(caplog) == []
    retry._stop.set()  # stops renewing, as a stalled worker on another machine would
    retry.seconds = 0.5
    retry.store.write_bytes(retry._gen_key(1), retry._record(time.time() + 0.5))
    time.sleep(0.7)
    other = Lease(store, "scores/a.parquet", seconds=60)
    assert other.acquire() and other.generation == 2
    assert _takeovers(caplog) == [f"lease on scores/a.parquet held by {retry.owner} expired; taking it over"]
    other.release(done=True)


def test_a_retried_shard_does_not_report_its_own_lease_as_expired(tmp_path, tiny_model_dir, caplog):
    from syllabus.pipeline.config import IngestConfig
    from syllabus.pipeline.stages import ingest
    from syllabus.pool.manifest import load_manifest
    from syllabus_flows.score import score

    faults = tmp_path / "faults"
    faults.mkdir()
    store = str(tmp_path / "store")
    manifest = ingest(IngestConfig(inputs=[write_pool(tmp_path / "pool.jsonl", 8)], shard_size=4), store)["manifest"]
    target = load_manifest(manifest)["shards"][1]["first_sample_id"]
    (faults / f"flaky-{target}").touch()  # fails on its first attempt only
    caplog.set_level(logging.INFO, logger="syllabus.store.lease")
    result = score(manifest, {"fault": {"fault_dir": str(faults)}}, tiny_model_dir, store)["fault"]
    assert result["missing"] == [] and result["shards_scored"] == 2
    assert (faults / "attempts.log").read_text().split().count(target) == 2  # it was retried
    assert not [m for m in _takeovers(caplog) if "taking it over" in m], _takeovers(caplog)
