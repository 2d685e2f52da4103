"""3DS scoring speed: the project's scorers vs the straightforward per-sample computation.

Runs in one process on the same samples (MedQuAD by default) and prints ratios:
- Stage 2: per-sample (batch 1, eager attention with every layer's attention returned,
  separate passes for D1+embedding, D3 and D2, one ``generate`` per sample) vs
  ``DifficultyScorer`` (batched, bucketed, sdpa + last-layer attention, one pass per response).
- Stage 1: generate-and-parse a score per sample (batch 1, full prompt each time) vs
  ``QualityScorer`` in expected mode (batched, rubric KV cache reused).
- Ablations measured in the same run: rubric KV-cache reuse vs recomputing the prefix, and
  length bucketing vs arrival order (IFD scorer: forward passes only).
It also prints how far the scorer's numbers are from the per-sample ones.

    .venv/bin/python benchmarks/scoring_3ds.py --n 32 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from syllabus.models import load_model
from syllabus.models.engines import eos_ids
from syllabus.scoring import reference
from syllabus.scoring.difficulty import DifficultyScorer
from syllabus.scoring.ifd import IFDScorer
from syllabus.scoring.quality import QualityConfig, QualityScorer
from syllabus.scoring.timing import stage_lines

# ../shared/data beside the project root, wherever the project is cloned
DATA = str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medquad.jsonl.gz")


def load_samples(path: str, n: int, seed: int, max_answer_chars: int) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        records = [json.loads(line) for line in fh]
    rng = np.random.default_rng(seed)
    picked = []
    for i in rng.permutation(len(records)):
        r = records[i]
        if r.get("question") and r.get("answer") and len(r["answer"]) <= max_answer_chars:
            picked.append({"sample_id": f"medquad-{i}", "source": r.get("source", ""), "instruction": r["question"],
                           "input": "", "output": r["answer"].strip(), "messages": None, "metadata": "{}"})
        if len(picked) == n:
            break
    return picked


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-answer-chars", type=int, default=2000, help="skip very long MedQuAD answers")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--stages", default="1,2,ablations")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--preset", choices=["ours", "reference"], default="ours",
                    help="difficulty preset of the batched scorer (the per-sample baseline computes ours)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stages = set(args.stages.split(","))

    samples = load_samples(args.data, args.n, args.seed, args.max_answer_chars)
    table = pa.Table.from_pylist(samples)
    lm = load_model(args.model)
    tok = lm.tokenizer
    device = lm.device
    stop = eos_ids(lm.model, tok)
    results: dict[str, float] = {}
    print(f"model {args.model} on {device} ({lm.dtype}), {len(samples)} MedQuAD samples, "
          f"torch threads {torch.get_num_threads()}, max_new_tokens {args.max_new_tokens}")

    if "2" in stages:
        eager = load_model(args.model, attn_implementation="eager", reuse=False)
        plain, t_plain = timed(lambda: [reference.difficulty_plain(eager.model, tok, s, args.max_new_tokens, stop)
                                        for s in samples])
        scorer = DifficultyScorer(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, preset=args.preset)
        out, t_fast = timed(lambda: scorer.score(table, lm).to_pylist())
        same_resp = [p["response"] == o["difficulty_response"] for p, o in zip(plain, out)]
        rel = {k: max(abs(o[f"difficulty_{k}"] - p[k]) / abs(p[k]) for p, o, s in zip(plain, out, same_resp)
                      if s or k != "d2") for k in ("d1", "d2", "d3")}
        emb = max(float((torch.tensor(o["difficulty_embedding"]) - p["embedding"].cpu()).abs().max())
                  for p, o in zip(plain, out))
        print(f"\nStage 2 (D1, D2, D3, embedding, generation of up to {args.max_new_tokens} tokens)")
        print(f"  per-sample baseline : {t_plain:8.2f} s  ({len(samples) / t_plain:.3f} samples/s)")
        print(f"  DifficultyScorer    : {t_fast:8.2f} s  ({len(samples) / t_fast:.3f} samples/s)")
        print(f"  speed-up            : {t_plain / t_fast:8.2f} x")
        if args.preset == "ours":
            print(f"  agreement: max rel diff d1 {rel['d1']:.2e}, d2 {rel['d2']:.2e} (same response in "
                  f"{sum(same_resp)}/{len(samples)}), d3 {rel['d3']:.2e}; embedding max abs diff {emb:.2e}")
        else:  # tests/unit/scoring/test_difficulty_reference.py checks the reference definitions
            print(f"  agreement: not compared (the baseline computes the default definitions); embedding max abs "
                  f"diff {emb:.2e}")
        print(f"  engine: {json.dumps(scorer.last_stats['engine'])}")
        for line in stage_lines("DifficultyScorer", {"seconds": t_fast, "stages": scorer.last_stats["stages"]}):
            print(line)
        results["stage2_speedup"] = t_plain / t_fast
        del eager

    if "1" in stages:
        cfg_gen = QualityConfig(mode="generate")
        plain, t_plain = timed(lambda: [reference.quality_generate_plain(lm.model, tok, cfg_gen, s, stop)
                                        for s in samples])
        scorer = QualityScorer(batch_size=args.batch_size)
        out, t_fast = timed(lambda: scorer.score(table, lm).to_pylist())
        paper = QualityScorer(mode="generate", batch_size=args.batch_size)
        out_gen, t_gen = timed(lambda: paper.score(table, lm).to_pylist())
        parsed = [p[0] for p in plain]
        agree = sum(1 for p, o in zip(parsed, out_gen) if (p is None and o["quality_status"] == "parse_failed")
                    or (p is not None and o["quality_score"] == p))
        exp = [o["quality_score"] for o in out if o["quality_status"] == "ok"]
        pairs = [(p, o["quality_score"]) for p, o in zip(parsed, out) if p is not None]
        corr = float(np.corrcoef(*zip(*pairs))[0, 1]) if len(pairs) > 2 else math.nan
        print("\nStage 1 (quality rating)")
        print(f"  per-sample generate+parse : {t_plain:8.2f} s  ({len(samples) / t_plain:.3f} samples/s), "
              f"parse failures {sum(p is None for p in parsed)}/{len(samples)}")
        print(f"  QualityScorer expected    : {t_fast:8.2f} s  ({len(samples) / t_fast:.3f} samples/s)")
        print(f"  QualityScorer generate    : {t_gen:8.2f} s  (batched paper mode; same replies as per-sample in "
              f"{agree}/{len(samples)})")
        print(f"  speed-up (expected vs per-sample generate): {t_plain / t_fast:8.2f} x")
        print(f"  expected scores: mean {np.mean(exp):.2f}, std {np.std(exp):.2f}; Pearson with parsed "
              f"paper-mode scores {corr:.3f} on {len(pairs)} samples")
        print(f"  rater health: {json.dumps(scorer.last_stats['health'])}")
        results["stage1_speedup"] = t_plain / t_fast

    if "ablations" in stages:
        with_cache, t_cache = timed(lambda: QualityScorer(batch_size=args.batch_size).score(table, lm))
        no_cache, t_nocache = timed(lambda: QualityScorer(batch_size=args.batch_size, reuse_prefix_cache=False)
                                    .score(table, lm))
        diff = float(np.nanmax(np.abs(np.array(with_cache.column("quality_score").to_pylist())
                                      - np.array(no_cache.column("quality_score").to_pylist()))))
        print("\nAblation: rubric KV cache")
        print(f"  recompute prefix: {t_nocache:.2f} s, reuse cache: {t_cache:.2f} s -> {t_nocache / t_cache:.2f} x "
              f"(max score diff {diff:.2e})")
        # Arrival order vs length buckets, same batch size: IFD is two forward passes per sample.
        unb = IFDScorer(batch_size=args.batch_size, bucket=False)
        out_u, t_unb = timed(lambda: unb.score(table, lm))
        buc = IFDScorer(batch_size=args.batch_size, bucket=True)
        out_b, t_buc = timed(lambda: buc.score(table, lm))
        d = float(np.nanmax(np.abs(np.array(out_u.column("ifd_score").to_pylist())
                                   - np.array(out_b.column("ifd_score").to_pylist()))))
        print("Ablation: length bucketing (IFD forward passes)")
        print(f"  arrival order: {t_unb:.2f} s (padding {unb.last_stats['engine']['padding_share']:.1%}), "
              f"bucketed: {t_buc:.2f} s (padding {buc.last_stats['engine']['padding_share']:.1%}) -> "
              f"{t_unb / t_buc:.2f} x (max IFD diff {d:.2e})")
        results["kv_cache_speedup"] = t_nocache / t_cache
        results["bucketing_speedup"] = t_unb / t_buc
    print("\n" + json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
