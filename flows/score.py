"""``score``: map one task per (scorer, shard), then fan in to one score manifest per scorer.

Shards whose result is committed under the same key are skipped inside the task (the store
is the cache). A shard that still fails after its retries is reported by name under
``missing`` in the score manifest; the flow completes with the others, and a rerun scores
only what is missing.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from syllabus.pipeline.stages import pool_shards
from tasks.stages import score_manifest_task, score_shard_task

log = logging.getLogger(__name__)


def _error_of(state) -> str:
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by Prefect
        return f"{type(exc).__name__}: {exc}"
    return str(state.message or state.type)


@flow(name="score", task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)
def score(pool_manifest: str, scorers: dict[str, dict[str, Any]], model: str = "smollm2-135m",
          store: str | None = None) -> dict[str, dict[str, Any]]:
    """Score every shard of the pool with every scorer; returns the score manifests by scorer."""
    shards = pool_shards(pool_manifest)
    futures = {
        name: score_shard_task.map(shards, unmapped(name), unmapped(config), unmapped(model), unmapped(store))
        for name, config in scorers.items()
    }
    manifests: dict[str, dict[str, Any]] = {}
    for name, futs in futures.items():
        entries, missing = [], []
        for shard, fut in zip(shards, futs):
            fut.wait()
            if fut.state.is_completed():
                entries.append(fut.result())
            else:
                missing.append({"shard": shard["name"], "error": _error_of(fut.state)})
        for m in missing:
            log.error("scorer %s: shard %s failed after retries (%s); rerun to retry only the missing shards",
                      name, m["shard"], m["error"])
        manifests[name] = score_manifest_task(name, scorers[name], model, pool_manifest, entries, missing, store)
        done = manifests[name]
        print(f"{name}: {len(entries)}/{len(shards)} shards ({done['shards_scored']} scored, "
              f"{done['shards_cached']} cached), {len(missing)} missing")
    return manifests


def score_with_workers(workers: int):
    """The score flow with ``workers`` scoring tasks at once in this process."""
    return score.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))
