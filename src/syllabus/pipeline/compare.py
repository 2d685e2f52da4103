"""``compare``: every method at the same budget, random over several seeds, difficulty windows,
and one comparison table with intervals.

The arms (``compare_arms``) are run by the pipeline's machinery; this module turns their
per-item evaluation results into the comparison:

- per arm and benchmark metric (multiple-choice accuracy, held-out reference NLL): the value
  with its 95% bootstrap interval, and the **paired** difference against random (the per-item
  mean over the random seeds) with its 95% paired-bootstrap interval: the same items are
  scored by every arm, so the item-to-item variance cancels;
- random's spread over seeds (the selection noise a method has to beat);
- the 3DS paper's analyses on the pool: correlations between D1, D2 and D3, and the share of
  samples inside all three percentile bands of each difficulty window;
- a verdict per arm that says only what the interval supports.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from syllabus.config import deep_merge
from syllabus.evaluation.metrics import bootstrap_ci
from syllabus.store import Store
from syllabus.tracking.names import label, method_label, unique_labels

log = logging.getLogger(__name__)

SEEDED_METHODS = ("random",)
DIFFICULTY = ("difficulty_d1", "difficulty_d2", "difficulty_d3")


# ---------------------------------------------------------------------------------- arms
def compare_arms(methods: Sequence[str], seeds: int, seed: int, overrides: Mapping[str, Mapping[str, Any]],
                 windows: Mapping[str, Sequence[float]], window_method: str = "3ds") -> list[dict[str, Any]]:
    """The arms of a comparison: each method once (``random`` once per seed), then the
    difficulty windows: ``window_method`` with its band selector moved to each window."""
    arms: list[dict[str, Any]] = []
    for method in methods:
        base = dict(overrides.get(method) or {})
        name = method_label(method)  # a recipe file's arm goes by the recipe's name, not its path
        if method in SEEDED_METHODS:
            arms += [{"name": f"{name}@{seed + k}", "method": method, "seed": seed + k, "overrides": base, "group": name}
                     for k in range(seeds)]
        else:
            arms.append({"name": name, "method": method, "seed": seed, "overrides": base, "group": name})
    for window, (low, high) in windows.items():
        arms.append({"name": f"{method_label(window_method)}-{label(window)}", "method": window_method, "seed": seed,
                     "group": "window", "overrides": deep_merge(overrides.get(window_method) or {},
                                                                {"band": {"low": float(low), "high": float(high)}})})
    for arm, unique in zip(arms, unique_labels([a["name"] for a in arms])):
        arm["name"] = unique
    return arms


# -------------------------------------------------------------------- per-item results
def per_item_values(results_url: str) -> dict[str, dict[str, float]]:
    """``{metric: {item_id: value}}`` from a committed evaluation: ``<bench> cloze acc``
    (1/0 per item, for each multiple-choice method) and ``<bench> ref NLL``."""
    store, key = Store.open_url(results_url)
    out: dict[str, dict[str, float]] = {}
    for r in store.read_table(key).to_pylist():
        if r.get("method") == "open_qa":
            if r.get("ref_nll") is not None and np.isfinite(r["ref_nll"]):
                out.setdefault(f"{r['benchmark']} ref NLL", {})[str(r["item_id"])] = float(r["ref_nll"])
        elif r.get("correct") is not None:
            out.setdefault(f"{r['benchmark']} {r['method']} acc", {})[str(r["item_id"])] = float(bool(r["correct"]))
    return out


def item_means(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``{item_id: mean over the seeds}`` for the items every seed has (seeded arms, as one)."""
    common = set.intersection(*(set(p) for p in per_seed)) if per_seed else set()
    return {i: float(np.mean([p[i] for p in per_seed])) for i in common}


def lower_is_better(metric: str) -> bool:
    return metric.endswith("NLL")


def _interval(values: np.ndarray, n_resamples: int, seed: int) -> list[float]:
    lo, hi = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
    return [float(lo), float(hi)]


def verdict(metric: str, ci: Sequence[float]) -> str:
    """What a paired interval of (arm - reference) supports."""
    lo, hi = ci
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undefined"
    if lo <= 0.0 <= hi:
        return "no detectable difference"
    better = hi < 0.0 if lower_is_better(metric) else lo > 0.0
    return "better" if better else "worse"


