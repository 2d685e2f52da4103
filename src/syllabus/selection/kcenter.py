"""Greedy K-Center (farthest-first traversal): 3DS diversity stage (arXiv 2410.10901).

Given points ``x_1..x_n`` (3DS: ``difficulty_embedding``, the mean last-layer hidden state
over the prompt positions) and a budget ``k``, pick a first centre with a seeded RNG, then
repeatedly add the point whose Euclidean distance to its nearest chosen centre is largest
(Gonzalez 1985; a 2-approximation of the minimax-radius K-Center). Ties go to the lowest
position. The order in which points are picked is their rank.

Memory is linear in ``n``: a running vector ``min_d[i] = min_c ||x_i - x_c||^2`` is updated
after each new centre with one matrix-vector product, through
``||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2`` with the squared norms kept in float64 and the
product ``X @ x_c`` in float32 (the bandwidth-bound step). No ``n x n`` matrix is built: for
100,000 points that matrix alone would be 40 GB in float32.

Exactness. The norm trick in float32 loses digits when ``||a||^2`` and ``2 a.b`` nearly
cancel, so (1) the points are centred first (distances do not change, the norms shrink), and
(2) every pick is verified: with ``E`` a worst-case bound on the error of any ``min_d`` entry
(centring rounding ``8 u R^2`` plus the float32 dot product ``2 gamma_d R^2``, ``u = 2^-24``,
``gamma_d = d u / (1 - d u)``, ``R`` the largest centred norm), every point whose
approximate ``min_d`` is within ``2 E`` of the maximum is re-measured in float64 against the
original rows of the centres that can be its nearest (those within ``2 E`` of its
approximate nearest), and the exact farthest (lowest position on ties) is taken. So the
picks are those of a float64 brute force on the same input. Usually one point is inside the
window and nothing is re-measured. If more than ``max_verify`` points are inside it (only
when the remaining points are near-duplicates of chosen centres), the ``max_verify`` with the
largest approximate distance are re-measured and the iteration is counted in
``n_truncated``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm.auto import tqdm

from syllabus import registry
from syllabus.selection.base import (
    Selector,
    SelectorConfig,
    StageOutcome,
    fewer_than_budget_note,
    require_columns,
    status_column,
)

log = logging.getLogger(__name__)

_U32 = 2.0**-24  # unit roundoff of float32
_BLOCK = 2048  # rows per block when centring and taking norms: bounds the float64 temporaries


@dataclass(frozen=True)
class KCenterResult:
    order: np.ndarray  # positions of the chosen centres, in the order they were picked
    radius: float  # max distance from any point to its nearest chosen centre (the K-Center objective)
    n_verified: int  # iterations where more than one point was re-measured exactly
    n_truncated: int  # iterations where the exactness window held more than max_verify points


def kcenter_greedy(
    X: np.ndarray,
    k: int,
    seed: int = 0,
    *,
    center: bool = True,
    max_verify: int = 1024,
    progress: bool | None = None,
    blas_threads: int | None = 1,
) -> KCenterResult:
    """Farthest-first traversal of the rows of ``X`` (n x d) down to ``k`` centres.

    Memory: one float32 copy of ``X`` (centred) plus O(n) vectors and O(k d) for the chosen
    rows (float64 originals and float32 centred copies); never O(n^2).

    ``blas_threads`` caps BLAS threads during the traversal (None: leave as is). One thread
    by default: each pick is a bandwidth-bound matrix-vector product, and OpenBLAS's
    per-call thread hand-off cost more than it gave on the 2-core machine (2,768 points to
    2,768 centres: 52 s with 2 threads under load, 3.6 s with 1).
    """
    if blas_threads is None:
        return _kcenter_greedy(X, k, seed, center=center, max_verify=max_verify, progress=progress)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return _kcenter_greedy(X, k, seed, center=center, max_verify=max_verify, progress=progress)


def _kcenter_greedy(X: np.ndarray, k: int, seed: int, *, center: bool, max_verify: int, progress: bool | None) -> KCenterResult:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"K-Center needs a 2-D array of points (n x d); got shape {X.shape}")
    n, d = X.shape
    k = int(min(max(k, 0), n))
    if k == 0:
        return KCenterResult(order=np.empty(0, dtype=np.int64), radius=float("nan"), n_verified=0, n_truncated=0)
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
    return KCenterResult(order=order, radius=radius, n_verified=n_verified, n_truncated=n_truncated)


def embedding_matrix(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 matrix of the usable rows, their positions, a reason per unusable row or None).

    A row is unusable when its status is not ``ok``, its embedding is missing, has a
    different length from the most common one, or holds NaN/inf.
    """
    from syllabus.selection.vectors import lazy_column

    reasons = np.full(len(frame), None, dtype=object)
    status_col = status_column(frame, column)
    status = frame[status_col].astype("string").fillna("missing").to_numpy(dtype=object) if status_col else None
    lazy = lazy_column(frame, column)
    if lazy is not None:  # left in the score shards: read these rows only, as one Arrow array
        return _lazy_matrix(lazy.to_arrow(), column, status, status_col, reasons)
    values = frame[column].to_numpy(dtype=object)
    lengths = np.array([len(v) if v is not None and hasattr(v, "__len__") else -1 for v in values])
    dims = lengths[lengths > 0]
    dim = int(np.bincount(dims).argmax()) if dims.size else 0
    usable = np.zeros(len(frame), dtype=bool)
    for i, v in enumerate(values):
        if status is not None and status[i] != "ok":
            reasons[i] = f"{column} missing ({status_col} = {status[i]})"
        elif lengths[i] <= 0:
            reasons[i] = f"{column} missing (no value)"
        elif lengths[i] != dim:
            reasons[i] = f"{column} has {lengths[i]} dimensions where the others have {dim}"
        else:
            usable[i] = True
    positions = np.flatnonzero(usable)
    matrix = np.empty((positions.size, dim), dtype=np.float32)
    for row, p in enumerate(positions):
        matrix[row] = values[p]
    return _finite_rows(matrix, positions, reasons, column)


