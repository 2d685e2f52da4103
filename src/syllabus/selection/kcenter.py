"""Greedy K-Center (farthest-first traversal): 3DS diversity stage (arXiv 2410.10901).

Given points ``x_1..x_n`` (3DS: ``difficulty_embedding``, the mean last-layer hidden state
over the prompt positions) and a budget ``k``, pick a first centre with a seeded RNG, then
repeatedly add the point whose Euclidean distance to its nearest chosen centre is largest
(Gonzalez 1985; a 2-approximation of the minimax-radius K-Center). Ties go to the lowest
position. The order in which points are picked is their rank.

Memory is linear in ``n``: a running vector ``min_d[i] = min_c ||x_i - x_c||^2`` is updated
after each new centre through ``||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2`` with the squared
norms kept in float64 and the products in float32 (the bandwidth-bound step). No ``n x n``
matrix is built: for 100,000 points that matrix alone would be 40 GB in float32.

Exactness. The norm trick in float32 loses digits when ``||a||^2`` and ``2 a.b`` nearly
cancel, so (1) the points are centred first (distances do not change, the norms shrink), and
(2) every pick is verified: with ``E`` a worst-case bound on the error of any ``min_d`` entry
(centring rounding ``8 u R^2`` plus the float32 dot product ``2 gamma_d R^2``, ``u = 2^-24``,
``gamma_d = d u / (1 - d u)``, ``R`` the largest centred norm), every point whose
approximate ``min_d`` is within ``2 E`` of the maximum is re-measured in float64 against the
original rows of the centres that can be its nearest, and the exact farthest (lowest position
on ties) is taken. So the picks are those of a float64 brute force on the same input. A
point's exact distance is kept between picks, so a point that stays near the top is
re-measured only against the centres chosen since. If more than ``max_verify`` points are
inside the window (only when the remaining points are near-duplicates of chosen centres), the
``max_verify`` with the largest approximate distance are re-measured and the iteration is
counted in ``n_truncated``.

Pruning (exact). Each pick would otherwise read the whole float32 matrix (116,000 x 4,096 is
1.9 GB, 5,000 times). Instead the rows are also projected, in float64, onto ``p`` orthonormal
directions (``bound_dim``, 128 by default; the top of the spectrum of a sample of the rows,
largest first) and kept in float32 with, as one more coordinate, each row's norm ``r`` off
those directions. For any orthogonal projection ``P``,
``||x - c||^2 = ||P(x - c)||^2 + ||(I - P)(x - c)||^2 >= ||P x - P c||^2 + (r_x - r_c)^2``:
the squared distance between the projected rows is a lower bound, read at ``p / d`` of the
cost. A point whose bound, less its own worst-case rounding (``2 (32 u + 2 gamma_(p+1)) R^2 +
2e-5 R^2``), is at least its ``min_d`` plus ``2 E`` cannot get closer to the new centre than
to its nearest one, so its full distance is not computed; only the rest are, gathered. The
bound is read in two steps: on the first 32 directions (a looser bound, stored by column, one
pass over ``n x 33`` floats per pick), then on all ``p`` for the points the first left. It
also decides which centres a verified point is re-measured against. Whatever the
directions, the picks are the same (any orthonormal ones give a valid bound); only the share
pruned changes. On embeddings shaped like hidden states (a shared mean, a decaying spectrum,
isotropic noise: ``benchmarks/synthetic_scorers.py``) the bound skipped 99.8% of the
point-centre distances at 116,000 x 4,096 -> 5,000 (99.2% at 20,000 x 4,096 -> 1,000). The
triangle inequality on the nearest centre (skip ``x`` when ``d(c, a(x)) >= 2 d(x, a(x))``)
would skip 9.4% alone there and none of what the bound leaves: in 4,096 dimensions most
distances are within a factor of two of each other. Neither prunes on isotropic noise, nor
the bound on a flat spectrum (2,048 directions whose variances fall as ``i^-0.5``; 83% with
512 falling as ``i^-1``): after 64 picks in a row that leave more than half the points, the
bound is turned off and every pick reads the whole matrix, as without it.

Measured (``benchmarks/kcenter.py --data realistic --n 116000 --dim 4096 --k 5000``, 2 cores,
load average 4-5): 49 s, 9.9 ms a pick, 2.3 GB beyond the input; the previous code (no bound)
took 209 ms a pick over its first 200 picks (the same picks), so at least 17 minutes whole.
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
_U64 = 2.0**-53  # unit roundoff of float64
_BLOCK = 2048  # rows per block when centring, taking norms and projecting: bounds the float64 temporaries
_BOUND_DIM = 128  # directions of the pruning bound when bound_dim is left to choose
_FIRST_DIM = 32  # of those, the ones of the looser bound read for every point first
_BASIS_ROWS = 4096  # rows sampled to find those directions
_DENSE = 0.5  # a pick that cannot prune this share of the points reads the whole matrix
_PATIENCE = 64  # picks in a row that prune less than _DENSE before the bound is turned off
_VERIFY_CHUNK = 256  # candidates re-measured at a time: bounds the candidates x centres temporaries
_FEW_CENTRES = 8  # beyond this many centres a candidate by the bound, the float32 distance filters them too
_PAIR_CHUNK = 1024  # candidate-centre pairs re-measured in float64 at a time (1024 x 4,096 floats: 32 MiB)
_CENTRED_COPY_BYTES = 64 << 20  # points up to this size get a centred copy up front; larger ones are centred as read


@dataclass(frozen=True)
class KCenterResult:
    order: np.ndarray  # positions of the chosen centres, in the order they were picked
    radius: float  # max distance from any point to its nearest chosen centre (the K-Center objective), float64-exact
    n_verified: int  # iterations where more than one point was re-measured exactly
    n_truncated: int  # iterations where the exactness window held more than max_verify points
    n_computed: int = 0  # point-centre distances computed in full (n x k without pruning)
    bound_dim: int = 0  # directions of the pruning bound (0: not used)


def kcenter_greedy(
    X: np.ndarray,
    k: int,
    seed: int = 0,
    *,
    center: bool = True,
    max_verify: int = 1024,
    progress: bool | None = None,
    blas_threads: int | None = 1,
    bound_dim: int | None = None,
) -> KCenterResult:
    """Farthest-first traversal of the rows of ``X`` (n x d) down to ``k`` centres.

    Memory: ``X`` itself, read and never copied whole while the bound prunes (the centred
    rows a pick reads are centred as it reads them, into a buffer of ``_BLOCK`` rows), its
    ``n x bound_dim`` float32 projection, O(n) vectors and O(k d) for the chosen rows
    (their centred float32 rows; the originals are read from ``X``); never O(n^2). A centred float32 copy of
    ``X`` is held only where every pick reads every row anyway (no bound, or one turned off
    because it does not prune) or where it is small (``_CENTRED_COPY_BYTES``). Either way the
    float32 numbers are the same, and so are the picks and every counter.

    ``bound_dim``: directions of the exact pruning bound (module docstring); None chooses
    (128 when ``d >= 512`` and ``n >= 4096``, else none), 0 turns it off. The picks do not
    depend on it.

    ``blas_threads`` caps BLAS threads during the traversal (None: leave as is). One thread
    by default: each pick is a bandwidth-bound matrix-vector product, and OpenBLAS's
    per-call thread hand-off cost more than it gave on the 2-core machine (2,768 points to
    2,768 centres: 52 s with 2 threads under load, 3.6 s with 1).
    """
    kwargs = dict(center=center, max_verify=max_verify, progress=progress, bound_dim=bound_dim)
    if blas_threads is None:
        return _kcenter_greedy(X, k, seed, **kwargs)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return _kcenter_greedy(X, k, seed, **kwargs)


class _Points:
    """The centred float32 rows, their float64 squared norms, and the pruning bound's
    projection; ``exact_min`` keeps each re-measured point's float64 distance between picks.

    The centred rows are those of a float32 copy, ``fl32(x - mean)`` row by row, but the copy
    is held only where it pays (:meth:`centred`): while the bound is on, a pick reads only the
    rows it may change, and those are centred as they are read, from ``X`` (which the exact
    re-measurement needs anyway); the copy is made when it is small, when there is no bound,
    or when the bound is turned off (then every pick reads every row)."""

    def __init__(self, X: np.ndarray, k: int, min_d: np.ndarray, *, center: bool, bound_dim: int | None):
        n, d = X.shape
        self.X = X
        self._min_d = min_d  # the traversal's, read by the second bound
        mean = np.zeros(d, dtype=np.float64)
        if center:
            for s in range(0, n, _BLOCK):
                mean += X[s : s + _BLOCK].sum(axis=0, dtype=np.float64)
            mean /= n
        self.mean = mean
        # fl32(x - 0) is x for float32 rows: uncentred float32 points are their own centred rows
        own = not center and X.dtype == np.float32 and X.flags.c_contiguous
        self.Xw: np.ndarray | None = X if own else None
        self._buf = None
        if bound_dim is None:
            bound_dim = _BOUND_DIM if d >= 4 * _BOUND_DIM and n >= 4096 else 0
        V = None
        if bound_dim > 0 and d > 1 and n > 1:
            rows = np.unique(np.linspace(0, n - 1, min(n, _BASIS_ROWS)).astype(np.int64))
            V = _bound_basis(self.centred(rows), min(bound_dim, d - 1))
            p = V.shape[1]
            p1 = min(_FIRST_DIM, p)
            # Each row's p coordinates on V and, last, its norm off V, so that the squared
            # distance between two such rows is the bound ||P x - P c||^2 + (r_x - r_c)^2.
            # The same on the first p1 directions alone (a looser bound read first), stored
            # by column: one pass over it is a fast matrix-vector product.
            self.Y = np.empty((n, p + 1), dtype=np.float32)
            self.Y1 = np.empty((p1 + 1, n), dtype=np.float32)
            self.ysq = np.empty(n, dtype=np.float64)  # squared norms of those float32 rows
            self.ysq1 = np.empty(n, dtype=np.float64)
        else:
            self.Y = None
        # Centre in float64, use in float32: the dot products run at float32 bandwidth.
        if self.Y is None or X.nbytes <= _CENTRED_COPY_BYTES:
            self.keep_centred()
        self.sq = np.empty(n, dtype=np.float64)
        for s in range(0, n, _BLOCK):
            e = min(s + _BLOCK, n)
            # Norms (and projections) of the float32 rows that the dot products will actually use.
            b32 = self.centred(slice(s, e)).astype(np.float64)
            self.sq[s:e] = np.einsum("ij,ij->i", b32, b32)
            if V is not None:
                y = b32 @ V
                del b32
                y2 = y * y
                self.Y[s:e, :p] = y
                self.Y[s:e, p] = np.sqrt(np.maximum(self.sq[s:e] - y2.sum(axis=1), 0.0))
                self.Y1[:p1, s:e] = y[:, :p1].T
                self.Y1[p1, s:e] = np.sqrt(np.maximum(self.sq[s:e] - y2[:, :p1].sum(axis=1), 0.0))
                y32 = self.Y[s:e].astype(np.float64)
                self.ysq[s:e] = np.einsum("ij,ij->i", y32, y32)
                y32 = self.Y1[:, s:e].astype(np.float64)
                self.ysq1[s:e] = np.einsum("ji,ji->i", y32, y32)
        r2 = float(self.sq.max()) if n else 0.0
        gamma_d = d * _U32 / (1.0 - d * _U32) if d * _U32 < 1 else float("inf")
        # Worst-case error of any squared distance (and so of any min_d entry); x2 for safety,
        # plus a float64 term for the combination n_i - 2 dot + n_c.
        self.err = 2.0 * ((8.0 * _U32 + 2.0 * gamma_d) * r2 * (1.0 + 1e-6) + 8.0 * _U64 * r2) + 1e-300
        self.window = 2.0 * self.err

        if self.Y is not None:
            gamma_p = (p + 1) * _U32 / (1.0 - (p + 1) * _U32)
            # The bounds' own worst case: float32 storage of the rows (8 u R^2), their float32
            # dot products (2 gamma_p R^2), the float32 test in ``to_update`` (under 24 u R^2),
            # and the float64 projection, norms and residuals (1e-5 R^2 covers them many times
            # over); x2 for safety. A bound is trusted only beyond min_d + 2E + this: min_d's
            # error, the centring's, its own.
            self.slack = self.window + 2.0 * ((32.0 * _U32 + 2.0 * gamma_p) * r2 + 1e-5 * r2) + 1e-300
            self.chosen_y = np.empty((k, p + 1), dtype=np.float32)
            # (||y1_i||^2 - min_d_i) / 2 in float32: the point's side of the first bound's test.
            self.half = np.full(n, -np.inf, dtype=np.float32)
            self.ydot = np.empty(n, dtype=np.float32)
        self.bound_dim = 0 if self.Y is None else self.Y.shape[1] - 1
        self.bounded = self.Y is not None  # turned off by the traversal where the bound does not prune

        self.chosen = np.empty(k, dtype=np.int64)
        self.chosen_w = np.empty((k, d), dtype=np.float32)  # their centred float32 rows
        self.exact = np.full(n, np.inf, dtype=np.float64)  # float64 distance to the nearest of the first exact_upto centres
        self.exact_upto = np.zeros(n, dtype=np.int64)

    def keep_centred(self) -> None:
        """Hold the centred float32 rows from now on (where every pick reads all of them)."""
        if self.Xw is not None:
            return
        n, d = self.X.shape
        self.Xw = np.empty((n, d), dtype=np.float32)
        for s in range(0, n, _BLOCK):
            self.Xw[s : s + _BLOCK] = self.X[s : s + _BLOCK].astype(np.float64) - self.mean
        self._buf = None

    def centred(self, rows: Any) -> np.ndarray:
        """The centred float32 rows at ``rows`` (an index, a slice, positions): the copy's,
        or computed as it computes them, ``fl32(fl64(x) - mean)``, so the same numbers."""
        if self.Xw is not None:
            return self.Xw[rows]
        x = self.X[rows]
        # one pass: the subtraction in float64, each result rounded to float32 as it is stored
        return np.subtract(x, self.mean, out=np.empty(x.shape, dtype=np.float32), dtype=np.float64, casting="same_kind")

    def dot_all(self, c: int, out: np.ndarray) -> None:
        """``out = Xw @ Xw[c]`` (float32), every row. Without the copy, the rows are centred
        into a buffer and multiplied a block at a time; a block of ``_BLOCK`` rows (a multiple
        of the BLAS kernel's row group: OpenBLAS gave other results only for blocks of 8 rows
        or fewer) gives each row the product the whole matrix gives it, so the float32
        numbers, and so the exactness checks counted, are the copy's."""
        if self.Xw is not None:
            np.dot(self.Xw, self.Xw[c], out=out)
            return
        n = self.X.shape[0]
        cw = self.centred(c)
        for s in range(0, n, _BLOCK):
            e = min(s + _BLOCK, n)
            np.dot(self._centred_block(slice(s, e), e - s), cw, out=out[s:e])

    def dot_rows(self, idx: np.ndarray, c: int) -> np.ndarray:
        """``Xw[idx] @ Xw[c]`` (float32), a block of ``_BLOCK`` positions at a time."""
        if self.Xw is not None:
            return self.Xw[idx] @ self.Xw[c]
        cw = self.centred(c)
        out = np.empty(idx.size, dtype=np.float32)
        for s in range(0, idx.size, _BLOCK):
            part = idx[s : s + _BLOCK]
            np.dot(self._centred_block(part, part.size), cw, out=out[s : s + part.size])
        return out

    def _centred_block(self, rows: Any, m: int) -> np.ndarray:
        """:meth:`centred` for up to ``_BLOCK`` rows, into a buffer kept between picks."""
        if self._buf is None:
            n, d = self.X.shape
            self._buf = np.empty((min(n, _BLOCK), d), dtype=np.float32)
        return np.subtract(self.X[rows], self.mean, out=self._buf[:m], dtype=np.float64, casting="same_kind")

    def add(self, t: int, c: int) -> None:
        self.chosen[t] = c
        self.chosen_w[t] = self.centred(c)
        if self.Y is not None:
            self.chosen_y[t] = self.Y[c]

    def to_update(self, c: int, dense: int) -> np.ndarray | None:
        """Positions whose nearest distance the new centre ``c`` may lower, by the bounds:
        first the p1-direction one for every point (``||y_i||^2 + ||y_c||^2 - 2 y_i.y_c <
        min_d_i + slack``, one float32 product over the (p1 + 1) x n columns, tested in
        float32), then the p-direction one for those left. None when more than ``dense``
        are left: then reading the whole matrix costs about as much."""
        np.dot(self.Y1[:, c].copy(), self.Y1, out=self.ydot)
        edge = np.float32((self.ysq1[c] - self.slack) * 0.5)
        idx = np.flatnonzero(self.ydot > self.half + edge)
        if self.Y1.shape[0] == self.Y.shape[1]:  # p1 == p: the first bound was the whole bound
            return idx if idx.size <= dense else None
        if idx.size > dense:
            lb = (self.Y @ self.Y[c]).astype(np.float64)
            idx = None
        else:
            lb = (self.Y[idx] @ self.Y[c]).astype(np.float64)
        lb *= -2.0
        lb += self.ysq if idx is None else self.ysq[idx]
        lb += self.ysq[c]
        keep = lb < (self._min_d if idx is None else self._min_d[idx]) + self.slack
        idx = np.flatnonzero(keep) if idx is None else idx[keep]
        return idx if idx.size <= dense else None

    def set_min(self, idx: np.ndarray | None, min_d: np.ndarray) -> None:
        """Refresh the test's point side after ``min_d`` changed at ``idx`` (None: everywhere)."""
        if idx is None:
            self.half[:] = (self.ysq1 - min_d) * 0.5
        else:
            self.half[idx] = (self.ysq1[idx] - min_d[idx]) * 0.5

    def exact_min(self, cand: np.ndarray, m: int, min_d: np.ndarray) -> np.ndarray:
        """Float64 squared distance from each of ``cand`` to its nearest of the first ``m``
        centres. Only the centres chosen since a point's last re-measurement are looked at,
        and of those only the ones that can be its nearest: within ``slack`` of its ``min_d``
        by the bound (while it is on), and within ``2 E`` by the float32 distance (when the
        bound is off, or leaves more than a few centres a point)."""
        for s in range(0, cand.size, _VERIFY_CHUNK):
            part = cand[s : s + _VERIFY_CHUNK]
            since = self.exact_upto[part]
            lo = int(since.min())
            if lo >= m:
                continue
            cols = np.arange(lo, m)
            near = cols[None, :] >= since[:, None]
            if self.bounded:
                a = (self.Y[part] @ self.chosen_y[lo:m].T).astype(np.float64)
                a *= -2.0
                a += self.ysq[part][:, None]
                a += self.ysq[self.chosen[lo:m]][None, :]
                near &= a <= (min_d[part] + self.slack)[:, None]
                if np.count_nonzero(near) > _FEW_CENTRES * part.size:
                    keep = near.any(axis=0)
                    cols, near = cols[keep], near[:, keep]
                else:
                    cols = None
            if cols is not None:
                a = (self.centred(part) @ self.chosen_w[cols].T).astype(np.float64)
                a *= -2.0
                a += self.sq[part][:, None]
                a += self.sq[self.chosen[cols]][None, :]
                near &= a <= (min_d[part] + self.window)[:, None]
            rows, at = np.nonzero(near)  # rows ascending
            centre = lo + at if cols is None else cols[at]
            for q in range(0, rows.size, _PAIR_CHUNK):
                r = rows[q : q + _PAIR_CHUNK]
                # the centres' original rows, from X: a k x d float64 copy of them would be 164 MB at 5,000 x 4,096
                diff = self.X[self.chosen[centre[q : q + _PAIR_CHUNK]]].astype(np.float64)
                diff -= self.X[part[r]].astype(np.float64)
                dist = np.einsum("ij,ij->i", diff, diff)
                starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
                who = part[r[starts]]
                self.exact[who] = np.minimum(self.exact[who], np.minimum.reduceat(dist, starts))
            self.exact_upto[part] = m
        return self.exact[cand]


