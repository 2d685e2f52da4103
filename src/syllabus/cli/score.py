"""``syllabus score``: score a pool with the target model."""

from __future__ import annotations

import argparse
import json
import sys

from syllabus.cli import flags
from syllabus.cli.flags import positive_int
from syllabus.config import parse_set


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


def score_config(args: argparse.Namespace):
    """``syllabus score``'s arguments as the score stage's config (a ScoreConfig); a flag of
    SHARED_SETTINGS has the setting's name as its dest, and ScoreConfig checks where it goes."""
    from syllabus.pipeline.config import SHARED_SETTINGS, IngestConfig, ScoreConfig

    return ScoreConfig(
        method=args.method, model=args.model, pool_manifest=args.pool_manifest,
        ingest=IngestConfig(inputs=args.pool) if args.pool else None,
        shared={name: getattr(args, name) for name in SHARED_SETTINGS if getattr(args, name, None) is not None},
        changes=parse_set(args.changes, "difficulty.max_new_tokens=64"),
        limit=args.limit, force=args.force, device=args.device, dtype=args.dtype,
        trust_remote_code=args.trust_remote_code, calibrate=not args.no_calibrate, estimate=args.estimate,
        budget=flags.budget_of(args), tracking_uri=args.tracking_uri, experiment=args.experiment,
    )


def cmd_score(args: argparse.Namespace) -> int:
    """score a pool with the target model for a method (3DS, DIQ, IFD, LESS) or one scorer

    Score every sample of a pool with the target model and commit per-shard score tables, a score
    manifest and one combined table to the store. A method is scored with exactly the configs the
    pipeline uses for it (the same cache keys). Shards already scored with the same scorer, version,
    config and model are skipped."""
    from syllabus.pipeline.stages import score

    if bool(args.pool) == bool(args.pool_manifest):
        print("syllabus score: give either pool files to ingest or --pool MANIFEST_URL (exactly one of them)",
              file=sys.stderr)
        return 2
    run = score(score_config(args), args.store, say=lambda line: print(line, flush=True))
    if "mlflow_run_id" in run.result:
        print(f"MLflow run {run.result['mlflow_run_id']} in {args.tracking_uri}")
    if args.json:
        print(json.dumps(run.result))
    if run.unusable:
        print(f"syllabus score: error: no sample was scored by {', '.join(run.unusable)}: every one failed (see the "
              "status column of the scores table); check --cutoff, --max-new-tokens and the model", file=sys.stderr)
        return 1
    return 0
