"""Pictures of a selection, as PNG bytes (matplotlib's Agg canvas; no pyplot, no display).

- ``score_distributions``: one histogram per thresholded metric over the rows its stage
  received, the kept range shaded;
- ``quadrants``: the DIQ difficulty x influence scatter with the splits drawn and the chosen
  points marked;
- ``correlations``: Pearson and Spearman matrices of the band metrics over the band stage's
  input (3DS Table 6: mostly below 0.3) next to the survivors of each metric's band alone
  and of all of them (3DS Table 7: about 28% of a metric's survivors survive all three).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from syllabus.selection.recipes import SelectionResult

_KEPT = "#2a9d8f"
_DROPPED = "#bbbbbb"
_CHOSEN = "#e76f51"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def score_distributions(result: SelectionResult) -> bytes | None:
    panels = []
    for stage, inputs in zip(result.stages, result.stage_inputs):
        for column, (lo, hi) in (stage.details.get("kept_ranges") or {}).items():
            rows = result.candidates.iloc[inputs]
            values = _numeric(rows, column) if column in rows else np.array([])
            panels.append((stage, column, lo, hi, values))
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.6 * nrows))
    for k, (stage, column, lo, hi, values) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        else:
            # Perplexity-like metrics (D1..D3 are exp of a mean NLL) can span orders of
            # magnitude; a linear axis would squeeze everything into one bar.
            log_x = bool(finite.min() > 0 and finite.max() / np.median(finite) > 20)
            bins = np.geomspace(finite.min(), finite.max(), 41) if log_x else 40
            ax.hist(finite, bins=bins, color="#457b9d", alpha=0.85)
            if log_x:
                ax.set_xscale("log")
            left = lo if lo is not None and np.isfinite(lo) else finite.min()
            right = hi if hi is not None and np.isfinite(hi) else finite.max()
            ax.axvspan(left, right, color=_KEPT, alpha=0.25, label="kept")
            for bound in (lo, hi):
                if bound is not None and np.isfinite(bound):
                    ax.axvline(bound, color=_KEPT, lw=1.5)
            inside = int(((finite >= left) & (finite <= right)).sum())
            lo_txt = f"{lo:.4g}" if lo is not None else "-inf"
            hi_txt = f"{hi:.4g}" if hi is not None else "+inf"
            ax.set_title(
                f"{column}  [stage {stage.index} {stage.selector}]\nkept range [{lo_txt}, {hi_txt}]: "
                f"{inside:,} of {finite.size:,} in range",
                fontsize=9,
            )
        ax.set_xlabel(column + (" (log scale)" if finite.size and ax.get_xscale() == "log" else ""))
        ax.set_ylabel("samples")
    fig.suptitle(f"{result.method}: score distributions over each stage's input (shaded = kept)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def quadrants(result: SelectionResult) -> bytes | None:
    for stage, inputs, outcome in zip(result.stages, result.stage_inputs, result.outcomes):
        if stage.selector == "quadrant":
            break
    else:
        return None
    cfg = stage.config
    rows = result.candidates.iloc[inputs]
    d = _numeric(rows, cfg["difficulty_column"])
    dot = _numeric(rows, cfg["influence_column"])
    labels = outcome.details["labels"]
    usable = labels > 0
    chosen = np.zeros(len(rows), dtype=bool)
    chosen[outcome.kept] = True
    d_split = stage.thresholds[cfg["difficulty_column"]]["split"]
    i_split = stage.thresholds[cfg["influence_column"]]["value"]

    fig = Figure(figsize=(7.5, 6))
    ax = fig.add_subplot(1, 1, 1)
    # Jitter only the drawing of integer-valued difficulties so stacked points stay visible.
    jitter = np.zeros_like(d)
    if usable.any() and np.allclose(d[usable], np.round(d[usable])):
        jitter = np.random.default_rng(0).uniform(-0.12, 0.12, d.size)
    ax.scatter(d[usable & ~chosen] + jitter[usable & ~chosen], dot[usable & ~chosen], s=8, c=_DROPPED, label="not chosen")
    ax.scatter(d[chosen] + jitter[chosen], dot[chosen], s=14, c=_CHOSEN, edgecolors="k", linewidths=0.3, label="chosen")
    if np.isfinite(d_split):
        # With integer difficulties "high" is ">= split", so the boundary lies half a step below.
        ax.axvline(d_split - 0.5 if jitter.any() else d_split, color="k", lw=1, ls="--")
    if np.isfinite(i_split):
        ax.axhline(i_split, color="k", lw=1, ls="--")
    sizes = stage.details["quadrant_sizes"]
    picked = stage.details["chosen_per_quadrant"]
    corners = {"Q1": (0.98, 0.98, "right", "top"), "Q2": (0.02, 0.98, "left", "top"),
               "Q3": (0.98, 0.02, "right", "bottom"), "Q4": (0.02, 0.02, "left", "bottom")}
    names = {"Q1": "hard, influential", "Q2": "easy, influential", "Q3": "hard, low influence", "Q4": "easy, low influence"}
    for q, (x, y, ha, va) in corners.items():
        ax.text(x, y, f"{q} ({names[q]})\nchosen {picked[q]:,} of {sizes[q]:,}", transform=ax.transAxes,
                ha=ha, va=va, fontsize=9, bbox=dict(boxstyle="round", fc="white", alpha=0.8))
    ax.set_xlabel(f"{cfg['difficulty_column']} (high if >= p{cfg['tau_d']:g} = {d_split:.4g})")
    ax.set_ylabel(f"{cfg['influence_column']} (high if >= the median = {i_split:.4g})")
    ax.set_title(f"{result.method}: DIQ quadrants, {result.n_selected:,} chosen of {int(usable.sum()):,}\n"
                 "filled Q1, Q2, Q3, Q4; inside by influence then difficulty", fontsize=10)
    ax.legend(loc="upper center", fontsize=8, ncols=2)
    fig.tight_layout()
    return _png(fig)


def correlations(result: SelectionResult) -> bytes | None:
    band = next(((s, i) for s, i in zip(result.stages, result.stage_inputs) if s.selector == "band"), None)
    if band is not None:
        stage, inputs = band
        metrics = list(stage.config["metrics"])
        rows = result.candidates.iloc[inputs]
    else:
        stage = None
        rows = result.candidates
        metrics = [c for c in rows.columns if c != "sample_id" and not c.endswith("_status")
                   and pd.api.types.is_numeric_dtype(rows[c]) and rows[c].notna().any()]
    if len(metrics) < 2:
        return None
    values = pd.DataFrame({m: _numeric(rows, m) for m in metrics}).dropna()
    pearson = values.corr(method="pearson")
    spearman = values.corr(method="spearman")

    ncols = 3 if stage is not None else 2
    fig = Figure(figsize=(4.6 * ncols + 0.6, 4.4))
    for k, (title, mat) in enumerate((("Pearson", pearson), ("Spearman", spearman))):
        ax = fig.add_subplot(1, ncols, k + 1)
        image = ax.imshow(mat.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
        short = [m.split("_")[-1] if m.startswith("difficulty_") else m for m in metrics]
        ax.set_xticks(range(len(metrics)), short, rotation=30, ha="right", fontsize=9)
        ax.set_yticks(range(len(metrics)), short, fontsize=9)
        for i in range(len(metrics)):
            for j in range(len(metrics)):
                v = mat.iat[i, j]
                ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center",
                        fontsize=10, color="white" if np.isfinite(v) and abs(v) > 0.6 else "black")
        ax.set_title(f"{title} (n = {len(values):,})", fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if stage is not None:
        ax = fig.add_subplot(1, ncols, 3)
        per = stage.details["per_metric_survivors"]
        labels = [m.split("_")[-1] if m.startswith("difficulty_") else m for m in per] + ["all"]
        counts = list(per.values()) + [stage.details["all_metrics_survivors"]]
        bars = ax.bar(labels, counts, color=[_KEPT] * len(per) + [_CHOSEN])
        for bar, c in zip(bars, counts):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{c:,}", ha="center", va="bottom", fontsize=9)
        share = stage.details.get("all_over_mean_per_metric")
        share_txt = f"{share:.0%}" if share is not None else "n/a"
        ax.set_title(f"band p{stage.config['low']:g}-p{stage.config['high']:g} survivors of {stage.n_in:,}\n"
                     f"all bands / mean single band = {share_txt}", fontsize=10)
        ax.set_ylabel("samples")
        ax.margins(y=0.15)
    fig.suptitle(f"{result.method}: metric correlations over {'the band stage input' if stage else 'all candidates'}",
                 fontsize=11)
    fig.tight_layout()
    return _png(fig)


def all_plots(result: SelectionResult) -> dict[str, bytes]:
    """name -> PNG bytes for every picture that applies to this selection."""
    out = {}
    for name, fn in (("score_distributions.png", score_distributions), ("diq_quadrants.png", quadrants),
                     ("metric_correlations.png", correlations)):
        png = fn(result)
        if png is not None:
            out[name] = png
    return out
