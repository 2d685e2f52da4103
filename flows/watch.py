"""``watch``: the scheduled rerun. Fingerprints the pool and runs the pipeline only when the
pool changed since the last run it started; otherwise it exits in seconds.

Ingesting is the fingerprint: unchanged shards are recognised by content hash and not even
rewritten, and the pipeline it starts scores only new or changed shards (the store is the
cache), so a rerun after appending data costs what the new data costs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prefect import flow

from flows.pipeline import pipeline
from syllabus.pipeline.config import PipelineParams
from syllabus.store import MissingObjectError, Store, content_hash
from tasks.stages import ingest_task

log = logging.getLogger(__name__)


def state_key(params: PipelineParams) -> str:
    """Where the last fingerprint is kept: one key per pool definition and method set."""
    return f"watch/{content_hash({'pool': params.pool, 'methods': params.methods, 'model': params.model}, 16)}.json"


@flow(name="watch", log_prints=True)
def watch(params: PipelineParams = PipelineParams(), force: bool = False) -> dict[str, Any]:
    if not params.pool:
        raise ValueError("watch needs params.pool: the files or URLs of the pool to watch")
    store = Store(params.store)
    summary = ingest_task(list(params.pool), params.store, params.shard_size)
    key = state_key(params)
    try:
        last = json.loads(store.read_committed(key))
    except MissingObjectError:
        last = None
    if last and last.get("pool_fingerprint") == summary["pool_fingerprint"] and not force:
        print(f"pool {summary['pool_fingerprint']} unchanged since {last.get('mlflow_run_id')}; nothing to do")
        return {"ran": False, "pool_fingerprint": summary["pool_fingerprint"]}
    print(f"pool changed ({(last or {}).get('pool_fingerprint')} -> {summary['pool_fingerprint']}); running the pipeline")
    result = pipeline(params)
    store.commit(key, json.dumps({"pool_fingerprint": summary["pool_fingerprint"],
                                  "mlflow_run_id": result["mlflow_run_id"]}).encode())
    return {"ran": True, "pool_fingerprint": summary["pool_fingerprint"], "mlflow_run_id": result["mlflow_run_id"]}
