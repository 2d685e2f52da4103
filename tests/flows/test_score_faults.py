"""The score flow under faults: cache hits, transient and permanent failures, corrupted
objects, a killed flow process, and appended data. No result is lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flow_helpers import write_pool
from syllabus.pipeline.config import IngestConfig
from syllabus.pipeline.stages import ingest
from syllabus.store import Store

pytestmark = pytest.mark.flow
SHARD = 4


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    faults = tmp_path / "faults"
    faults.mkdir()
    pool = write_pool(tmp_path / "pool.jsonl", 20)  # 5 shards of 4
    store = str(tmp_path / "store")
    manifest = ingest(IngestConfig(inputs=[pool], shard_size=SHARD), store)["manifest"]
    return {"faults": faults, "pool": pool, "store": store, "manifest": manifest, "model": tiny_model_dir}


def run_score_state(s, sleep: float = 0.0):
    from syllabus_flows.score import score

    return score(s["manifest"], {"fault": {"fault_dir": str(s["faults"]), "sleep_seconds": sleep}}, s["model"], s["store"],
                 return_state=True)


def run_score(s, sleep: float = 0.0) -> dict:
    from syllabus_flows.outcome import result_of

    return result_of(run_score_state(s, sleep))["fault"]


def attempts(s) -> list[str]:
    log = s["faults"] / "attempts.log"
    return log.read_text().split() if log.exists() else []


def first_ids(s) -> list[str]:
    from syllabus.pool.manifest import load_manifest

    return [sh["first_sample_id"] for sh in load_manifest(s["manifest"])["shards"]]


def scored_rows(manifest: dict) -> list[str]:
    ids = []
    for entry in manifest["shards"]:
        store, key = Store.open_url(entry["url"])
        ids += store.read_table(key).column("sample_id").to_pylist()
    return ids


def test_rerun_skips_every_committed_shard(setup):
    first = run_score(setup)
    assert (first["shards_scored"], first["shards_cached"], first["missing"]) == (5, 0, [])
    assert len(attempts(setup)) == 5
    second = run_score(setup)
    assert (second["shards_scored"], second["shards_cached"]) == (0, 5)
    assert len(attempts(setup)) == 5  # the rerun did no scoring work at all
    rows = scored_rows(second)
    assert len(rows) == len(set(rows)) == 20


def test_transient_fault_is_retried(setup):
    target = first_ids(setup)[2]
    (setup["faults"] / f"flaky-{target}").touch()
    result = run_score(setup)
    assert result["missing"] == [] and result["shards_scored"] == 5
    assert attempts(setup).count(target) == 2  # failed once, retried once


def test_permanent_fault_is_reported_and_rerun_retries_only_it(setup):
    ids = first_ids(setup)
    (setup["faults"] / f"fail-{ids[1]}").touch()
    state = run_score_state(setup)
    # Not a green success: a Failed state that names the shard and how to retry only it.
    assert state.is_failed() and state.name == "Partially failed"
    assert "pool.jsonl-00001" in state.message and "injected permanent fault" in state.message
    assert "Run the same command again to score only the missing shards" in state.message
    from syllabus_flows.outcome import result_of

    broken = result_of(state)["fault"]
    assert len(broken["missing"]) == 1 and broken["missing"][0]["shard"].endswith("pool.jsonl-00001")
    assert "injected permanent fault" in broken["missing"][0]["error"]
    assert broken["shards_scored"] == 4 and len(broken["shards"]) == 4
    assert attempts(setup).count(ids[1]) == 3  # the first try and two retries
    (setup["faults"] / f"fail-{ids[1]}").unlink()  # the fault is fixed
    before = len(attempts(setup))
    fixed = run_score(setup)
    assert fixed["missing"] == [] and (fixed["shards_scored"], fixed["shards_cached"]) == (1, 4)
    assert attempts(setup)[before:] == [ids[1]]
    rows = scored_rows(fixed)
    assert len(rows) == len(set(rows)) == 20


def test_corrupted_and_truncated_objects_are_recomputed(setup):
    first = run_score(setup)
    victims = [first["shards"][0], first["shards"][3]]
    store = Store(setup["store"])
    data = store.read_bytes(victims[0]["key"])
    store.write_bytes(victims[0]["key"], data[: len(data) // 2])  # truncated
    store.write_bytes(victims[1]["key"], b"X" + store.read_bytes(victims[1]["key"])[1:])  # one byte flipped
    again = run_score(setup)
    assert (again["shards_scored"], again["shards_cached"]) == (2, 3)
    assert all(store.is_committed(e["key"]) for e in again["shards"])


def test_appending_data_scores_only_new_shards(setup):
    run_score(setup)
    write_pool(setup["pool"], 6, start=20)  # 10 %+ more: the last shard grows into two
    setup["manifest"] = ingest(IngestConfig(inputs=[setup["pool"]], shard_size=SHARD), setup["store"])["manifest"]
    after = run_score(setup)
    assert (after["shards_scored"], after["shards_cached"]) == (2, 5)
    assert len(scored_rows(after)) == 26


def test_killed_flow_loses_only_the_shard_in_flight(setup, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        "from syllabus import registry\n"
        "registry.register('scorer', 'fault', 'fault_scorer:FaultScorer')\n"
        "from syllabus_flows.score import score\n"
        f"score({setup['manifest']!r}, {{'fault': {{'fault_dir': {str(setup['faults'])!r}, 'sleep_seconds': 1.5}}}}, "
        f"{setup['model']!r}, {setup['store']!r})\n"
    )
    from prefect.settings import PREFECT_API_URL

    # The child talks to the harness's server instead of starting a temporary one of its own.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
               PREFECT_API_URL=str(PREFECT_API_URL.value()))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = Store(setup["store"])
    deadline = time.time() + 400
    try:
        while time.time() < deadline and len([k for k in store.list("scores/fault") if store.is_committed(k)]) < 2:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    committed = len([k for k in store.list("scores/fault") if store.is_committed(k)])
    assert 2 <= committed < 5, f"the kill must land mid-run; {committed} shards were committed, attempts: {attempts(setup)}"
    before = len(attempts(setup))
    result = run_score(setup, sleep=1.5)
    assert result["missing"] == []
    assert (result["shards_scored"], result["shards_cached"]) == (5 - committed, committed)
    assert len(attempts(setup)) - before == 5 - committed
    rows = scored_rows(result)
    assert len(rows) == len(set(rows)) == 20


def test_dask_runner_gives_the_same_results(setup):
    """The same flow with its shards spread over a local Dask cluster (threads: processes
    would each need their own Prefect API)."""
    from prefect_dask import DaskTaskRunner

    from syllabus_flows.score import score

    config = {"fault": {"fault_dir": str(setup["faults"]), "sleep_seconds": 0.0}}
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": False})
    on_dask = score.with_options(task_runner=runner)(setup["manifest"], config, setup["model"], setup["store"])["fault"]
    assert (on_dask["shards_scored"], on_dask["missing"]) == (5, [])
    on_threads = run_score(setup)
    assert on_threads["shards_cached"] == 5
    assert [e["key"] for e in on_dask["shards"]] == [e["key"] for e in on_threads["shards"]]


def test_ray_runner_gives_the_same_results(setup):
    """The same flow with its shards on a local Ray cluster (worker processes that reach the
    test's Prefect server through the runtime environment): a real scorer on the tiny model,
    the same keys as on threads, and nothing left to score afterwards."""
    from syllabus_flows.score import score, task_runner

    config = {"ifd": {"cutoff": 128}}
    on_ray = score.with_options(task_runner=task_runner("ray", 2))(setup["manifest"], config, setup["model"], setup["store"])["ifd"]
    assert (on_ray["shards_scored"], on_ray["missing"]) == (5, [])
    on_threads = score(setup["manifest"], config, setup["model"], setup["store"])["ifd"]
    assert (on_threads["shards_scored"], on_threads["shards_cached"]) == (0, 5)
    assert [e["key"] for e in on_ray["shards"]] == [e["key"] for e in on_threads["shards"]]
