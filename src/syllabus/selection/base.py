"""What every selector shares: the stage outcome, the budget, and reading a score column.

A *selector* reads score columns and decides; it never loads a model. Selectors come in two
kinds:

- **filters** (``final = False``: threshold, band) keep every row that passes a test and
  ignore the budget;
- **final selectors** (``final = True``: kcenter, quadrant, topk, random, full) order the
  rows they receive and keep the first ``budget`` of them; the order is the *rank* written
  next to every chosen sample.

A recipe chains any number of filters and ends with exactly one final selector.

Missing values: a metric value counts only when it is a finite number and, where the table
has the scorer's ``<scorer>_status`` column, that status is ``"ok"``. A row whose value is
missing is dropped by every stage that reads that column, with the status in its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator


class SelectorConfig(BaseModel):
    """Base of every selector config: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass
class StageOutcome:
    """What one stage decided about the ``n`` rows it was given.

    ``kept`` holds positions (0..n-1) into the stage's input frame; for a final selector
    they are in rank order (first = rank 1). ``reasons[i]`` is a sentence for every dropped
    position ``i`` and ``None`` for kept ones.

    ``distance[i]`` (optional) says how far a dropped row fell outside the stage's test, in
    the stage's own units (0 = at the edge), and NaN where the row had no usable value: the
    order in which ``fill: rank`` takes dropped rows back (closest first; NaN never). A stage
    without it has its dropped rows taken back in sample_id order.
    """

    kept: np.ndarray
    reasons: np.ndarray
    thresholds: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    distance: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.kept = np.asarray(self.kept, dtype=np.int64)
        n_dropped = sum(r is not None for r in self.reasons)
        if n_dropped + len(self.kept) != len(self.reasons):
            raise AssertionError(
                f"stage outcome is inconsistent: {len(self.kept)} kept + {n_dropped} reasons "
                f"!= {len(self.reasons)} rows"
            )


class Selector:
    """A named, configured decision over a score frame. Subclasses set ``name``,
    ``Config`` and ``final`` and implement ``required_columns`` and ``apply``."""

    name: ClassVar[str]
    Config: ClassVar[type[SelectorConfig]]
    final: ClassVar[bool] = False

    def __init__(self, config: SelectorConfig | Mapping[str, Any] | None = None, **overrides: Any):
        if isinstance(config, SelectorConfig):
            config = config.model_dump()
        self.config = self.Config.model_validate({**dict(config or {}), **overrides})

    def required_columns(self) -> list[str]:
        raise NotImplementedError

    def apply(self, frame: pd.DataFrame, budget: int | None, seed: int) -> StageOutcome:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class Budget(BaseModel):
    """How many samples to select: a count, or a ratio of the pool (the candidates before
    any stage). ``ratio * n`` is rounded to the nearest integer, and at least 1 when the pool
    is not empty (ours: 1% of 50 samples is one sample, not none).

    A count larger than the pool is an error (:meth:`check_fits`). When the stages keep fewer
    rows than the budget the selection is *short*, and a short selection is an error unless
    the budget says what to do:

    - ``fill: rank`` fills the remainder by the recipe's own order: from the rows that
      entered the first stage that kept fewer than the budget, rows that got further through
      the chain first, then those closest to passing the stage that dropped them (a threshold:
      nearest the cut-off; a band: nearest the band), then by sample_id; a row that stage
      dropped for a missing value is never filled. The why-table names every filled row.
    - ``allow_short: true`` accepts a selection short of the budget (after any fill).
    """

    # The JSON schema says "exactly one" too, for whoever reads Budget's own schema. The flows do
    # not use it: their budget parameter is syllabus.pipeline.config.BudgetParam, which leaves
    # this oneOf out of the schema Prefect checks (jsonschema can only word it as schema text),
    # so a run with both (or neither) is created and fails as it starts, in one sentence from
    # BudgetParam's validator.
    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"oneOf": [
        {"properties": {"count": {"type": "integer"}}, "required": ["count"]},
        {"properties": {"ratio": {"type": "number"}}, "required": ["ratio"]},
    ]})

    count: int | None = Field(None, ge=1, description="select this many samples")
    ratio: float | None = Field(None, gt=0, le=1, description="or this fraction of the pool")
    # A budget without a shortfall policy dumps as it did before the policy existed (exclude_if),
    # so the selection keys, reports and run parameters of every existing selection stay the same.
    fill: Literal["rank"] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="when the stages keep fewer than the budget: 'rank' fills the rest from the rows that "
        "entered the stage that cut the selection short, closest to passing first; empty: no fill")
    allow_short: bool = Field(False, exclude_if=lambda v: not v,
                              description="accept a selection short of the budget (after any fill) instead of failing")

    @model_validator(mode="after")
    def _one_of(self) -> "Budget":
        if (self.count is None) == (self.ratio is None):
            raise ValueError("a budget is either a count or a ratio; give exactly one of 'count' and 'ratio'")
        return self

    def resolve(self, n_pool: int) -> int:
        if self.count is not None:
            return int(self.count)
        if n_pool == 0:
            return 0
        return max(1, int(math.floor(self.ratio * n_pool + 0.5)))

    def describe(self) -> str:
        return f"{self.count} samples" if self.count is not None else f"{self.ratio:g} of the pool"

    def check_fits(self, n_pool: int, method: str | None = None, source: str = "") -> None:
        """Raise :class:`BudgetTooLargeError` when a count asks for more samples than the pool
        holds: such a budget can never be met, whatever the thresholds. A ratio always fits.
        ``source`` says where the budget came from (e.g. "the recipe's default")."""
        if self.count is not None and self.count > n_pool:
            whose = f" for {method}" if method else ""
            where = f" ({source})" if source else ""
            raise BudgetTooLargeError(
                f"the budget{whose} of {self.count:,} samples{where} is larger than the pool of {n_pool:,} "
                f"candidates; pass --budget {n_pool:,} or less, or --ratio R to select a fraction of the pool"
            )


