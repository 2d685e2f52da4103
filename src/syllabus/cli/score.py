"""``syllabus score``: score a pool with the target model."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Mapping

from syllabus.cli import flags
from syllabus.cli.flags import positive_int
from syllabus.config import deep_merge, parse_set

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = flags.command(sub, cmd_score)
    p.add_argument("pool", nargs="*", metavar="POOL",
                   help="pool files/directories to ingest first (or use --pool with a manifest URL)")
    p.add_argument("--pool", dest="pool_manifest", default=None, metavar="MANIFEST_URL",
                   help="URL of a pool manifest printed by `syllabus ingest --json`")
    from syllabus import registry
    from syllabus.selection.recipes import recipe_names

    recipes, scorers = recipe_names(), registry.names("scorer")  # read once: this runs at every CLI start
    p.add_argument("--method", required=True, choices=sorted(set(recipes) | set(scorers)), metavar="METHOD",
                   help="a method (its recipe's scorers and configs, as the pipeline scores them: "
                   f"{', '.join(recipes)}) or one scorer ({', '.join(scorers)})")
    p.add_argument("--validation", default=None, metavar="FILE",
                   help="influence/diq: benchmark-style JSONL/CSV/Parquet validation items (default: a seeded "
                   "held-out sample of the MMLU medical items)")
    p.add_argument("--perspective", choices=["knowledge", "reasoning", "overall"], default=None,
                   help="diq: the difficulty perspective (default reasoning)")
    p.add_argument("--preset", choices=["ours", "reference"], default=None,
                   help="difficulty/3ds (and ifd): 'reference' computes D1-D3 as the authors' code does (README, "
                   "3DS reference parity); default ours")
    p.add_argument("--estimate", type=int, default=None, metavar="N",
                   help="print what scoring N samples takes at this run's rate (default: the whole pool when "
                   "--limit scored part of it, else 10,000)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="before scoring, estimate the time only from rates measured by earlier runs on this machine "
                   "(by default a scorer with no such rate is first timed on a few samples)")
    p.add_argument("--tracking-uri", default=None,
                   help="also log the run's per-stage figures to this MLflow tracking URI (e.g. sqlite:///mlflow.db)")
    p.add_argument("--experiment", default="syllabus", help="MLflow experiment for --tracking-uri")
    flags.add(p, "model", "store", "limit", limit={"help": "score only the first N samples of the pool"})
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="generation length for D2 / generate-mode rating")
    p.add_argument("--quality-mode", choices=["expected", "generate"], default=None,
                   help="expected (default, one forward) or generate (paper: greedy reply, parsed)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--cutoff", type=positive_int, default=None, help="max tokens per sequence (default 1024)")
    flags.add(p, "device", "dtype", "trust_remote_code")
    flags.add_set(p, "difficulty.max_new_tokens=64 or influence.gradients.batch_size=4",
                  "at a scorer name (or an instance name such as influence@less)")
    flags.add_budget(p, "the budget you will select with (default: the method's); sizes the warning given after "
                     "each scorer when a fixed cut-off of the method (3DS: quality >= 90) keeps too few",
                     "or that budget as a fraction of the pool")
    flags.add(p, "force", "json")


def cutoff_warnings(args: argparse.Namespace, manifest: dict, said: set[str]) -> list[str]:
    """After a scorer of a method: the method's fixed cut-offs that its scores cannot meet
    (the pipeline's :func:`syllabus.pipeline.stages.cutoff_warnings`), logged as warnings
    before the next scorer starts. ``said`` holds the warnings already given (a budget larger
    than the pool is said once)."""
    from syllabus.pipeline.stages import cutoff_warnings as method_warnings
    from syllabus.selection.base import Budget
    from syllabus.selection.recipes import known_recipes

    if args.method not in known_recipes():
        return []
    budget = flags.budget_of(args)
    found = method_warnings(args.method, None, Budget(**budget) if budget else None, {manifest["scorer"]: manifest},
                            [manifest["scorer"]])
    new = [w for w in found if w not in said]
    for warning in new:
        log.warning("%s", warning)
    said.update(new)
    return new


# The flags that set a scorer config field (argparse dest -> option, field). Each reaches every
# chosen scorer whose config has the field (at its top, or in the one sub-config that has it:
# influence's gradients); a flag that no chosen scorer takes is an error, not silence.
SHARED_FLAGS = {
    "batch_size": ("--batch-size", "batch_size"),
    "cutoff": ("--cutoff", "cutoff"),
    "max_new_tokens": ("--max-new-tokens", "max_new_tokens"),
    "quality_mode": ("--quality-mode", "mode"),
    "preset": ("--preset", "preset"),
    "perspective": ("--perspective", "perspective"),
    "validation": ("--validation", "validation"),
}

# Fields a scorer has that a shared flag deliberately leaves alone, and why.
NOT_FROM_FLAGS = {
    # The rating prompt has its own length budget (rubric + question + shortened answer): the
    # scoring cutoff for training sequences does not apply to it.
    ("diq_difficulty", "cutoff"): "its rating prompt has its own length budget",
}


def _field_path(config_cls: Any, field: str) -> tuple[str, ...] | None:
    from pydantic import BaseModel

    if field in config_cls.model_fields:
        return (field,)
    nested = [(name,) + (field,) for name, f in config_cls.model_fields.items()
              if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel) and field in f.annotation.model_fields]
    return nested[0] if len(nested) == 1 else None


def chosen_scorers(method: str) -> list[str]:
    """The scorers ``--method`` runs: a recipe's, or the one scorer named."""
    from syllabus.selection.recipes import known_recipes, load_recipe

    return [spec.name for spec in load_recipe(method).scorers] if method in known_recipes() else [method]


def scorer_overrides(args: argparse.Namespace, scorers: list[str] | None = None) -> dict[str, dict]:
    """The shared flags' changes per chosen scorer, with ``--set`` on top. A flag goes to every
    chosen scorer that has its field; one that none of them has raises a sentence naming the
    flag and the scorers."""
    from syllabus import registry

    scorers = chosen_scorers(args.method) if scorers is None else scorers
    flags: dict[str, dict] = {}
    for dest, (option, field) in SHARED_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if field == "validation":
            value = {"source": value}
        took, refused = [], []
        for scorer in scorers:
            path = _field_path(registry.lookup("scorer", scorer).config_cls, field)
            why = NOT_FROM_FLAGS.get((scorer, field))
            if scorer == "quality" and field == "max_new_tokens" and getattr(args, "quality_mode", None) != "generate":
                why = "quality generates only with --quality-mode generate"
            if path is None or why:
                refused.append(f"{scorer} ({why or f'its config has no {field}'})")
                continue
            nested: Any = value
            for key in reversed(path):
                nested = {key: nested}
            flags = deep_merge(flags, {scorer: nested})
            took.append(scorer)
        if not took:
            shown = value["source"] if field == "validation" else value
            raise ValueError(f"{option} {shown}: --method {args.method} scores with {', '.join(scorers) or 'no scorer'}, "
                             f"and none of them takes it: {'; '.join(refused)}; drop {option}")
    return deep_merge(flags, parse_set(getattr(args, "changes", []), "difficulty.max_new_tokens=64"))


def score_plan(args: argparse.Namespace) -> dict[str, dict]:
    """Scorer instance -> config for ``--method``: a method's plan exactly as the pipeline
    makes it (so the cache keys are the pipeline's), or one scorer with the changes."""
    from syllabus.plan import make_plan, scorer_plan
    from syllabus.selection.recipes import known_recipes

    overrides = scorer_overrides(args, chosen_scorers(args.method))
    if args.method in known_recipes():
        plan = make_plan([args.method], overrides)
        if not plan.scorers:
            raise ValueError(f"method {args.method!r} needs no scores: run `syllabus select --method {args.method}` "
                             "on any scored pool, or score another method")
        configs = {name: plan.scorers[name] for name in plan.instances_of(args.method)}
    else:
        configs = scorer_plan(args.method, overrides.get(args.method)).scorers
    _check_set_targets(args, configs)
    return configs


def _check_set_targets(args: argparse.Namespace, configs: Mapping[str, Any]) -> None:
    """A ``--set`` path must start at a scorer (or instance) this run scores: a change for
    another one would be dropped without a word (``--method 3ds --set ifd.cutoff=64``)."""
    from syllabus.config import unknown_key
    from syllabus.plan import scorer_of

    known = set(configs) | {scorer_of(name) for name in configs}
    for head in parse_set(getattr(args, "changes", []), "difficulty.max_new_tokens=64"):
        if head not in known:
            raise ValueError(f"--set: {unknown_key(head, known)} ({args.method} scores {', '.join(configs)})")


DEFAULT_ESTIMATE = 10_000


def timing_report(args: argparse.Namespace, manifests: list[dict], manifest_url: str) -> tuple[list[str], dict]:
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
    n = args.estimate
    if n is None or n < 1:
        pool_rows = sum(s["rows"] for s in load_manifest(manifest_url)["shards"])
        n = pool_rows if pool_rows > scored else DEFAULT_ESTIMATE
    estimate = {"samples": n, "seconds": round(per_sample * n, 1), "seconds_per_sample": round(per_sample, 5),
                "line": estimate_line(per_sample, n)}
    lines.append(estimate["line"])
    return lines, estimate


def log_to_mlflow(args: argparse.Namespace, result: dict, manifests: list[dict]) -> str:
    """One MLflow run with the configs, and per scorer and stage the seconds, samples/s,
    tokens/s and padding share (the metric names the pipeline's score stage uses)."""
    from syllabus.scoring.timing import stage_metrics
    from syllabus.tracking.lineage import Lineage

    lineage = Lineage(args.tracking_uri, experiment=args.experiment)
    params = {"method": args.method, "model": args.model, "model_fingerprint": result["model_fingerprint"],
              "pool_manifest": result["pool_manifest"], "limit": args.limit,
              "scores": {m["scorer"]: {"url": m["url"], "config": m["config"], "version": m["version"]} for m in manifests}}
    with lineage.run(f"score {args.method}", params=params, tags={"syllabus.stage": "score"}) as run:
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


def pool_manifest_of(url: str) -> str:
    """``url`` when it names a pool manifest; otherwise a sentence saying what it is and how
    to get a manifest."""
    from syllabus.pool.manifest import load_manifest
    from syllabus.store import MissingObjectError, Store

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


def check_model_settings(args: argparse.Namespace) -> None:
    """The model name, device and dtype, checked without loading anything: an unknown alias or
    a missing path, ``--device tpu:9`` or ``cuda:3`` on a one-GPU machine, ``--dtype float8``."""
    from syllabus.models.loading import check_device, pick_dtype
    from syllabus.models.ref import default_device, resolve

    resolve(args.model)
    device = check_device(args.device or default_device())
    pick_dtype(device, args.dtype)


def cmd_score(args: argparse.Namespace) -> int:
    """score a pool with the target model for a method (3DS, DIQ, IFD, LESS) or one scorer

    Score every sample of a pool with the target model and commit per-shard score tables, a score
    manifest and one combined table to the store. A method is scored with exactly the configs the
    pipeline uses for it (the same cache keys). Shards already scored with the same scorer, version,
    config and model are skipped."""

    from syllabus.scoring.pool import LazyModel, combined_table, commit_combined, score_pool
    from syllabus.store import Store

    if bool(args.pool) == bool(args.pool_manifest):
        print("syllabus score: give either pool files to ingest or --pool MANIFEST_URL (exactly one of them)",
              file=sys.stderr)
        return 2
    store = Store(args.store)
    # Every setting is checked before any work: a bad config must not cost an ingest or a model load.
    configs = score_plan(args)
    manifest_url = pool_manifest_of(args.pool_manifest) if args.pool_manifest else None
    check_model_settings(args)
    if args.tracking_uri:
        from syllabus.tracking.lineage import check_tracking_uri

        check_tracking_uri(args.tracking_uri)  # seconds, not MLflow's minutes of retries after the scoring
    if args.pool:
        from syllabus.pool.ingest import ingest_pool

        manifest_url = ingest_pool(args.pool, store).manifest_url
    # Loaded by the first shard that is not cached: a fully cached rerun needs only the fingerprint.
    lm = LazyModel(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    # What will be done and how long it takes, before the work (cached rates or a short calibration).
    from syllabus.models.ref import default_device
    from syllabus.pool.manifest import load_manifest
    from syllabus.scoring.pool import _limit_shards
    from syllabus.scoring.preview import plan_line, plan_preview, record_stage_rates, scorer_line, total_line

    samples = sum(take or shard["rows"] for shard, take in _limit_shards(load_manifest(manifest_url), args.limit))
    print(plan_line(args.method, args.model, samples), flush=True)
    preview = {}
    for p in plan_preview(configs, manifest_url, lm, store, args.limit, args.device or default_device(),
                          not args.no_calibrate, args.force):
        preview[p["instance"]] = p
        print(scorer_line(p), flush=True)
    expected = total_line(list(preview.values()))
    if expected:
        print(expected, flush=True)
    manifests = []
    stages = {}
    warnings: list[str] = []
    said: set[str] = set()
    for name, config in configs.items():
        m = score_pool(manifest_url, name, config, lm, store, limit=args.limit, force=args.force)
        manifests.append(m)
        # Before the next scorer (3DS: difficulty, the slow one) starts: a fixed cut-off that
        # these scores cannot meet is said now, not after the selection comes up short.
        warnings += cutoff_warnings(args, m, said)
        record_stage_rates([preview[name]], {name: m})
        stages[name] = {
            "scores": m["url"],
            "seconds": m["seconds"],
            "samples_per_second": m["samples_per_second"],
            "ok": sum(e["ok"] or 0 for e in m["shards"]),
            "failed": sum(e["failed"] or 0 for e in m["shards"]),
            "skipped_shards": m["shards_cached"],
        }
        stages[name]["timing"] = m["timing"]
        health = [e["stats"]["health"] for e in m["shards"] if e.get("stats") and "health" in e["stats"]]
        if health:
            stages[name]["health"] = health[0] if len(health) == 1 else health
    table = combined_table(manifests, store, manifest_url, args.limit)
    table_url = commit_combined(table, store, args.method, manifests)
    scores_url = manifests[0]["url"]
    if len(manifests) > 1:
        key = f"scores/manifests/{args.method}-{table_url.rsplit('-', 1)[-1].split('.')[0]}.json"
        composite = {"scorer": args.method, "components": {m["scorer"]: m["url"] for m in manifests},
                     "pool_manifest": manifest_url, "model_fingerprint": lm.fingerprint, "table": table_url}
        store.commit(key, json.dumps(composite, indent=1, sort_keys=True).encode(), {"scorer": args.method})
        scores_url = store.url(key)
    seconds = sum(m["seconds"] for m in manifests)
    result = {
        "scores": scores_url,
        "table": table_url,
        "method": args.method,
        "model": args.model,
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
    for name, st in stages.items():
        print(f"{name}: {st['ok']} ok, {st['failed']} failed, {st['samples_per_second']} samples/s -> {st['scores']}")
    print(f"scores table ({table.num_rows} rows): {table_url}")
    lines, result["estimate"] = timing_report(args, manifests, manifest_url)
    print("where the time went:")
    for line in lines:
        print(line if line.startswith("  ") else f"  {line}")
    if args.tracking_uri:
        result["mlflow_run_id"] = log_to_mlflow(args, result, manifests)
        print(f"MLflow run {result['mlflow_run_id']} in {args.tracking_uri}")
    if args.json:
        print(json.dumps(result))
    unusable = [name for name, st in stages.items() if st["ok"] == 0 and st["failed"]]
    if unusable:
        print(f"syllabus score: error: no sample was scored by {', '.join(unusable)}: every one failed (see the "
              "status column of the scores table); check --cutoff, --max-new-tokens and the model", file=sys.stderr)
        return 1
    return 0