def _bound_basis(S: np.ndarray, p: int) -> np.ndarray:
    """``d x p`` orthonormal (float64 QR) directions near the top of the rows' spectrum, the
    largest first: a randomized range finder with one power iteration on evenly spaced rows,
    turned to the principal axes of those rows within it (``S``: the sample, centred,
    float32). Any orthonormal directions keep the bounds exact; these make them tight."""
    omega = np.random.default_rng(0).standard_normal((S.shape[1], p), dtype=np.float32)
    Z, _ = np.linalg.qr(S @ omega)
    Z, _ = np.linalg.qr(S @ (S.T @ Z))
    V, _ = np.linalg.qr((S.T @ Z).astype(np.float64))
    _, _, turn = np.linalg.svd(S @ V.astype(np.float32), full_matrices=False)
    return V @ turn.T.astype(np.float64)  # an orthogonal turn: still orthonormal


def _kcenter_greedy(X: np.ndarray, k: int, seed: int, *, center: bool, max_verify: int, progress: bool | None,
                    bound_dim: int | None) -> KCenterResult:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"K-Center needs a 2-D array of points (n x d); got shape {X.shape}")
    n, d = X.shape
    k = int(min(max(k, 0), n))
    if k == 0:
        return KCenterResult(order=np.empty(0, dtype=np.int64), radius=float("nan"), n_verified=0, n_truncated=0)
    for s in range(0, n, _BLOCK):  # a block at a time: no n x d temporary
        if not np.isfinite(X[s : s + _BLOCK]).all():
            raise ValueError("K-Center points contain NaN or infinite values; drop those rows before selecting")

    min_d = np.full(n, np.inf, dtype=np.float64)
    pts = _Points(X, k, min_d, center=center, bound_dim=bound_dim)
    sq, window = pts.sq, pts.window
    rng = np.random.default_rng(seed)
    dot = np.empty(n, dtype=np.float32)
    dist = np.empty(n, dtype=np.float64)
    n_verified = 0
    n_truncated = 0
    n_computed = 0
    dense_run = 0

    def farthest(m: int, count: bool = True) -> tuple[int, float]:
        """The exact farthest point from the first m centres, and its float64 squared distance
        (``count``: a pick, whose checks the result counts; the radius is not)."""
        nonlocal n_verified, n_truncated
        j = int(np.argmax(min_d))
        top = min_d[j]
        candidates = np.flatnonzero(min_d >= top - window)
        if candidates.size == 1:
            if count:
                return j, float(top)
            return j, float(pts.exact_min(candidates, m, min_d)[0])
        n_verified += count
        if candidates.size > max_verify:
            n_truncated += count
            part = np.argpartition(-min_d[candidates], max_verify - 1)[:max_verify]
            candidates = np.sort(candidates[part])
        exact = pts.exact_min(candidates, m, min_d)
        i = int(np.argmax(exact))  # candidates ascending: ties -> lowest position
        return int(candidates[i]), float(exact[i])

    nxt = int(rng.integers(n))
    far = 0.0
    bar = tqdm(total=k, desc="k-center", unit="centre", disable=(not progress) if progress is not None else None, mininterval=2.0)
    for t in range(k):
        c = nxt
        pts.add(t, c)
        idx = None
        if pts.bounded:
            idx = pts.to_update(c, int(_DENSE * n))  # every point while min_d is inf
            if idx is None:
                dense_run += 1
                if dense_run >= _PATIENCE and t >= _PATIENCE:
                    pts.bounded = False
                    pts.keep_centred()  # every pick reads every row from now on
                    log.debug("K-Center: the %d-d bound pruned less than %.0f%% of the points in %d picks in a row; "
                              "reading the whole matrix from pick %d", pts.bound_dim, 100 * _DENSE, _PATIENCE, t)
            else:
                dense_run = 0
        if idx is None:
            pts.dot_all(c, dot)
            np.multiply(dot, -2.0, out=dist)
            dist += sq
            dist += sq[c]
            np.minimum(min_d, dist, out=min_d)
            n_computed += n
        elif idx.size:
            near = pts.dot_rows(idx, c).astype(np.float64)
            near *= -2.0
            near += sq[idx]
            near += sq[c]
            min_d[idx] = np.minimum(min_d[idx], near)
            n_computed += idx.size
        min_d[c] = -np.inf  # chosen: never again, even when a duplicate rounds above zero
        if pts.bounded:
            pts.set_min(idx, min_d)
            pts.half[c] = np.inf
        min_d[c] = -np.inf  # chosen: never again, even when a duplicate rounds above zero
        bar.update(1)
        if t == k - 1:
            if k < n:
                far = farthest(k, count=False)[1]
            break
        nxt, _ = farthest(t + 1)
    bar.close()

    # The radius is the next pick's exact distance (0 when every point was chosen).
    radius = float(np.sqrt(max(far, 0.0)))
    if n_truncated:
        log.warning(
            "K-Center: in %d of %d picks more than %d points were within rounding error of the farthest "
            "(near-duplicate embeddings); among those the float32 order decided",
            n_truncated, k, max_verify,
        )
    return KCenterResult(order=pts.chosen.copy(), radius=radius, n_verified=n_verified, n_truncated=n_truncated,
                         n_computed=n_computed, bound_dim=pts.bound_dim)


