"""``syllabus export``: a selected subset for another trainer."""

from __future__ import annotations

import argparse
import json

from syllabus.cli import flags
from syllabus.selection.export import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = flags.command(sub, cmd_export)
    p.add_argument("selection", metavar="SELECTION", help="selection report.json or selected.parquet URL")
    p.add_argument("--format", required=True, choices=FORMATS, help="jsonl, alpaca, sharegpt or hf (save_to_disk)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into (created if missing)")
    p.add_argument("--name", default=None, help="dataset and file name (default: the selection's key, e.g. 3ds-0123abcd, "
                   "with -alpaca or -sharegpt for those formats)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing target (the hf folder, the file, or the "
                   "name's dataset_info.json entry); without it an existing one is an error and nothing is written")
    flags.add(p, "json", json={"help": "print the summary as JSON on the last line"})


def cmd_export(args: argparse.Namespace) -> int:
    """export a selected subset as JSONL, Alpaca/ShareGPT JSON (LLaMA-Factory) or a datasets directory

    Write the samples of a selection (the report.json or selected.parquet URL that `syllabus select
    --json` prints) to DIR for another trainer, in rank order, every conversation turn kept: plain
    JSONL, Alpaca or ShareGPT JSON with a LLaMA-Factory dataset_info.json entry (merged into an
    existing one), or a `datasets.save_to_disk` directory."""
    from syllabus.selection.export import export_selection

    summary = export_selection(args.selection, args.format, args.out, args.name, overwrite=args.overwrite)
    print(f"exported {summary['samples']:,} samples as {summary['format']} to {summary['files'][0]} "
          f"(fingerprint {summary['fingerprint']})")
    for item in summary["skipped"]:
        print(f"  left out {item['sample_id']}: {item['reason']}")
    if args.json:
        print(json.dumps(summary))
    return 0
