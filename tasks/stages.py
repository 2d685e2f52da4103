"""The pipeline's tasks, one per stage."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from syllabus.pipeline import stages
from syllabus.pipeline.config import IngestConfig, SelectConfig
from syllabus.pipeline.partial import PARTIAL, name_missing
from syllabus.scoring.base import ScorerConfig
from syllabus_tasks.progress import EvalProgress, ProgressArtifact, report_shard
from syllabus_tasks.retry import PERMANENT, is_transient, retry_delays, shard_retry_delays

# The store is the cache (keys cover model, config and shard content): Prefect's own
# input/source hashing would key on the wrong things, so it is off.
_COMMON = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=retry_delays(), retry_jitter_factor=0.2,
               retry_condition_fn=is_transient)


@task(name="ingest", **_COMMON)
def ingest_task(config: IngestConfig, store: str | None) -> dict[str, Any]:
    return stages.ingest(config, store)


def _batch_name() -> str:
    """``quality:pool.jsonl-00000`` for one shard, ``quality:pool.jsonl-00000..pool.jsonl-00244 (245 shards)`` for more."""
    from prefect.runtime import task_run

    shards, scorer = task_run.parameters["shards"], task_run.parameters["scorer"]
    if len(shards) == 1:
        return f"{scorer}:{shards[0]['name']}"
    return f"{scorer}:{shards[0]['name']}..{shards[-1]['name']} ({len(shards)} shards)"


# One task run per batch of shards, not per shard: a pool of millions would otherwise make
# tens of thousands of task runs, more than a Prefect server serves. Each shard keeps its own
# cache key, commit and retries (inside the task), so no Prefect-level retry: it would redo
# the whole batch's cache checks for the one shard that failed.
@task(name="score-shards", tags=["gpu"], task_run_name=_batch_name, cache_policy=NO_CACHE, retries=0)
def score_shards_task(shards: list[dict], scorer: str, config: ScorerConfig, model: str, store: str | None,
                      pool_manifest: str | None = None, progress: str | None = None) -> dict[str, Any] | State:
    """Score a batch of shards (``stages.score_shards``) with the scorer config the flow
    validated once for the stage; ``progress`` is the flow's
    :meth:`ScoreProgress.publish` key. Ends Failed ("Partially failed") when a shard is
    missing after its retries, with the batch's entries and missing shards as its data."""
    result = stages.score_shards(shards, scorer, config, model, store, pool_manifest,
                                 retry_delays=shard_retry_delays(), permanent=PERMANENT,
                                 on_shard=lambda shard, entry, error: report_shard(progress, scorer, shard, entry, error))
    if result["missing"]:
        return Failed(name=PARTIAL, data=result,
                      message=f"{len(result['missing'])} of {len(shards)} shards failed after their retries: "
                              f"{name_missing(result['missing'][:20])}")
    return result


@task(name="score-plan", tags=["gpu"], cache_policy=NO_CACHE)
def score_plan_task(scorers: dict[str, ScorerConfig], pool_manifest: str, model: str, store: str | None) -> list[dict[str, Any]]:
    """The stage's preview, calibrated where the scoring tasks run (the model loaded here stays
    loaded for this process's batches)."""
    from syllabus.scoring.preview import stage_preview

    return stage_preview(scorers, pool_manifest, model, store, calibrate=True)


@task(name="score-manifest", **_COMMON)
def score_manifest_task(scorer: str, config: ScorerConfig, model: str, pool_manifest: str, entries: list[dict],
                        missing: list[dict], store: str | None) -> dict[str, Any]:
    return stages.write_score_manifest(scorer, config, model, pool_manifest, entries, missing, store)


@task(name="select", task_run_name="select:{method}", **_COMMON)
def select_task(method: str, scores: list[str], budget: dict | None, store: str | None, seed: int | None = None,
                overrides: dict | None = None, pool: str | None = None) -> dict[str, Any]:
    config = SelectConfig(method=method, scores=scores, budget=budget, seed=seed, selector_overrides=overrides or {},
                          pool=pool)
    return stages.select(config, store).checked()


@task(name="finetune", tags=["gpu"], **_COMMON)
def finetune_task(selected: str, model: str, config: dict, store: str | None, force: bool = False) -> dict[str, Any]:
    return stages.finetune(selected, model, config, store, on_progress=ProgressArtifact("fine-tune"), force=force)


@task(name="evaluate", tags=["gpu"], **_COMMON)
def evaluate_task(model: str, adapter: str | None, benches: list[str], config: dict, store: str | None) -> dict[str, Any]:
    return stages.evaluate(model, adapter, benches, config, store, on_progress=EvalProgress())
