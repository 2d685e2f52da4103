"""``syllabus ingest``."""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from typing import Any

from pydantic import ValidationError

from syllabus.cli import flags
from syllabus.config import describe_errors
from syllabus.pipeline.config import IngestConfig
from syllabus.pool.manifest import iter_shards, load_manifest
from syllabus.pool.readers import PoolInputError
from syllabus.pool.special_tokens import POLICIES

# The defaults are IngestConfig's, stated there once.
_DEFAULTS = {name: f.default for name, f in IngestConfig.model_fields.items()}


def _field_overrides(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"--field {item!r} must look like ROLE=NAME, e.g. --field output=answer_text")
        role, name = item.split("=", 1)
        out[role.strip()] = name.strip()
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = flags.command(sub, cmd_ingest)
    p.add_argument("pool", nargs="+", metavar="POOL", help="files, directories or URLs")
    flags.add(p, "store")
    shard_size, max_chars = _DEFAULTS["shard_size"], _DEFAULTS["max_chars"]
    p.add_argument("--shard-size", type=int, default=shard_size, help=f"valid records per shard (default {shard_size})")
    p.add_argument("--max-chars", type=int, default=max_chars, help=f"reject records longer than this (default {max_chars:,})")
    p.add_argument("--field", action="append", default=[], metavar="ROLE=NAME", help="map a field: roles instruction, input, output, messages, id (repeatable)")
    p.add_argument("--special-tokens", choices=POLICIES, default=_DEFAULTS["special_tokens"],
                   help="records whose text spells a chat-template token (<|im_end|>, <s>, [INST] ...): keep them, "
                        "the strings staying plain text to every tokenizer (default), or quarantine them")
    p.add_argument("--pack-small-files", action="store_true",
                   help="cut shards across file ends, so that many small files make full shards of --shard-size "
                        "(the manifest lists each shard's files); off (default), each file ends in a shard of its own, "
                        "as pools ingested without it were cut")
    flags.add(p, "json")


def ingest_config(args: argparse.Namespace) -> IngestConfig:
    """``syllabus ingest``'s arguments as the ingest stage's config."""
    return IngestConfig(inputs=args.pool, shard_size=args.shard_size, max_chars=args.max_chars,
                        fields=_field_overrides(args.field), special_tokens=args.special_tokens,
                        pack_small_files=args.pack_small_files)


def cmd_ingest(args: argparse.Namespace) -> int:
    """read, validate and shard an instruction pool into the store

    Read instruction pools (Alpaca, question/answer, ShareGPT/OpenAI conversations; JSONL, JSON,
    Parquet, CSV/TSV, .gz, directories, saved datasets, s3:// URLs), quarantine bad records with a
    reason, and write deterministic Parquet shards plus a manifest to the store."""
    from syllabus.pipeline.stages import ingest

    try:
        summary = ingest(ingest_config(args), args.store, progress=None)
    except ValidationError as exc:
        print(f"syllabus ingest: {describe_errors(exc)}", file=sys.stderr)
        return 2
    except (PoolInputError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"syllabus ingest: {exc}", file=sys.stderr)
        return 2
    print(render_summary(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


def _pct(values: list[int], q: float) -> int:
    if not values:
        return 0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))]


def render_summary(summary: dict[str, Any]) -> str:
    """A human summary of an ingest (its summary dict): counts per file, reasons, length and
    turn statistics, where things are."""
    m = load_manifest(summary["manifest"])
    lines = [f"Pool {m['pool_fingerprint']}: {m['records_ok']:,} samples in {len(m['shards'])} shards "
             f"({summary['shards_written']} written, {summary['shards_reused']} reused)"]
    width = max(len(f) for f in m["per_file"])
    width = min(max(width, 4), 70)
    lines.append(f"  {'file':<{width}}  {'in':>7} {'ok':>7} {'rejected':>8} {'dupes':>6}")
    for name, s in m["per_file"].items():
        shown = name if len(name) <= width else "..." + name[-(width - 3):]
        lines.append(f"  {shown:<{width}}  {s['records_in']:>7,} {s['records_ok']:>7,} {s['records_rejected']:>8,} {s['duplicates']:>6,}")
    lines.append(f"  {'total':<{width}}  {m['records_in']:>7,} {m['records_ok']:>7,} {m['records_rejected']:>8,} {m['duplicates']:>6,}")
    if m["rejected_by_reason"]:
        lines.append("  quarantined by reason: " + ", ".join(f"{k} {v:,}" for k, v in m["rejected_by_reason"].items()))
    spelled = m.get("special_tokens") or {}
    if spelled.get("records"):
        what = "quarantined" if spelled["policy"] == "quarantine" else "kept, the strings stay plain text"
        lines.append(f"  records spelling chat-template tokens: {spelled['records']:,} ({what}): "
                     + ", ".join(f"{k} {v:,}" for k, v in spelled["by_token"].items()))
    ins_len, out_len, turns = [], [], []
    for _, table in iter_shards(m):
        ins_len += [len(x) for x in table.column("instruction").to_pylist()]
        out_len += [len(x) for x in table.column("output").to_pylist()]
        turns += [len(x) for x in table.column("messages").to_pylist()]
    lines.append(f"  instruction chars: median {statistics.median(ins_len):,.0f}, p95 {_pct(ins_len, .95):,}, max {max(ins_len):,}")
    lines.append(f"  response chars:    median {statistics.median(out_len):,.0f}, p95 {_pct(out_len, .95):,}, max {max(out_len):,}")
    multi = sum(1 for t in turns if t > 2)
    lines.append(f"  conversations with more than one exchange or a system turn: {multi:,}")
    lines.append(f"  manifest:   {summary['manifest']}")
    lines.append(f"  quarantine: {summary['quarantine']}")
    return "\n".join(lines)

