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
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from syllabus import registry
from syllabus.config import clip, clip_text, deep_merge, describe_errors, load_yaml, read_config_text
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

    def build_selectors(self, key_prefix: str = "") -> list[Selector]:
        """Instantiate every selector with its validated config; checks the chain's shape. A bad
        key is named by its path from the selector (``threshold.min_valu``), after ``key_prefix``
        (e.g. ``selector_overrides.3ds.``)."""
        built: list[Selector] = []
        for i, spec in enumerate(self.selectors):
            cls = registry.lookup("selector", spec.name)
            try:
                built.append(cls(spec.config))
            except ValidationError as exc:  # one line naming the key, not pydantic's multi-line report
                raise ValueError(f"recipe {self.name!r}, selector {i + 1} ({spec.name}): invalid config: "
                                 f"{describe_errors(exc, cls.Config, key_prefix + spec.name)}") from None
            except ValueError as exc:
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
                except ValidationError as exc:
                    raise ValueError(f"recipe {self.name!r}, scorer {spec.name}: invalid config: "
                                     f"{describe_errors(exc, config_cls, spec.name)}") from None

    def required_columns(self) -> list[str]:
        cols: list[str] = []
        for sel in self.build_selectors():
            cols += [c for c in sel.required_columns() if c not in cols]
        return cols

    def needs_budget(self) -> bool:
        return self.selectors[-1].name != "full"

    def budget_for(self, budget: Budget | None = None, fill: str | None = None,
                   allow_short: bool = False) -> Budget | None:
        """The one budget rule: ``budget`` if given, else this recipe's; its shortfall policy
        ``fill``/``allow_short`` where set, else that budget's, else this recipe budget's."""
        base = self.budget
        chosen = budget if budget is not None else base
        if chosen is None:
            return None
        fill = fill or chosen.fill or (base.fill if base is not None else None)
        allow_short = allow_short or chosen.allow_short or bool(base is not None and base.allow_short)
        return Budget.model_validate({**chosen.model_dump(), "fill": fill, "allow_short": allow_short})

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
    data = load_yaml(read_config_text(path, f"recipe file {path}"), f"recipe file {path}")
    if not isinstance(data, dict):
        raise ValueError(f"recipe file {path} must hold a mapping with name, scorers and selectors")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"recipe file {path}: {describe_errors(exc, Recipe)}") from None


def known_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in recipe_files():
        data = load_yaml(read_config_text(path, f"recipe file {path}"), f"recipe file {path}") or {}
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
    # per candidate: 1-based stage index that dropped it, 0 when the stages chose it (a row
    # filled by rank keeps the stage that dropped it: the chain's own verdict)
    dropped_at: np.ndarray
    why: np.ndarray  # per candidate: a sentence
    stages: list[StageReport]
    stage_inputs: list[np.ndarray]  # candidate positions that entered each stage
    outcomes: list[StageOutcome]
    notes: list[str] = field(default_factory=list)
    filled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # positions filled by rank, in rank order
    fill: str | None = None  # the budget's fill policy
    fill_from_stage: int | None = None  # the stage whose input the fill drew from (the first to cut short)
    allow_short: bool = False

    @property
    def final_selector(self) -> str | None:
        return self.stages[-1].selector if self.stages else None

    @property
    def shortfall(self) -> int:
        """How many samples the selection lacks to reach its budget (0 for full, which ignores it)."""
        if self.budget is None or self.final_selector == "full":
            return 0
        return max(0, int(self.budget) - self.n_selected)

    def cut_short_at(self) -> int | None:
        """The first stage (1-based) that kept fewer rows than the budget; None when none did."""
        if self.budget is None or self.final_selector == "full":
            return None
        return next((s.index for s in self.stages if s.n_out < self.budget), None)

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
                "filled": np.isin(np.arange(self.n_candidates), self.filled),
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
        if self.filled.size:
            counts.append({"stage": f"fill:{self.fill}", "n": self.n_selected})
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
    source = "" if budget is not None else "the recipe's default"
    budget = recipe.budget_for(budget)
    if budget is None and recipe.needs_budget():
        raise ValueError(f"method {recipe.name!r} needs a budget; pass --budget N or --ratio R")
    if budget is not None and recipe.needs_budget():  # full ignores the budget, so any fits
        budget.check_fits(n, recipe.name, source)
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
    result = SelectionResult(
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
        fill=budget.fill if budget is not None else None,
        allow_short=bool(budget.allow_short) if budget is not None else False,
    )
    if result.fill == "rank" and result.shortfall:
        fill_by_rank(result)
    return result