def embedding_matrix(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 matrix of the usable rows, their positions, a reason per unusable row or None).

    A row is unusable when its status is not ``ok``, its embedding is missing, has a
    different length from the most common one, or holds NaN/inf.

    The matrix is the only copy of the vectors the caller gets, allocated once: K-Center
    reads it without copying it (:class:`_Points`).
    """
    from syllabus.selection.vectors import lazy_column

    reasons = np.full(len(frame), None, dtype=object)
    status_col = status_column(frame, column)
    status = frame[status_col].astype("string").fillna("missing").to_numpy(dtype=object) if status_col else None
    lazy = lazy_column(frame, column)
    if lazy is not None:  # left in the score shards: read these rows only, straight into the matrix
        return _lazy_matrix(lazy, column, status, status_col, reasons)
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


def _keep_rows(matrix: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``matrix[keep]`` (``keep``: ascending row numbers) moved to the front of ``matrix`` in
    place, a block at a time, and returned as a view of it: no second matrix."""
    if keep.size == len(matrix):
        return matrix
    for s in range(0, keep.size, _BLOCK):
        # keep[i] >= i: each block is read (into a block-sized temporary) before it is written over
        part = keep[s : s + _BLOCK]
        matrix[s : s + part.size] = matrix[part]
    return matrix[: keep.size]


