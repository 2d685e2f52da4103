"""``pipeline``: ingest -> score (mapped per shard) -> select, fine-tune and evaluate per method.

One MLflow parent run per pipeline run and a nested run per method; the Prefect flow run id
is tagged on both and the MLflow run is linked from the Prefect run as an artifact. Methods
run side by side at the same budget; one that fails is reported in the results table and
the others still finish.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from syllabus_flows.hooks import end_mlflow_runs_as_failed, end_mlflow_runs_as_killed, root_flow_run_id
from syllabus_flows.outcome import finish, missing_shards_message, publish, result_of, retry_hint
from syllabus_flows.score import score_with_workers
from syllabus.pipeline.config import PipelineParams
from syllabus.pipeline.report import results_markdown, results_table
from syllabus.scoring.timing import stage_metrics
from syllabus.pipeline.stages import check_budget_fits, cutoff_warnings, evaluation_config, export_subset
from syllabus.tracking.lineage import Lineage
from syllabus.tracking.names import method_label, unique_labels
from syllabus.tracking.notes import describe_arm, describe_pipeline
from syllabus.tracking.provenance import check_code_provenance
from syllabus.tracking.resume import ATTEMPT_TAG, ResumableLineage, clear_failure, previous_attempt
from syllabus_tasks.stages import evaluate_task, finetune_task, ingest_task, select_task

log = logging.getLogger("flows.pipeline")  # not __name__: a deployment loads this file as module "pipeline"


def _pool_inputs(params: PipelineParams) -> tuple[list[str], list[str]]:
    """The pool inputs and the benchmarks (the demo adds its held-out reference answers)."""
    if params.pool:
        return list(params.pool), list(params.benches)
    from syllabus.pool.demo import demo_pool_inputs, healthbench_heldout

    inputs = demo_pool_inputs(params.demo_medical, params.demo_general, params.seed)
    benches = list(params.benches)
    if params.demo_heldout:
        benches.append(str(healthbench_heldout(params.demo_medical, params.demo_heldout, params.seed)))
    return inputs, benches


def _result_or_error(future) -> tuple[dict | None, str | None]:
    future.wait()
    if future.state.is_completed():
        return future.result(), None
    try:
        future.result()
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return None, str(future.state.message)


def default_arms(params: PipelineParams) -> list[dict[str, Any]]:
    """One arm per method: its name, recipe, selection seed and selector overrides. A recipe
    file's arm is named after the recipe (its runs, metrics and files), not its path."""
    names = unique_labels([method_label(m) for m in params.methods])
    return [{"name": name, "method": m, "seed": params.seed, "overrides": params.selector_overrides.get(m) or {}}
            for name, m in zip(names, params.methods)]


