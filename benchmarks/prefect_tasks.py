"""Prefect at scale: how many task runs the score flow creates, and what the flow costs
beyond the scorer, on a real Prefect server (issue 28 item 3).

    .venv/bin/python benchmarks/prefect_tasks.py --n 100000 [--max-tasks-per-scorer 256]

Starts ``prefect server start`` on 127.0.0.1 (a free port, its own PREFECT_HOME under the
work folder), writes a pool of N distinct Alpaca-style records, ingests it (32 samples a
shard, the pipeline's default) and runs the real ``score`` flow against that server with
the benchmark-only **synthetic** scorer below (registered at run time as an out-of-tree
scorer is; never shipped). It writes deterministic values and never loads the model (the
model directory is a config.json and a small stand-in weight file, fingerprinted as usual).

Printed: task runs created per scorer (counted through the API), the flow's wall time, the
time spent inside the scorer's ``score`` against everything else (the flow's overhead, per
sample), and the latency of the requests the flow-run page makes (read the flow run, its
task runs, their count, its logs, its artifacts, its graph), sampled every 2 s while the flow
runs. With ``--rerun`` the flow runs a second time, every shard cached.

The synthetic scorer's numbers are not scores: every output line says "synthetic".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from syllabus.scoring.base import Scorer, ScorerConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Seconds spent inside SyntheticScorer.score, summed over the threads of this process.
_SCORER = {"seconds": 0.0, "calls": 0}
_SCORER_LOCK = threading.Lock()


class SyntheticConfig(ScorerConfig):
    salt: str = "synthetic"


class SyntheticScorer(Scorer):
    """Benchmark-only: a deterministic value per sample (a hash of its id), no model."""

    name: ClassVar[str] = "synthetic"
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = SyntheticConfig

    def columns(self) -> list[str]:
        return ["synthetic_value", "synthetic_status"]

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        start = time.perf_counter()
        ids = table.column("sample_id").to_pylist()
        salt = self.config.salt.encode()
        values = [int.from_bytes(hashlib.blake2b(salt + i.encode(), digest_size=4).digest(), "big") / 2**32 for i in ids]
        out = pa.table({"sample_id": table.column("sample_id"), "synthetic_value": pa.array(values, pa.float64()),
                        "synthetic_status": pa.array(["ok"] * len(ids))})
        with _SCORER_LOCK:
            _SCORER["seconds"] += time.perf_counter() - start
            _SCORER["calls"] += 1
        return out


def write_pool(path: Path, n: int) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"instruction": f"Synthetic question {i}: how does item {i % 97} relate to {i % 13}?",
                                 "input": "" if i % 3 else f"context {i}",
                                 "output": f"Synthetic answer {i}. " + "detail " * (i % 7 + 1)}) + "\n")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(cmd: list[str], health_url: str, log_path: Path, env: dict[str, str] | None = None,
                  timeout: float = 300.0) -> subprocess.Popen:
    """Start a server command in its own process group (output to ``log_path``) and wait until
    ``health_url`` answers; stop it with :func:`stop_server`."""
    import urllib.request

    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(health_url, timeout=2)
            return proc
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                stop_server(proc)
                raise RuntimeError(f"{Path(cmd[0]).name} did not answer {health_url} within {timeout:.0f} s; see {log_path}")
            time.sleep(1)


def start_server(home: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` on 127.0.0.1 (a free port, its own PREFECT_HOME); returns it and its API URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    proc = start_process([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                          "--port", str(port)], f"{url}/health", log_path, env)
    return proc, url


def stand_in_model(path: Path) -> Path:
    """A model directory the flows can resolve and fingerprint (a config.json and a small
    stand-in weight file) for synthetic scorers, which never load it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "synthetic", "note": "never loaded"}))
    (path / "model.safetensors").write_bytes(b"synthetic stand-in weights, never loaded\n")
    return path