def _finite_rows(matrix: np.ndarray, positions: np.ndarray, reasons: np.ndarray,
                 column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``matrix`` (which this takes over) whose values are all finite; the others
    get their reason. Checked a block of rows at a time: no n x d temporary."""
    bad = np.zeros(positions.size, dtype=bool)
    for s in range(0, positions.size, _BLOCK):
        bad[s : s + _BLOCK] = ~np.isfinite(matrix[s : s + _BLOCK]).all(axis=1)
    if bad.any():
        for p in positions[bad]:
            reasons[p] = f"{column} holds NaN or infinite values"
        matrix = _keep_rows(matrix, np.flatnonzero(~bad))
        positions = positions[~bad]
    return matrix, positions, reasons


def _lazy_matrix(lazy: Any, column: str, status: np.ndarray | None, status_col: str | None,
                 reasons: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`embedding_matrix` over a :class:`~syllabus.selection.vectors.VectorArray`: the
    same rows, reasons and float32 matrix as the per-row path, read from the score shards
    straight into one preallocated matrix (:meth:`VectorSource.read_matrix`)."""
    n = len(lazy)
    ok = np.ones(n, dtype=bool) if status is None else (status == "ok")
    lengths, dim, matrix = lazy.source.read_matrix(lazy.positions, ok)
    for i in np.flatnonzero(~ok):
        reasons[i] = f"{column} missing ({status_col} = {status[i]})"
    for i in np.flatnonzero(ok & (lengths <= 0)):
        reasons[i] = f"{column} missing (no value)"
    for i in np.flatnonzero(ok & (lengths > 0) & (lengths != dim)):
        reasons[i] = f"{column} has {lengths[i]} dimensions where the others have {dim}"
    usable = ok & (lengths == dim) & (lengths > 0)
    positions = np.flatnonzero(usable)
    # the matrix has a row for every ok row with a position, in order: keep the usable ones
    matrix = _keep_rows(matrix, np.flatnonzero(usable[ok & (lazy.positions >= 0)]))
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