def run_arms(params: PipelineParams, arms: list[dict[str, Any]], title: str = "pipeline") -> dict[str, Any]:
    """Score the pool once, then select, fine-tune and evaluate every arm at the same budget.

    An arm is ``{"name", "method", "seed", "overrides"}``: a method's recipe run with a
    selection seed and selector overrides (the pipeline has one arm per method; ``compare``
    adds random seeds and difficulty windows). Runs inside a flow; returns the results
    table, the per-arm rows, the MLflow parent run and the score manifests."""
    started = time.perf_counter()
    flow_run_id = str(flow_run.id or "")
    lineage = ResumableLineage(params.tracking_uri, params.experiment)
    inputs, benches = _pool_inputs(params)
    plan = params.plan(sorted({a["method"] for a in arms}))
    scorers, per_method = plan.scorers, {m: plan.instances_of(m) for m in plan.methods}
    budget = params.budget.model_dump(exclude_none=True)
    # The root id finds every MLflow run of a cancelled or crashed watch run, whose subflows get no hook of their own.
    tags = {"prefect.flow_run_id": flow_run_id, "prefect.flow_run_name": str(flow_run.name or ""),
            "prefect.root_flow_run_id": root_flow_run_id()}
    timings: dict[str, float] = {}
    # A retried flow run (Retry in the UI, or a flow retry) has the same id: it continues the
    # MLflow runs of its earlier attempt instead of adding a second parent with the same name.
    run_name = f"{title}-{flow_run.name or 'local'}"
    before = previous_attempt(lineage.tracking_uri, lineage.experiment_id, flow_run_id, run_name)
    if before.parent:
        lineage.attempt = before.attempts + 1
        tags[ATTEMPT_TAG] = str(lineage.attempt)
        clear_failure(lineage.tracking_uri, [before.parent, *before.arms.values()])
        log.info("attempt %d of flow run %s: continuing MLflow run %s", before.attempts + 1, flow_run_id,
                 lineage.run_url(before.parent))

    with lineage.run(run_name, tags=tags, run_id=before.parent) as parent:
        t0 = time.perf_counter()
        ingest = ingest_task(params.ingest_config(inputs), params.store)
        timings["ingest_seconds"] = time.perf_counter() - t0
        lineage.log_params({"params": params.model_dump(mode="json"), "pool_fingerprint": ingest["pool_fingerprint"],
                            "pool_manifest": ingest["manifest"], "benches": benches})
        lineage.log_metrics({k: ingest[k] for k in ("records_in", "records_ok", "records_rejected", "duplicates", "shards")}, "pool/")
        lineage.log_pool(ingest)
        lineage.describe(describe_pipeline(title, [a["name"] for a in arms], budget, ingest, params.model))
        # A count above the pool can never be met: fail here, naming both, before any scoring.
        check_budget_fits(params.budget, ingest["records_ok"], sorted({a["method"] for a in arms}))

        t0 = time.perf_counter()
        manifests = result_of(score_with_workers(params.score_workers, params.task_runner, params.dask_address)(
            ingest["manifest"], scorers, params.model, params.store, params.max_tasks_per_scorer,
            return_state=True)) if scorers else {}
        timings["score_seconds"] = time.perf_counter() - t0
        for name, m in manifests.items():
            for gone in m["missing"]:  # in this run's own log, not only in the score subflow's
                log.error("scorer %s: shard %s is missing (%s); %s", name, gone["shard"], gone["error"][:500],
                          retry_hint("score only the missing shards"))
            lineage.log_params({f"scores.{name}": {"url": m["url"], "config": m["config"], "version": m["version"]}})
            lineage.log_metrics({"samples": m["samples"], "shards_scored": m["shards_scored"], "shards_cached": m["shards_cached"],
                                 "shards_missing": len(m["missing"]), "samples_per_second": m["samples_per_second"] or 0.0,
                                 "seconds": m["seconds"]}, f"score/{name}/")
            # where the time went: <stage>/seconds, samples_per_second, tokens_per_second, padding_share
            lineage.log_metrics(stage_metrics(m.get("timing", {}).get("stages", {})), f"score/{name}/")
        if manifests:
            lineage.log_params({"model_fingerprint": next(iter(manifests.values()))["model_fingerprint"]})
        # A fixed cut-off its scores cannot meet (3DS's quality >= 90 on a small rater's compressed
        # scale), said before selecting, with the percentile that keeps enough (as `syllabus score` does).
        said: set[str] = set()
        for arm in arms:
            for warning in cutoff_warnings(arm["method"], arm["overrides"], params.budget, manifests, per_method[arm["method"]]):
                if warning not in said:
                    said.add(warning)
                    log.warning("%s", warning)

        eval_config = evaluation_config(params.eval, manifests)  # leaves out what influence scoring validated on
        rows: list[dict[str, Any]] = []
        if params.evaluate_base and params.stop_after != "select":  # 'select': scores and subsets only
            t0 = time.perf_counter()
            base, error = _result_or_error(evaluate_task.submit(params.model, None, benches, eval_config, params.store))
            rows.append({"method": "base model", "evaluation": base, "error": error, "seconds": time.perf_counter() - t0})
            if base:
                lineage.log_metrics(base["metrics"], "base/")

        for arm in arms:
            with lineage.run(arm["name"], nested=True, tags={**tags, "method": arm["name"], "recipe": arm["method"]},
                             run_id=before.arms.get(arm["name"])) as child:
                rows.append(_run_arm(params, arm, per_method[arm["method"]], scorers, manifests, ingest, benches,
                                     budget, eval_config, lineage, child.info.run_id))
            timings[f"{arm['name']}_seconds"] = rows[-1]["seconds"]

        table = results_table(rows, benches)
        timings["total_seconds"] = time.perf_counter() - started
        issues = [p for p in problems({"rows": rows, "manifests": manifests}) if p]
        markdown = results_markdown(table, ingest, manifests, timings, problems=issues,
                                    next_step=None if issues else f"Next: compare the arms in the MLflow run "
                                    f"({lineage.run_url(parent.info.run_id)}), or change methods, budget or "
                                    "thresholds and run again: committed scores are reused.")
        lineage.log_text(markdown, "results.md")
        lineage.log_metrics(timings, "time/")
        parent_url = lineage.run_url(parent.info.run_id)

    publish(link=parent_url, link_text=f"MLflow run of this {title}", link_key="mlflow-run",
            description=f"MLflow tracking URI: {lineage.tracking_uri}")
    publish(markdown=markdown, key=f"{title}-results", description="Syllabus results table")
    return {"results": table, "rows": rows, "problems": issues, "benches": benches, "mlflow_run_id": parent.info.run_id,
            "mlflow_run_url": parent_url, "mlflow_tracking_uri": lineage.tracking_uri, "pool": ingest,
            "scores": {k: v["url"] for k, v in manifests.items()}, "manifests": manifests, "instances": per_method, "timings": timings, "markdown": markdown,
            "score_costs": {k: {f: v.get(f) for f in ("samples", "shards_scored", "shards_cached", "seconds", "compute_seconds")}
                            for k, v in manifests.items()}}


