"""The pipeline's stages as plain functions over small references.

Each stage takes URLs, names and configs (never DataFrames or models) and returns a small
JSON-able dict, so the Prefect tasks in ``tasks/`` are one call each and every stage can be
run, retried or cached on its own. The object store is the cache: every stage checks its
commit marker before computing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from syllabus.pipeline.config import IngestConfig, ScoreConfig, SelectConfig
from syllabus.store import Store

if TYPE_CHECKING:  # torch-free at import: the training module is loaded inside finetune
    from syllabus.training.lora import ProgressCallback

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ ingest
def ingest(config: IngestConfig, store_url: str | None, progress: bool | None = False) -> dict[str, Any]:
    """Ingest the pool (``syllabus ingest``, ``syllabus score POOL...``, the ingest task);
    returns the ingest summary (``manifest`` URL, counts, fingerprint). ``progress``: a
    progress bar (None: when the terminal shows it)."""
    from syllabus.pool.ingest import ingest_pool

    result = ingest_pool(config.inputs, Store(store_url), shard_size=config.shard_size, fields=config.field_map(),
                         max_chars=config.max_chars, progress=progress, special_tokens=config.special_tokens,
                         pack_small_files=config.pack_small_files)
    return result.summary()


def check_budget_fits(budget: Any, n_pool: int, methods: Sequence[str]) -> None:
    """After ingest, before any scoring: raise :class:`~syllabus.selection.base.BudgetTooLargeError`
    naming the method, the budget and the pool when a count asks for more samples than the pool
    holds (no threshold could meet it). ``budget`` is a Budget; a method that needs no budget
    (``full``) is not checked."""
    from syllabus.selection.base import BudgetTooLargeError
    from syllabus.selection.recipes import load_recipe
    from syllabus.tracking.names import method_label

    for method in methods:
        if not load_recipe(method).needs_budget():
            continue
        try:
            budget.check_fits(n_pool, method_label(method))
        except BudgetTooLargeError as exc:  # the flags it names are compare's; a run config says it so
            raise BudgetTooLargeError(f"{exc} (in a run config: budget: {{count: {n_pool}}} or less, or "
                                      "{ratio: R})") from None


def cutoff_warnings(method: str, overrides: Mapping[str, Any] | None, budget: Any,
                    manifests: Mapping[str, Mapping[str, Any]], instances: Sequence[str]) -> list[str]:
    """After scoring, before selecting: the fixed cut-offs of ``method`` (its recipe with the
    arm's selector ``overrides``) that the scores of its scorer ``instances`` cannot meet for
    ``budget`` (a Budget), as :func:`syllabus.selection.cutoffs.fixed_cutoff_warnings` words
    them (``syllabus score`` gives the same after each scorer). Only the score tables a
    threshold reads are read; empty when there is none."""
    from syllabus.plan import scorer_of
    from syllabus.selection.recipes import apply_selector_overrides
    from syllabus.selection.cutoffs import fixed_cutoff_warnings
    from syllabus.selection.recipes import load_recipe
    from syllabus.selection.scores import read_score_input

    recipe = apply_selector_overrides(load_recipe(method), overrides)
    columns = [str(s.config.get("column") or "quality_score") for s in recipe.selectors if s.name == "threshold"]
    frame = None
    for instance in instances:
        prefix = scorer_of(instance) + "_"
        if instance not in manifests or not any(c.startswith(prefix) for c in columns):
            continue
        table, _ = read_score_input(manifests[instance]["url"])
        part = table.select([c for c in table.column_names if c == "sample_id" or c.startswith(prefix)]).to_pandas()
        frame = part if frame is None else frame.merge(part, on="sample_id", how="outer")
    return fixed_cutoff_warnings(recipe, frame, budget) if frame is not None else []


def pool_shards(manifest_url: str) -> list[dict[str, Any]]:
    """Small references to every shard of a pool: name, URL, content hash, rows."""
    from syllabus.pool.manifest import load_manifest

    manifest = load_manifest(manifest_url)
    return [{k: s[k] for k in ("name", "url", "content_hash", "rows")} for s in manifest["shards"]]


# ----------------------------------------------------------------------------- scoring
def shard_batches(shards: Sequence[Mapping[str, Any]], max_batches: int) -> list[list[Mapping[str, Any]]]:
    """``shards`` cut into at most ``max_batches`` runs of consecutive shards whose sizes differ
    by at most one: the units a scoring stage hands to its workers, so the number of
    orchestrator task runs stays bounded however large the pool (a shard stays the unit of
    caching and retry). Fewer shards than ``max_batches``: one shard a batch."""
    if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1:
        raise ValueError(f"max_tasks_per_scorer is {max_batches!r}; it must be a whole number of at least 1 "
                         "(the most task runs one scorer may create; the default 256 suits pools of any size)")
    count = min(max_batches, len(shards))
    return [list(shards[i * len(shards) // count:(i + 1) * len(shards) // count]) for i in range(count)]


def score_shards(
    shards: Sequence[Mapping[str, Any]],
    scorer_name: str,
    scorer_config: Any,
    model: str,
    store_url: str | None,
    pool_manifest_url: str | None = None,
    retry_delays: Sequence[float] = (),
    permanent: tuple[type[BaseException], ...] = (),
    on_shard: Callable[[Mapping[str, Any], Mapping[str, Any] | None, str | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Score a batch of shards with one scorer instance (the flows' score task; ``scorer_config``
    typed once for the stage by :func:`syllabus.scoring.pool.typed_configs`): the model
    loaded once per process, by the first shard that is not cached. Each shard is committed as
    it finishes, retried after each of ``retry_delays`` unless its error is ``permanent``, and
    reported under ``missing`` if it still fails (:func:`syllabus.scoring.pool.score_shards`,
    the loop ``syllabus score`` runs too). Returns ``{"entries": [...], "missing": [...]}``."""
    from syllabus.scoring.pool import LazyModel, score_shards as score

    return score(shards, scorer_name, scorer_config, LazyModel(model), Store(store_url), pool_manifest_url,
                 retry_delays=retry_delays, permanent=permanent, on_shard=on_shard, sleep=sleep)


def write_score_manifest(
    scorer_name: str,
    scorer_config: Any,
    model: str,
    pool_manifest_url: str,
    entries: Sequence[Mapping[str, Any]],
    missing: Sequence[Mapping[str, Any]],
    store_url: str | None,
) -> dict[str, Any]:
    """Fan in one scorer instance's shard entries into its score manifest (the format
    ``syllabus score`` writes), recording the shards that failed under ``missing``."""
    from syllabus.models.ref import fingerprint, resolve
    from syllabus.scoring.pool import write_score_manifest as write

    return write(scorer_name, scorer_config, fingerprint(resolve(model)), pool_manifest_url, entries, missing,
                 Store(store_url))


# The closing estimate's size when a run scored the whole pool: what a larger pool costs.
DEFAULT_ESTIMATE = 10_000


def check_pool_manifest(url: str) -> str:
    """``url`` when it names a pool manifest; otherwise a sentence saying what it is and how
    to get a manifest."""
    from syllabus.pool.manifest import load_manifest
    from syllabus.store import MissingObjectError

    try:
        load_manifest(url)
    except MissingObjectError:
        store, key = Store.open_url(url)
        if store.exists(key):
            raise ValueError(
                f"--pool {url} is not a pool manifest (it has no commit marker: a pool data file?); --pool takes the "
                f"'manifest' URL printed by `syllabus ingest {url} --json`, or give the file without --pool to ingest "
                "it first"
            ) from None
        raise ValueError(f"--pool {url} does not exist; pass the 'manifest' URL printed by `syllabus ingest --json`") from None
    except (UnicodeDecodeError, ValueError) as exc:
        if "pool manifest" in str(exc):
            raise
        raise ValueError(f"--pool {url} is not a pool manifest (not JSON); pass the 'manifest' URL printed by "
                         "`syllabus ingest --json`") from None
    return url


def check_model_settings(model: str, device: str | None, dtype: str | None) -> None:
    """The model name, device and dtype, checked without loading anything: an unknown alias or
    a missing path, ``--device tpu:9`` or ``cuda:3`` on a one-GPU machine, ``--dtype float8``."""
    from syllabus.models.loading import check_device, pick_dtype
    from syllabus.models.ref import default_device, resolve

    resolve(model)
    pick_dtype(check_device(device or default_device()), dtype)


@dataclass(frozen=True)
class ScoreRun:
    """What :func:`score` did: ``result``, the JSON ``syllabus score --json`` prints (URLs,
    counts, per scorer its stage figures, the cut-off warnings, the estimate, the MLflow run);
    the score manifests; and the scorers whose every sample failed (``unusable``: their
    scores are committed, but they are not a result)."""

    result: dict[str, Any]
    manifests: list[dict[str, Any]]
    unusable: list[str] = field(default_factory=list)


def score(config: ScoreConfig, store_url: str | None, say: Callable[[str], None] | None = None) -> ScoreRun:
    """Score a pool for a method or one scorer in this process (``syllabus score``): ingest
    first when given files, say the plan (:func:`syllabus.scoring.preview.say_plan`, as the
    score flow does), score each scorer instance over the pool (:func:`syllabus.scoring.pool.
    score_pool`: the loop and manifest the flow's tasks use), warn after each scorer about a
    fixed cut-off of the method its scores cannot meet, then commit the combined table (and a
    composite manifest for several scorers), the timing and, with a tracking URI, an MLflow run.

    Every setting is checked before any work: a bad config must not cost an ingest or a model
    load. ``say`` gets the plan's lines as they are known (a calibration takes a while), then
    what each scorer did and where the time went, before the MLflow run is logged."""
    from syllabus.models.ref import default_device
    from syllabus.pool.manifest import load_manifest
    from syllabus.scoring.pool import (LazyModel, _limit_shards, combined_table, commit_combined, commit_composite,
                                       score_pool, typed_configs)
    from syllabus.scoring.preview import plan_preview, record_stage_rates, say_plan

    say = say or (lambda line: log.info("%s", line))
    store = Store(store_url)
    plain = config.scorer_configs()
    configs = typed_configs(plain)  # validated once for the stage: every shard shares the object
    manifest_url = check_pool_manifest(config.pool_manifest) if config.pool_manifest else None
    check_model_settings(config.model, config.device, config.dtype)
    if config.tracking_uri:
        from syllabus.tracking.lineage import check_tracking_uri

        check_tracking_uri(config.tracking_uri)  # seconds, not MLflow's minutes of retries after the scoring
    if config.ingest is not None:
        manifest_url = ingest(config.ingest, store_url, progress=None)["manifest"]
    # Loaded by the first shard that is not cached: a fully cached rerun needs only the fingerprint.
    lm = LazyModel(config.model, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code)
    samples = sum(take or shard["rows"] for shard, take in _limit_shards(load_manifest(manifest_url), config.limit))
    preview = {p["instance"]: p for p in say_plan(
        config.method, config.model, samples, say,
        plan_preview(configs, manifest_url, lm, store, config.limit, config.device or default_device(),
                     config.calibrate, config.force))}
    manifests: list[dict[str, Any]] = []
    stages: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    said: set[str] = set()
    for name, scorer_config in configs.items():
        m = score_pool(manifest_url, name, scorer_config, lm, store, limit=config.limit, force=config.force)
        manifests.append(m)
        # Before the next scorer (3DS: difficulty, the slow one) starts: a fixed cut-off that
        # these scores cannot meet is said now, not after the selection comes up short.
        warnings += _new_cutoff_warnings(config, m, said)
        record_stage_rates([preview[name]], {name: m})
        stages[name] = _stage_summary(m)
    table = combined_table(manifests, store, manifest_url, config.limit)
    table_url = commit_combined(table, store, config.method, manifests)
    scores_url = manifests[0]["url"] if len(manifests) == 1 else \
        commit_composite(config.method, manifests, manifest_url, lm.fingerprint, table_url, store)
    seconds = sum(m["seconds"] for m in manifests)
    result = {
        "scores": scores_url,
        "table": table_url,
        "method": config.method,
        "model": config.model,
        "model_fingerprint": lm.fingerprint,
        "pool_manifest": manifest_url,
        "samples": table.num_rows,
        "seconds": round(seconds, 3),
        "samples_per_second": round(table.num_rows / seconds, 3) if seconds else None,
        "model_loaded": lm.loaded,
        "model_load_seconds": round(lm.load_seconds, 3),
        "stages": stages,
        "warnings": warnings,
    }
    lines, result["estimate"] = _timing_report(config.estimate, manifests, manifest_url)
    for name, st in stages.items():
        say(f"{name}: {st['ok']} ok, {st['failed']} failed, {st['samples_per_second']} samples/s -> {st['scores']}")
    say(f"scores table ({table.num_rows} rows): {table_url}")
    say("where the time went:")
    for line in lines:
        say(line if line.startswith("  ") else f"  {line}")
    if config.tracking_uri:
        result["mlflow_run_id"] = _log_score_run(config, result, manifests)
    unusable = [name for name, st in stages.items() if st["ok"] == 0 and st["failed"]]
    return ScoreRun(result, manifests, unusable)


def _new_cutoff_warnings(config: ScoreConfig, manifest: Mapping[str, Any], said: set[str]) -> list[str]:
    """After a scorer of a method: the method's fixed cut-offs that its scores cannot meet
    (:func:`cutoff_warnings`), logged as warnings before the next scorer starts. ``said`` holds
    the warnings already given (a budget larger than the pool is said once)."""
    from syllabus.selection.recipes import known_recipes

    if config.method not in known_recipes():
        return []
    found = cutoff_warnings(config.method, None, config.budget, {manifest["scorer"]: manifest}, [manifest["scorer"]])
    new = [w for w in found if w not in said]
    for warning in new:
        log.warning("%s", warning)
    said.update(new)
    return new


def _stage_summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """One scorer's line of the result: its manifest, rate, counts, timing and health."""
    out = {
        "scores": m["url"],
        "seconds": m["seconds"],
        "samples_per_second": m["samples_per_second"],
        "ok": sum(e["ok"] or 0 for e in m["shards"]),
        "failed": sum(e["failed"] or 0 for e in m["shards"]),
        "skipped_shards": m["shards_cached"],
        "timing": m["timing"],
    }
    health = [e["stats"]["health"] for e in m["shards"] if e.get("stats") and "health" in e["stats"]]
    if health:
        out["health"] = health[0] if len(health) == 1 else health
    return out


def _timing_report(estimate: int | None, manifests: list[dict], manifest_url: str) -> tuple[list[str], dict]:
    """Per-stage lines for every scorer and the "at this rate" estimate: what a bigger pool costs
    (per-sample cost of every scorer of the method added up; loading the model left out)."""
    from syllabus.pool.manifest import load_manifest
    from syllabus.scoring.timing import estimate_line, stage_lines

    lines: list[str] = []
    per_sample = 0.0
    for m in manifests:
        timing = m.get("timing") or {}
        lines += stage_lines(m["scorer"], timing)
        if timing.get("from_cache"):
            lines.append(f"  {m['scorer']}: every shard was cached; figures as recorded when they were scored")
        per_sample += timing.get("seconds_per_sample") or 0.0
    scored = max((m.get("timing") or {}).get("samples", 0) for m in manifests) if manifests else 0
    n = estimate
    if n is None or n < 1:
        pool_rows = sum(s["rows"] for s in load_manifest(manifest_url)["shards"])
        n = pool_rows if pool_rows > scored else DEFAULT_ESTIMATE
    out = {"samples": n, "seconds": round(per_sample * n, 1), "seconds_per_sample": round(per_sample, 5),
           "line": estimate_line(per_sample, n)}
    lines.append(out["line"])
    return lines, out


def _log_score_run(config: ScoreConfig, result: dict, manifests: list[dict]) -> str:
    """One MLflow run with the configs, and per scorer and stage the seconds, samples/s,
    tokens/s and padding share (the metric names the pipeline's score stage uses)."""
    from syllabus.scoring.timing import stage_metrics
    from syllabus.tracking.lineage import Lineage

    lineage = Lineage(config.tracking_uri, experiment=config.experiment)
    params = {"method": config.method, "model": config.model, "model_fingerprint": result["model_fingerprint"],
              "pool_manifest": result["pool_manifest"], "limit": config.limit,
              "scores": {m["scorer"]: {"url": m["url"], "config": m["config"], "version": m["version"]} for m in manifests}}
    with lineage.run(f"score {config.method}", params=params, tags={"syllabus.stage": "score"}) as run:
        for m in manifests:
            timing = m.get("timing") or {}
            lineage.log_metrics({"samples": m["samples"], "seconds": m["seconds"],
                                 "seconds_per_sample": timing.get("seconds_per_sample") or 0.0,
                                 "model_load_seconds": timing.get("model_load_seconds") or 0.0,
                                 **stage_metrics(timing.get("stages", {}))}, f"score/{m['scorer']}/")
        lineage.log_metrics({"estimate_samples": result["estimate"]["samples"],
                             "estimate_seconds": result["estimate"]["seconds"]}, "score/")
        lineage.log_json(result, "score_result.json")
        return run.info.run_id


# --------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class Selection:
    """What :func:`select` did: the recipe as run, its result and candidates, the committed
    report, and ``error``, the sentence that says why the subset is not a result (empty, or
    short of a budget that does not allow it), or None."""

    recipe: Any
    result: Any
    candidates: Any
    report: dict[str, Any]
    error: str | None

    def checked(self) -> dict[str, Any]:
        """The report, or ValueError with ``error`` and the two ways a run config fixes it."""
        if self.error is None:
            return self.report
        hint = ("" if not self.result.shortfall or not self.report["n_selected"] else
                ". In a run config that is the budget's allow_short: true or fill: rank "
                "(syllabus run/compare --set budget.allow_short=true)")
        raise ValueError(f"{self.error}{hint}; the selection report is {self.report['outputs']['report']}")


def select(config: SelectConfig, store_url: str | None) -> Selection:
    """Run a method's selectors on cached scores and commit the selection (``syllabus select``
    and the pipeline's select stage); selection needs no model. The recipe, its selector
    changes and the score inputs it needs are checked before a score is read. The selection is committed even when it is not a result (empty,
    or short of its budget), to inspect: :attr:`Selection.error` says so."""
    from syllabus.selection.recipes import empty_selection_error, run_recipe, short_selection_error
    from syllabus.selection.report import read_selection_ids, write_selection
    from syllabus.selection.scores import load_candidates

    start = time.perf_counter()
    recipe = config.recipe()
    budget = config.budget_for(recipe)
    if not config.scores and recipe.required_columns():
        raise ValueError(
            f"method {recipe.name!r} reads {', '.join(recipe.required_columns())}; pass the score manifests "
            f"that hold them with --scores (scorers: {', '.join(s.name for s in recipe.scorers)})"
        )
    # The selections to compare with are read first: a wrong URL fails before the scores are read.
    others = {url: read_selection_ids(url) for url in config.compare}
    candidates = load_candidates(list(config.scores), config.pool)
    result = run_recipe(candidates.frame, recipe, budget, config.seed)
    report = write_selection(
        Store(store_url), recipe, result, candidates,
        budget_request=budget.model_dump(exclude_none=True) if budget is not None else None,
        compare=others, plots=config.plots, seconds=time.perf_counter() - start,
    )
    error = (empty_selection_error(report, recipe, candidates.frame)
             or short_selection_error(result, recipe, candidates.frame))
    return Selection(recipe, result, candidates, report, error)


def export_subset(selection: Mapping[str, Any], fmt: str, out_dir: str) -> dict[str, Any]:
    """Export a selection's subset for another trainer (``syllabus export``); arms exported to
    one ``out_dir`` share one LLaMA-Factory ``dataset_info.json``."""
    from syllabus.selection.export import export_selection

    # The pipeline rewrites its own outputs: the export's name is the selection's content key,
    # so a rerun that finds it writes the same subset again (atomically, as every export).
    return export_selection(selection["outputs"]["selected"], fmt, out_dir, overwrite=True)


# ------------------------------------------------------------------- train and evaluate
def finetune(data: str | Sequence[str], model: str, config: Any, store_url: str | None,
             on_progress: ProgressCallback | None = None, force: bool = False, limit: int | None = None,
             exclude_bench: Sequence[str] = (), progress: bool = False) -> dict[str, Any]:
    """LoRA fine-tune ``model`` on a selection Parquet (or any pool files: ``syllabus finetune``
    and the pipeline's finetune stage); returns the adapter summary with what was read.
    ``config`` is a FinetuneConfig or its fields; ``limit`` trains on a seeded random sample of
    that many samples; ``exclude_bench`` drops samples whose question matches an item of those
    benchmarks; ``on_progress(samples done, samples in all, loss)`` is called after every step;
    ``force`` trains even when the adapter is committed (a pruned one gets its weights back)."""
    import random

    from syllabus.models import load_model
    from syllabus.pool.samples import load_samples
    from syllabus.training.config import FinetuneConfig
    from syllabus.training.lora import finetune as train

    cfg = FinetuneConfig.model_validate(config)
    samples, counts = load_samples(data)
    if not samples:
        named = data if isinstance(data, str) else ", ".join(data)
        raise ValueError(f"no usable sample in {named}; each needs an instruction and a response (a selection: relax "
                         "the method's thresholds or raise the budget)")
    if limit is not None and limit < len(samples):
        keep = sorted(random.Random(cfg.seed).sample(range(len(samples)), limit))
        samples = [samples[i] for i in keep]
    decontam = None
    if exclude_bench:
        from syllabus.evaluation.benchmarks import load_benchmark
        from syllabus.evaluation.decontamination import decontaminate

        samples, decontam, _ = decontaminate(samples, [load_benchmark(b) for b in exclude_bench], enforce=True)
    lm = load_model(model, reuse=False)  # training modifies the weights: never the shared copy
    result = train(lm.model, lm.tokenizer, samples, cfg, Store(store_url), lm.fingerprint, base_model=model,
                   progress=progress, on_progress=on_progress, force=force)
    out = result.to_json()
    out["read"] = counts
    if decontam is not None:
        out["decontamination"] = decontam
    return out


def evaluation_config(config: Any, manifests: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The evaluation settings of a run as JSON: ``config`` (an EvalConfig) with the benchmark
    items every scorer of the run held out for validation (the score manifests'
    ``validation_ids``, e.g. DIQ's and LESS's influence) added to ``exclude_ids``, so that no
    arm is evaluated on an item a method was selected for. Without such a scorer the settings
    are unchanged (the default validation set is left out, as before)."""
    out = config.model_dump(mode="json")
    held_out: dict[str, set[str]] = {name: set(ids) for name, ids in (out.get("exclude_ids") or {}).items()}
    for manifest in manifests.values():
        for name, ids in (manifest.get("validation_ids") or {}).items():
            held_out.setdefault(name, set()).update(ids)
    if held_out and out.get("exclude_validation", True):
        out["exclude_ids"] = {name: sorted(ids) for name, ids in sorted(held_out.items())}
    return out


def evaluate(
    model: str,
    adapter_url: str | None,
    benches: Sequence[str],
    config: Any,
    store_url: str | None,
    on_progress: Callable[[int, int, str], None] | None = None,
    fields: Any = None,
    force: bool = False,
    exclude_ids: Mapping[str, Sequence[str]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate the base model or an adapter on benchmarks (``syllabus evaluate`` and the
    pipeline's evaluate stage); returns results URL and metrics. ``config`` is an EvalConfig
    or its fields; ``fields`` maps benchmark columns (a FieldMap); ``exclude_ids`` leaves out
    those items instead of the default validation set's; ``on_progress(items done, items,
    what)`` is called after every batch of each pass."""
    from syllabus.evaluation.runner import EvalConfig, run_evaluation

    result = run_evaluation(model, list(benches), Store(store_url), adapter_url=adapter_url,
                            config=EvalConfig.model_validate(config), fields=fields, force=force,
                            exclude_ids=exclude_ids, progress=progress, on_progress=on_progress)
    return result.to_json()
