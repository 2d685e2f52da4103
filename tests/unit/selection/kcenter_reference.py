"""What the K-Center tests hold ``kcenter_greedy`` to: a float64 farthest-first traversal of the
explicit distance matrix, and the small inputs where rounding decides picks."""

from __future__ import annotations

import numpy as np

SMALL_INPUT_KINDS = 5


def squared_distances(X: np.ndarray) -> np.ndarray:
    """The n x n float64 squared distances, a few rows at a time (the broadcast difference of
    a whole 800 x 800 x 96 input would be 490 MB)."""
    X = np.asarray(X, dtype=np.float64)
    D = np.empty((len(X), len(X)))
    for s in range(0, len(X), 32):
        D[s : s + 32] = ((X[s : s + 32, None, :] - X[None, :, :]) ** 2).sum(-1)
    return D


def brute_force(X: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float]:
    """Farthest-first on the explicit matrix (ties: lowest position), and the radius."""
    D = squared_distances(X)
    n = len(D)
    order = [int(np.random.default_rng(seed).integers(n))]
    min_d = D[order[0]].copy()
    min_d[order] = -np.inf
    while len(order) < min(k, n):
        j = int(np.argmax(min_d))
        order.append(j)
        min_d = np.minimum(min_d, D[j])
        min_d[order] = -np.inf
    rest = min_d[np.isfinite(min_d)]
    return np.array(order), float(np.sqrt(rest.max())) if rest.size else 0.0


def small_input(rng: np.random.Generator, n: int, d: int, kind: int) -> np.ndarray:
    """One of :data:`SMALL_INPUT_KINDS` shapes of an n x d input."""
    if kind == 0:
        return rng.standard_normal((n, d)).astype(np.float32)
    if kind == 1:  # a coarse integer grid: many exact ties and duplicates
        return rng.integers(0, 3, (n, d)).astype(np.float32)
    if kind == 2:  # a large common offset: the norm trick's cancellation case
        return (rng.standard_normal((n, d)) * 1e-3 + 100.0).astype(np.float32)
    if kind == 3:
        return rng.standard_normal((n, d))
    # clusters of near-duplicates
    centres = rng.standard_normal((3, d)) * 10
    return (centres[rng.integers(0, 3, n)] + rng.standard_normal((n, d)) * 1e-4).astype(np.float32)
