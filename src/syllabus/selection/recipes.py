"""Method recipes: YAML files that name a method's scorers and its chain of selectors.

A recipe (``src/syllabus/recipes/*.yaml``, shipped as package data) looks like::

    name: 3ds
    description: ...
    paper: arXiv 2410.10901
    scorers:                       # what must be scored first (names in the registry)
      - {name: quality, config: {}}
    selectors:                     # filters first, exactly one final selector last
      - {name: threshold, config: {column: quality_score, min_value: 90}}
      - {name: band, config: {metrics: [difficulty_d1, difficulty_d2, difficulty_d3], low: 25, high: 75}}
      - {name: kcenter, config: {column: difficulty_embedding}}
    budget: {count: 5000}          # default when the command line gives none (optional)
    seed: 0

Adding a method is adding a YAML file: nothing in ``tasks/`` or ``flows/`` changes.

``run_recipe`` applies the selectors in order to a score frame (one row per candidate) and
returns a :class:`SelectionResult`: the chosen rows in rank order, and for every candidate
the stage that dropped it (with a reason) or the rank it was chosen at.
"""

from __future__ import annotations

import difflib
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from syllabus import registry
from syllabus.config import load_yaml
from syllabus.selection.base import Budget, Selector, StageOutcome

log = logging.getLogger(__name__)


class ScorerSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class SelectorSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class Recipe(BaseModel):
    """A method: the scorers it needs and the selectors it chains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    paper: str | None = None
    scorers: list[ScorerSpec] = Field(default_factory=list)
    selectors: list[SelectorSpec] = Field(min_length=1)
    budget: Budget | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _shape(self) -> "Recipe":
        names = registry.names("selector")
        for spec in self.selectors:
            if spec.name not in names:
                try:
                    registry.lookup("selector", spec.name)
                except registry.UnknownNameError as exc:  # a KeyError; pydantic reports ValueErrors
                    raise ValueError(str(exc)) from None
        return self

    def build_selectors(self) -> list[Selector]:
        """Instantiate every selector with its validated config; checks the chain's shape."""
        built: list[Selector] = []
        for i, spec in enumerate(self.selectors):
            cls = registry.lookup("selector", spec.name)
            try:
                built.append(cls(spec.config))
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise ValueError(f"recipe {self.name!r}, selector {i + 1} ({spec.name}): invalid config: {exc}") from exc
        for i, sel in enumerate(built[:-1]):
            if sel.final:
                raise ValueError(
                    f"recipe {self.name!r}: selector {i + 1} ({sel.name}) picks a final ranked subset but is not last; "
                    "put filters (threshold, band) first and one final selector (kcenter, quadrant, topk, random, full) last"
                )
        if not built[-1].final:
            raise ValueError(
                f"recipe {self.name!r} ends with the filter {built[-1].name!r}; end it with one of "
                "kcenter, quadrant, topk, random or full"
            )
        return built

    def check_scorers(self) -> None:
        """Every scorer exists in the registry and its config validates against its
        ``config_cls`` (the scorers' pydantic config)."""
        for spec in self.scorers:
            try:
                obj = registry.lookup("scorer", spec.name)
            except registry.UnknownNameError as exc:  # a KeyError: callers of recipes expect ValueErrors
                raise ValueError(f"recipe {self.name!r}: {exc}") from None
            config_cls = getattr(obj, "config_cls", None) or getattr(obj, "Config", None)
            if isinstance(config_cls, type) and issubclass(config_cls, BaseModel):
                try:
                    config_cls.model_validate(spec.config)
                except ValueError as exc:
                    raise ValueError(f"recipe {self.name!r}, scorer {spec.name}: invalid config: {exc}") from exc

    def required_columns(self) -> list[str]:
        cols: list[str] = []
        for sel in self.build_selectors():
            cols += [c for c in sel.required_columns() if c not in cols]
        return cols

    def needs_budget(self) -> bool:
        return self.selectors[-1].name != "full"

    def with_selector_config(self, index: int, **changes: Any) -> "Recipe":
        """A copy with selector ``index`` (0-based) given updated config keys."""
        selectors = list(self.selectors)
        spec = selectors[index]
        selectors[index] = SelectorSpec(name=spec.name, config={**spec.config, **changes})
        return self.model_copy(update={"selectors": selectors})


