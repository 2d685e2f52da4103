"""The two baselines every method is compared with.

- **random**: a seeded uniform sample of the budget. Rows are put in sample_id order before
  shuffling, so the choice depends only on (seed, set of candidates), not on shard order.
- **full**: every candidate, in sample_id order; the budget is ignored (and the report says so).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from syllabus import registry
from syllabus.selection.base import Selector, SelectorConfig, StageOutcome, fewer_than_budget_note, tie_order


class RandomConfig(SelectorConfig):
    pass


def random_order(n: int, seed: int, tie: np.ndarray | None = None) -> np.ndarray:
    """A seeded permutation of ``range(n)`` applied to the ``tie`` ordering."""
    base = np.arange(n) if tie is None else np.asarray(tie)
    return base[np.random.default_rng(seed).permutation(n)]


@registry.selector("random")
class RandomSelector(Selector):
    """Seeded uniform sample of the budget."""

    Config = RandomConfig
    final = True

    def required_columns(self) -> list[str]:
        return []

    def apply(self, frame: pd.DataFrame, budget: int | None, seed: int) -> StageOutcome:
        if budget is None:
            raise ValueError("random needs a budget; pass --budget N or --ratio R")
        order = random_order(len(frame), seed, tie_order(frame))
        kept = order[:budget]
        reasons = np.full(len(frame), None, dtype=object)
        for p in order[budget:]:
            reasons[p] = f"not drawn: the seeded sample (seed {seed}) took {budget}"
        notes = [fewer_than_budget_note(len(frame), budget, self.name)] if len(frame) <= budget else []
        return StageOutcome(kept=kept, reasons=reasons, notes=notes, details={"seed": seed})


class FullConfig(SelectorConfig):
    pass


@registry.selector("full")
class FullSelector(Selector):
    """Every candidate: the full-data baseline."""

    Config = FullConfig
    final = True

    def required_columns(self) -> list[str]:
        return []

    def apply(self, frame: pd.DataFrame, budget: int | None, seed: int) -> StageOutcome:
        notes = []
        if budget is not None and budget != len(frame):
            notes.append(f"full keeps every candidate ({len(frame)}); the budget ({budget}) was ignored")
        return StageOutcome(kept=tie_order(frame), reasons=np.full(len(frame), None, dtype=object), notes=notes)
