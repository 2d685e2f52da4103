"""``score``: map one task per batch of shards and scorer, then fan in to one score manifest per scorer.

A scorer's shards are cut into at most ``max_tasks_per_scorer`` batches of consecutive shards
(default 256: a pool of 2 million samples in 32-sample shards makes 256 task runs a scorer,
not 62,500), so the Prefect server sees a bounded number of task runs however large the pool.
The shard stays the unit of caching and retry: inside its batch task each shard is skipped
when its result is committed under the same key (the store is the cache), retried on its own,
and committed as it finishes. A shard that still fails after its retries is reported by name
under ``missing`` in the score manifest; the flow completes the others and ends "Partially
failed" (a Failed state whose message names the shards and how to retry them, with the
manifests as its data), and a rerun scores only what is missing. Before the work the run's
log says the plan: per scorer, samples cached and left, and the expected time from the rate an
earlier run recorded, else from a calibration on a few samples in a task, where the scoring
tasks run (the flow's own process loads no model); the rates this stage measures are recorded
for the next run. A progress artifact
shows shards done, samples per second and the time left while it runs, shard by shard.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import flow, unmapped
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from syllabus_flows.outcome import finish, missing_shards_message, publish, retry_hint
from syllabus.pipeline.config import MAX_TASKS_PER_SCORER
from syllabus.pipeline.stages import pool_shards, shard_batches
from syllabus.scoring.pool import typed_configs
from syllabus.scoring.preview import needs_calibration, record_stage_rates, say_plan, stage_preview
from syllabus.tracking.provenance import check_code_provenance
from syllabus_tasks.progress import ScoreProgress
from syllabus_tasks.stages import score_manifest_task, score_plan_task, score_shards_task

log = logging.getLogger("flows.score")  # not __name__: a deployment loads this file as module "score"



def _error_of(state) -> str:
    try:
        state.result()
    except Exception as exc:  # the task's own exception, re-raised by Prefect
        return f"{type(exc).__name__}: {exc}"
    return str(state.message or state.type)


def _batch_outcome(state, batch: list[dict]) -> dict[str, list[dict]]:
    """A batch task's entries and missing shards: its result, or the data of its "Partially
    failed" state; a batch that crashed (its worker died, say) has every shard missing with its
    error, and a rerun finds the ones it had committed in the store."""
    if state.is_completed():
        return state.result()
    data = state.result(raise_on_failure=False) if state.is_failed() else None
    if isinstance(data, dict) and "entries" in data and "missing" in data:
        return data
    error = _error_of(state)
    return {"entries": [], "missing": [{"shard": shard["name"], "error": error} for shard in batch]}


@flow(name="score", task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True, persist_result=True,
      result_serializer="json")
def score(pool_manifest: str, scorers: dict[str, dict[str, Any]], model: str = "smollm2-135m",
          store: str | None = None, max_tasks_per_scorer: int = MAX_TASKS_PER_SCORER) -> dict[str, dict[str, Any]]:
    """Score every shard of the pool with every scorer; returns the score manifests by scorer.

    Args:
        pool_manifest: URL of the pool manifest that ingest wrote (the ingest run's "ingest" artifact shows it).
        scorers: scorer name -> config changes, e.g. {"quality": {}, "difficulty": {"max_new_tokens": 48}}.
        model: the target model: an alias (smollm2-135m), a Hugging Face directory, a .gguf file or a hub id.
        store: store URL (a directory, s3://bucket/prefix, memory://name); default $SYLLABUS_STORE or ./syllabus-store.
        max_tasks_per_scorer: the most task runs one scorer makes: the shards are split into at most this
            many batches of consecutive shards (fewer shards: one a task). Raise it to spread a small pool
            over more workers; the Prefect server slows with tens of thousands of task runs.
    """
    check_code_provenance()  # the code that runs is the commit recorded, or the run fails here
    # Validated once for the stage, before any task: the tasks and their shards share the typed configs.
    configs = typed_configs(scorers)
    shards = pool_shards(pool_manifest)
    batches = shard_batches(shards, max_tasks_per_scorer)
    preview = _say_the_plan(configs, pool_manifest, model, store)
    progress = ScoreProgress(len(shards) * len(scorers), sum(s["rows"] for s in shards) * len(scorers), logger=log)
    progress.start()
    key = progress.publish()  # batch tasks in this process report each shard as it ends
    try:
        futures = {
            name: score_shards_task.map(batches, unmapped(name), unmapped(config), unmapped(model), unmapped(store),
                                        unmapped(pool_manifest), unmapped(key))
            for name, config in configs.items()
        }
        batch_of = {id(fut): (name, batch) for name, futs in futures.items() for batch, fut in zip(batches, futs)}
        outcomes: dict[int, dict[str, list[dict]]] = {}
        for fut in as_completed([f for futs in futures.values() for f in futs]):
            fut.wait()  # sets the final state; without it .state is read back from the API, which can lag
            name, batch = batch_of[id(fut)]
            outcome = outcomes[id(fut)] = _batch_outcome(fut.state, batch)
            # Shards a worker in another process scored (Dask, Ray) are counted here, when their batch ends.
            for entry in outcome["entries"]:
                progress.report(name, entry["shard"], entry["rows"], cached=entry["skipped"])
            rows = {shard["name"]: shard["rows"] for shard in batch}
            for gone in outcome["missing"]:
                progress.report(name, gone["shard"], rows[gone["shard"]], failed=True)
    finally:
        progress.close()
    manifests: dict[str, dict[str, Any]] = {}
    for name, futs in futures.items():
        entries = [e for fut in futs for e in outcomes[id(fut)]["entries"]]
        missing = [m for fut in futs for m in outcomes[id(fut)]["missing"]]
        for m in missing:
            log.error("scorer %s: shard %s failed after retries (%s); rerun to retry only the missing shards",
                      name, m["shard"], m["error"])
        manifests[name] = score_manifest_task(name, configs[name], model, pool_manifest, entries, missing, store)
        done = manifests[name]
        print(f"{name}: {len(entries)}/{len(shards)} shards ({done['shards_scored']} scored, "
              f"{done['shards_cached']} cached), {len(missing)} missing, in {len(futs)} task runs")
    record_stage_rates(preview, manifests)
    problem = missing_shards_message(manifests)
    publish(markdown=score_markdown(manifests, problem), key="scores", description="Score manifests: pass their URLs to select")
    return finish(manifests, [problem])


def _say_the_plan(scorers: dict[str, Any], pool_manifest: str, model: str, store: str | None) -> list[dict]:
    """Log what the stage will do and how long it takes (``say_plan``: ``syllabus score``'s
    plan lines); an estimate that cannot be made is said in one line and never stops the stage."""
    try:
        preview = stage_preview(scorers, pool_manifest, model, store)
    except Exception as exc:  # an estimate, not a check: the tasks report real problems
        log.warning("no estimate for this scoring stage (%s: %s)", type(exc).__name__, exc)
        return []
    if needs_calibration(preview):  # no recorded rate: a few samples, timed where the scoring runs
        try:
            preview = score_plan_task.submit(scorers, pool_manifest, model, store).result()
        except Exception as exc:  # the plan below says which scorers have no time
            log.warning("could not calibrate the scorers (%s: %s)", type(exc).__name__, exc)
    return say_plan(", ".join(scorers), model, max((p["samples"] for p in preview), default=0),
                    lambda line: log.info("%s", line), preview)


def score_markdown(manifests: dict[str, dict[str, Any]], problem: str | None = None) -> str:
    """What the score flow produced, for the next stage's form: one row per scorer; the
    missing shards with their errors and the retry first, when there are any; "Next:" last."""
    lines = []
    if problem:
        lines += ["### Partially failed", "", problem, ""]
        lines += [f"- scorer `{name}`, shard `{gone['shard']}`: {gone['error'][:300]}"
                  for name, m in manifests.items() for gone in m["missing"]] + [""]
    lines += ["| scorer | samples | shards scored | cached | missing | samples/s | score manifest |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for name, m in manifests.items():
        lines.append(f"| {name} | {m['samples']} | {m['shards_scored']} | {m['shards_cached']} | {len(m['missing'])} | "
                     f"{m['samples_per_second'] or '-'} | `{m['url']}` |")
    lines += ["", retry_hint("score only the missing shards").replace("Press", "Next: press", 1).replace("Run the", "Next: run the", 1)
              if problem else "Next: run the **select** deployment with `scores` set to the score manifests above."]
    return "\n".join(lines)


def task_runner(kind: str = "thread", workers: int = 1, address: str | None = None, processes: bool = True):
    """Where the batch tasks run: ``thread`` (this process, ``workers`` at once),
    ``dask`` (a Dask cluster: an existing one at ``address``, else a local one with
    ``workers`` workers) or ``ray`` (a Ray cluster at ``address``, else a local one with
    ``workers`` CPUs; needs the ``ray`` extra). Ray workers are separate processes: they get
    this process's Prefect API and Syllabus settings through the Ray runtime environment."""
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        # One thread per worker: each task already uses every core the worker has for torch.
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": processes})
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise ImportError("the ray task runner needs prefect-ray: pip install -e '.[ray]'") from None
        env = {k: v for k, v in os.environ.items() if k.startswith(("PREFECT_", "SYLLABUS_", "AWS_")) or k in ("PYTHONPATH", "HF_HOME")}
        if address:
            return RayTaskRunner(address=address, init_kwargs={"runtime_env": {"env_vars": env}})
        return RayTaskRunner(init_kwargs={"num_cpus": workers, "include_dashboard": False, "runtime_env": {"env_vars": env}})
    raise ValueError(f"task runner {kind!r} is not one of thread, dask, ray")


def score_with_workers(workers: int, kind: str = "thread", address: str | None = None):
    """The score flow with its shards spread over ``workers`` (threads or Dask workers).
    Call it with ``return_state=True``: a run with missing shards ends Failed, its manifests
    still in its data (``syllabus_flows.outcome.result_of``)."""
    return score.with_options(task_runner=task_runner(kind, workers, address))