def fill_by_rank(result: SelectionResult) -> None:
    """``fill: rank``: complete a short selection in place from the rows that entered the
    first stage that kept fewer than the budget. Rows that got further through the chain come
    first, then those closest to passing the stage that dropped them (its ``distance``), then
    sample_id; a row that stage dropped for a missing value is never filled. Filled rows take
    the ranks after the chosen ones, and their ``why`` says so."""
    k = result.cut_short_at()
    if k is None:
        return
    n = result.n_candidates
    entered = result.stage_inputs[k - 1]
    chosen = np.zeros(n, dtype=bool)
    chosen[result.selected] = True
    pool = entered[~chosen[entered]]
    distance = np.zeros(n)  # per candidate: how far outside the stage that dropped it
    for j in range(k, len(result.stages) + 1):
        at_j = pool[result.dropped_at[pool] == j]
        measured = result.outcomes[j - 1].distance
        if measured is None or not at_j.size:
            continue
        where = np.full(n, -1, dtype=np.int64)
        where[result.stage_inputs[j - 1]] = np.arange(result.stage_inputs[j - 1].size)
        distance[at_j] = np.asarray(measured, dtype=np.float64)[where[at_j]]
    usable = pool[np.isfinite(distance[pool])]
    # Candidates are in sample_id order, so the position itself breaks ties by sample_id.
    order = usable[np.lexsort((usable, distance[usable], -result.dropped_at[usable]))]
    take = order[: result.shortfall]
    start = result.n_selected
    after = (f"after stage {k - 1} ({result.stages[k - 2].selector})" if k > 1 else "from the candidates")
    for r, g in enumerate(take, start=start + 1):
        result.rank[g] = r
        j = int(result.dropped_at[g])
        dropped = str(result.why[g]).removeprefix(f"dropped at stage {j} ({result.stages[j - 1].selector}): ")
        result.why[g] = (f"chosen at rank {r}, filled by rank {after}: stage {j} ({result.stages[j - 1].selector}) "
                         f"had dropped it ({dropped})")
    result.selected = np.concatenate([result.selected, take]).astype(np.int64)
    result.filled = take.astype(np.int64)
    result.fill_from_stage = k
    cut = result.stages[k - 1]
    note = (f"fill: rank: stage {k} ({cut.selector}) kept {cut.n_out:,} of {cut.n_in:,}, fewer than the budget "
            f"({result.budget:,}); {take.size:,} filled by rank from the rows that entered it, after the {start:,} "
            "the stages chose")
    if result.shortfall:
        note += f"; still {result.shortfall:,} short: no other row had a value that stage could rank"
    result.notes.append(note)
    log.info("fill by rank: %d filled after %d chosen (budget %d)", take.size, start, result.budget)


def filter_survivors(candidates: pd.DataFrame, selectors: list[Selector], seed: int) -> int:
    """How many rows of ``candidates`` (prepared: sorted by sample_id) pass every filter of
    ``selectors`` (the final selector, if given, is not applied)."""
    alive = np.arange(len(candidates))
    for sel in selectors:
        if sel.final:
            break
        outcome = sel.apply(candidates.iloc[alive].reset_index(drop=True), None, seed)
        alive = alive[outcome.kept]
    return int(alive.size)


