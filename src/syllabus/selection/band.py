"""Percentile band per metric, intersected: 3DS Stage 2 filter (arXiv 2410.10901).

For each metric ``m`` (default the decomposed difficulties D1, D2, D3; higher = harder),
``lo_m`` and ``hi_m`` are the ``low`` and ``high`` percentiles of ``m`` over the rows this
stage receives (the Stage-1 survivors in 3DS); a row is kept when it lies inside the band of
**every** metric: ``lo_m <= m <= hi_m`` for all ``m`` (inclusive, so ties at a bound are
kept). Percentiles use numpy's default linear interpolation over the rows whose value is
present; rows missing any metric are dropped. Defaults 25-75; the paper tunes the band per
model (Baichuan2 15-65, Qwen 25-75, LLaMA3 40-90).

The stage reports the values used (not only the percentiles), the survivors of each
metric's band alone and of all bands together: the 3DS paper's Table 7 (about 28% of the
per-metric survivors survive all three).
"""

from __future__ import annotations

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


class BandConfig(SelectorConfig):
    metrics: list[str] = Field(default_factory=lambda: ["difficulty_d1", "difficulty_d2", "difficulty_d3"], min_length=1,
                               description="score columns; a row is kept only inside the band of every one")
    low: float = Field(25.0, description="lower edge of each band, a percentile (0-100) over this stage's rows")
    high: float = Field(75.0, description="upper edge of each band, a percentile (0-100) over this stage's rows")

    @model_validator(mode="after")
    def _window(self) -> "BandConfig":
        if not (0.0 <= self.low < self.high <= 100.0):
            raise ValueError(
                f"band percentiles low={self.low}, high={self.high} must satisfy 0 <= low < high <= 100, e.g. 25 and 75"
            )
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"band metrics {self.metrics} name a metric twice; list each once")
        return self


def band_bounds(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """(lo, hi) percentile values over the finite entries; (nan, nan) when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [low, high])
    return float(lo), float(hi)


def select_band(columns: dict[str, np.ndarray], low: float, high: float) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, tuple[float, float]]]:
    """Intersection of per-metric percentile bands.

    Returns (mask kept by all metrics, per-metric masks, per-metric (lo, hi) values).
    """
    per_metric: dict[str, np.ndarray] = {}
    bounds: dict[str, tuple[float, float]] = {}
    n = len(next(iter(columns.values())))
    keep = np.ones(n, dtype=bool)
    for name, values in columns.items():
        lo, hi = band_bounds(values, low, high)
        bounds[name] = (lo, hi)
        # NaN compares False, so missing values and an all-missing metric drop the row.
        mask = (values >= lo) & (values <= hi)
        per_metric[name] = mask
        keep &= mask
    return keep, per_metric, bounds


@registry.selector("band")
class BandSelector(Selector):
    """Keep rows inside the [low, high] percentile band of every metric (3DS Stage 2)."""

    Config = BandConfig
    final = False

    def required_columns(self) -> list[str]:
        return list(self.config.metrics)

    def apply(self, frame: pd.DataFrame, budget: int | None, seed: int) -> StageOutcome:
        cfg = self.config
        require_columns(frame, list(cfg.metrics), self.name)
        columns: dict[str, np.ndarray] = {}
        reasons = np.full(len(frame), None, dtype=object)
        missing_reasons: dict[str, np.ndarray] = {}
        for m in cfg.metrics:
            columns[m], missing_reasons[m] = numeric_values(frame, m, detail_only=True)
        keep, per_metric, bounds = select_band(columns, cfg.low, cfg.high)

        for i in np.flatnonzero(~keep):
            parts = []
            # Metrics missing for the same reason (typically all of one scorer's) share a clause.
            missing: dict[str, list[str]] = {}
            for m in cfg.metrics:
                if not np.isfinite(columns[m][i]):
                    missing.setdefault(missing_reasons[m][i], []).append(m)
            for detail, names in missing.items():
                parts.append(f"{', '.join(names)} missing ({detail})")
            for m in cfg.metrics:
                v = columns[m][i]
                lo, hi = bounds[m]
                if not np.isfinite(v):
                    continue
                elif v < lo:
                    parts.append(f"{m} = {fmt(v)} below the band [{fmt(lo)}, {fmt(hi)}]")
                elif v > hi:
                    parts.append(f"{m} = {fmt(v)} above the band [{fmt(lo)}, {fmt(hi)}]")
            reasons[i] = "; ".join(parts)

        # Distance outside the bands, each in units of its band's width so that metrics on
        # different scales add up; NaN for a row missing any metric (fill: rank skips it).
        distance = np.zeros(len(frame))
        for m in cfg.metrics:
            lo, hi = bounds[m]
            width = hi - lo if np.isfinite(hi - lo) and hi > lo else 1.0
            v = columns[m]
            distance = distance + (np.clip(lo - v, 0.0, None) + np.clip(v - hi, 0.0, None)) / width
        thresholds = {
            m: {"low_percentile": cfg.low, "low": bounds[m][0], "high_percentile": cfg.high, "high": bounds[m][1]}
            for m in cfg.metrics
        }
        per_metric_counts = {m: int(mask.sum()) for m, mask in per_metric.items()}
        n_all = int(keep.sum())
        mean_single = float(np.mean(list(per_metric_counts.values()))) if per_metric_counts else 0.0
        notes = []
        for m in cfg.metrics:
            if not np.isfinite(bounds[m][0]):
                notes.append(f"{m} has no usable values among the {len(frame)} rows; every row was dropped")
        if len(frame) and n_all == 0:
            notes.append("no row lies inside every band; widen the band (low/high) or drop a metric")
        return StageOutcome(
            kept=np.flatnonzero(keep),
            reasons=reasons,
            thresholds=thresholds,
            notes=notes,
            details={
                "per_metric_survivors": per_metric_counts,
                "all_metrics_survivors": n_all,
                # 3DS Table 7: the share of a metric's survivors that survive all bands.
                "all_over_mean_per_metric": (n_all / mean_single) if mean_single else None,
                "kept_ranges": {m: [bounds[m][0], bounds[m][1]] for m in cfg.metrics},
            },
            distance=distance,
        )
