"""Typed pipeline parameters (the Prefect UI renders these as a form)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from syllabus.config import deep_merge, load_yaml, merge_changes, read_config_text
from syllabus.evaluation.runner import EvalConfig
from syllabus.plan import Plan, make_plan
from syllabus.pool.canonical import DEFAULT_MAX_CHARS, FieldMap
from syllabus.pool.ingest import DEFAULT_SHARD_SIZE
from syllabus.selection.base import Budget
from syllabus.store.credentials import adopt_all
from syllabus.training.config import FinetuneConfig


# A scoring stage's task runs per scorer, at most (flows/score.py cuts the shards into this many batches).
MAX_TASKS_PER_SCORER = 256

# Samples per shard, one default per side, each written once: syllabus.pool.ingest.DEFAULT_SHARD_SIZE
# (1,000) for `syllabus ingest`, `syllabus score POOL...` and the ingest deployment (IngestConfig);
# PIPELINE_SHARD_SIZE (32) for `syllabus run`, compare, watch and the pipeline deployment
# (PipelineParams), where small shards spread the demo's 96 samples over workers and retries.
# They stay apart on purpose: a shard's content hash is part of every score's cache key, so
# changing either default re-shards its side's pools and rescores them from nothing.
PIPELINE_SHARD_SIZE = 32

def _exactly_one(value: Any) -> Any:
    """One sentence, not a list of schema failures, when a budget gives both or neither."""
    if isinstance(value, Mapping):
        count, ratio = value.get("count"), value.get("ratio")
        if (count is None) == (ratio is None):
            given = f"both (count {count}, ratio {ratio})" if count is not None else "neither"
            raise PydanticCustomError("budget_one_of", "give exactly one of count or ratio; this budget gives {given}",
                                      {"given": given})
    return value


class _ExactlyOneInTheValidator:
    """Leaves Budget's ``oneOf`` out of the parameter schema a flow gets in Prefect. The Prefect
    server checks a run's parameters against that schema with jsonschema, whose words for it
    are schema text (``{'count': 4, 'ratio': 0.5} is valid under each of {'properties': ...``)
    and cannot be changed; without it the run's parameters are checked by ``_exactly_one`` as
    the run starts, which says what to do. Every other check (types, count >= 1, 0 < ratio
    <= 1, no unknown key) stays in the schema."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        handler.resolve_ref_schema(schema).pop("oneOf", None)
        return schema


# A budget as a flow parameter (the pipeline's, compare's and the select flow's).
BudgetParam = Annotated[Budget, BeforeValidator(_exactly_one), _ExactlyOneInTheValidator()]


class SelectConfig(BaseModel):
    """One selection, as ``syllabus select`` and the pipeline's select stage both make it
    (:func:`syllabus.pipeline.stages.select`): the method, its score manifests, its budget and
    the changes to its selectors. The recipe's budget is the default, by one rule
    (:meth:`syllabus.selection.recipes.Recipe.budget_for`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field(description="a shipped recipe name or a recipe .yaml path")
    scores: list[str] = Field(default_factory=list, description="score manifest JSONs or score Parquet files")
    budget: BudgetParam | None = Field(None, description="the budget; empty: the recipe's")
    fill: Literal["rank"] | None = Field(None, description="shortfall policy over the budget's and the recipe's")
    allow_short: bool = Field(False, description="accept a selection short of the budget")
    seed: int | None = Field(None, description="seed for K-Center and random sampling; empty: the recipe's")
    selector_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per selector config changes, e.g. {'threshold': {'min_value': 85}}")
    overrides_source: str = Field("", description="where the selector changes came from, for errors ('--set')")
    pool: str | None = Field(None, description="pool manifest URL; empty: the one the score manifests name")
    compare: list[str] = Field(default_factory=list, description="other selections to report the overlap with")
    plots: bool = Field(True, description="commit the PNG pictures")

    def recipe(self) -> Any:
        """The method's recipe with the selector changes, checked by building its selectors."""
        from syllabus.selection.recipes import apply_selector_overrides, load_recipe

        return apply_selector_overrides(load_recipe(self.method), self.selector_overrides, self.overrides_source)

    def budget_for(self, recipe: Any) -> Budget | None:
        """This selection's budget by the recipe's one rule (:meth:`Recipe.budget_for`)."""
        return recipe.budget_for(self.budget, self.fill, self.allow_short)


SpecialTokens = Literal["keep", "quarantine"]


class IngestConfig(BaseModel):
    """One ingest, as ``syllabus ingest``, ``syllabus score POOL...``, the ingest deployment and
    the pipeline's ingest stage all make it (:func:`syllabus.pipeline.stages.ingest`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: list[str] = Field(min_length=1, description="pool files, directories or URLs")
    # The ingest side's default (PIPELINE_SHARD_SIZE above says why the pipeline's differs).
    shard_size: int = Field(DEFAULT_SHARD_SIZE, ge=1, description="samples per shard: the unit of scoring, caching and retry")
    max_chars: int = Field(DEFAULT_MAX_CHARS, ge=1, description="reject records longer than this")
    fields: dict[str, str] = Field(default_factory=dict, description="role -> field name, e.g. {'output': 'answer_text'}")
    special_tokens: SpecialTokens = Field(
        "keep", description="records whose text spells a chat-template token (<|im_end|>, <s>, [INST] ...): 'keep' "
        "them (the strings stay plain text to every tokenizer) or 'quarantine' them")
    pack_small_files: bool = Field(False, description="cut shards across file ends, so many small files make full shards")

    @field_validator("fields")
    @classmethod
    def _known_roles(cls, fields: dict[str, str]) -> dict[str, str]:
        FieldMap.from_overrides(fields)  # an unknown role fails before any file is read
        return fields

    def field_map(self) -> FieldMap:
        return FieldMap.from_overrides(self.fields)


# The settings ``syllabus score`` takes as flags and hands to every chosen scorer whose config
# has the field (at its top, or in the one sub-config that has it: influence's gradients):
# setting -> (the flag, for messages; the scorer config field). A setting that no chosen
# scorer takes is an error, not silence.
SHARED_SETTINGS = {
    "batch_size": ("--batch-size", "batch_size"),
    "cutoff": ("--cutoff", "cutoff"),
    "max_new_tokens": ("--max-new-tokens", "max_new_tokens"),
    "quality_mode": ("--quality-mode", "mode"),
    "preset": ("--preset", "preset"),
    "perspective": ("--perspective", "perspective"),
    "validation": ("--validation", "validation"),
}

# Fields a scorer has that a shared setting deliberately leaves alone, and why.
NOT_FROM_SHARED = {
    # The rating prompt has its own length budget (rubric + question + shortened answer): the
    # scoring cutoff for training sequences does not apply to it.
    ("diq_difficulty", "cutoff"): "its rating prompt has its own length budget",
}


def _field_path(config_cls: Any, field: str) -> tuple[str, ...] | None:
    if field in config_cls.model_fields:
        return (field,)
    nested = [(name,) + (field,) for name, f in config_cls.model_fields.items()
              if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel) and field in f.annotation.model_fields]
    return nested[0] if len(nested) == 1 else None


class ScoreConfig(BaseModel):
    """One scoring run of a method (its recipe's scorers, exactly as the pipeline plans them,
    so the cache keys are the pipeline's) or of one scorer: ``syllabus score``'s settings, run
    by :func:`syllabus.pipeline.stages.score`. The pool is a manifest, or files to ingest first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field(description="a shipped method (its recipe's scorers) or one scorer's name")
    model: str = Field(description="the target model: an alias, a Hugging Face directory, a .gguf file or a hub id")
    pool_manifest: str | None = Field(None, description="the pool manifest URL that ingest printed")
    ingest: IngestConfig | None = Field(None, description="pool files to ingest first (instead of pool_manifest)")
    shared: dict[str, Any] = Field(default_factory=dict, description="SHARED_SETTINGS given, e.g. {'batch_size': 4}")
    changes: dict[str, Any] = Field(default_factory=dict,
                                    description="scorer (or instance) -> config changes, on top of the shared settings")
    limit: int | None = Field(None, ge=1, description="score only the first N samples of the pool")
    force: bool = Field(False, description="recompute even when a committed result exists")
    device: str | None = Field(None, description="cpu, cuda, cuda:1 ... (default: cuda when available)")
    dtype: str | None = Field(None, description="float32 / bfloat16 / float16 (default: fp32 on CPU, bf16 on GPU)")
    trust_remote_code: bool = False
    calibrate: bool = Field(True, description="time a scorer with no recorded rate on a few samples before the work")
    estimate: int | None = Field(None, description="samples the closing estimate is for (default: the pool, else 10,000)")
    budget: BudgetParam | None = Field(None, description="the budget the fixed cut-off warnings are sized for")
    tracking_uri: str | None = Field(None, description="also log the run's figures to this MLflow tracking URI")
    experiment: str = "syllabus"

    @model_validator(mode="after")
    def _one_pool(self) -> "ScoreConfig":
        if (self.pool_manifest is None) == (self.ingest is None):
            raise ValueError("give either pool files to ingest or a pool manifest URL (--pool), exactly one of them")
        unknown = set(self.shared) - set(SHARED_SETTINGS)
        if unknown:
            raise ValueError(f"shared settings {sorted(unknown)} are not among {', '.join(SHARED_SETTINGS)}")
        return self

    def scorers(self) -> list[str]:
        """The scorers the method runs: a recipe's, or the one scorer named."""
        from syllabus.selection.recipes import known_recipes, load_recipe

        return [spec.name for spec in load_recipe(self.method).scorers] if self.method in known_recipes() else [self.method]

    def overrides(self, scorers: list[str] | None = None) -> dict[str, dict]:
        """The shared settings' changes per chosen scorer, with :attr:`changes` on top. A setting
        goes to every chosen scorer that has its field; one that none of them has raises a
        sentence naming the flag and the scorers."""
        from syllabus import registry

        scorers = self.scorers() if scorers is None else scorers
        out: dict[str, dict] = {}
        for setting, (option, field) in SHARED_SETTINGS.items():
            value = self.shared.get(setting)
            if value is None:
                continue
            if field == "validation":
                value = {"source": value}
            took, refused = [], []
            for scorer in scorers:
                path = _field_path(registry.lookup("scorer", scorer).config_cls, field)
                why = NOT_FROM_SHARED.get((scorer, field))
                if scorer == "quality" and field == "max_new_tokens" and self.shared.get("quality_mode") != "generate":
                    why = "quality generates only with --quality-mode generate"
                if path is None or why:
                    refused.append(f"{scorer} ({why or f'its config has no {field}'})")
                    continue
                nested: Any = value
                for key in reversed(path):
                    nested = {key: nested}
                out = deep_merge(out, {scorer: nested})
                took.append(scorer)
            if not took:
                shown = value["source"] if field == "validation" else value
                raise ValueError(f"{option} {shown}: --method {self.method} scores with {', '.join(scorers) or 'no scorer'}, "
                                 f"and none of them takes it: {'; '.join(refused)}; drop {option}")
        return deep_merge(out, self.changes)

    def scorer_configs(self) -> dict[str, dict]:
        """Scorer instance -> config: a method's plan exactly as the pipeline makes it (so the
        cache keys are the pipeline's), or one scorer with the changes. A change for a scorer
        this run does not score is an error (``--method 3ds --set ifd.cutoff=64``)."""
        from syllabus.config import unknown_key
        from syllabus.plan import scorer_of, scorer_plan
        from syllabus.selection.recipes import known_recipes

        overrides = self.overrides()
        if self.method in known_recipes():
            plan = make_plan([self.method], overrides)
            if not plan.scorers:
                raise ValueError(f"method {self.method!r} needs no scores: run `syllabus select --method {self.method}` "
                                 "on any scored pool, or score another method")
            configs = {name: plan.scorers[name] for name in plan.instances_of(self.method)}
        else:
            configs = scorer_plan(self.method, overrides.get(self.method)).scorers
        known = set(configs) | {scorer_of(name) for name in configs}
        for head in self.changes:
            if head not in known:
                raise ValueError(f"--set: {unknown_key(head, known)} ({self.method} scores {', '.join(configs)})")
        return configs


class PipelineParams(BaseModel):
    """Everything one pipeline run needs. Defaults are the embedded demo: a small slice of the
    demo pool, SmolLM2-135M, 3DS against random at the same budget, a local store and MLflow
    in a local sqlite file; small enough to finish in about 15 minutes on 2 CPU cores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: list[str] = Field(default_factory=list, description="pool files/dirs/URLs; empty = the embedded demo pool")
    demo_medical: int = Field(64, ge=1, description="demo pool: HealthBench conversations to take")
    demo_general: int = Field(32, ge=0, description="demo pool: AlpacaEval distractors to take")
    demo_heldout: int = Field(24, ge=0, description="demo pool: held-out HealthBench answers for the reference-NLL benchmark")
    shard_size: int = Field(PIPELINE_SHARD_SIZE, ge=1, description="samples per shard: the unit of scoring, caching and retry")
    special_tokens: Literal["keep", "quarantine"] = Field(
        "keep", description="records whose text spells a chat-template token (<|im_end|>, <s>, [INST] ...): 'keep' "
        "them (the strings stay plain text to every tokenizer) or 'quarantine' them at ingest")
    model: str = Field("smollm2-135m", description="the target model: an alias, a Hugging Face directory, a .gguf file or a hub id")
    methods: list[str] = Field(default_factory=lambda: ["3ds", "random"],
                               description="selection methods to compare (3ds, diq, ifd, less, random, full)")
    # The demo's 3DS keeps fewer than 16 of its 96 samples (about 9 pass its bands) and says so in
    # its report: the demo accepts that, where a budget of its own without allow_short (or fill:
    # rank) fails the arm that comes out short.
    budget: BudgetParam = Field(Budget(count=16, allow_short=True), description=(
        "samples every method selects: exactly one of count or ratio; when a method keeps fewer, fill: rank fills "
        "the rest by rank and allow_short: true accepts fewer (otherwise that arm fails, naming both fixes)"))
    seed: int = Field(0, description="seed for random selection and for sampling the demo pool")
    store: str | None = Field(None, description="store URL (default $SYLLABUS_STORE or ./syllabus-store)")
    scorer_configs: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per-scorer config overrides, e.g. {'difficulty': {'max_new_tokens': 64}}; the defaults are the "
        "scorers' own, the same as `syllabus score` uses",
    )
    selector_overrides: dict[str, dict[str, dict[str, Any]]] = Field(
        # SmolLM2-135M rates on a compressed scale (about 19-35 of 100 on the demo pool), so the
        # paper's delta of 90 would keep nothing: the demo keeps the top half of its ratings.
        default_factory=lambda: {"3ds": {"threshold": {"min_percentile": 50}}},
        description="per method, per selector config changes, e.g. {'3ds': {'threshold': {'min_value': 85}}}",
    )
    finetune: FinetuneConfig = Field(
        default_factory=lambda: FinetuneConfig(batch_size=8, micro_batch_size=4, learning_rate=2e-4, cutoff=512),
        description="LoRA fine-tuning settings (FinetuneConfig); fields not given take FinetuneConfig's defaults",
    )
    benches: list[str] = Field(default_factory=lambda: ["mmlu-medical"], description="benchmarks: built-in names or files")
    stop_after: Literal["select", "evaluate"] = Field(
        "evaluate", description="'select' stops every arm after its selection (scores and subsets only, no "
        "fine-tuning or evaluation: seconds once the scores are cached); 'evaluate' runs the whole arm")
    eval: EvalConfig = Field(
        default_factory=lambda: EvalConfig(limit=40, generate=False),
        description="evaluation settings (EvalConfig); fields not given take EvalConfig's defaults",
    )
    evaluate_base: bool = Field(True, description="also evaluate the base model, for reference")
    score_workers: int = Field(1, ge=1, description="scoring tasks run at once (threads, or local Dask workers)")
    task_runner: Literal["thread", "dask", "ray"] = Field("thread", description="where scoring tasks run: this process, a Dask cluster or a Ray cluster")
    dask_address: str | None = Field(None, description="address of an existing Dask scheduler or Ray cluster (default: start a local one)")
    max_tasks_per_scorer: int = Field(
        MAX_TASKS_PER_SCORER, ge=1, description="the most Prefect task runs one scorer makes: the pool's shards are "
        "split into at most this many batches (a pool with fewer shards gets one task a shard); raise it to spread a "
        "small pool over more workers; a Prefect server slows with tens of thousands of task runs")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default sqlite:///./mlflow.db)")
    export_format: Literal["jsonl", "alpaca", "sharegpt", "hf"] | None = Field(
        None, description="also export every arm's subset to export_dir for another trainer: plain JSONL, Alpaca or "
        "ShareGPT JSON with a LLaMA-Factory dataset_info.json entry, or a datasets.save_to_disk directory")
    export_dir: str = Field("exports", description="local directory for export_format (one dataset_info.json for every arm)")
    experiment: str = Field("syllabus", description="MLflow experiment the runs go to")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        # Checked when the config is read: an unknown name must not cost a Prefect server
        # start and a FAILED MLflow run first.
        from syllabus.selection.recipes import load_recipe

        if not methods:
            raise ValueError("methods is empty; name at least one method, e.g. [3ds, random]")
        for method in methods:
            load_recipe(method)  # an unknown name raises with the known ones and the closest match
        return methods

    @field_validator("pool", "store", "tracking_uri")
    @classmethod
    def _no_credentials(cls, value: Any) -> Any:
        # Flow parameters are stored in Prefect's database: credentials typed into a URL move
        # to the environment here (README, "Credentials"), before the flow is called.
        return adopt_all(value)

    @classmethod
    def from_file(cls, path: str | Path) -> "PipelineParams":
        # A FIFO (which would block a read for ever) or an oversized file is refused unread.
        data = load_yaml(read_config_text(path, f"pipeline config {path}"), f"pipeline config {path}") or {}
        if not isinstance(data, dict):
            raise ValueError(f"pipeline config {path} must be a YAML mapping of PipelineParams fields")
        return cls(**data)

    @model_validator(mode="after")
    def _plan_checks(self) -> "PipelineParams":
        # Every scorer config (recipe + overrides) and selector override is validated when the
        # config is read: a typo must not surface after hours of scoring.
        self.plan()
        return self

    def plan(self, methods: list[str] | None = None) -> Plan:
        """The scorer instances and per-method selection of ``methods`` (default: this run's),
        with this run's scorer and selector overrides; raises one sentence naming the setting."""
        return make_plan(methods or self.methods, self.scorer_configs, self.selector_overrides)

    def check(self) -> None:
        """Validate these parameters again: every field, the plan and (for a comparison) the
        windows, the checks that already ran when they were built; raises as building does."""
        type(self).model_validate(self.model_dump())

    def check_environment(self) -> None:
        """What the parameters cannot check themselves, checked before a flow starts a Prefect
        server or loads a model: the MLflow tracking URI answers (a few seconds, where MLflow's
        own retries take minutes) and a device set by SYLLABUS_DEVICE exists."""
        import os

        from syllabus.tracking.lineage import check_tracking_uri

        check_tracking_uri(self.tracking_uri)
        if os.environ.get("SYLLABUS_DEVICE"):
            from syllabus.models.loading import check_device

            try:
                check_device(os.environ["SYLLABUS_DEVICE"])
            except ValueError as exc:
                raise ValueError(f"SYLLABUS_DEVICE: {exc}") from None

    def ingest_config(self, inputs: list[str]) -> IngestConfig:
        """The run's ingest of ``inputs`` (its pool, or the demo's files): its shard size and
        special-token policy, the rest IngestConfig's defaults."""
        return IngestConfig(inputs=inputs, shard_size=self.shard_size, special_tokens=self.special_tokens)

    def with_changes(self, changes: dict[str, Any]) -> "PipelineParams":
        """These parameters with ``changes`` merged on top (:func:`syllabus.config.merge_changes`:
        deep, except that naming one alternative of the budget replaces it)."""
        return type(self).model_validate(merge_changes(type(self), self.model_dump(mode="json"), changes))


class CompareParams(PipelineParams):
    """A comparison: the pipeline's parameters plus random seeds and difficulty windows.
    Every method is selected at the same budget, fine-tuned with the same settings and
    evaluated on the same items; random runs once per seed."""

    methods: list[str] = Field(default_factory=lambda: ["3ds", "diq", "ifd", "random", "full"],
                               description="selection methods to compare (3ds, diq, ifd, less, random, full)")
    seeds: int = Field(3, ge=1, description="random selection seeds (random runs once per seed)")
    windows: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"easy": (0.0, 50.0), "medium": (25.0, 75.0), "hard": (50.0, 100.0)},
        description="difficulty windows: percentile bands applied to each of D1, D2, D3 by the window method's "
        "band selector; {} for none",
    )
    window_method: str = Field("3ds", description="the method whose band selector the windows move")
    report_dir: str | None = Field(None, description="also write the report (markdown, plots, JSON) to this directory")

    labels: str | None = Field(None, description="defect labels (JSONL from `syllabus plant-defects`): report each arm's "
                               "share of planted defects, overall, per kind and after each stage, next to the pool's base rate")

    @model_validator(mode="after")
    def _windows_are_bands(self) -> "CompareParams":
        """Every difficulty window, as the band of the window method it will become."""
        if not self.windows:
            return self
        from syllabus.selection.recipes import apply_selector_overrides
        from syllabus.selection.recipes import load_recipe

        recipe = load_recipe(self.window_method)
        if not any(spec.name == "band" for spec in recipe.selectors):
            raise ValueError(f"window_method {self.window_method!r} has no band selector to slide; use 3ds or set windows: {{}}")
        base = self.selector_overrides.get(self.window_method) or {}
        for name, (low, high) in self.windows.items():
            try:
                apply_selector_overrides(recipe, deep_merge(base, {"band": {"low": float(low), "high": float(high)}}))
            except ValueError as exc:
                raise ValueError(f"window {name!r}: {exc}") from None
        return self