def _run_arm(params: PipelineParams, arm: dict[str, Any], method_scorers: list[str], scorers: dict[str, dict],
             manifests: dict[str, dict], ingest: dict, benches: list[str], budget: dict, eval_config: dict[str, Any],
             lineage: Lineage, run_id: str) -> dict[str, Any]:
    """Select, fine-tune and evaluate one arm inside its nested MLflow run; returns its row."""
    t_arm = time.perf_counter()
    method = arm["method"]
    row: dict[str, Any] = {"method": arm["name"], "recipe": method, "seed": arm["seed"], "error": None, "mlflow_run_id": run_id}
    missing = [s for s in method_scorers if s not in manifests]
    scores = [manifests[s]["url"] for s in method_scorers if s in manifests]
    lineage.log_params({"method": method, "arm": arm["name"], "budget": budget, "seed": arm["seed"], "model": params.model,
                        "scorers": {s: scorers[s] for s in method_scorers}, "selector_overrides": arm["overrides"],
                        "finetune": params.finetune.model_dump(mode="json"), "eval": eval_config,
                        "score_manifests": scores})
    sel, row["error"] = _result_or_error(select_task.submit(
        method, scores, budget, params.store, arm["seed"], arm["overrides"], ingest["manifest"]))
    if sel:
        row["selection"] = sel
        row["n_selected"], row["n_candidates"] = sel["n_selected"], sel["n_candidates"]
        lineage.log_metrics({"n_selected": sel["n_selected"], "n_candidates": sel["n_candidates"]}, "select/")
        for i, stage in enumerate(sel.get("stages", [])):
            lineage.log_metrics({f"{i + 1}_{stage['selector']}_out": stage.get("n_out", 0)}, "select/stage/")
        for name in ("selected", "report", "candidates"):
            lineage.log_store_object(sel["outputs"][name], "selection")
        for url in sel["outputs"].get("plots", {}).values():
            lineage.log_store_object(url, "selection/plots")
        lineage.log_subset(sel)
        if params.export_format:
            row["export"] = export_subset(sel, params.export_format, params.export_dir)
    if sel and params.stop_after == "select":
        pass  # scores and subsets only: no fine-tuning or evaluation
    elif sel and sel["n_selected"] > 0:
        def train(force: bool = False) -> tuple[dict | None, str | None]:
            return _result_or_error(finetune_task.submit(sel["outputs"]["selected"], params.model,
                                                         params.finetune.model_dump(mode="json"), params.store, force))

        def evaluate(adapter: str) -> tuple[dict | None, str | None]:
            return _result_or_error(evaluate_task.submit(params.model, adapter, benches, eval_config, params.store))

        ft, row["error"] = train()
        ev = None
        if ft:
            ev, row["error"] = evaluate(ft["adapter"])
            if ev is None and ft.get("pruned"):  # neither its weights nor this evaluation are in the store: train again
                ft, row["error"] = train(force=True)
                if ft:
                    ev, row["error"] = evaluate(ft["adapter"])
        if ft:
            row["finetune"] = ft
            lineage.log_params({"adapter": ft["adapter"]})
            if ft.get("pruned"):  # its weights are not in the store: nothing to log as a model
                lineage.mlflow.set_tag("adapter_pruned", "true")
            else:
                lineage.log_adapter(ft["adapter"])
            lineage.log_metrics({"train_loss": ft["train_loss"], "train_loss_mean": ft["train_loss_mean"],
                                 "samples": ft["samples"], "steps": ft["steps"], "seconds": ft["seconds"]}, "finetune/")
            for step, loss in enumerate(ft.get("losses", [])):
                lineage.mlflow.log_metric("finetune/step_loss", loss, step=step)
        if ev:
            row["evaluation"] = ev
            lineage.log_metrics(ev["metrics"], "eval/")
            lineage.log_store_object(ev["results"], "evaluation", name="per_item_results.parquet")
    elif sel and not row["error"]:
        row["error"] = f"{arm['name']} selected no sample; relax its thresholds (selector_overrides) or raise the budget"
    if missing:
        row["error"] = f"scores missing for {', '.join(missing)}"
    if row["error"]:
        lineage.mlflow.set_tag("error", row["error"][:5000])
    lineage.describe(describe_arm(row))
    row["seconds"] = time.perf_counter() - t_arm
    return row