def paired_delta(metric: str, values: Mapping[str, float], reference: Mapping[str, float], n_resamples: int,
                 seed: int) -> dict[str, Any]:
    """``values - reference`` over the items both have: ``{delta, delta_ci, n_paired, verdict}``
    with the 95% paired-bootstrap interval; ``{}`` when they share no item."""
    diff = np.array([values[i] - reference[i] for i in sorted(set(values) & set(reference))])
    if not diff.size:
        return {}
    ci = _interval(diff, n_resamples, seed)
    return {"delta": float(diff.mean()), "delta_ci": ci, "n_paired": int(diff.size), "verdict": verdict(metric, ci)}


def comparison(rows: Sequence[Mapping[str, Any]], n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The comparison over arms' rows (``method``, ``group``, ``evaluation.results``).

    Returns ``{"metrics": [...], "arms": [{name, group, selected, values: {metric: {value, ci,
    delta, delta_ci, verdict, n}}}], "random": {metric: {mean, sd, min, max, seeds}}}``; the
    reference for the deltas is the per-item mean over the random arms (absent without one).
    """
    items: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        ev = row.get("evaluation") or {}
        if ev.get("results"):
            items[row["method"]] = per_item_values(ev["results"])
    metrics = sorted({m for per in items.values() for m in per})
    randoms = [r["method"] for r in rows if r.get("group") in SEEDED_METHODS and r["method"] in items]

    reference: dict[str, dict[str, float]] = {}
    random_summary: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        per_seed = [items[name].get(metric, {}) for name in randoms]
        if ref := item_means(per_seed):
            reference[metric] = ref
            means = np.array([np.mean(list(p.values())) for p in per_seed])
            random_summary[metric] = {"mean": float(means.mean()), "sd": float(means.std(ddof=1)) if len(means) > 1 else 0.0,
                                      "min": float(means.min()), "max": float(means.max()), "seeds": len(means)}

    arms = []
    for row in rows:
        name = row["method"]
        entry: dict[str, Any] = {"name": name, "group": row.get("group", "base" if name == "base model" else name),
                                 "selected": row.get("n_selected"), "error": row.get("error"), "values": {}}
        for metric in metrics:
            values = items.get(name, {}).get(metric)
            if not values:
                continue
            arr = np.array(list(values.values()))
            cell: dict[str, Any] = {"value": float(arr.mean()), "ci": _interval(arr, n_resamples, seed), "n": int(arr.size)}
            ref = reference.get(metric)
            if ref and name not in randoms:
                cell.update(paired_delta(metric, values, ref, n_resamples, seed))
            entry["values"][metric] = cell
        arms.append(entry)
    return {"metrics": metrics, "arms": arms, "random": random_summary, "reference": "random" if reference else None}


def across_runs(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], n_resamples: int = 2000,
                seed: int = 0) -> list[dict[str, Any]]:
    """The same arms in two comparisons evaluated on the same items (a clean and a noisy pool,
    two models): per arm both share and metric, run ``b`` minus run ``a``, paired per item, with
    its 95% paired-bootstrap interval and verdict (``better`` = ``b`` is better). Rows are
    comparison results rows (``method``, ``evaluation``: the per-item results' URL); seeded arms
    (``random@k``) are one arm, the per-item mean over the seeds both runs share. An arm whose
    evaluations are the same in both runs (the base model) has nothing to compare and is left out."""

    def urls(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for row in rows:
            if row.get("evaluation"):
                seeded = str(row["method"]).split("@")[0]
                out.setdefault(seeded if seeded in SEEDED_METHODS else str(row["method"]), []).append(row["evaluation"])
        return out

    urls_a, urls_b = urls(a), urls(b)
    out = []
    for name in [n for n in urls_a if n in urls_b and sorted(urls_a[n]) != sorted(urls_b[n])]:
        seeds_a, seeds_b = [per_item_values(u) for u in urls_a[name]], [per_item_values(u) for u in urls_b[name]]
        for metric in sorted({m for p in seeds_a + seeds_b for m in p}):
            va, vb = item_means([p.get(metric, {}) for p in seeds_a]), item_means([p.get(metric, {}) for p in seeds_b])
            delta = paired_delta(metric, vb, va, n_resamples, seed)
            if not delta:
                continue
            shared = sorted(set(va) & set(vb))
            out.append({"arm": name, "metric": metric, "seeds": (len(seeds_a), len(seeds_b)),
                        "a": float(np.mean([va[i] for i in shared])), "b": float(np.mean([vb[i] for i in shared])), **delta})
    return out


# ------------------------------------------------------------------- difficulty analyses
def difficulty_analysis(frame: Any, windows: Mapping[str, Sequence[float]], band: Sequence[float] = (25.0, 75.0)) -> dict[str, Any]:
    """The 3DS paper's analyses on the pool's D1, D2, D3 (a DataFrame with those columns):
    Pearson and Spearman correlations, and the share of samples inside all three percentile
    bands for the paper's band and each window."""
    from syllabus.selection.band import band_bounds

    cols = [c for c in DIFFICULTY if c in frame.columns]
    if len(cols) < 3:
        return {}
    data = frame[cols].astype(float)
    data = data[np.isfinite(data).all(axis=1)]
    out: dict[str, Any] = {"n": int(len(data)), "pearson": {}, "spearman": {}, "inside_all_bands": {}}
    if len(data) < 3:
        return out
    for i, a in enumerate(cols):
        for b in cols[i + 1:]:
            pair = f"{a.split('_')[-1].upper()}-{b.split('_')[-1].upper()}"
            out["pearson"][pair] = float(data[a].corr(data[b], method="pearson"))
            out["spearman"][pair] = float(data[a].corr(data[b], method="spearman"))
    for name, (low, high) in {"paper band": tuple(band), **windows}.items():
        inside = np.ones(len(data), dtype=bool)
        for c in cols:
            lo, hi = band_bounds(data[c].to_numpy(), float(low), float(high))
            inside &= (data[c].to_numpy() >= lo) & (data[c].to_numpy() <= hi)
        out["inside_all_bands"][f"{name} [{low:g}, {high:g}]"] = {"count": int(inside.sum()), "share": float(inside.mean())}
    return out


def load_difficulty(score_manifest_url: str) -> Any:
    """The difficulty scores of a pool as a DataFrame (from its score manifest)."""
    from syllabus.selection.scores import load_candidates

    return load_candidates([score_manifest_url]).frame


# --------------------------------------------------------------------------------- plots
def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _interval_panels(metrics: Sequence[str], names: Sequence[str], cell: Callable[[str, str], Any],
                     title: Callable[[str], str]) -> tuple[Any, list[Any]]:
    """One panel per metric and a row per name: ``cell(name, metric)`` gives ``(value, (lo,
    hi), colour)`` (or None: not drawn), ``title(metric)`` the panel's title. Returns the figure
    and its axes, for the reference line each caller draws."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * max(len(metrics), 1), 0.45 * len(names) + 1.6))
    axes = []
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, max(len(metrics), 1), k + 1)
        for y, name in enumerate(names):
            point = cell(name, metric)
            if point:
                value, (lo, hi), colour = point
                ax.errorbar(value, y, xerr=[[value - lo], [hi - value]], fmt="o", color=colour, capsize=3)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(list(names) if k == 0 else [])
        ax.invert_yaxis()
        ax.set_title(title(metric), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        axes.append(ax)
    return fig, axes


def plot_comparison(result: Mapping[str, Any]) -> bytes:
    """One panel per metric: each arm's value with its 95% interval, random's seed mean dashed."""
    metrics = result["metrics"]
    arms = {a["name"]: a for a in result["arms"] if a["values"]}
    colours = {"random": "tab:gray", "window": "tab:purple", "base": "black"}

    def cell(name: str, metric: str) -> Any:
        c = arms[name]["values"].get(metric)
        return c and (c["value"], c["ci"], colours.get(arms[name]["group"], "tab:blue"))

    fig, axes = _interval_panels(metrics, list(arms), cell,
                                 lambda m: m + (" (lower is better)" if lower_is_better(m) else ""))
    for metric, ax in zip(metrics, axes):
        if metric in result["random"]:
            ax.axvline(result["random"][metric]["mean"], color="tab:gray", linestyle="--", linewidth=1)
    return _png(fig)


def plot_across_runs(rows: Sequence[Mapping[str, Any]], labels: Sequence[str] = ("a", "b")) -> bytes:
    """:func:`across_runs` as a picture: one panel per metric, each arm's ``b - a`` with its 95%
    paired interval against a zero line, red where ``b`` is worse, green where it is better."""
    by_cell = {(r["arm"], r["metric"]): r for r in rows}
    metrics = list(dict.fromkeys(r["metric"] for r in rows))

    def cell(arm: str, metric: str) -> Any:
        r = by_cell.get((arm, metric))
        return r and (r["delta"], r["delta_ci"], {"worse": "tab:red", "better": "tab:green"}.get(r["verdict"], "tab:gray"))

    def title(metric: str) -> str:
        return f"{metric}: {labels[1]} - {labels[0]} ({'lower' if lower_is_better(metric) else 'higher'} is better)"

    fig, axes = _interval_panels(metrics, list(dict.fromkeys(r["arm"] for r in rows)), cell, title)
    for ax in axes:
        ax.axvline(0.0, color="black", linewidth=1)
    return _png(fig)


def plot_difficulty(frame: Any, analysis: Mapping[str, Any]) -> bytes:
    """D1-D2, D1-D3 and D2-D3 scatter plots with their Spearman correlations."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8))
    pairs = [(0, 1), (0, 2), (1, 2)]
    for k, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(1, 3, k + 1)
        a, b = DIFFICULTY[i], DIFFICULTY[j]
        ax.scatter(frame[a], frame[b], s=6, alpha=0.5)
        pair = f"D{i + 1}-D{j + 1}"
        rho = analysis.get("spearman", {}).get(pair, float("nan"))
        ax.set_title(f"{pair}: Spearman {rho:.2f}", fontsize=9)
        ax.set_xlabel(f"D{i + 1}")
        ax.set_ylabel(f"D{j + 1}")
    return _png(fig)


def plot_losses(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Training loss per arm: the running mean over a tenth of the arm's optimizer steps (at
    batch 1 a step's loss is one sample's, too noisy to read), on a log step axis when the arms'
    lengths differ five-fold or more (a full arm next to budget arms)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    lengths = []
    for row in rows:
        losses = np.asarray((row.get("finetune") or {}).get("losses") or [], dtype=float)
        if losses.size:
            window = max(1, losses.size // 10)
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(window, losses.size + 1), smooth, label=row["method"], linewidth=1.2)
            lengths.append(losses.size)
    if lengths and max(lengths) >= 5 * min(lengths):
        ax.set_xscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss, running mean\nover a tenth of the arm's steps", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


# ------------------------------------------------------------------------------ report
def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    return f"[{_f(ci[0], digits)}, {_f(ci[1], digits)}]" if ci else "-"


def costs(rows: Sequence[Mapping[str, Any]], score_costs: Mapping[str, Mapping[str, Any]],
          timings: Mapping[str, float]) -> list[dict[str, Any]]:
    """What each stage cost: ``compute`` is the seconds it took when it ran (read back from the
    store for a cached result), ``this_run`` what this run spent on it (a cached stage: reading)."""
    out: list[dict[str, Any]] = [{"stage": "ingest", "compute": None, "this_run": timings.get("ingest_seconds"), "note": ""}]
    for name, c in score_costs.items():
        cached = c.get("shards_cached") or 0
        out.append({"stage": f"score: {name}", "compute": c.get("compute_seconds"), "this_run": c.get("seconds"),
                    "note": f"{c.get('samples')} samples; {c.get('shards_scored', 0)} shards scored, {cached} cached"})
    for row in rows:
        name, ft, ev = row["method"], row.get("finetune"), row.get("evaluation")
        if ft:
            out.append({"stage": f"{name}: fine-tune", "compute": ft.get("compute_seconds"), "this_run": ft.get("seconds"),
                        "note": f"{ft.get('samples')} samples, {ft.get('steps')} steps" + ("; cached" if ft.get("cached") else "")})
        if ev:
            out.append({"stage": f"{name}: evaluation", "compute": (ev.get("metrics") or {}).get("seconds"),
                        "this_run": ev.get("seconds"), "note": "cached" if ev.get("cached") else ""})
    out.append({"stage": "total", "compute": None, "this_run": timings.get("total_seconds"), "note": ""})
    return out


def identical_selections(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Arms that selected the very same samples as an earlier arm: ``{arm: earlier arm}``. Such
    arms differ only in rank order; the report says so, so that their rows are not read as
    independent evidence."""
    from syllabus.selection.scores import read_url_bytes
    from syllabus.store.store import read_parquet_bytes

    first: dict[frozenset, str] = {}
    out: dict[str, str] = {}
    for row in rows:
        selection = row.get("selection") or {}
        if not selection.get("n_selected"):
            continue
        table = read_parquet_bytes(read_url_bytes(selection["outputs"]["selected"]))
        ids = frozenset(table.column("sample_id").to_pylist())
        if ids in first:
            out[row["method"]] = first[ids]
        else:
            first[ids] = row["method"]
    return out


def comparison_markdown(result: Mapping[str, Any], analysis: Mapping[str, Any], setup: Mapping[str, Any],
                        costs: Sequence[Mapping[str, Any]], plots: Sequence[str] = (), defects: str = "",
                        identical: Mapping[str, str] | None = None) -> str:
    """The comparison report: set-up, the table with intervals, paired deltas against random
    with verdicts, random's seed spread, the defect-avoidance tables (``defects``, Markdown),
    the difficulty analyses, costs and plots."""
    metrics = result["metrics"]
    lines = ["# Syllabus comparison", ""]
    lines += [f"- {k}: {v}" for k, v in setup.items()] + [""]
    lines += ["## Results", "",
              "Each cell: mean over the evaluation items [95% bootstrap interval]. "
              + ("Δ random: the paired difference against the per-item mean of the random seeds [95% paired-bootstrap "
                 "interval]; NLL: lower is better." if result.get("reference") else "No random arm: no paired differences."), ""]
    header = ["arm", "selected"] + [h for m in metrics for h in (m, f"Δ random ({m})")]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for arm in result["arms"]:
        cells = [arm["name"], _f(arm.get("selected"))]
        for m in metrics:
            c = arm["values"].get(m)
            cells.append(f"{_f(c['value'])} {_ci(c['ci'])}" if c else "-")
            cells.append(f"{c['delta']:+.3f} {_ci(c['delta_ci'])} {c['verdict']}" if c and "delta" in c else "-")
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {a['name']}: {a['error']}" for a in result["arms"] if a.get("error")]
    if errors:
        lines += ["", "Errors:"] + errors
    if result["random"]:
        lines += ["", "## Random over seeds", "", "| metric | seeds | mean | sd | min | max |", "|---|---|---|---|---|---|"]
        for m, s in result["random"].items():
            lines.append(f"| {m} | {s['seeds']} | {_f(s['mean'])} | {_f(s['sd'])} | {_f(s['min'])} | {_f(s['max'])} |")
    if defects:
        lines += ["", defects.replace("### Defect avoidance", "## Defect avoidance", 1).rstrip()]
    if analysis:
        lines += ["", "## Decomposed difficulty on this pool", "",
                  f"{analysis['n']} samples with all three difficulties.", "",
                  "| pair | Pearson | Spearman |", "|---|---|---|"]
        lines += [f"| {p} | {_f(analysis['pearson'][p])} | {_f(analysis['spearman'][p])} |" for p in analysis["pearson"]]
        lines += ["", "| percentile window (each of D1, D2, D3) | inside all three | share |", "|---|---|---|"]
        lines += [f"| {w} | {v['count']} | {v['share']:.1%} |" for w, v in analysis["inside_all_bands"].items()]
    if identical:
        lines += ["", "## Identical selections", "",
                  "These arms selected exactly the samples of another arm (only the rank order may differ): their "
                  "rows are one result, not two.", ""]
        lines += [f"- {arm} = {same}" for arm, same in identical.items()]
    lines += ["", "## Cost", "", "Seconds each stage took when it ran; a cached stage was only read back in this run.", "",
              "| stage | compute (s) | this run (s) | note |", "|---|---|---|---|"]
    lines += [f"| {c['stage']} | {_seconds(c['compute'])} | {_seconds(c['this_run'])} | {c['note']} |" for c in costs]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path | None, store: Store, key_prefix: str, files: Mapping[str, bytes]) -> dict[str, str]:
    """Commit the report's files to the store (and copy them into ``out_dir`` if given);
    returns where each landed."""
    where: dict[str, str] = {}
    for name, data in files.items():
        store.commit(f"{key_prefix}/{name}", data, {"kind": "comparison"})
        where[name] = store.url(f"{key_prefix}/{name}")
        if out_dir:
            path = Path(out_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            where[name] = str(path)
    return where


def to_json(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True, default=str).encode("utf-8")
