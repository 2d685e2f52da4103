"""Quality threshold: 3DS Stage 1 (Ding et al., EMNLP 2025; arXiv 2410.10901).

Keep samples whose model-rated quality is at least ``delta`` (``quality_score >= delta``;
higher = better; the paper uses delta = 90, its code 85). Both bounds are inclusive, so a
sample exactly at the threshold is kept. Rows with a missing score (status not ``ok``,
NaN) are dropped with their status in the reason.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pydantic import model_validator

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
    column: str = "quality_score"
    min_value: float | None = 90.0
    max_value: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "ThresholdConfig":
        if self.min_value is None and self.max_value is None:
            raise ValueError("a threshold needs min_value, max_value or both")
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


class ThresholdSelector(Selector):
    """Keep rows with ``min_value <= column <= max_value`` (3DS: quality_score >= 90)."""

    name = "threshold"
    Config = ThresholdConfig
    final = False

    def required_columns(self) -> list[str]:
        return [self.config.column]

    def apply(self, frame: pd.DataFrame, budget: int | None, seed: int) -> StageOutcome:
        cfg = self.config
        require_columns(frame, [cfg.column], self.name)
        values, reasons = numeric_values(frame, cfg.column)
        keep = select_threshold(values, cfg.min_value, cfg.max_value)
        for i in np.flatnonzero(~keep & np.isfinite(values)):
            v = values[i]
            if cfg.min_value is not None and v < cfg.min_value:
                reasons[i] = f"{cfg.column} = {fmt(v)} < {fmt(cfg.min_value)}"
            else:
                reasons[i] = f"{cfg.column} = {fmt(v)} > {fmt(cfg.max_value)}"
        thresholds = {cfg.column: {"min": cfg.min_value, "max": cfg.max_value}}
        notes = []
        n_missing = int((~np.isfinite(values)).sum())
        if n_missing:
            notes.append(f"{n_missing} rows had no usable {cfg.column} and were dropped")
        return StageOutcome(
            kept=np.flatnonzero(keep),
            reasons=reasons,
            thresholds=thresholds,
            notes=notes,
            details={"kept_ranges": {cfg.column: [cfg.min_value, cfg.max_value]}},
        )
