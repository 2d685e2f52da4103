"""``syllabus evaluate``: benchmarks on a model, optionally with a LoRA adapter."""

from __future__ import annotations

import argparse
import json
from typing import Any

from syllabus.cli import flags
from syllabus.cli.flags import positive_int
from syllabus.config import deep_merge, parse_set
from syllabus.evaluation.benchmarks import FieldMap
from syllabus.evaluation.runner import EvalConfig
from syllabus.store import Store


def _fields(values: list[str]) -> FieldMap | None:
    if not values:
        return None
    out: dict = {}
    for item in values:
        if "=" not in item:
            raise ValueError(f"--field {item!r} must look like ROLE=COLUMN, e.g. --field question=stem")
        role, name = (x.strip() for x in item.split("=", 1))
        if role == "options" and "," in name:
            out[role] = [c.strip() for c in name.split(",")]
        elif role == "answer_index_base":
            out[role] = int(name)
        else:
            out[role] = name
    try:
        return FieldMap(**out)
    except Exception as exc:
        raise ValueError(f"--field: {exc}; roles are question, options, answer, subject, id, reference, answer_index_base") from exc


def register(sub: argparse._SubParsersAction) -> None:
    d = EvalConfig()  # the defaults the flags leave alone, said in their help
    p = flags.command(sub, cmd_evaluate)
    flags.add(p, "model")
    p.add_argument("--adapter", default=None, help="URL of a committed LoRA adapter (from `syllabus finetune`)")
    p.add_argument("--bench", nargs="+", required=True, metavar="NAME_OR_FILE", help="mmlu-medical, mmlu:anatomy, or a file")
    flags.add(p, "limit", limit={"help": "a seeded random subset of N items per benchmark (default: every item)"})
    p.add_argument("--mc", choices=["cloze", "letter", "both"], default=None,
                   help=f"multiple-choice scoring (default {'both' if len(d.mc_methods) > 1 else d.mc_methods[0]})")
    p.add_argument("--norm", choices=["char", "token", "none"], default=None,
                   help=f"cloze length normalisation (default {d.mc.normalisation})")
    p.add_argument("--no-generate", dest="generate", action="store_false", default=None,
                   help="open QA: reference NLL only, no generated answers/BLEU/ROUGE")
    p.add_argument("--max-new-tokens", type=positive_int, default=None,
                   help=f"open QA answer length (default {d.max_new_tokens})")
    p.add_argument("--batch-size", type=positive_int, default=None, help=f"sequences per forward pass (default {d.batch_size})")
    p.add_argument("--field", action="append", default=[], metavar="ROLE=COLUMN",
                   help="map benchmark columns: question, options (a list column or A,B,C,D), answer, subject, id, reference")
    p.add_argument("--judge", default=None, metavar="KIND:MODEL",
                   help="judge for open-QA answers: local:MODEL (e.g. local:smollm2-135m) or openai:MODEL_NAME "
                   "(base URL and key from --judge-base-url or $SYLLABUS_JUDGE_BASE_URL, and $SYLLABUS_JUDGE_API_KEY)")
    p.add_argument("--judge-base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--rubric", action="store_true", help="rate open-QA answers on the clinical rubric with --judge")
    p.add_argument("--compare", default=None, metavar="RESULTS_URL",
                   help="pairwise win rate (with --judge) of this run's open-QA answers against another evaluation's results")
    p.add_argument("--check-pool", nargs="+", default=[], metavar="POOL",
                   help="report pool samples (pool manifest.json URLs or pool/selection files) whose question matches a "
                   "benchmark item exactly or nearly; enforce with `syllabus finetune --exclude-bench`")
    p.add_argument("--held-out-from", default=None, metavar="SCORE_MANIFEST_URL",
                   help="leave out the benchmark items an influence scorer validated on (the score manifest's "
                   "validation_ids, from `syllabus score --json`) instead of the default validation set's")
    flags.add(p, "seed", seed={"help": f"seed for the item subset, the bootstrap and the judge (default {d.seed})"})
    flags.add_set(p, "cutoff=512 or mc.normalisation=token", "at an EvalConfig field and wins over the flags")
    flags.add(p, "store", "force", "json")


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The flags given (each a field of EvalConfig, whose defaults stand for the rest), then
    ``--set`` on top."""
    given = {"mc_methods": None if args.mc is None else ("cloze", "letter") if args.mc == "both" else (args.mc,),
             "mc": None if args.norm is None else {"normalisation": args.norm}, "generate": args.generate,
             "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "limit": args.limit,
             "seed": args.seed}
    given = {k: v for k, v in given.items() if v is not None}
    return EvalConfig(**deep_merge(given, parse_set(args.changes, "cutoff=512")))


def _judge_config(args: argparse.Namespace, seed: int) -> Any:
    """The judge's JudgeConfig when --rubric or --compare asks for one (None otherwise), with
    the --judge spelling and the --compare results checked: they fail here, not after the
    evaluation they follow."""
    if not (args.rubric or args.compare):
        return None
    if not args.judge:
        raise ValueError("--rubric and --compare need a judge: add --judge local:MODEL or --judge openai:MODEL_NAME")
    from syllabus.evaluation.judges import JudgeConfig
    from syllabus.evaluation.runner import open_results

    kind, _, name = args.judge.partition(":")
    if kind not in ("local", "openai") or not name:
        raise ValueError(f"--judge {args.judge!r} must look like local:MODEL or openai:MODEL_NAME")
    if args.compare:
        open_results(args.compare, "--compare")
    return JudgeConfig(kind=kind, model=name, base_url=args.judge_base_url, seed=seed)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """evaluate a model (and LoRA adapter) on multiple-choice and open-QA benchmarks

    Multiple choice (cloze or letter scoring, per-subject accuracy with bootstrap 95% intervals)
    and open QA (reference NLL, BLEU-1/4, ROUGE). Built-in benchmarks: mmlu-medical, mmlu:<topic>;
    or any JSONL/CSV/Parquet file of items. Per-item results are committed to the store as Parquet."""
    from syllabus.evaluation.heldout import held_out_ids_of
    from syllabus.pipeline.stages import evaluate

    config = eval_config(args)
    judge_config = _judge_config(args, config.seed)  # the judge's settings are checked before the model loads
    pool_rows = None
    if args.check_pool:  # and the pool to check is read before it, so a bad path fails first
        from syllabus.evaluation.decontamination import load_pool_rows

        pool_rows = load_pool_rows(args.check_pool)
    # Without --held-out-from, the default influence validation set is left out (EvalConfig).
    exclude = held_out_ids_of(args.held_out_from) if args.held_out_from else None
    out = evaluate(args.model, args.adapter, args.bench, config, args.store, fields=_fields(args.field),
                   force=args.force, exclude_ids=exclude, progress=True)
    if judge_config is not None:
        from syllabus.evaluation.judges import make_judge
        from syllabus.evaluation.runner import judge_results

        judge = make_judge(judge_config)
        judged = judge_results(Store(args.store), out["results"], judge, args.judge, rubric=args.rubric,
                               compare_url=args.compare, seed=config.seed)
        out["metrics"].update({k: (None if isinstance(v, float) and v != v else v) for k, v in judged.items()})
    if pool_rows is not None:
        from syllabus.evaluation.benchmarks import load_benchmark
        from syllabus.evaluation.decontamination import decontaminate

        benches = [load_benchmark(b, _fields(args.field)) for b in args.bench]
        _, report, matches = decontaminate(pool_rows, benches, enforce=False)
        out["decontamination"] = {"report": report, "matches": matches[:50]}
        for name, r in report.items():
            if isinstance(r, dict):
                out["metrics"][f"{name}/contaminated_pool_rows"] = r["contaminated_rows"]
                out["metrics"][f"{name}/contaminated_items"] = r["contaminated_items"]
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(f"results: {out['results']}  ({out['rows']} rows, {out['seconds']} s{', cached' if out['cached'] else ''})")
        for name, value in out["metrics"].items():
            if name.count("/") <= 2 and not name.endswith(("_ci_low", "_ci_high")):
                lo, hi = out["metrics"].get(f"{name}_ci_low"), out["metrics"].get(f"{name}_ci_high")
                ci = f"  [{lo:.4f}, {hi:.4f}]" if isinstance(lo, float) and isinstance(hi, float) else ""
                print(f"  {name}: {value:.4f}{ci}" if isinstance(value, float) else f"  {name}: {value}")
    return 0
