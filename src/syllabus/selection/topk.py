"""Top-k by any score column: the IFD and LESS baselines.

- IFD (Li et al., NAACL 2024; arXiv 2308.12032): ``ifd_score = mean NLL(y | P) / mean NLL(y)``;
  samples with IFD > 1 (the instruction does not help at all) are dropped first, then the
  highest IFD is taken (higher = harder to follow the instruction = more useful).
- LESS (Xia et al., ICML 2024; arXiv 2402.04333): ``influence_less``, highest first.

Ties are broken by sample_id (ascending) so the order is total and reproducible.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from syllabus import registry
from syllabus.selection.base import (
    Selector,
    SelectorConfig,
    StageOutcome,
    fewer_than_budget_note,
    fmt,
    numeric_values,
    require_columns,
    tie_order,
)


class TopKConfig(SelectorConfig):
    column: str = Field(description="the score column to rank by (required)")
    descending: bool = Field(True, description="highest first; false ranks lowest first")
    drop_above: float | None = Field(None, description="drop rows with column above this before ranking "
                                     "(IFD: 1.0, the instruction does not help)")
    drop_below: float | None = Field(None, description="drop rows with column below this before ranking")


def top_k_order(values: np.ndarray, descending: bool = True, tie: np.ndarray | None = None) -> np.ndarray:
    """Positions of the finite values sorted best first, ties by ``tie`` rank."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    tie = np.arange(n) if tie is None else np.asarray(tie)
    tie_rank = np.empty(n, dtype=np.int64)
    tie_rank[tie] = np.arange(n)
    pos = np.flatnonzero(np.isfinite(values))
    key = -values[pos] if descending else values[pos]
    return pos[np.lexsort((tie_rank[pos], key))]


@registry.selector("topk")
class TopKSelector(Selector):
    """Keep the ``budget`` rows with the highest (or lowest) ``column``."""

    Config = TopKConfig
    final = True

    def required_columns(self) -> list[str]:
        return [self.config.column]

    def apply(self, frame: pd.DataFrame, budget: int | None, seed: int) -> StageOutcome:
        cfg = self.config
        require_columns(frame, [cfg.column], self.name)
        if budget is None:
            raise ValueError("topk needs a budget; pass --budget N or --ratio R")
        values, reasons = numeric_values(frame, cfg.column)
        notes = []
        n_missing = int((~np.isfinite(values)).sum())
        if n_missing:
            notes.append(f"{n_missing} rows had no usable {cfg.column} and were dropped")
        usable = values.copy()
        if cfg.drop_above is not None:
            over = np.isfinite(values) & (values > cfg.drop_above)
            for i in np.flatnonzero(over):
                reasons[i] = f"{cfg.column} = {fmt(values[i])} > {fmt(cfg.drop_above)} (dropped before ranking)"
            usable[over] = np.nan
            notes.append(f"{int(over.sum())} rows with {cfg.column} > {fmt(cfg.drop_above)} were dropped before ranking")
        if cfg.drop_below is not None:
            under = np.isfinite(values) & (values < cfg.drop_below)
            for i in np.flatnonzero(under):
                reasons[i] = f"{cfg.column} = {fmt(values[i])} < {fmt(cfg.drop_below)} (dropped before ranking)"
            usable[under] = np.nan
            notes.append(f"{int(under.sum())} rows with {cfg.column} < {fmt(cfg.drop_below)} were dropped before ranking")
        # fill: rank takes back the rows nearest the drop bounds first, never a missing value.
        distance = np.where(np.isfinite(values), 0.0, np.nan)
        if cfg.drop_above is not None:
            distance = distance + np.clip(values - cfg.drop_above, 0.0, None)
        if cfg.drop_below is not None:
            distance = distance + np.clip(cfg.drop_below - values, 0.0, None)
        order = top_k_order(usable, cfg.descending, tie_order(frame))
        kept = order[:budget]
        if order.size <= budget:
            notes.append(fewer_than_budget_note(int(order.size), budget, self.name))
        cut = float(usable[kept[-1]]) if kept.size else float("nan")
        for p in order[budget:]:
            reasons[p] = f"{cfg.column} = {fmt(usable[p])} ranked below the top {budget}"
        return StageOutcome(
            kept=kept,
            reasons=reasons,
            thresholds={cfg.column: {"drop_above": cfg.drop_above, "drop_below": cfg.drop_below, "last_kept_value": cut}},
            notes=notes,
            # The values actually chosen: from the last kept value to the drop bound.
            details={"kept_ranges": {cfg.column: [cut, cfg.drop_above] if cfg.descending else [cfg.drop_below, cut]}},
            distance=distance,
        )
