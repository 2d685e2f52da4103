"""K-Center holds its points once: while the pruning bound is on, the centred float32 rows are
computed as each pick reads them instead of kept in a second n x d copy, and they are the same
numbers, so the picks, the radius and every counter (the report's exactness checks) are those
of the copy."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from kcenter_reference import SMALL_INPUT_KINDS, brute_force, small_input

import syllabus.selection.kcenter as kc
from syllabus.selection.kcenter import kcenter_greedy


def hidden_states(rng: np.random.Generator, n: int, d: int, rank: int = 12, noise: float = 0.05) -> np.ndarray:
    """A shared mean, a few directions with a decaying spread, a little noise (float32)."""
    basis = rng.standard_normal((rank, d)) / np.sqrt(np.arange(1, rank + 1))[:, None]
    X = rng.standard_normal((n, rank)) @ basis + 4.0 * rng.standard_normal(d) + noise * rng.standard_normal((n, d))
    return X.astype(np.float32)


def fields(result: kc.KCenterResult) -> tuple:
    return (result.order.tolist(), result.radius, result.n_verified, result.n_truncated, result.n_computed,
            result.bound_dim)


@pytest.fixture
def no_copy(monkeypatch):
    monkeypatch.setattr(kc, "_CENTRED_COPY_BYTES", 0)


def with_copy(X: np.ndarray, monkeypatch, **kwargs) -> kc.KCenterResult:
    """The run with the centred copy held from the start, as before."""
    with monkeypatch.context() as m:
        m.setattr(kc, "_CENTRED_COPY_BYTES", 1 << 62)
        return kcenter_greedy(X, **kwargs)


@pytest.mark.parametrize("seed", range(3))
def test_rows_centred_as_read_give_what_the_copy_gives(monkeypatch, no_copy, seed):
    rng = np.random.default_rng(seed)
    # n not a multiple of the block, the default 128-direction bound on, a few dense picks
    X = hidden_states(rng, 4096 + 1000 + seed * 333, 512)
    args = dict(k=120, seed=seed, progress=False)
    got = kcenter_greedy(X, **args)
    want = with_copy(X, monkeypatch, **args)
    assert got.bound_dim == 128
    assert fields(got) == fields(want)


@pytest.mark.parametrize("case", range(30))
def test_bounded_picks_without_the_copy_match_brute_force(no_copy, case):
    rng = np.random.default_rng(2000 + case)
    n, d = int(rng.integers(2, 90)), int(rng.integers(2, 24))
    kind = case % (SMALL_INPUT_KINDS + 1)
    X = small_input(rng, n, d, kind) if kind < SMALL_INPUT_KINDS else hidden_states(rng, n, d, rank=2, noise=0.01)
    k = int(rng.integers(1, n + 1))
    want, radius = brute_force(X, k, seed=case)
    for bound_dim in (1, 3):
        got = kcenter_greedy(X, k, seed=case, progress=False, bound_dim=bound_dim)
        np.testing.assert_array_equal(got.order, want)
        assert got.radius == pytest.approx(radius, rel=1e-9, abs=1e-12)


def test_bound_turned_off_midway_keeps_the_picks(monkeypatch, no_copy):
    """Isotropic noise: after 64 picks that prune nothing the copy is made, and the picks go on."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 200)).astype(np.float32)
    want, radius = brute_force(X, 150, seed=1)
    got = kcenter_greedy(X, 150, seed=1, progress=False, bound_dim=8)
    np.testing.assert_array_equal(got.order, want)
    assert got.n_computed == 300 * 150
    assert fields(got) == fields(with_copy(X, monkeypatch, k=150, seed=1, progress=False, bound_dim=8))


@pytest.mark.parametrize("center", [True, False])
def test_strided_and_float64_points(monkeypatch, no_copy, center):
    """A column slice (not contiguous) and float64 points are centred as read like float32 rows."""
    rng = np.random.default_rng(12)
    base = hidden_states(rng, 120, 40, rank=3, noise=0.01)
    for X in (base[:, ::2], base.astype(np.float64)):
        want, radius = brute_force(X, 30, seed=4)
        got = kcenter_greedy(X, 30, seed=4, progress=False, center=center, bound_dim=3)
        np.testing.assert_array_equal(got.order, want)
        assert got.radius == pytest.approx(radius, rel=1e-9)
        assert fields(got) == fields(with_copy(X, monkeypatch, k=30, seed=4, progress=False, center=center,
                                               bound_dim=3))


def _peak_allocated(X: np.ndarray, **kwargs) -> int:
    tracemalloc.start()
    try:
        kcenter_greedy(X, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_no_second_copy_of_the_points_while_the_bound_prunes(monkeypatch):
    """numpy reports its buffers to tracemalloc: with the bound on, K-Center allocates less
    than the points' own size (its projection, per-block buffers, the chosen rows), about one
    copy of the points less than holding the centred copy, as before."""
    X = hidden_states(np.random.default_rng(3), 24000, 512)
    args = dict(k=40, seed=0, progress=False)
    monkeypatch.setattr(kc, "_CENTRED_COPY_BYTES", 0)
    without = _peak_allocated(X, **args)
    monkeypatch.setattr(kc, "_CENTRED_COPY_BYTES", 1 << 62)
    copied = _peak_allocated(X, **args)
    assert without < X.nbytes, (without, X.nbytes)
    assert copied - without > 0.9 * X.nbytes, (copied, without, X.nbytes)