def _finite_rows(matrix: np.ndarray, positions: np.ndarray, reasons: np.ndarray,
                 column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``matrix`` whose values are all finite; the others get their reason."""
    bad = ~np.isfinite(matrix).all(axis=1) if positions.size else np.zeros(0, dtype=bool)
    if bad.any():
        for p in positions[bad]:
            reasons[p] = f"{column} holds NaN or infinite values"
        positions = positions[~bad]
        matrix = matrix[~bad]
    return matrix, positions, reasons


def _lazy_matrix(values: Any, column: str, status: np.ndarray | None, status_col: str | None,
                 reasons: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`embedding_matrix` over an Arrow list array: the same rows, reasons and float32
    matrix as the per-row path, built from the flat values without a per-row copy."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(values)
    lengths = pc.fill_null(pc.list_value_length(values), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    dims = lengths[lengths > 0]
    dim = int(np.bincount(dims).argmax()) if dims.size else 0
    ok = np.ones(n, dtype=bool) if status is None else (status == "ok")
    for i in np.flatnonzero(~ok):
        reasons[i] = f"{column} missing ({status_col} = {status[i]})"
    for i in np.flatnonzero(ok & (lengths <= 0)):
        reasons[i] = f"{column} missing (no value)"
    for i in np.flatnonzero(ok & (lengths > 0) & (lengths != dim)):
        reasons[i] = f"{column} has {lengths[i]} dimensions where the others have {dim}"
    usable = ok & (lengths == dim) & (lengths > 0)
    positions = np.flatnonzero(usable)
    picked = values.take(pa.array(positions, pa.int64()))
    if isinstance(picked, pa.ChunkedArray):
        picked = picked.combine_chunks()
    flat = picked.flatten() if positions.size else pa.array([], pa.float32())
    del picked
    matrix = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(positions.size, dim)
    del flat
    return _finite_rows(matrix, positions, reasons, column)


class KCenterConfig(SelectorConfig):
    column: str = Field("difficulty_embedding", description="the embedding column (one vector per row) distances are "
                        "measured on; picks the budget farthest-first")
    center: bool = Field(True, description="subtract the mean before measuring (same distances, fewer rounding errors)")


@registry.selector("kcenter")
class KCenterSelector(Selector):
    """Greedy K-Center on an embedding column down to the budget (3DS diversity stage)."""

    Config = KCenterConfig
    final = True

    def required_columns(self) -> list[str]:
        return [self.config.column]

    def apply(self, frame: pd.DataFrame, budget: int | None, seed: int) -> StageOutcome:
        cfg = self.config
        require_columns(frame, [cfg.column], self.name)
        if budget is None:
            raise ValueError("kcenter needs a budget; pass --budget N or --ratio R")
        matrix, positions, reasons = embedding_matrix(frame, cfg.column)
        notes = []
        n_missing = len(frame) - positions.size
        if n_missing:
            notes.append(f"{n_missing} rows had no usable {cfg.column} and were dropped")
        if positions.size <= budget:
            notes.append(fewer_than_budget_note(int(positions.size), budget, self.name))
        result = kcenter_greedy(matrix, min(budget, positions.size), seed, center=cfg.center)
        kept = positions[result.order]
        chosen = np.zeros(len(frame), dtype=bool)
        chosen[kept] = True
        for p in positions[~chosen[positions]]:
            reasons[p] = f"not among the {budget} farthest-first centres"
        distance = np.full(len(frame), np.nan)  # fill: rank never takes back a row without an embedding
        distance[positions] = 0.0
        return StageOutcome(
            distance=distance,
            kept=kept,
            reasons=reasons,
            thresholds={},
            notes=notes,
            details={
                "radius": result.radius,
                "dimensions": int(matrix.shape[1]) if matrix.size else 0,
                "first_centre": str(frame["sample_id"].iloc[kept[0]]) if kept.size and "sample_id" in frame else None,
                "exactness_checks": result.n_verified,
                "exactness_truncated": result.n_truncated,
            },
        )
