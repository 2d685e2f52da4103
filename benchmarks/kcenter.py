"""Benchmark: greedy K-Center, by default 100,000 x 576 float32 points down to 5,000 centres;
``--data realistic --n 116000 --dim 4096 --k 5000`` is the 3DS K-Center of a 2M-sample pool
(its band survivors with a 7B model's 4,096-d embeddings).

Prints wall time, peak memory and the pruning ratio of
``syllabus.selection.kcenter.kcenter_greedy``, and ratios against baselines measured in the
same run:

0. per-pick time: the previous implementation (kept verbatim below: every pick a float32
   matrix-vector product over all points, and its exactness check re-measuring each candidate
   against every centre) run on the first ``--old-picks`` picks (greedy picks do not depend on
   later ones, so they must equal ours) and timed per pick, over our whole run's time per
   pick. Its early picks are its cheapest (the check grows with the centres chosen), so
   its per-pick time over a prefix understates its cost over the whole run, and so does the
   ratio; ``--old-picks 0`` skips it;
1. memory: the n x n float32 distance matrix a matrix-based implementation needs, over our
   peak allocation;
2. per-pick time: a naive linear-memory update, ``((X - c) ** 2).sum(1)`` on the full data
   (an n x d temporary per pick), over ours; its first picks must equal ours
   (``--naive-picks 0`` skips it: at 116,000 x 4,096 each pick allocates 1.9 GB);
3. a full-matrix farthest-first (the textbook version) on a subsample small enough for its
   matrix, against ours on the same subsample: time, peak memory and identical picks.

``--data realistic`` draws the points as ``benchmarks/synthetic_scorers.py``'s
``synthetic_difficulty`` scorer does (a large shared mean, 64 directions with a decaying
spectrum, a little isotropic noise: shaped like mean-pooled hidden states); ``random`` is
isotropic Gaussian noise, where every pair of points is at nearly the same distance and no
bound prunes.

Peak memory is measured with tracemalloc (numpy reports its buffers to it), excluding the
input array; the process's max RSS is printed too.

    .venv/bin/python benchmarks/kcenter.py            # the default size, a few minutes on 2 cores
    .venv/bin/python benchmarks/kcenter.py --n 20000 --k 1000
    .venv/bin/python benchmarks/kcenter.py --data realistic --n 116000 --dim 4096 --k 5000 --naive-picks 0
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from syllabus.selection.kcenter import kcenter_greedy

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

log = logging.getLogger(__name__)

_U32 = 2.0**-24
_BLOCK = 2048


def realistic_points(n: int, dim: int, seed: int) -> np.ndarray:
    """``n x dim`` float32 embeddings drawn by the synthetic difficulty scorer's generator,
    a chunk at a time (its temporaries stay small)."""
    from synthetic_scorers import SyntheticDifficultyScorer

    scorer = SyntheticDifficultyScorer(embedding_dim=dim, seed=seed)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 8192):
        out[s : s + 8192] = scorer.embeddings(rng, min(8192, n - s))
    return out


# ---- the previous implementation (src/syllabus/selection/kcenter.py before the bounds), verbatim ----

@dataclass(frozen=True)
class PreviousResult:
    order: np.ndarray
    radius: float
    n_verified: int
    n_truncated: int


def previous_kcenter_greedy(
    X: np.ndarray,
    k: int,
    seed: int = 0,
    *,
    center: bool = True,
    max_verify: int = 1024,
    progress: bool | None = None,
    blas_threads: int | None = 1,
) -> PreviousResult:
    """Farthest-first traversal of the rows of ``X`` (n x d) down to ``k`` centres.

    Memory: one float32 copy of ``X`` (centred) plus O(n) vectors and O(k d) for the chosen
    rows (float64 originals and float32 centred copies); never O(n^2).

    ``blas_threads`` caps BLAS threads during the traversal (None: leave as is). One thread
    by default: each pick is a bandwidth-bound matrix-vector product, and OpenBLAS's
    per-call thread hand-off cost more than it gave on the 2-core machine (2,768 points to
    2,768 centres: 52 s with 2 threads under load, 3.6 s with 1).
    """
    if blas_threads is None:
        return _previous_kcenter_greedy(X, k, seed, center=center, max_verify=max_verify, progress=progress)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return _previous_kcenter_greedy(X, k, seed, center=center, max_verify=max_verify, progress=progress)


def _previous_kcenter_greedy(X: np.ndarray, k: int, seed: int, *, center: bool, max_verify: int, progress: bool | None) -> PreviousResult:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"K-Center needs a 2-D array of points (n x d); got shape {X.shape}")
    n, d = X.shape
    k = int(min(max(k, 0), n))
    if k == 0:
        return PreviousResult(order=np.empty(0, dtype=np.int64), radius=float("nan"), n_verified=0, n_truncated=0)
    if not np.isfinite(X).all():
        raise ValueError("K-Center points contain NaN or infinite values; drop those rows before selecting")

    # Centre in float64, store in float32: the dot products run at float32 bandwidth.
    mean = np.zeros(d, dtype=np.float64)
    if center:
        for s in range(0, n, _BLOCK):
            mean += X[s : s + _BLOCK].sum(axis=0, dtype=np.float64)
        mean /= n
    Xw = np.empty((n, d), dtype=np.float32)
    sq = np.empty(n, dtype=np.float64)
    for s in range(0, n, _BLOCK):
        block = X[s : s + _BLOCK].astype(np.float64) - mean
        Xw[s : s + _BLOCK] = block
        # Norms of the float32 rows that the dot products will actually use.
        b32 = Xw[s : s + _BLOCK].astype(np.float64)
        sq[s : s + _BLOCK] = np.einsum("ij,ij->i", b32, b32)

    r2 = float(sq.max()) if n else 0.0
    gamma_d = d * _U32 / (1.0 - d * _U32) if d * _U32 < 1 else float("inf")
    # Worst-case error of any squared distance (and so of any min_d entry); x2 for safety,
    # plus a float64 term for the combination n_i - 2 dot + n_c.
    err = 2.0 * ((8.0 * _U32 + 2.0 * gamma_d) * r2 * (1.0 + 1e-6) + 8.0 * 2.0**-53 * r2) + 1e-300
    window = 2.0 * err

    rng = np.random.default_rng(seed)
    order = np.empty(k, dtype=np.int64)
    chosen_rows = np.empty((k, d), dtype=np.float64)  # original rows, for exact re-measurement
    chosen_w = np.empty((k, d), dtype=np.float32)  # their centred float32 rows and norms
    chosen_sq = np.empty(k, dtype=np.float64)
    min_d = np.full(n, np.inf, dtype=np.float64)
    dot = np.empty(n, dtype=np.float32)
    dist = np.empty(n, dtype=np.float64)
    n_verified = 0
    n_truncated = 0

    nxt = int(rng.integers(n))
    bar = tqdm(total=k, desc="k-center", unit="centre", disable=(not progress) if progress is not None else None, mininterval=2.0)
    for t in range(k):
        c = nxt
        order[t] = c
        chosen_rows[t] = X[c]
        chosen_w[t] = Xw[c]
        chosen_sq[t] = sq[c]
        np.dot(Xw, Xw[c], out=dot)
        np.multiply(dot, -2.0, out=dist)
        dist += sq
        dist += sq[c]
        np.minimum(min_d, dist, out=min_d)
        min_d[c] = -np.inf  # chosen: never again, even when a duplicate rounds above zero
        bar.update(1)
        if t == k - 1:
            break
        j = int(np.argmax(min_d))
        top = min_d[j]
        candidates = np.flatnonzero(min_d >= top - window)
        if candidates.size > 1:
            n_verified += 1
            if candidates.size > max_verify:
                n_truncated += 1
                part = np.argpartition(-min_d[candidates], max_verify - 1)[:max_verify]
                candidates = np.sort(candidates[part])
            # Approximate distances from every candidate to every centre (one small float32
            # product for all candidates); only centres within the window of a candidate's
            # nearest can be its exact nearest, and only those are re-measured in float64.
            approx = (chosen_w[: t + 1] @ Xw[candidates].T).astype(np.float64)
            approx *= -2.0
            approx += chosen_sq[: t + 1, None]
            approx += sq[candidates][None, :]
            exact = np.empty(candidates.size, dtype=np.float64)
            for i, p in enumerate(candidates):
                col = approx[:, i]
                near = np.flatnonzero(col <= col.min() + window)
                diff = chosen_rows[near] - X[p].astype(np.float64)
                exact[i] = np.einsum("ij,ij->i", diff, diff).min()
            j = int(candidates[int(np.argmax(exact))])  # candidates ascending: ties -> lowest position
        nxt = j
    bar.close()

    rest = min_d[np.isfinite(min_d)]
    radius = float(np.sqrt(max(rest.max(), 0.0))) if rest.size else 0.0
    if n_truncated:
        log.warning(
            "K-Center: in %d of %d picks more than %d points were within rounding error of the farthest "
            "(near-duplicate embeddings); among those the float32 order decided",
            n_truncated, k, max_verify,
        )
    return PreviousResult(order=order, radius=radius, n_verified=n_verified, n_truncated=n_truncated)


# ---- the benchmark ----

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
    ap.add_argument("--d", "--dim", dest="d", type=int, default=576)
    ap.add_argument("--k", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", choices=("random", "realistic"), default="random",
                    help="isotropic Gaussian noise, or embeddings shaped like hidden states (synthetic_scorers.py)")
    ap.add_argument("--old-picks", type=int, default=200, help="picks of the previous implementation (0: skip)")
    ap.add_argument("--naive-picks", type=int, default=30, help="picks of the naive difference baseline (0: skip)")
    ap.add_argument("--sub-n", type=int, default=4_000, help="subsample size for the full-matrix baseline")
    ap.add_argument("--sub-k", type=int, default=400)
    args = ap.parse_args()

    if args.data == "realistic":
        X = realistic_points(args.n, args.d, args.seed)
    else:
        X = np.random.default_rng(args.seed).standard_normal((args.n, args.d), dtype=np.float32)
    print(f"points: {args.n:,} x {args.d} float32 {args.data} ({X.nbytes / 2**20:,.0f} MiB), k = {args.k:,}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)",
          flush=True)
    out = {"n": args.n, "d": args.d, "k": args.k, "data": args.data, "load_average_start": round(os.getloadavg()[0], 2)}

    result, seconds, peak = measure(lambda: kcenter_greedy(X, args.k, args.seed, progress=False))
    per_pick = seconds / args.k
    pruned = 1.0 - result.n_computed / (args.n * args.k)
    print(f"ours: {seconds:.1f} s ({per_pick * 1e3:.2f} ms/pick), peak {peak / 2**20:,.0f} MiB beyond the input, "
          f"radius {result.radius:.3f}, exactness re-measurements in {result.n_verified} picks "
          f"(truncated {result.n_truncated}); bound on {result.bound_dim} directions skipped "
          f"{pruned:.2%} of the {args.n * args.k:,} point-centre distances; load average {os.getloadavg()[0]:.1f}",
          flush=True)
    out.update({"seconds": round(seconds, 2), "ms_per_pick": round(per_pick * 1e3, 3), "peak_mib": round(peak / 2**20, 1),
                "bound_dim": result.bound_dim, "pruned_fraction": round(pruned, 5), "radius": result.radius,
                "verified_picks": result.n_verified})

    if args.old_picks:
        m = min(args.old_picks, args.k)
        old, old_s, old_peak = measure(lambda: previous_kcenter_greedy(X, m, args.seed, progress=False))
        old_per_pick = old_s / m
        agree_old = bool(np.array_equal(old.order, result.order[:m]))
        print(f"baseline 0, the previous implementation on the first {m} picks: {old_s:.1f} s ({old_per_pick * 1e3:.1f} "
              f"ms/pick, peak {old_peak / 2**20:,.0f} MiB), {old_per_pick / per_pick:.1f}x ours per pick (ours over all "
              f"{args.k:,} picks); its {args.k:,} picks would take at least {old_per_pick * args.k:,.0f} s; "
              f"first {m} picks identical: {agree_old}", flush=True)
        out.update({"old_picks": m, "old_ms_per_pick": round(old_per_pick * 1e3, 3), "old_peak_mib": round(old_peak / 2**20, 1),
                    "old_over_ours_per_pick": round(old_per_pick / per_pick, 2), "old_agrees": agree_old})

    matrix_bytes = args.n * args.n * 4
    print(f"baseline 1, an n x n float32 matrix: {matrix_bytes / 2**30:,.1f} GiB = {matrix_bytes / peak:,.0f}x our peak")
    out["nxn_matrix_over_peak"] = round(matrix_bytes / peak, 1)

    if args.naive_picks:
        naive, naive_s, naive_peak = measure(lambda: naive_difference_picks(X, args.naive_picks, args.seed))
        naive_per_pick = naive_s / max(args.naive_picks - 1, 1)
        agree_naive = bool(np.array_equal(naive, result.order[: args.naive_picks]))
        print(f"baseline 2, naive (X - c)^2 update on all points: {naive_per_pick * 1e3:.1f} ms/pick, "
              f"{naive_per_pick / per_pick:.1f}x ours per pick; first {args.naive_picks} picks identical: {agree_naive}")
        out.update({"naive_over_ours_per_pick": round(naive_per_pick / per_pick, 2), "naive_agrees": agree_naive})

    if args.sub_n and args.sub_k:
        sub = X[: args.sub_n]
        full, full_s, full_peak = measure(lambda: full_matrix_picks(sub, args.sub_k, args.seed))
        ours_sub, ours_sub_s, ours_sub_peak = measure(lambda: kcenter_greedy(sub, args.sub_k, args.seed, progress=False))
        agree_full = bool(np.array_equal(full, ours_sub.order))
        print(f"baseline 3, full-matrix farthest-first on {args.sub_n:,} points -> {args.sub_k}: {full_s:.2f} s, "
              f"peak {full_peak / 2**20:,.0f} MiB; ours {ours_sub_s:.2f} s, peak {ours_sub_peak / 2**20:,.0f} MiB "
              f"(memory ratio {full_peak / ours_sub_peak:.1f}x, time ratio {full_s / ours_sub_s:.1f}x); identical picks: {agree_full}")
        out.update({"full_matrix_over_ours_memory": round(full_peak / ours_sub_peak, 2),
                    "full_matrix_over_ours_time": round(full_s / ours_sub_s, 2), "full_matrix_agrees": agree_full})

    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"process max RSS: {max_rss / 2**20:,.0f} MiB")
    out.update({"load_average_end": round(os.getloadavg()[0], 2), "max_rss_mib": round(max_rss / 2**20, 1)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