def allow_uncommitted_tree() -> None:
    """A benchmark of a working tree: let the flows run its uncommitted changes (their
    provenance check would refuse) and say so, rather than refuse to run."""
    from syllabus.tracking.provenance import ALLOW_ENV, uncommitted_files

    if uncommitted_files(REPO):
        os.environ[ALLOW_ENV] = "1"
        print("note: the working tree has uncommitted changes; the flows run them", flush=True)


def stop_server(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


class PageSampler(threading.Thread):
    """Times, every ``every`` seconds, the requests the Prefect UI's flow-run page makes."""

    def __init__(self, flow_run_id, every: float = 2.0):
        super().__init__(daemon=True)
        self.flow_run_id, self.every = flow_run_id, every
        self.stop = threading.Event()
        self.seconds: dict[str, list[float]] = {}
        self.errors: list[str] = []

    def run(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter,
                                                    FlowRunFilterId, LogFilter, LogFilterFlowRunId)
        from prefect.client.schemas.sorting import LogSort, TaskRunSort

        runs = FlowRunFilter(id=FlowRunFilterId(any_=[self.flow_run_id]))
        calls = {
            "read flow run": lambda c: c.read_flow_run(self.flow_run_id),
            "read task runs (first 200)": lambda c: c.read_task_runs(flow_run_filter=runs, limit=200,
                                                                     sort=TaskRunSort.EXPECTED_START_TIME_DESC),
            "count task runs": lambda c: c._client.post("/task_runs/count", json={"flow_runs": runs.model_dump(mode="json")}),
            "read logs (first 200)": lambda c: c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[self.flow_run_id])),
                                                           limit=200, sort=LogSort.TIMESTAMP_ASC),
            "read artifacts": lambda c: c.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[self.flow_run_id]))),
            "flow run graph": lambda c: c._client.get(f"/flow_runs/{self.flow_run_id}/graph-v2"),
        }
        with get_client(sync_client=True) as client:
            while not self.stop.wait(self.every):
                for what, call in calls.items():
                    start = time.perf_counter()
                    try:
                        response = call(client)
                        if hasattr(response, "raise_for_status"):
                            response.raise_for_status()
                    except Exception as exc:  # a failing page request is a result, not a crash
                        self.errors.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
                        continue
                    self.seconds.setdefault(what, []).append(time.perf_counter() - start)


def settled_task_runs(flow_run_id, quiet: float = 15.0, timeout: float = 1800.0) -> tuple[dict[str, int], float]:
    """The flow run's task runs by task, once the server has recorded them all, and the seconds
    that took after the flow ended: Prefect 3 clients report task runs as events that the
    server turns into task runs in the background, so the count lags behind the run. Settled
    means unchanged for ``quiet`` seconds."""
    start = time.perf_counter()
    last, since = None, time.perf_counter()
    while True:
        counts = count_task_runs(flow_run_id)
        if counts != last:
            last, since = counts, time.perf_counter()
        elif time.perf_counter() - since >= quiet or time.perf_counter() - start > timeout:
            return counts, round(since - start, 1)
        time.sleep(2)