def end_partial_run(params: PipelineParams, result: dict[str, Any]) -> None:
    """A partial run's MLflow parent ends FAILED, not FINISHED, with the missing shards and
    failed methods in tags and its problems first in its description (call it last: logging
    into the run again would reopen it)."""
    if not result["problems"]:
        return
    missing = {name: [g["shard"] for g in m["missing"]] for name, m in result["manifests"].items() if m["missing"]}
    Lineage(params.tracking_uri, params.experiment).end_failed(result["mlflow_run_id"], " ".join(result["problems"]), {
        "syllabus.missing_shards": "; ".join(f"{name}: {', '.join(shards)}" for name, shards in missing.items()),
        "syllabus.failed_methods": ", ".join(r["method"] for r in result["rows"] if r.get("error")),
    })


def problems(result: dict[str, Any]) -> list[str | None]:
    """What keeps a run from being a clean success: missing shards and failed arms, each
    named with how to retry only that."""
    failed = [f"{r['method']}: {r['error']}" for r in result["rows"] if r.get("error")]
    arms = (f"{len(failed)} arm(s) failed: {'; '.join(failed)}. " + retry_hint("redo only what failed")) if failed else None
    return [missing_shards_message(result.get("manifests", {})), arms]


@flow(name="pipeline", log_prints=True, on_cancellation=[end_mlflow_runs_as_killed],
      on_crashed=[end_mlflow_runs_as_failed], on_failure=[end_mlflow_runs_as_failed])
def pipeline(params: PipelineParams = PipelineParams()) -> dict[str, Any]:
    """Score the pool once, then select, fine-tune and evaluate every method at the same budget.

    Ends "Partially failed" (a Failed state carrying the results) when shards are missing or
    an arm failed; its message names them and how to retry only them.

    Args:
        params: the pool, model, methods, budget and every stage's settings (each field is described below).
    """
    check_code_provenance()  # the code that runs is the commit recorded, or the run fails here
    result = run_arms(params, default_arms(params))
    end_partial_run(params, result)
    issues = result.pop("problems")
    result.pop("rows")
    result.pop("manifests")
    result.pop("instances")
    return finish(result, issues)
