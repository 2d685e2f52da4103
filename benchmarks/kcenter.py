"""Benchmark: greedy K-Center, 100,000 x 576 float32 points down to 5,000 centres.

Prints wall time and peak memory of ``syllabus.selection.kcenter.kcenter_greedy`` and three
ratios against baselines measured in the same run:

1. memory: the n x n float32 distance matrix a matrix-based implementation needs, over our
   peak allocation;
2. per-pick time: a naive linear-memory update, ``((X - c) ** 2).sum(1)`` on the full data
   (an n x d temporary per pick), over ours; its first picks must equal ours;
3. a full-matrix farthest-first (the textbook version) on a subsample small enough for its
   matrix, against ours on the same subsample: time, peak memory and identical picks.

Peak memory is measured with tracemalloc (numpy reports its buffers to it), excluding the
input array; the process's max RSS is printed too.

    .venv/bin/python benchmarks/kcenter.py            # the full size, a few minutes on 2 cores
    .venv/bin/python benchmarks/kcenter.py --n 20000 --k 1000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import tracemalloc

import numpy as np

from syllabus.selection.kcenter import kcenter_greedy


def measure(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, seconds, peak


def naive_difference_picks(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Farthest-first with an explicit difference per pick (linear memory, slow)."""
    n = len(X)
    order = [int(np.random.default_rng(seed).integers(n))]
    min_d = np.full(n, np.inf)
    for _ in range(k - 1):
        diff = X - X[order[-1]]
        np.minimum(min_d, np.einsum("ij,ij->i", diff, diff, dtype=np.float64), out=min_d)
        min_d[order] = -np.inf
        order.append(int(np.argmax(min_d)))
    return np.array(order)


def full_matrix_picks(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The textbook version: the whole n x n float64 distance matrix, then farthest-first."""
    X = X.astype(np.float64)
    sq = np.einsum("ij,ij->i", X, X)
    D = sq[:, None] - 2.0 * (X @ X.T) + sq[None, :]
    n = len(X)
    order = [int(np.random.default_rng(seed).integers(n))]
    min_d = D[order[0]].copy()
    min_d[order] = -np.inf
    while len(order) < k:
        j = int(np.argmax(min_d))
        order.append(j)
        np.minimum(min_d, D[j], out=min_d)
        min_d[order] = -np.inf
    return np.array(order)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--k", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--naive-picks", type=int, default=30, help="picks of the naive difference baseline")
    ap.add_argument("--sub-n", type=int, default=4_000, help="subsample size for the full-matrix baseline")
    ap.add_argument("--sub-k", type=int, default=400)
    args = ap.parse_args()

    X = np.random.default_rng(args.seed).standard_normal((args.n, args.d), dtype=np.float32)
    print(f"points: {args.n:,} x {args.d} float32 ({X.nbytes / 2**20:,.0f} MiB), k = {args.k:,}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")

    result, seconds, peak = measure(lambda: kcenter_greedy(X, args.k, args.seed, progress=False))
    per_pick = seconds / args.k
    print(f"ours: {seconds:.1f} s ({per_pick * 1e3:.2f} ms/pick), peak {peak / 2**20:,.0f} MiB beyond the input, "
          f"radius {result.radius:.3f}, exactness re-measurements in {result.n_verified} picks "
          f"(truncated {result.n_truncated})")

    matrix_bytes = args.n * args.n * 4
    print(f"baseline 1, an n x n float32 matrix: {matrix_bytes / 2**30:,.1f} GiB = {matrix_bytes / peak:,.0f}x our peak")

    naive, naive_s, naive_peak = measure(lambda: naive_difference_picks(X, args.naive_picks, args.seed))
    naive_per_pick = naive_s / max(args.naive_picks - 1, 1)
    agree_naive = bool(np.array_equal(naive, result.order[: args.naive_picks]))
    print(f"baseline 2, naive (X - c)^2 update on all points: {naive_per_pick * 1e3:.1f} ms/pick, "
          f"{naive_per_pick / per_pick:.1f}x ours per pick; first {args.naive_picks} picks identical: {agree_naive}")

    sub = X[: args.sub_n]
    full, full_s, full_peak = measure(lambda: full_matrix_picks(sub, args.sub_k, args.seed))
    ours_sub, ours_sub_s, ours_sub_peak = measure(lambda: kcenter_greedy(sub, args.sub_k, args.seed, progress=False))
    agree_full = bool(np.array_equal(full, ours_sub.order))
    print(f"baseline 3, full-matrix farthest-first on {args.sub_n:,} points -> {args.sub_k}: {full_s:.2f} s, "
          f"peak {full_peak / 2**20:,.0f} MiB; ours {ours_sub_s:.2f} s, peak {ours_sub_peak / 2**20:,.0f} MiB "
          f"(memory ratio {full_peak / ours_sub_peak:.1f}x, time ratio {full_s / ours_sub_s:.1f}x); identical picks: {agree_full}")

    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"process max RSS: {max_rss / 2**20:,.0f} MiB")
    print(json.dumps({
        "n": args.n, "d": args.d, "k": args.k, "load_average_end": round(os.getloadavg()[0], 2),
        "seconds": round(seconds, 2), "ms_per_pick": round(per_pick * 1e3, 3),
        "peak_mib": round(peak / 2**20, 1), "max_rss_mib": round(max_rss / 2**20, 1),
        "nxn_matrix_over_peak": round(matrix_bytes / peak, 1),
        "naive_over_ours_per_pick": round(naive_per_pick / per_pick, 2), "naive_agrees": agree_naive,
        "full_matrix_over_ours_memory": round(full_peak / ours_sub_peak, 2),
        "full_matrix_over_ours_time": round(full_s / ours_sub_s, 2), "full_matrix_agrees": agree_full,
    }))


if __name__ == "__main__":
    main()
