"""``watch``: the scheduled rerun. Fingerprints the pool and runs the pipeline only when the
pool changed since the last run it completed; otherwise it exits in seconds.

Ingesting is the fingerprint: unchanged shards are recognised by content hash and not even
rewritten, and the pipeline it starts scores only new or changed shards (the store is the
cache), so a rerun after appending data costs what the new data costs. The first run for a
pool has no fingerprint to compare with, so it runs the whole pipeline. A run that ended
"Partially failed" does not record its fingerprint, so the next one retries what is missing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prefect import flow

from syllabus_flows.hooks import end_mlflow_runs_as_failed, end_mlflow_runs_as_killed
from syllabus_flows.outcome import PARTIAL, finish, result_of
from syllabus_flows.pipeline import pipeline
from syllabus.pipeline.config import PipelineParams
from syllabus.store import MissingObjectError, Store, content_hash
from syllabus.tracking.provenance import check_code_provenance
from syllabus_tasks.stages import ingest_task

log = logging.getLogger("flows.watch")  # not __name__: a deployment loads this file as module "watch"


def state_key(params: PipelineParams) -> str:
    """Where the last fingerprint is kept: one key per pool definition and method set."""
    return f"watch/{content_hash({'pool': params.pool, 'methods': params.methods, 'model': params.model}, 16)}.json"


def real_pool(pool: list[str]) -> list[str]:
    """The pool entries that name something: a deployment whose $SYLLABUS_WATCH_POOL was unset
    gets ``['']``, which would otherwise mean the working folder (the repository and its .venv)."""
    entries = [p.strip() for p in pool if p and p.strip()]
    if not entries:
        raise ValueError(f"watch needs params.pool, the files or URLs of the pool to watch, and got {list(pool)!r}; "
                         "set it in the deployment's parameters (or export SYLLABUS_WATCH_POOL before `prefect deploy`), "
                         "then switch the schedule on")
    return entries


@flow(name="watch", log_prints=True, on_cancellation=[end_mlflow_runs_as_killed], on_crashed=[end_mlflow_runs_as_failed])
def watch(params: PipelineParams = PipelineParams(), force: bool = False) -> dict[str, Any]:
    """Rerun the pipeline when the pool changed since the last completed run; exit in seconds otherwise.

    Args:
        params: the pipeline's parameters; params.pool must name the pool to watch (an empty pool is refused).
        force: run the pipeline even when the pool's fingerprint is unchanged.
    """
    check_code_provenance()  # the code that runs is the commit recorded, or the run fails here
    pool = real_pool(params.pool)
    if pool != list(params.pool):
        params = params.model_copy(update={"pool": pool})
    store = Store(params.store)
    summary = ingest_task(params.ingest_config(pool), params.store)
    key = state_key(params)
    try:
        last = json.loads(store.read_committed(key))
    except MissingObjectError:
        last = None
    if last and last.get("pool_fingerprint") == summary["pool_fingerprint"] and not force:
        print(f"pool {summary['pool_fingerprint']} unchanged since {last.get('mlflow_run_id')}; nothing to do")
        return {"ran": False, "pool_fingerprint": summary["pool_fingerprint"]}
    print(f"pool changed ({(last or {}).get('pool_fingerprint')} -> {summary['pool_fingerprint']}); running the pipeline")
    state = pipeline(params, return_state=True)
    result = result_of(state)
    out = {"ran": True, "pool_fingerprint": summary["pool_fingerprint"], "mlflow_run_id": result["mlflow_run_id"],
           "mlflow_run_url": result["mlflow_run_url"]}
    if state.is_failed():
        return finish(out, [f"the pipeline it started ended {PARTIAL}: {state.message} The pool's fingerprint was not "
                            "recorded, so the next watch run retries."])
    store.commit(key, json.dumps({"pool_fingerprint": summary["pool_fingerprint"],
                                  "mlflow_run_id": result["mlflow_run_id"]}).encode())
    return out
