"""Early warnings for fixed cut-offs: before the next scorer starts, say when a recipe's
absolute threshold cannot be met by the scores it will read (issue 33, item 3).

A recipe such as 3DS keeps ``quality_score >= 90`` (the paper's delta on a 0-100 scale). A
small rater compresses its scale (SmolLM2-135M rates the demo pool between about 19 and 35),
so the cut-off keeps nothing, and scoring every later stage (difficulty: minutes to hours)
is wasted. Once a scorer's scores are in, :func:`fixed_cutoff_warnings` counts, for every
threshold stage with a fixed bound on one of its columns, the scored rows that pass it, and
compares that with the rows the recipe needs from it:

    needed = budget / (the share each later filter keeps)

where a band of ``m`` metrics keeps about ``((high - low) / 100) ** m`` of its input (each
metric's band keeps its share; the metrics taken as independent: 12.5% for 3DS's three 25-75
bands, where the 3DS paper's Table 7 measured about 14%), and a percentile threshold keeps
``(max_percentile - min_percentile) / 100``; a fixed threshold later on is counted as keeping
everything (its scores are not in yet). The warning names the cut-off, how many pass, and the
percentile that keeps ``needed`` rows (the share the recipe's budget asks of this stage):
``min_percentile = 100 * (1 - needed / scored)``, rounded down. ``needed`` is an estimate
where a band follows (its metrics are not scored yet); ``syllabus select`` names the exact
percentile once they are.

The count is over every scored row: earlier stages whose scores are not in yet can only
lower it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from syllabus.selection.base import Budget, fmt, numeric_values

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutoffCheck:
    """One fixed cut-off measured against the scores."""

    stage: int  # 1-based
    column: str
    bound: str  # ">= 90" or "<= 1"
    scored: int  # rows with a usable value
    passing: int
    needed: int
    budget: int
    percentile_key: str  # min_percentile or max_percentile
    percentile: int  # that keeps ``needed`` of ``scored``
    set_path: str | None  # the --set path of select that reaches it (None: not the first of its name)

    @property
    def short(self) -> bool:
        return self.passing < self.needed


def later_keep_share(selectors: list[Any], stage: int) -> float:
    """About how much the filters after ``stage`` (1-based) keep of their input, as a share."""
    share = 1.0
    for sel in selectors[stage:]:
        if sel.final:
            break
        cfg = sel.config
        if sel.name == "band":
            share *= ((cfg.high - cfg.low) / 100.0) ** len(cfg.metrics)
        elif sel.name == "threshold" and (cfg.min_percentile is not None or cfg.max_percentile is not None):
            share *= ((cfg.max_percentile if cfg.max_percentile is not None else 100.0)
                      - (cfg.min_percentile if cfg.min_percentile is not None else 0.0)) / 100.0
    return share


def check_fixed_cutoffs(recipe: Any, frame: pd.DataFrame, budget: int) -> list[CutoffCheck]:
    """Every threshold stage of ``recipe`` with a fixed bound on a column of ``frame`` (a score
    table: ``sample_id``, the columns, the scorer's ``<scorer>_status``), measured against
    ``budget``. A bound given as a percentile always keeps its share and is not checked."""
    from syllabus.selection.recipes import set_path

    selectors = recipe.build_selectors()
    checks: list[CutoffCheck] = []
    for stage, sel in enumerate(selectors, start=1):
        if sel.name != "threshold" or sel.config.column not in frame.columns:
            continue
        cfg = sel.config
        low = cfg.min_value if cfg.min_percentile is None else None
        high = cfg.max_value if cfg.max_percentile is None else None
        if low is None and high is None:
            continue
        values, _ = numeric_values(frame, cfg.column)
        values = values[np.isfinite(values)]
        scored = int(values.size)
        keep = np.ones(scored, dtype=bool)
        if low is not None:
            keep &= values >= low
        if high is not None:
            keep &= values <= high
        share = later_keep_share(selectors, stage)
        needed = int(math.ceil(budget / share)) if share > 0 else scored + 1
        if low is not None:
            key, percentile = "min_percentile", int(math.floor(100.0 * (1.0 - min(needed, scored) / scored))) if scored else 0
        else:
            key, percentile = "max_percentile", int(math.ceil(100.0 * min(needed, scored) / scored)) if scored else 100
        bound = " and ".join(b for b in (f">= {fmt(low)}" if low is not None else "",
                                         f"<= {fmt(high)}" if high is not None else "") if b)
        checks.append(CutoffCheck(stage, cfg.column, bound, scored, int(keep.sum()), needed, budget, key, percentile,
                                  set_path(recipe, stage, key)))
    return checks


def describe_check(recipe: Any, check: CutoffCheck) -> str:
    """The warning for a cut-off that keeps too few: one sentence with the fix."""
    spec = recipe.selectors[check.stage - 1].name
    share = f"{100.0 * check.passing / check.scored:.1f}%" if check.scored else "none"
    text = (f"{recipe.name}: stage {check.stage} ({spec}) keeps {check.column} {check.bound}, which {check.passing:,} "
            f"of the {check.scored:,} scored samples reach ({share}); the budget of {check.budget:,} needs "
            + (f"about {check.needed:,} to pass it, as the later filters keep a share of what passes"
               if check.needed != check.budget else f"{check.needed:,} to pass it"))
    if check.needed >= check.scored:
        most = int(check.scored * check.budget / check.needed) if check.needed else 0
        return (text + f", more than were scored: even if every one passed, about {most:,} would be left for the "
                "budget; lower the budget, widen the later stages (a band's low/high) or score a larger pool")
    kept = "top" if check.percentile_key == "min_percentile" else "bottom"
    share_kept = 100 - check.percentile if check.percentile_key == "min_percentile" else check.percentile
    how = (f"select with --set {check.set_path}={check.percentile} (selector_overrides.{recipe.name}."
           f"{check.set_path}: {check.percentile} in a run config)" if check.set_path else
           f"set {check.percentile_key}: {check.percentile} on stage {check.stage}")
    return text + f". {check.percentile_key} {check.percentile} keeps the {kept} {share_kept}% instead: {how}"


def fixed_cutoff_warnings(recipe: Any, frame: pd.DataFrame, budget: Budget | int | None = None,
                          n_pool: int | None = None) -> list[str]:
    """The warnings for ``recipe``'s fixed cut-offs that the scores in ``frame`` cannot meet,
    for ``budget`` (default: the recipe's) resolved against ``n_pool`` (default: the rows of
    ``frame``). Empty when every fixed cut-off keeps enough, or the recipe needs no budget.
    The pipeline can call this after each scorer, before the next one starts."""
    if isinstance(budget, int):
        budget = Budget(count=budget)
    budget = recipe.budget_for(budget)
    if budget is None or not recipe.needs_budget():
        return []
    n = len(frame) if n_pool is None else int(n_pool)
    resolved = budget.resolve(n)
    if resolved > n:
        return [f"{recipe.name}: the budget of {resolved:,} samples is larger than the pool of {n:,}; select with "
                f"--budget {n:,} or less (or --ratio R)"]
    return [describe_check(recipe, c) for c in check_fixed_cutoffs(recipe, frame, resolved) if c.short]
