"""DIQ, the Difficulty-Influence Quadrant (arXiv 2508.01450).

Difficulty ``D`` (``diq_difficulty_score``, 1-5, higher = harder) is split at its ``tau_d``
percentile and influence ``Dot`` (``influence_dot``, the projected training gradient dotted
with the mean validation gradient, higher = more helpful) at its median, both computed over
the rows that have both values. High means ``>=`` the split (ours: inclusive, so with
integer difficulties a tie at the split counts as high). The budget is filled in the order

    Q1 (high D, high Dot), Q2 (low D, high Dot), Q3 (high D, low Dot), Q4 (low D, low Dot),

and inside a quadrant by ``Dot`` descending, ties by ``D`` descending, then by sample_id
(ours, so the order is total).
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

QUADRANT_NAMES = ("Q1", "Q2", "Q3", "Q4")


class QuadrantConfig(SelectorConfig):
    difficulty_column: str = Field("diq_difficulty_score", description="difficulty score column (higher = harder)")
    influence_column: str = Field("influence_dot", description="influence score column (higher = more helpful); "
                                  "split at its median")
    tau_d: float = Field(50.0, ge=0.0, le=100.0, description="difficulty split, a percentile")


def quadrant_order(difficulty: np.ndarray, influence: np.ndarray, tau_d: float, tie: np.ndarray | None = None):
    """Rank every row with both values by the DIQ rule.

    Returns (order of usable positions, quadrant label 1..4 per row (0 = unusable),
    difficulty split value, influence split value).
    """
    difficulty = np.asarray(difficulty, dtype=np.float64)
    influence = np.asarray(influence, dtype=np.float64)
    n = difficulty.size
    tie = np.arange(n) if tie is None else np.asarray(tie)
    usable = np.isfinite(difficulty) & np.isfinite(influence)
    labels = np.zeros(n, dtype=np.int64)
    if not usable.any():
        return np.empty(0, dtype=np.int64), labels, float("nan"), float("nan")
    d_split = float(np.percentile(difficulty[usable], tau_d))
    i_split = float(np.median(influence[usable]))
    high_d = difficulty >= d_split
    high_i = influence >= i_split
    labels[usable & high_d & high_i] = 1
    labels[usable & ~high_d & high_i] = 2
    labels[usable & high_d & ~high_i] = 3
    labels[usable & ~high_d & ~high_i] = 4
    tie_rank = np.empty(n, dtype=np.int64)
    tie_rank[tie] = np.arange(n)
    pos = np.flatnonzero(usable)
    # np.lexsort sorts by the last key first: quadrant, then -Dot, then -D, then sample_id.
    order = pos[np.lexsort((tie_rank[pos], -difficulty[pos], -influence[pos], labels[pos]))]
    return order, labels, d_split, i_split


@registry.selector("quadrant")
class QuadrantSelector(Selector):
    """Fill the budget from DIQ quadrants Q1..Q4, each sorted by influence then difficulty."""

    Config = QuadrantConfig
    final = True

    def required_columns(self) -> list[str]:
        return [self.config.difficulty_column, self.config.influence_column]

    def apply(self, frame: pd.DataFrame, budget: int | None, seed: int) -> StageOutcome:
        cfg = self.config
        require_columns(frame, self.required_columns(), self.name)
        if budget is None:
            raise ValueError("quadrant needs a budget; pass --budget N or --ratio R")
        d, d_reasons = numeric_values(frame, cfg.difficulty_column)
        inf, i_reasons = numeric_values(frame, cfg.influence_column)
        order, labels, d_split, i_split = quadrant_order(d, inf, cfg.tau_d, tie_order(frame))
        kept = order[:budget]
        reasons = np.full(len(frame), None, dtype=object)
        for i in range(len(frame)):
            if labels[i] == 0:
                reasons[i] = "; ".join(r for r in (d_reasons[i], i_reasons[i]) if r)
        position_in_quadrant = {}
        for q in range(1, 5):
            members = order[labels[order] == q]
            for k, p in enumerate(members):
                position_in_quadrant[int(p)] = k + 1
        for p in order[budget:]:
            reasons[p] = (
                f"{QUADRANT_NAMES[labels[p] - 1]} position {position_in_quadrant[int(p)]}: "
                f"the budget ({budget}) was filled first"
            )
        notes = []
        if order.size <= budget:
            notes.append(fewer_than_budget_note(int(order.size), budget, self.name))
        n_missing = len(frame) - order.size
        if n_missing:
            notes.append(f"{n_missing} rows lacked {cfg.difficulty_column} or {cfg.influence_column} and were dropped")
        counts = {QUADRANT_NAMES[q - 1]: int((labels == q).sum()) for q in range(1, 5)}
        chosen_counts = {QUADRANT_NAMES[q - 1]: int((labels[kept] == q).sum()) for q in range(1, 5)}
        return StageOutcome(
            distance=np.where(labels > 0, 0.0, np.nan),  # fill: rank never takes back an unusable row
            kept=kept,
            reasons=reasons,
            thresholds={
                cfg.difficulty_column: {"split_percentile": cfg.tau_d, "split": d_split, "high_if": f">= {fmt(d_split)}" if np.isfinite(d_split) else None},
                cfg.influence_column: {"split": "median", "value": i_split, "high_if": f">= {fmt(i_split)}" if np.isfinite(i_split) else None},
            },
            notes=notes,
            details={
                "quadrant_sizes": counts,
                "chosen_per_quadrant": chosen_counts,
                "labels": labels,  # per input row, 0 = unusable; used by the scatter plot, not serialised
                # per input row, the quadrant's name: the candidates table's group column
                "groups": np.array([QUADRANT_NAMES[q - 1] if q else None for q in labels], dtype=object),
            },
        )
