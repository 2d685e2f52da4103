"""Quality threshold: 3DS Stage 1 (Ding et al., EMNLP 2025; arXiv 2410.10901).

Keep samples whose model-rated quality is at least ``delta`` (``quality_score >= delta``;
higher = better; the paper uses delta = 90, its code 85). Both bounds are inclusive, so a
sample exactly at the threshold is kept. Rows with a missing score (status not ``ok``,
NaN) are dropped with their status in the reason.

``min_percentile`` (ours): when set, the lower threshold is that percentile of the column
over the rows this stage receives (numpy's linear interpolation) and ``min_value`` is not
used. A small rater compresses its scale (SmolLM2-135M rated 24 demo samples between 19
and 35), so an absolute delta of 90 can keep nothing; a percentile keeps the top share.
The value actually used is reported either way. ``max_percentile`` (ours) likewise sets the
upper threshold: ``{column: ifd_nll_alone, min_value: null, max_percentile: 90}`` drops the
tenth of the rows whose answer the target model finds least likely (a perplexity filter).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from syllabus import registry
from syllabus.selection.base import (
    Selector,
    SelectorConfig,
    StageOutcome,
    fmt,
    numeric_values,
    require_columns,
)

log = logging.getLogger(__name__)


class ThresholdConfig(SelectorConfig):
    column: str = Field("quality_score", description="the score column compared with the bounds")
    min_value: float | None = Field(90.0, description="keep rows with column >= this (inclusive); null for no lower "
                                    "bound; ignored when min_percentile is set")
    max_value: float | None = Field(None, description="keep rows with column <= this (inclusive); null for no upper "
                                    "bound; ignored when max_percentile is set")
    min_percentile: float | None = Field(None, ge=0.0, le=100.0, description="lower bound as a percentile (0-100) of "
                                         "the column over this stage's rows, instead of min_value")
    max_percentile: float | None = Field(None, ge=0.0, le=100.0, description="upper bound as a percentile (0-100) of "
                                         "the column over this stage's rows, instead of max_value")

    @model_validator(mode="after")
    def _bounds(self) -> "ThresholdConfig":
        if (self.min_value is None and self.max_value is None and self.min_percentile is None
                and self.max_percentile is None):
            raise ValueError("a threshold needs min_value, min_percentile, max_value, max_percentile or a combination")
        if (self.min_percentile is not None and self.max_percentile is not None
                and self.min_percentile > self.max_percentile):
            raise ValueError(f"threshold min_percentile {self.min_percentile} is above max_percentile "
                             f"{self.max_percentile}; swap them")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError(f"threshold min_value {self.min_value} is above max_value {self.max_value}; swap them")
        return self


def select_threshold(values: np.ndarray, min_value: float | None, max_value: float | None) -> np.ndarray:
    """Boolean mask of ``min_value <= v <= max_value`` (NaN never passes)."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    if min_value is not None:
        keep &= values >= min_value
    if max_value is not None:
        keep &= values <= max_value
    return keep


@registry.selector("threshold")
class ThresholdSelector(Selector):
    """Keep rows with ``min_value <= column <= max_value`` (3DS: quality_score >= 90)."""

    Config = ThresholdConfig
    final = False

    def required_columns(self) -> list[str]:
        return [self.config.column]

    def apply(self, frame: pd.DataFrame, budget: int | None, seed: int) -> StageOutcome:
        cfg = self.config
        require_columns(frame, [cfg.column], self.name)
        values, reasons = numeric_values(frame, cfg.column)
        low, high = cfg.min_value, cfg.max_value
        finite = values[np.isfinite(values)]
        if cfg.min_percentile is not None:
            low = float(np.percentile(finite, cfg.min_percentile)) if finite.size else float("inf")
        if cfg.max_percentile is not None:
            high = float(np.percentile(finite, cfg.max_percentile)) if finite.size else float("-inf")
        keep = select_threshold(values, low, high)
        for i in np.flatnonzero(~keep & np.isfinite(values)):
            v = values[i]
            if low is not None and v < low:
                reasons[i] = f"{cfg.column} = {fmt(v)} < {fmt(low)}"
            else:
                reasons[i] = f"{cfg.column} = {fmt(v)} > {fmt(high)}"
        # How far outside the bounds each row lies (fill: rank takes the nearest first).
        distance = np.where(np.isfinite(values), 0.0, np.nan)
        if low is not None:
            distance = distance + np.clip(low - values, 0.0, None)
        if high is not None:
            distance = distance + np.clip(values - high, 0.0, None)
        thresholds = {cfg.column: {"min": low, "max": high}}
        for name in ("min_percentile", "max_percentile"):
            if getattr(cfg, name) is not None:
                thresholds[cfg.column][name] = getattr(cfg, name)
        notes = []
        if len(frame) and not keep.any() and np.isfinite(values).any():
            notes.append(
                f"no row reaches {cfg.column} >= {fmt(low)} (the highest is {fmt(np.nanmax(values))}); "
                "lower min_value (e.g. --set threshold.min_value=...) or use min_percentile"
            )
        n_missing = int((~np.isfinite(values)).sum())
        if n_missing:
            notes.append(f"{n_missing} rows had no usable {cfg.column} and were dropped")
        return StageOutcome(
            kept=np.flatnonzero(keep),
            reasons=reasons,
            thresholds=thresholds,
            notes=notes,
            details={"kept_ranges": {cfg.column: [low, high]}},
            distance=distance,
        )