def count_task_runs(flow_run_id) -> dict[str, int]:
    """Task runs of the flow run by task name (score-shards, score-manifest, ...), read page by page."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    counts: dict[str, int] = {}
    runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_task_runs(flow_run_filter=runs, limit=200, offset=offset)
            for tr in page:
                task = tr.task_key.rsplit("-", 1)[0]  # "score_shards_task-1a2b3c" -> "score_shards_task"
                counts[task] = counts.get(task, 0) + 1
            if len(page) < 200:
                return counts
            offset += 200


def run_once(label: str, manifest: str, model: str, store: str, n: int, max_tasks: int | None) -> dict[str, Any]:
    import inspect

    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    import prefect_tasks  # the registered module (this file, imported under its own name)
    from syllabus_flows.score import score

    params: dict[str, Any] = {"pool_manifest": manifest, "scorers": {"synthetic": {}}, "model": model, "store": store}
    if max_tasks is not None:
        if "max_tasks_per_scorer" not in inspect.signature(score.fn).parameters:
            raise SystemExit("this checkout's score flow has no max_tasks_per_scorer parameter; leave --max-tasks-per-scorer out")
        params["max_tasks_per_scorer"] = max_tasks
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(score, parameters=params)
    sampler = PageSampler(run.id)
    before = dict(prefect_tasks._SCORER)
    sampler.start()
    start = time.perf_counter()
    state = run_flow(score, flow_run=run, parameters=params, return_type="state")
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join(timeout=120)
    scorer_seconds = prefect_tasks._SCORER["seconds"] - before["seconds"]
    from syllabus_flows.outcome import result_of

    manifest_out = result_of(state)["synthetic"]
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # the run's logs go out in batches: send what is queued before counting
    tasks, lag = settled_task_runs(run.id)
    overhead = wall - scorer_seconds
    out = {
        "run": label, "samples": n, "shards": len(manifest_out["shards"]) + len(manifest_out["missing"]),
        "final state": state.name, "shards scored": manifest_out["shards_scored"], "shards cached": manifest_out["shards_cached"],
        "missing": len(manifest_out["missing"]), "task runs by task": tasks,
        "s until the server had recorded them all": lag,
        "flow wall s": round(wall, 2), "synthetic scorer s": round(scorer_seconds, 2),
        "overhead s": round(overhead, 2), "overhead ms/sample": round(1000 * overhead / n, 4),
        "page requests": {what: {"n": len(s), "median s": round(statistics.median(s), 3),
                                  "p95 s": round(sorted(s)[int(0.95 * (len(s) - 1))], 3), "max s": round(max(s), 3),
                                  "over 2 s": sum(x > 2.0 for x in s)}
                          for what, s in sampler.seconds.items()},
        "page request errors": sampler.errors[:5],
    }
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="samples in the synthetic pool")
    parser.add_argument("--shard-size", type=int, default=32, help="samples per shard (the pipeline's default: 32)")
    parser.add_argument("--max-tasks-per-scorer", type=int, default=None,
                        help="the score flow's max_tasks_per_scorer (left out: the flow's default)")
    parser.add_argument("--rerun", action="store_true", help="run the flow again with every shard cached")
    parser.add_argument("--workdir", default=None, help="work folder (default: a new one under $TMPDIR)")
    args = parser.parse_args()

    import tempfile

    work = Path(args.workdir or tempfile.mkdtemp(prefix="prefect-tasks-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "syllabus,flows,tasks")  # as the CLI and deployments run flows
    os.environ["PREFECT_HOME"] = str(work / "client-home")
    server, api = start_server(work / "server-home", work / "server.log")
    try:
        os.environ["PREFECT_API_URL"] = api
        sys.path.insert(0, str(HERE))
        from syllabus import registry
        from syllabus.pipeline.config import IngestConfig
        from syllabus.pipeline.stages import ingest

        allow_uncommitted_tree()
        registry.register("scorer", "synthetic", "prefect_tasks:SyntheticScorer")
        model = stand_in_model(work / "synthetic-model")
        pool = work / "pool.jsonl"
        if not pool.exists():
            write_pool(pool, args.n)
        store = str(work / f"store-{time.time_ns()}")  # a fresh store: every shard is scored once
        start = time.perf_counter()
        manifest = ingest(IngestConfig(inputs=[str(pool)], shard_size=args.shard_size), store)["manifest"]
        print(f"synthetic pool: {args.n} samples ingested in {time.perf_counter() - start:.1f} s "
              f"(not part of the flow's figures); Prefect server {api}", flush=True)
        runs = [run_once("synthetic scorer, first run", manifest, str(model), store, args.n, args.max_tasks_per_scorer)]
        if args.rerun:
            runs.append(run_once("synthetic scorer, rerun (all cached)", manifest, str(model), store, args.n,
                                 args.max_tasks_per_scorer))
        (work / "results.json").write_text(json.dumps(runs, indent=1))
        print(f"results: {work / 'results.json'}")
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
