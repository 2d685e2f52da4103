"""Threshold search: choose the difficulty band on a validation metric (3DS, arXiv
2410.10901, Appendix H).

The paper tunes the percentile window of the band filter per target model (Baichuan2 15-65,
Qwen 25-75, LLaMA3 40-90) by selecting with each window, fine-tuning, and scoring a
validation set. This module runs that loop: for every ``(low, high)`` window of a grid it
re-runs the recipe with the band selector's window replaced (every other stage unchanged),
hands the selected rows to ``evaluate`` (the expensive part, e.g. fine-tune and score a
validation set; higher = better unless ``maximize=False``) and reports every window tried,
with the band values it used, its counts and its metric, plus the best one. Selection
itself needs no model, so the cost is the callback's.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Iterable

import pandas as pd

from syllabus.selection.base import Budget
from syllabus.selection.recipes import Recipe, run_recipe

log = logging.getLogger(__name__)


def band_windows(widths: Iterable[float] = (50.0,), step: float = 5.0, low_min: float = 0.0, high_max: float = 100.0) -> list[tuple[float, float]]:
    """Every window ``[low, low + width]`` with ``low`` from ``low_min`` in steps of ``step``
    and ``low + width <= high_max``; e.g. width 50, step 5: 0-50, 5-55, ..., 50-100."""
    if step <= 0:
        raise ValueError(f"window step {step} must be positive, e.g. 5 percentile points")
    windows = []
    for width in widths:
        if not (0 < width <= high_max - low_min):
            raise ValueError(f"window width {width} must lie in (0, {high_max - low_min}]")
        low = low_min
        while low + width <= high_max + 1e-9:
            windows.append((round(low, 6), round(low + width, 6)))
            low += step
    return windows


def search_band_windows(
    frame: pd.DataFrame,
    recipe: Recipe,
    evaluate: Callable[[pd.DataFrame], float],
    *,
    budget: Budget | int | None = None,
    seed: int | None = None,
    windows: Iterable[tuple[float, float]] | None = None,
    maximize: bool = True,
) -> dict[str, Any]:
    """Try every percentile window on the recipe's band selector; report all and the best.

    ``evaluate`` receives the selected rows (rank order, with sample_id and every score
    column) and returns the validation metric. A NaN metric never wins.
    """
    band_index = next((i for i, s in enumerate(recipe.selectors) if s.name == "band"), None)
    if band_index is None:
        raise ValueError(f"method {recipe.name!r} has no band selector; the threshold search tunes a band's window")
    grid = list(windows) if windows is not None else band_windows()
    if not grid:
        raise ValueError("the window grid is empty; give at least one (low, high) pair")

    tried: list[dict[str, Any]] = []
    for low, high in grid:
        variant = recipe.with_selector_config(band_index, low=low, high=high)
        result = run_recipe(frame, variant, budget, seed)
        band = result.stages[band_index]
        value = float(evaluate(result.selected_frame()))
        tried.append({
            "low": low,
            "high": high,
            "thresholds": band.thresholds,
            "n_before_band": band.n_in,
            "n_after_band": band.n_out,
            "n_selected": result.n_selected,
            "value": value if math.isfinite(value) else None,
        })
        log.info("band window %g-%g: %d after the band, %d selected, metric %s", low, high, band.n_out, result.n_selected, value)

    scored = [t for t in tried if t["value"] is not None]
    best = None
    if scored:
        # max/min return the first of equal values: ties go to the earlier window in the grid.
        best = (max if maximize else min)(scored, key=lambda t: t["value"])
    return {
        "method": recipe.name,
        "band_selector": band_index + 1,
        "maximize": maximize,
        "seed": recipe.seed if seed is None else seed,
        "windows": tried,
        "best": best,
    }