# ------------------------------------------------------------------------------- loading
def recipe_files() -> Iterator[Path]:
    """Every YAML file under the shipped ``syllabus/recipes`` directory, recursively."""
    root = resources.files("syllabus") / "recipes"
    root_path = Path(str(root))
    for path in sorted(root_path.rglob("*.y*ml")):
        if path.suffix in (".yaml", ".yml"):
            yield path


def read_recipe_file(path: str | Path) -> Recipe:
    from syllabus.inputs import refuse_special_file

    path = Path(path)
    refuse_special_file(str(path), "recipe file")  # a FIFO would block read_text for ever
    data = load_yaml(path.read_text(encoding="utf-8"), f"recipe file {path}")
    if not isinstance(data, dict):
        raise ValueError(f"recipe file {path} must hold a mapping with name, scorers and selectors")
    try:
        return Recipe.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"recipe file {path}: {exc}") from exc


def known_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in recipe_files():
        data = load_yaml(path.read_text(encoding="utf-8"), f"recipe file {path}") or {}
        name = data.get("name", path.stem) if isinstance(data, dict) else path.stem
        found[str(name)] = path
    return found


def recipe_names() -> list[str]:
    """The shipped methods' names, for CLI choices: reads the YAML files, imports no scorer."""
    return sorted(known_recipes())


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (``3ds``), or a recipe YAML file by path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ValueError(
                f"recipe file {candidate} does not exist; pass the path of an existing .yaml file "
                f"or a shipped method name ({', '.join(recipe_names())})"
            )
        return read_recipe_file(candidate)
    name_or_path = str(name_or_path)
    known = known_recipes()
    if name_or_path not in known:
        close = difflib.get_close_matches(name_or_path, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown method {name_or_path!r}.{hint} Known methods: {', '.join(sorted(known))}; "
            "or pass the path of a recipe .yaml file"
        )
    return read_recipe_file(known[name_or_path])


# ------------------------------------------------------------------------------- running
@dataclass
class StageReport:
    index: int  # 1-based
    selector: str
    config: dict[str, Any]
    n_in: int
    n_out: int
    thresholds: dict[str, Any]
    notes: list[str]
    details: dict[str, Any]
    seconds: float


@dataclass
class SelectionResult:
    """The outcome of a recipe over a candidate frame (rows sorted by sample_id)."""

    method: str
    seed: int
    budget: int | None
    candidates: pd.DataFrame
    selected: np.ndarray  # candidate positions in rank order
    rank: np.ndarray  # per candidate: 1-based rank, 0 when not chosen
    dropped_at: np.ndarray  # per candidate: 1-based stage index that dropped it, 0 when chosen
    why: np.ndarray  # per candidate: a sentence
    stages: list[StageReport]
    stage_inputs: list[np.ndarray]  # candidate positions that entered each stage
    outcomes: list[StageOutcome]
    notes: list[str] = field(default_factory=list)

    @property
    def n_candidates(self) -> int:
        return len(self.candidates)

    @property
    def n_selected(self) -> int:
        return int(self.selected.size)

    def selected_ids(self) -> list[str]:
        return self.candidates["sample_id"].iloc[self.selected].astype(str).tolist()

    def selected_frame(self) -> pd.DataFrame:
        out = self.candidates.iloc[self.selected].reset_index(drop=True).copy()
        out.insert(0, "rank", np.arange(1, self.n_selected + 1, dtype=np.int64))
        return out

    def candidates_frame(self) -> pd.DataFrame:
        """One row per candidate: why it was dropped or the rank it was chosen at, and the
        group the final stage put it in where it has groups (DIQ's quadrants)."""
        names = {s.index: s.selector for s in self.stages}
        frame = pd.DataFrame(
            {
                "sample_id": self.candidates["sample_id"].astype(str).to_numpy(),
                "chosen": self.rank > 0,
                "rank": self.rank.astype(np.int64),
                "dropped_at_stage": self.dropped_at.astype(np.int64),
                "dropped_by": [names.get(int(s)) if s else None for s in self.dropped_at],
                "why": self.why,
            }
        )
        groups = self.outcomes[-1].details.get("groups") if self.outcomes else None
        if groups is not None:
            column = np.full(self.n_candidates, None, dtype=object)
            column[self.stage_inputs[-1]] = groups
            frame["group"] = column
        return frame

    def stage_counts(self) -> list[dict[str, Any]]:
        counts = [{"stage": "candidates", "n": self.n_candidates}]
        counts += [{"stage": f"{s.index}:{s.selector}", "n": s.n_out} for s in self.stages]
        return counts


