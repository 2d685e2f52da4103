"""The score flow's task runs stay bounded (issue 28): one task run per batch of shards, at
most ``max_tasks_per_scorer`` a scorer, counted through the test server's API, while the shard
stays the unit of caching, retry, leases and progress: a failing shard in a batch loses none
of the batch's other shards, is listed as missing by name, and a rerun scores only it."""

from __future__ import annotations

import threading
import time

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow


def test_batches_are_bounded_contiguous_and_even():
    from syllabus.pipeline.stages import shard_batches

    shards = [{"name": f"s{i}"} for i in range(62_500)]
    batches = shard_batches(shards, 256)
    assert len(batches) == 256 and {len(b) for b in batches} == {244, 245}
    assert [s for b in batches for s in b] == shards  # every shard once, in pool order
    assert [len(b) for b in shard_batches(shards[:5], 256)] == [1] * 5  # a small pool: one shard a task
    assert [len(b) for b in shard_batches(shards[:10], 4)] == [2, 3, 2, 3]
    assert shard_batches([], 4) == []
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_tasks_per_scorer is .*at least 1"):
            shard_batches(shards, bad)


def _task_runs(flow_run_id, expected: int, timeout: float = 120.0) -> dict[str, list]:
    """The flow run's task runs by task name, read from the API once ``expected`` of them are
    recorded (the server records them from events, a little after they run) and a few seconds
    have passed with no more."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.time() + timeout
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_task_runs(flow_run_filter=runs, limit=200)
            if len(found) >= expected or time.time() > deadline:
                time.sleep(3)
                found = client.read_task_runs(flow_run_filter=runs, limit=200)
                by_task: dict[str, list] = {}
                for tr in found:
                    by_task.setdefault(tr.task_key.rsplit("-", 1)[0], []).append(tr)
                return by_task
            time.sleep(1)


def test_forty_shards_make_four_task_runs_and_a_failing_shard_is_retried_alone(tmp_path, tiny_model_dir, monkeypatch):
    from syllabus.pipeline.config import IngestConfig
    from syllabus.pipeline.stages import ingest
    from syllabus.pool.manifest import load_manifest
    from syllabus_flows.outcome import result_of
    from syllabus_flows.score import score
    from syllabus_tasks.progress import ScoreProgress

    faults = tmp_path / "faults"
    faults.mkdir()
    store = str(tmp_path / "store")
    manifest = ingest(IngestConfig(inputs=[write_pool(tmp_path / "pool.jsonl", 80)], shard_size=2), store)["manifest"]
    shards = load_manifest(manifest)["shards"]
    assert len(shards) == 40
    broken, flaky = shards[13], shards[17]  # both in the second batch of ten
    (faults / f"fail-{broken['first_sample_id']}").touch()
    (faults / f"flaky-{flaky['first_sample_id']}").touch()

    reports: list[tuple[str, bool, bool]] = []  # shard, counted, from the flow's own thread
    report = ScoreProgress.report

    def recording(self, scorer, shard, rows, cached=False, failed=False):
        counted = report(self, scorer, shard, rows, cached, failed)
        reports.append((shard, counted, threading.current_thread() is threading.main_thread()))
        return counted

    monkeypatch.setattr(ScoreProgress, "report", recording)
    config = {"fault": {"fault_dir": str(faults)}}
    state = score(manifest, config, tiny_model_dir, store, max_tasks_per_scorer=4, return_state=True)

    assert state.is_failed() and state.name == "Partially failed"
    assert broken["name"] in state.message and "injected permanent fault" in state.message
    result = result_of(state)["fault"]
    assert [m["shard"] for m in result["missing"]] == [broken["name"]]
    assert "injected permanent fault" in result["missing"][0]["error"]
    # The batch that held the failing shard lost none of its other nine.
    assert result["shards_scored"] == 39 and len(result["shards"]) == 39
    attempts = (faults / "attempts.log").read_text().split()
    assert attempts.count(broken["first_sample_id"]) == 3  # the first try and two retries, inside the batch
    assert attempts.count(flaky["first_sample_id"]) == 2  # a transient fault: retried once, then scored
    assert len(attempts) == 38 + 3 + 2

    runs = _task_runs(state.state_details.flow_run_id, expected=5)
    batches = runs["score_shards_task"]
    assert len(batches) == 4 and len(runs["score_manifest_task"]) == 1, {k: len(v) for k, v in runs.items()}
    assert "score_plan_task" not in runs  # the fault scorer opts out of calibration: no plan task to wait for
    assert sorted(tr.state.name for tr in batches) == ["Completed", "Completed", "Completed", "Partially failed"]
    names = sorted(tr.name for tr in batches)
    assert names[1] == f"fault:{shards[10]['name']}..{shards[19]['name']} (10 shards)", names

    # Progress advanced shard by shard, from the batch tasks as each shard ended (not in the
    # flow's thread when a batch ended); each shard was counted once.
    counted = [shard for shard, ok, _ in reports if ok]
    assert sorted(counted) == sorted(s["name"] for s in shards)
    assert not [shard for shard, ok, in_flow in reports if ok and in_flow]

    (faults / f"fail-{broken['first_sample_id']}").unlink()  # the fault is fixed
    again = score(manifest, config, tiny_model_dir, store, max_tasks_per_scorer=4)["fault"]
    assert again["missing"] == [] and (again["shards_scored"], again["shards_cached"]) == (1, 39)
    assert (faults / "attempts.log").read_text().split()[len(attempts):] == [broken["first_sample_id"]]


def test_a_batch_scores_a_shard_another_worker_holds_last(tmp_path, tiny_model_dir):
    """Leases inside a batch: a shard whose lease another worker holds is left for the end of
    the batch (as ``syllabus score`` does), then waited for, and scored once it is released."""
    from syllabus.pipeline.config import IngestConfig
    from syllabus.pipeline.stages import ingest, score_shards
    from syllabus.pool.manifest import load_manifest
    from syllabus.scoring.pool import LazyModel, make_scorer
    from syllabus.store import Store
    from syllabus.store.lease import Lease

    faults = tmp_path / "faults"
    faults.mkdir()
    store_url = str(tmp_path / "store")
    manifest = ingest(IngestConfig(inputs=[write_pool(tmp_path / "pool.jsonl", 8)], shard_size=2), store_url)["manifest"]
    shards = load_manifest(manifest)["shards"]
    config = {"fault_dir": str(faults)}
    key = make_scorer("fault", config).key(LazyModel(tiny_model_dir).fingerprint, shards[0]["content_hash"])
    other = Lease(Store(store_url), key, seconds=60, owner="another-worker")
    assert other.acquire()
    timer = threading.Timer(2.0, other.release)
    timer.start()
    ended: list[str] = []
    try:
        out = score_shards(shards, "fault", config, tiny_model_dir, store_url, manifest,
                           on_shard=lambda shard, entry, error: ended.append(shard["name"]))
    finally:
        timer.cancel()
        other.release()
    assert out["missing"] == [] and [e["shard"] for e in out["entries"]] == [s["name"] for s in shards]
    assert ended == [s["name"] for s in shards[1:]] + [shards[0]["name"]]
    assert (faults / "attempts.log").read_text().split() == [s["first_sample_id"] for s in shards[1:] + shards[:1]]
