"""``syllabus finetune``: LoRA fine-tuning on a selection (or any pool file)."""

from __future__ import annotations

import argparse
import json
import time

from syllabus.cli import flags
from syllabus.config import parse_set
from syllabus.training.config import FinetuneConfig


def register(sub: argparse._SubParsersAction) -> None:
    d = FinetuneConfig()
    p = flags.command(sub, cmd_finetune)
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="selection Parquet or any pool file (JSONL, Parquet, CSV ...)")
    flags.add(p, "model", "limit", limit={"help": "train on a seeded random sample of N samples"})
    p.add_argument("--lr", type=float, default=d.learning_rate, help=f"learning rate (default {d.learning_rate})")
    p.add_argument("--rank", type=int, default=d.lora_rank, help=f"LoRA rank (default {d.lora_rank})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"effective batch (default {d.batch_size})")
    p.add_argument("--micro-batch-size", type=int, default=d.micro_batch_size, help=f"samples per forward pass (default {d.micro_batch_size})")
    p.add_argument("--epochs", type=float, default=d.epochs, help=f"epochs (default {d.epochs:g})")
    p.add_argument("--cutoff", type=int, default=d.cutoff, help=f"max tokens per sample (default {d.cutoff})")
    flags.add(p, "seed", seed={"default": d.seed, "help": f"seed for sampling and training (default {d.seed})"})
    flags.add_set(p, "warmup_ratio=0.05", "at a FinetuneConfig field")
    p.add_argument("--exclude-bench", nargs="+", default=[], metavar="NAME_OR_FILE",
                   help="drop training samples whose question matches an item of these benchmarks (decontamination)")
    flags.add(p, "store", "force", "json", force={"help": "retrain even when this adapter is committed"})


def cmd_finetune(args: argparse.Namespace) -> int:
    """LoRA fine-tune the target model on a selected subset; the adapter goes to the store

    LoRA SFT with the 3DS paper's defaults (rank 8 on all linear layers, lr 5e-5, cosine, warmup
    0.1, 1 epoch, cutoff 1024, effective batch 64 by gradient accumulation); loss on response tokens
    only."""

    from syllabus.pipeline.stages import finetune

    start = time.perf_counter()
    config = FinetuneConfig(**{
        "learning_rate": args.lr, "lora_rank": args.rank, "batch_size": args.batch_size,
        "micro_batch_size": args.micro_batch_size, "epochs": args.epochs, "cutoff": args.cutoff, "seed": args.seed,
        **parse_set(args.changes, "warmup_ratio=0.05"),
    })
    out = finetune(args.data, args.model, config, args.store, force=args.force, limit=args.limit,
                   exclude_bench=args.exclude_bench, progress=True)
    out["seconds_total"] = round(time.perf_counter() - start, 2)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(f"adapter: {out['adapter']}{' (cached)' if out['cached'] else ''}")
        print(f"  samples {out['samples']}, steps {out['steps']}, final loss {out['train_loss']:.4f} "
              f"(run mean {out['train_loss_mean']:.4f}), {out['seconds']} s")
    return 0