def percentile_for_budget(recipe: Recipe, frame: pd.DataFrame, budget: int, stage: int,
                          seed: int | None = None) -> tuple[int, int] | None:
    """For the threshold at ``stage`` (1-based; a lower bound, fixed or a percentile): the
    highest whole ``min_percentile`` with which the recipe's filters still keep at least
    ``budget`` rows of ``frame``, and how many they keep then; None when even
    ``min_percentile`` 0 (keep every rated row) leaves fewer. Runs the filters only (seconds:
    percentiles over the score columns, no final selector), assuming fewer rows survive a
    higher percentile, and checks the answer it gives."""
    if not has_lower_bound(recipe, stage):
        raise ValueError(f"stage {stage} of {recipe.name!r} is not a threshold with a lower bound")
    candidates = _prepare(frame)
    seed = recipe.seed if seed is None else int(seed)

    def survivors(p: int) -> int:
        variant = recipe.with_selector_config(stage - 1, min_percentile=float(p))
        return filter_survivors(candidates, variant.build_selectors(), seed)

    if survivors(0) < budget:
        return None
    lo, hi = 0, 100  # survivors(lo) >= budget; survivors(hi) is not known to be
    if survivors(hi) >= budget:
        return hi, survivors(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if survivors(mid) >= budget:
            lo = mid
        else:
            hi = mid
    return lo, survivors(lo)


def has_lower_bound(recipe: Recipe, stage: int) -> bool:
    """Whether selector ``stage`` (1-based) is a threshold that keeps rows at or above a value."""
    sel = recipe.build_selectors()[stage - 1]
    return sel.name == "threshold" and (sel.config.min_value is not None or sel.config.min_percentile is not None)


def set_path(recipe: Recipe, stage: int, key: str) -> str | None:
    """The ``--set`` path that reaches ``key`` of selector ``stage`` (1-based): a selector is
    named by its name, which reaches the first of that name only."""
    name = recipe.selectors[stage - 1].name
    first = next(i for i, spec in enumerate(recipe.selectors, start=1) if spec.name == name)
    return f"{name}.{key}" if first == stage else None


def percentile_advice(recipe: Recipe, frame: pd.DataFrame, budget: int, up_to: int, seed: int | None = None) -> str | None:
    """A sentence naming the percentile of the last lower-bound threshold at or before stage
    ``up_to`` with which the filters keep at least ``budget`` rows (a fix that works, not a guess);
    None when the recipe has no such threshold."""
    for stage in range(up_to, 0, -1):
        spec = recipe.selectors[stage - 1]
        if not has_lower_bound(recipe, stage):
            continue
        found = percentile_for_budget(recipe, frame, budget, stage, seed)
        column = spec.config.get("column", "quality_score")
        path = set_path(recipe, stage, "min_percentile")
        if found is None:
            text = (f"no min_percentile of stage {stage} (threshold on {column}) lets the filters keep {budget:,}, "
                    "not even 0 (every rated row)")
            wider = band_advice(recipe, frame, budget, stage, seed)
            return f"{text}; {wider}" if wider else f"{text}: relax a later stage or lower the budget"
        p, kept = found
        how = f"--set {path}={p}" if path else f"min_percentile {p} on stage {stage} (threshold on {column})"
        return (f"{how} keeps the top {100 - p}% of {column}, after which the filters keep {kept:,} rows, "
                f"enough for the budget of {budget:,}")
    return None


BAND_STEP = 5.0  # percentile points a band is widened by on each side, per try


def band_advice(recipe: Recipe, frame: pd.DataFrame, budget: int, threshold: int,
                seed: int | None = None) -> str | None:
    """When no percentile of the threshold at stage ``threshold`` is enough: the narrowest
    widening of the first band after it (``BAND_STEP`` points a side, about its centre) with
    which the filters reach ``budget`` when the threshold keeps every rated row, then the
    highest threshold percentile that still does with that band, as ``--set`` flags. None
    when there is no band there, or no band path; a sentence when even the widest falls short."""
    # Any band after the threshold: when the threshold kept nothing, the band never ran.
    band = next((i for i in range(threshold + 1, len(recipe.selectors)) if recipe.selectors[i - 1].name == "band"), None)
    if band is None or set_path(recipe, band, "low") is None or set_path(recipe, threshold, "min_percentile") is None:
        return None
    built = recipe.build_selectors()[band - 1].config
    candidates = _prepare(frame)
    seed = recipe.seed if seed is None else int(seed)
    low, high = built.low, built.high
    while low > 0.0 or high < 100.0:
        low, high = max(0.0, low - BAND_STEP), min(100.0, high + BAND_STEP)
        wider = recipe.with_selector_config(band - 1, low=low, high=high)
        if filter_survivors(candidates, wider.with_selector_config(threshold - 1, min_percentile=0.0).build_selectors(),
                            seed) >= budget:
            p, kept = percentile_for_budget(wider, frame, budget, threshold, seed)
            return (f"--set {set_path(recipe, band, 'low')}={low:g} --set {set_path(recipe, band, 'high')}={high:g} "
                    f"--set {set_path(recipe, threshold, 'min_percentile')}={p} keep {kept:,} after the filters, "
                    f"enough for the budget of {budget:,}")
    return (f"even the widest band (0-100) keeps fewer than {budget:,}: fewer rows have every score the filters read; "
            "lower the budget")


def short_selection_error(result: SelectionResult, recipe: Recipe | None = None,
                          frame: pd.DataFrame | None = None) -> str | None:
    """For a selection short of its budget that its budget does not allow to be short: one
    sentence with how many it found, how many were asked, the stage that cut it short and the
    two fixes (``--allow-short``, or ``fill: rank``). None otherwise (and for an empty
    selection, which :func:`empty_selection_error` explains)."""
    if not result.shortfall or result.allow_short or not result.n_selected:
        return None
    k = result.cut_short_at()
    text = (f"{result.method} selected {result.n_selected:,} of the {result.budget:,} asked (its budget) from "
            f"{result.n_candidates:,} candidates")
    if k is not None:
        cut = result.stages[k - 1]
        text += f": stage {k} ({cut.selector}) kept {cut.n_out:,} of {cut.n_in:,}"
    if result.filled.size:
        return (text + f", and fill: rank found {result.filled.size:,} more rows it could rank; pass --allow-short "
                f"(budget allow_short: true) to accept {result.n_selected:,}, or lower the budget")
    fix = (f"pass --allow-short (budget allow_short: true) to accept {result.n_selected:,}, or --fill rank (budget "
           f"fill: rank) to fill the other {result.shortfall:,} from the rows that entered stage {k}, closest to "
           "passing first")
    advice = percentile_advice(recipe, frame, result.budget, k, result.seed) if recipe is not None and frame is not None and k else None
    return text + f"; {fix}" + (f"; or {advice}" if advice else ", or relax that stage with --set")


def empty_selection_error(report: dict, recipe, frame) -> str | None:
    """For a selection that kept nothing from a non-empty pool: a sentence naming the stage
    that emptied it, the values it saw and the change that would keep some. None otherwise."""
    if report["n_selected"] or not report["n_candidates"]:
        return None
    stage = next((s for s in report["stages"] if s["n_out"] == 0), report["stages"][-1])
    text = f"{recipe.name} selected 0 of {report['n_candidates']:,} candidates: stage {stage['index']} ({stage['selector']}) kept none"
    column = stage["config"].get("column")
    if stage["selector"] == "threshold" and column in frame.columns:
        import pandas as pd

        values = pd.to_numeric(frame[column], errors="coerce").dropna()
        if len(values):
            text += (f"; {column} ranged {values.min():.4g} to {values.max():.4g} over the candidates, and the threshold "
                     f"was min_value {stage['config'].get('min_value')}")
            if recipe.name == "3ds":
                text += (" (the paper's delta on its 0-100 scale; a small rater such as SmolLM2-135M rates on a "
                         "compressed scale)")
            budget = (report.get("budget") or {}).get("resolved")
            advice = percentile_advice(recipe, frame, int(budget), stage["index"], report.get("seed")) if budget else None
            if advice:  # computed from these scores, so the fix it names reaches the budget
                text += f". {advice[0].upper()}{advice[1:]}; or pass --fill rank to fill the budget by rank"
            else:
                text += (". Keep the top share with --set threshold.min_percentile=80 (top 20%), or lower the "
                         f"absolute threshold, e.g. --set threshold.min_value={values.quantile(0.8):.0f}")
            return text
    notes = "; ".join(stage["notes"])
    return text + (f" ({notes})" if notes else "") + "; relax that stage with --set or raise the budget"


def apply_selector_overrides(recipe: Any, overrides: Mapping[str, Mapping[str, Any]] | None, where: str = "") -> Any:
    """``recipe`` with each named selector's config deep-merged with its changes, checked by
    building the selectors. ``where`` prefixes errors (e.g. ``selector_overrides.3ds``, or
    ``--set``, whose paths start at the selector); a bad key is named by its full path."""
    prefix = f"{where}." if where and not where.startswith("-") else ""
    names = [spec.name for spec in recipe.selectors]
    for name, changes in (overrides or {}).items():
        index = next((i for i, spec in enumerate(recipe.selectors) if spec.name == name), None)
        if index is None:
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f" - did you mean {prefix + close[0]!r}?" if close else ""
            raise ValueError(f"{where + ': ' if where else ''}method {recipe.name!r} has no selector {clip(name)}; "
                             f"its selectors are {', '.join(names)}{hint}")
        if not isinstance(changes, Mapping):
            raise ValueError(f"{prefix}{clip_text(str(name))} must be a mapping of config changes, not {clip(changes)}")
        recipe = recipe.with_selector_config(index, **deep_merge(recipe.selectors[index].config, changes))
    recipe.build_selectors(prefix)
    return recipe
