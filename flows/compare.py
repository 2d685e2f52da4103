"""``compare``: every method at one budget (random over several seeds) and a sliding difficulty
window, fine-tuned with the same settings, evaluated on the same items, and one comparison
table with intervals in MLflow, in the store and as a Markdown report."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow

from syllabus_flows.hooks import end_mlflow_runs_as_failed, end_mlflow_runs_as_killed
from syllabus_flows.outcome import finish, publish
from syllabus_flows.pipeline import end_partial_run, run_arms
from syllabus.pipeline import compare as C
from syllabus.pipeline.config import CompareParams
from syllabus.selection.defects import audit_markdown, audit_metrics, audit_url, load_labels, plot_audit
from syllabus.store import Store
from syllabus.tracking.lineage import Lineage
from syllabus.tracking.provenance import check_code_provenance

log = logging.getLogger("flows.compare")  # not __name__: a deployment loads this file as module "compare"


def _band(params: CompareParams) -> tuple[float, float]:
    from syllabus.selection.recipes import load_recipe

    recipe = load_recipe(params.window_method)
    band = next((s.config for s in recipe.selectors if s.name == "band"), None)
    if band is None:
        raise ValueError(f"window_method {params.window_method!r} has no band selector to slide; use 3ds or set windows: {{}}")
    changes = (params.selector_overrides.get(params.window_method) or {}).get("band", {})
    band = {"low": 25.0, "high": 75.0, **band, **changes}
    return float(band["low"]), float(band["high"])


@flow(name="compare", log_prints=True, on_cancellation=[end_mlflow_runs_as_killed],
      on_crashed=[end_mlflow_runs_as_failed], on_failure=[end_mlflow_runs_as_failed])
def compare(params: CompareParams = CompareParams()) -> dict[str, Any]:
    """Run every arm, then build, log and return the comparison (ends "Partially failed",
    the comparison still in its data, when shards are missing or an arm failed).

    Args:
        params: the pool, model, methods, budget, random seeds, difficulty windows and every stage's settings.
    """
    check_code_provenance()  # the code that runs is the commit recorded, or the run fails here
    band = _band(params) if params.windows else (25.0, 75.0)
    arms = C.compare_arms(params.methods, params.seeds, params.seed, params.selector_overrides, params.windows,
                          params.window_method)
    result = run_arms(params, arms, title="compare")
    groups = {a["name"]: a["group"] for a in arms}
    for row in result["rows"]:
        row["group"] = groups.get(row["method"], "base")

    table = C.comparison(result["rows"], seed=params.seed)
    analysis: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    difficulty = _difficulty_instance(result, params.window_method)
    if difficulty:
        frame = C.load_difficulty(result["scores"][difficulty])
        analysis = C.difficulty_analysis(frame, params.windows, band)
        if analysis.get("n", 0) >= 3:
            files["difficulty.png"] = C.plot_difficulty(frame, analysis)
    if table["metrics"]:
        files["comparison.png"] = C.plot_comparison(table)
    if any((r.get("finetune") or {}).get("losses") for r in result["rows"]):
        files["training_loss.png"] = C.plot_losses(result["rows"])
    pool = result["pool"]
    budget = params.budget.model_dump(exclude_none=True)
    setup = {
        "pool": f"{pool['records_ok']} samples in {pool['shards']} shards (fingerprint {pool['pool_fingerprint']})",
        "model": params.model,
        "budget": ", ".join(f"{k} {v}" for k, v in budget.items()) + f"; random over {params.seeds} seeds",
        "windows": ", ".join(f"{k} {list(v)}" for k, v in params.windows.items()) or "none",
        "fine-tuning": params.finetune.model_dump(mode="json", exclude_defaults=True),
        "evaluation": f"{', '.join(Path(b).name for b in result['benches'])}; "
                      f"{params.eval.model_dump(mode='json', exclude_defaults=True)}",
        "MLflow run": result["mlflow_run_url"],
    }
    audits = _audit_defects(params, result["rows"])
    if audits:
        files["defects.png"] = plot_audit(audits)
        setup["defect labels"] = params.labels
    costs = C.costs(result["rows"], result["score_costs"], result["timings"])
    notes = {r["method"]: (r.get("selection") or {}).get("notes", []) for r in result["rows"] if r["method"] in audits}
    identical = C.identical_selections(result["rows"])
    markdown = C.comparison_markdown(table, analysis, setup, costs, [n for n in files if n.endswith(".png")],
                                     defects=audit_markdown(audits, notes), identical=identical)
    files = {"report.md": markdown.encode("utf-8"), "comparison.json": C.to_json({"comparison": table, "difficulty": analysis,
             "defects": audits, "identical_selections": identical, "setup": setup, "costs": costs, "timings": result["timings"], "results": result["results"]}),
             **files}
    where = C.write_report(params.report_dir, Store(params.store), f"comparisons/{result['mlflow_run_id']}", files)

    lineage = Lineage(params.tracking_uri, params.experiment)
    with lineage.mlflow.start_run(run_id=result["mlflow_run_id"]), tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        lineage.mlflow.log_artifacts(tmp, "comparison")
        for pair, rho in analysis.get("spearman", {}).items():
            lineage.log_metrics({f"difficulty/spearman_{pair}": rho})
    for row in result["rows"]:
        if row["method"] in audits and row.get("mlflow_run_id"):
            with lineage.mlflow.start_run(run_id=row["mlflow_run_id"]):
                lineage.log_metrics(audit_metrics(audits[row["method"]]))
    for arm in table["arms"]:
        run_id = next((r.get("mlflow_run_id") for r in result["rows"] if r["method"] == arm["name"]), None)
        if run_id and arm["values"]:
            with lineage.mlflow.start_run(run_id=run_id):
                for metric, cell in arm["values"].items():
                    name = metric.replace(" ", "_")
                    lineage.log_metrics({f"{name}/value": cell["value"], f"{name}/delta_vs_random": cell.get("delta", float("nan"))},
                                        "compare/")
    next_step = ("Next: retry as the run's message says; only what is missing is computed again." if result["problems"]
                 else f"Next: read the report ({where.get('report.md') or 'comparison/report.md'}) and the arms in the "
                      f"MLflow run ({result['mlflow_run_url']}).")
    publish(markdown=f"{markdown}\n\n{next_step}", key="comparison", description="Syllabus comparison")
    end_partial_run(params, result)
    return finish({**{k: result[k] for k in ("results", "mlflow_run_id", "mlflow_run_url", "mlflow_tracking_uri", "scores", "timings")},
            "comparison": table, "difficulty": analysis, "costs": costs, "report": where, "markdown": markdown,
            "defects": audits}, result["problems"])


def _difficulty_instance(result: dict[str, Any], window_method: str) -> str | None:
    """The difficulty scores the analysis reads: the window method's, else any run's."""
    from syllabus.plan import scorer_of

    ours = [i for i in result["instances"].get(window_method, []) if scorer_of(i) == "difficulty"]
    return next(iter(ours or [i for i in result["scores"] if scorer_of(i) == "difficulty"]), None)


def _audit_defects(params: CompareParams, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each arm's defect-avoidance audit from its committed selection (needs only scores)."""
    if not params.labels:
        return {}
    labels = load_labels(params.labels)
    return {row["method"]: audit_url(row["selection"]["outputs"]["candidates"], labels, row["selection"].get("stages", []),
                                     params.labels)
            for row in rows if row.get("selection")}
