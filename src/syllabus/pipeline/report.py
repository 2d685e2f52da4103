"""The pipeline's results table: one row per method (and the base model), side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def _bench_name(spec: str) -> str:
    """The name evaluation gives a benchmark: built-ins by name, files by file name."""
    return Path(spec).name if Path(spec).expanduser().is_file() else spec


def results_table(rows: Sequence[Mapping[str, Any]], benches: Sequence[str]) -> list[dict[str, Any]]:
    """Flatten per-method results into table rows with the headline metrics of each benchmark:
    multiple-choice accuracy with its bootstrap interval, and the reference NLL of open QA."""
    out = []
    for row in rows:
        metrics = (row.get("evaluation") or {}).get("metrics", {})
        ft = row.get("finetune") or {}
        item: dict[str, Any] = {
            "method": row["method"],
            "selected": row.get("n_selected"),
            "candidates": row.get("n_candidates"),
            "train_loss": ft.get("train_loss"),
        }
        for bench in benches:
            name = _bench_name(bench)
            for key, value in metrics.items():
                if not key.startswith(f"{name}/"):
                    continue
                rest = key[len(name) + 1:]
                if rest.endswith("/accuracy") and rest.count("/") == 1:
                    lo, hi = metrics.get(f"{name}/{rest}_ci_low"), metrics.get(f"{name}/{rest}_ci_high")
                    item[f"{name} {rest.split('/')[0]} acc"] = value
                    item[f"{name} {rest.split('/')[0]} 95% CI"] = [lo, hi]
                elif rest == "open_qa/ref_nll":
                    item[f"{name} ref NLL"] = value
        item["seconds"] = round(float(row.get("seconds") or 0.0), 1)
        item["error"] = row.get("error")
        item["mlflow_run_id"] = row.get("mlflow_run_id")
        item["subset"] = ((row.get("selection") or {}).get("outputs") or {}).get("selected")
        if (row.get("evaluation") or {}).get("results"):
            # The per-item results, for analyses across runs (experiments/proof/cross_pool.py).
            item["evaluation"] = row["evaluation"]["results"]
        out.append(item)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return str(value)


def render_table(table: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of the rows (columns in first-seen order, ids and errors left out)."""
    columns: list[str] = []
    for row in table:
        columns += [c for c in row if c not in columns and c not in ("mlflow_run_id", "error", "subset", "evaluation")]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in table:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    errors = [f"- {row['method']}: {row['error']}" for row in table if row.get("error")]
    return "\n".join(lines + ([""] + ["Errors:"] + errors if errors else []))


def results_markdown(table: Sequence[Mapping[str, Any]], ingest: Mapping[str, Any],
                     manifests: Mapping[str, Mapping[str, Any]], timings: Mapping[str, float],
                     problems: Sequence[str] = (), next_step: str | None = None) -> str:
    """The results page: the problems first (missing shards and failed arms, each with its
    error and how to retry only it), then the pool, scorers and table; it ends with "Next:"
    (``next_step``, or the retry when something is missing)."""
    lines = ["# Syllabus pipeline results", ""]
    if problems:
        lines += ["## Partially failed", ""] + [f"- {p}" for p in problems] + [""]
    lines += [
             f"Pool {ingest['pool_fingerprint']}: {ingest['records_ok']} samples in {ingest['shards']} shards "
             f"({ingest['records_rejected']} rejected, {ingest['duplicates']} duplicates).", ""]
    for name, m in manifests.items():
        rate = f", {m['samples_per_second']:.2f} samples/s" if m.get("samples_per_second") else ""
        lines.append(f"- scorer `{name}`: {m['shards_scored']} shards scored, {m['shards_cached']} cached, "
                     f"{len(m['missing'])} missing{rate}")
    lines += ["", render_table(table), "",
              "Time: " + ", ".join(f"{k.replace('_seconds', '')} {v:.0f} s" for k, v in timings.items()), ""]
    lines.append(next_step or ("Next: retry as said above; only what is missing is computed again." if problems else
                               "Next: compare the arms in the MLflow run, or change methods, budget or thresholds "
                               "and run again: committed scores are reused."))
    return "\n".join(lines)