class BudgetTooLargeError(ValueError):
    """A budget count larger than the pool it is resolved against."""


def status_column(frame: pd.DataFrame, column: str) -> str | None:
    """The ``<scorer>_status`` column that covers ``column``: the longest ``<p>_status`` with
    ``column`` starting with ``<p>_`` (so ``diq_difficulty_score`` maps to
    ``diq_difficulty_status``, not a ``diq_status``)."""
    best = None
    for name in frame.columns:
        if name.endswith("_status"):
            prefix = name[: -len("_status")]
            if column.startswith(prefix + "_") and (best is None or len(name) > len(best)):
                best = name
    return best


def require_columns(frame: pd.DataFrame, columns: list[str], stage: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = ", ".join(sorted(c for c in frame.columns if c != "sample_id")) or "(none)"
        raise ValueError(
            f"selector {stage} needs column(s) {', '.join(missing)}, which no score table provides "
            f"(columns present: {have}); pass the score manifest of the scorer that writes them with --scores"
        )


def numeric_values(frame: pd.DataFrame, column: str, detail_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64 with NaN for missing, a reason for each missing row or None).

    A reason reads ``"<column> missing (<detail>)"``; with ``detail_only`` just the detail:
    ``not scored`` (no row in that scorer's table), ``<scorer>_status = too_long`` (the
    scorer's status) or ``no value``.
    """
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    missing = ~np.isfinite(values)
    status_col = status_column(frame, column)
    details = np.full(len(frame), None, dtype=object)
    if status_col is not None:
        status = frame[status_col].astype("string").to_numpy(dtype=object, na_value=None)
        not_ok = np.array([s != "ok" for s in status], dtype=bool)
        for i in np.flatnonzero(not_ok | missing):
            details[i] = "not scored" if status[i] is None else f"{status_col} = {status[i]}" if status[i] != "ok" else "no value"
        missing = missing | not_ok
    else:
        for i in np.flatnonzero(missing):
            details[i] = "no value"
    values = values.copy()
    values[missing] = np.nan
    if detail_only:
        return values, details
    reasons = np.array([None if d is None else f"{column} missing ({d})" for d in details], dtype=object)
    return values, reasons


def tie_order(frame: pd.DataFrame) -> np.ndarray:
    """Positions sorted by sample_id: the deterministic tie-break of every ranking."""
    if "sample_id" in frame.columns:
        return np.argsort(frame["sample_id"].astype(str).to_numpy(), kind="stable")
    return np.arange(len(frame))


def fmt(x: float) -> str:
    """Numbers in reasons: short but enough digits to see why a value fell outside."""
    return f"{x:.6g}"


def fewer_than_budget_note(n: int, budget: int, stage: str) -> str:
    return f"fewer survivors ({n}) than the budget ({budget}); all {n} were kept"
