"""The pipeline's tasks, one per stage."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from syllabus.pipeline import stages
from syllabus_tasks.progress import EvalProgress, ProgressArtifact
from syllabus_tasks.retry import is_transient, retry_delays

# The store is the cache (keys cover model, config and shard content): Prefect's own
# input/source hashing would key on the wrong things, so it is off.
_COMMON = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=retry_delays(), retry_jitter_factor=0.2,
               retry_condition_fn=is_transient)


@task(name="ingest", **_COMMON)
def ingest_task(inputs: list[str], store: str | None, shard_size: int, special_tokens: str = "keep") -> dict[str, Any]:
    return stages.ingest(inputs, store, shard_size, special_tokens)


@task(name="score-shard", tags=["gpu"], task_run_name="{scorer}:{shard[name]}", **_COMMON)
def score_shard_task(shard: dict, scorer: str, config: dict, model: str, store: str | None,
                     pool_manifest: str | None = None) -> dict[str, Any]:
    return stages.score_shard(shard, scorer, config, model, store, pool_manifest)


@task(name="score-manifest", **_COMMON)
def score_manifest_task(scorer: str, config: dict, model: str, pool_manifest: str, entries: list[dict],
                        missing: list[dict], store: str | None) -> dict[str, Any]:
    return stages.write_score_manifest(scorer, config, model, pool_manifest, entries, missing, store)


@task(name="select", task_run_name="select:{method}", **_COMMON)
def select_task(method: str, scores: list[str], budget: dict | None, store: str | None, seed: int | None = None,
                overrides: dict | None = None, pool: str | None = None) -> dict[str, Any]:
    return stages.select(method, scores, budget, store, seed=seed, selector_overrides=overrides, pool_manifest_url=pool)


@task(name="finetune", tags=["gpu"], **_COMMON)
def finetune_task(selected: str, model: str, config: dict, store: str | None, force: bool = False) -> dict[str, Any]:
    return stages.finetune(selected, model, config, store, on_progress=ProgressArtifact("fine-tune"), force=force)


@task(name="evaluate", tags=["gpu"], **_COMMON)
def evaluate_task(model: str, adapter: str | None, benches: list[str], config: dict, store: str | None) -> dict[str, Any]:
    return stages.evaluate(model, adapter, benches, config, store, on_progress=EvalProgress())