def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
    if "sample_id" not in frame.columns:
        raise ValueError("the score frame has no sample_id column; every score table must carry sample_id")
    ids = frame["sample_id"].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ValueError(
            f"sample_id {dup.iloc[0]!r} appears more than once among the candidates ({len(dup)} duplicates); "
            "ids must be unique: re-ingest the pool or pass each score table once"
        )
    # Sorted by id: the selection depends on the set of candidates, never on shard order.
    return frame.assign(sample_id=ids).sort_values("sample_id", kind="stable").reset_index(drop=True)


def run_recipe(
    frame: pd.DataFrame,
    recipe: Recipe,
    budget: Budget | int | None = None,
    seed: int | None = None,
) -> SelectionResult:
    """Apply ``recipe``'s selectors in order. ``budget`` (a count, a :class:`Budget`, or None
    for the recipe's default) is resolved against the number of candidates."""
    candidates = _prepare(frame)
    n = len(candidates)
    seed = recipe.seed if seed is None else int(seed)
    if isinstance(budget, int):
        budget = Budget(count=budget)
    budget = budget if budget is not None else recipe.budget
    if budget is None and recipe.needs_budget():
        raise ValueError(f"method {recipe.name!r} needs a budget; pass --budget N or --ratio R")
    n_budget = budget.resolve(n) if budget is not None else None

    selectors = recipe.build_selectors()
    alive = np.arange(n)
    rank = np.zeros(n, dtype=np.int64)
    dropped_at = np.zeros(n, dtype=np.int64)
    why = np.full(n, None, dtype=object)
    stages: list[StageReport] = []
    inputs: list[np.ndarray] = []
    outcomes: list[StageOutcome] = []
    notes: list[str] = []
    for i, sel in enumerate(selectors, start=1):
        start = time.perf_counter()
        sub = candidates.iloc[alive].reset_index(drop=True)
        outcome = sel.apply(sub, n_budget if sel.final else None, seed)
        inputs.append(alive)
        outcomes.append(outcome)
        dropped = np.flatnonzero(np.array([r is not None for r in outcome.reasons], dtype=bool))
        for p in dropped:
            g = alive[p]
            dropped_at[g] = i
            why[g] = f"dropped at stage {i} ({sel.name}): {outcome.reasons[p]}"
        alive = alive[outcome.kept]
        seconds = time.perf_counter() - start
        stages.append(
            StageReport(
                index=i,
                selector=sel.name,
                config=sel.config.model_dump(mode="json"),
                n_in=len(sub),
                n_out=int(alive.size),
                thresholds=outcome.thresholds,
                notes=list(outcome.notes),
                details=outcome.details,
                seconds=round(seconds, 4),
            )
        )
        notes += [f"stage {i} ({sel.name}): {note}" for note in outcome.notes]
        log.info("stage %d %s: %d -> %d (%.2fs)", i, sel.name, len(sub), alive.size, seconds)
    rank[alive] = np.arange(1, alive.size + 1)
    final = selectors[-1].name
    for r, g in enumerate(alive, start=1):
        why[g] = f"chosen at rank {r} ({final})"
    return SelectionResult(
        method=recipe.name,
        seed=seed,
        budget=n_budget,
        candidates=candidates,
        selected=alive,
        rank=rank,
        dropped_at=dropped_at,
        why=why,
        stages=stages,
        stage_inputs=inputs,
        outcomes=outcomes,
        notes=notes,
    )
