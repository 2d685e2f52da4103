"""A scoring worker for the lease tests, run as its own process:

    python lease_worker.py MANIFEST_URL STORE_URL ATTEMPTS_FILE SLEEP_SECONDS [BARRIER_DIR N]

It scores every shard of the pool with a cheap scorer that appends the shard's first sample
id to ATTEMPTS_FILE when it starts a shard, then sleeps: two workers on one store must
together start each shard once. With BARRIER_DIR, a worker starts scoring only once N workers
have reached it, so that on a loaded machine one does not finish before the other has started.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, ClassVar

import pyarrow as pa

from syllabus.scoring.base import Scorer, ScorerConfig


class SleepyConfig(ScorerConfig):
    attempts: str
    sleep_seconds: float = 0.0


class SleepyScorer(Scorer):
    name: ClassVar[str] = "sleepy"
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = SleepyConfig

    def key_parts(self, model_fingerprint: str, shard_hash: str) -> dict[str, Any]:
        parts = super().key_parts(model_fingerprint, shard_hash)
        parts["config"] = {}  # the attempts file and the pace are not part of the result
        return parts

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        with open(self.config.attempts, "a") as fh:
            fh.write(table.column("sample_id")[0].as_py() + "\n")
        time.sleep(self.config.sleep_seconds)
        return pa.table({"sample_id": table.column("sample_id"),
                         "sleepy_chars": pa.array([float(len(o)) for o in table.column("output").to_pylist()]),
                         "sleepy_status": pa.array(["ok"] * table.num_rows)})


class FakeModel:
    fingerprint = "fake-model"


def main() -> None:
    from syllabus.scoring.pool import score_pool
    from syllabus.store import Store

    manifest_url, store_url, attempts, sleep = sys.argv[1:5]
    if len(sys.argv) > 5:
        import os
        from pathlib import Path

        barrier, n = Path(sys.argv[5]), int(sys.argv[6])
        (barrier / str(os.getpid())).touch()
        deadline = time.time() + 300
        while len(list(barrier.iterdir())) < n and time.time() < deadline:
            time.sleep(0.05)
    from syllabus import registry

    registry.register("scorer", "sleepy", "lease_worker:SleepyScorer")  # this file runs as module lease_worker
    store = Store(store_url)
    out = score_pool(manifest_url, "sleepy", {"attempts": attempts, "sleep_seconds": float(sleep)}, FakeModel(), store)
    print(json.dumps({"shards": [[e["shard"], e["skipped"]] for e in out["shards"]], "url": out["url"]}))


if __name__ == "__main__":
    main()
