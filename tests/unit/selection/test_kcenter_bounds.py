"""K-Center's pruning bounds never change a pick: with them forced on (small ``bound_dim``,
so that small inputs take the pruned path), the picks equal a float64 brute force, on data
where the bounds prune most distances and on data where they prune nothing."""

from __future__ import annotations

import numpy as np
import pytest

from kcenter_reference import SMALL_INPUT_KINDS, brute_force, small_input

from syllabus.selection.kcenter import kcenter_greedy


def low_rank(rng: np.random.Generator, n: int, d: int, rank: int, noise: float, offset: float = 3.0) -> np.ndarray:
    """Shaped like hidden states: a shared mean, a few directions with a decaying spread, noise."""
    basis = rng.standard_normal((rank, d)) / np.sqrt(np.arange(1, rank + 1))[:, None]
    X = rng.standard_normal((n, rank)) @ basis + offset * rng.standard_normal(d) + noise * rng.standard_normal((n, d))
    return X.astype(np.float32)


@pytest.mark.parametrize("case", range(40))
def test_bounded_picks_match_brute_force_on_small_inputs(case):
    rng = np.random.default_rng(1000 + case)
    n = int(rng.integers(2, 80))
    d = int(rng.integers(2, 24))
    kind = case % 8
    if kind < SMALL_INPUT_KINDS:
        X = small_input(rng, n, d, kind)
    elif kind == 5:  # constant rows: every distance is zero
        X = np.full((n, d), 7.25, dtype=np.float32)
    elif kind == 6:  # exact duplicates of a few rows, in shuffled order
        X = rng.standard_normal((4, d)).astype(np.float32)[rng.integers(0, 4, n)]
    else:  # low rank plus a little noise: what the bounds are for
        X = low_rank(rng, n, d, rank=2, noise=0.01)
    k = int(rng.integers(1, n + 1))
    want, radius = brute_force(X, k, seed=case)
    for bound_dim in (1, 3):
        got = kcenter_greedy(X, k, seed=case, progress=False, bound_dim=bound_dim)
        assert got.bound_dim == min(bound_dim, d - 1, n)  # no more directions than sampled rows
        np.testing.assert_array_equal(got.order, want)
        assert got.radius == pytest.approx(radius, rel=1e-9, abs=1e-12)


def test_both_bounds_prune_most_distances_and_keep_the_picks():
    """40 directions: the 32-direction bound read first, then the 40-direction one."""
    rng = np.random.default_rng(7)
    X = low_rank(rng, 800, 96, rank=6, noise=0.02)
    n, k = len(X), 150
    want, radius = brute_force(X, k, seed=3)
    got = kcenter_greedy(X, k, seed=3, progress=False, bound_dim=40)
    assert got.bound_dim == 40
    np.testing.assert_array_equal(got.order, want)
    assert got.radius == pytest.approx(radius, rel=1e-9)
    assert got.n_computed < 0.2 * n * k, got.n_computed  # most point-centre distances skipped
    without = kcenter_greedy(X, k, seed=3, progress=False, bound_dim=0)
    assert without.bound_dim == 0 and without.n_computed == n * k
    np.testing.assert_array_equal(without.order, want)


def test_bound_that_cannot_prune_is_turned_off_and_changes_nothing():
    """Isotropic noise: every pair at about the same distance; after 64 picks that prune
    less than half the points, every pick reads the whole matrix."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 200)).astype(np.float32)
    want, radius = brute_force(X, 150, seed=1)
    got = kcenter_greedy(X, 150, seed=1, progress=False, bound_dim=8)
    np.testing.assert_array_equal(got.order, want)
    assert got.radius == pytest.approx(radius, rel=1e-9)
    assert got.n_computed == 300 * 150


def test_default_bound_turns_on_for_large_inputs_and_gives_the_same_picks():
    rng = np.random.default_rng(9)
    X = low_rank(rng, 4096, 512, rank=16, noise=0.05)
    auto = kcenter_greedy(X, 60, seed=2, progress=False)
    off = kcenter_greedy(X, 60, seed=2, progress=False, bound_dim=0)
    assert auto.bound_dim == 128 and off.bound_dim == 0
    np.testing.assert_array_equal(auto.order, off.order)
    assert auto.radius == off.radius  # both the exact float64 distance of the next pick
    assert auto.n_computed < off.n_computed
    small = kcenter_greedy(X[:1000], 10, seed=2, progress=False)
    assert small.bound_dim == 0


def test_near_duplicates_beyond_max_verify_are_counted_as_truncated():
    rng = np.random.default_rng(10)
    X = np.repeat(rng.standard_normal((3, 5)).astype(np.float32), 10, axis=0)
    for bound_dim in (0, 2):
        got = kcenter_greedy(X, 8, seed=0, progress=False, max_verify=2, bound_dim=bound_dim)
        assert got.n_truncated > 0
        assert len(set(got.order.tolist())) == 8
        assert {int(i) // 10 for i in got.order[:3]} == {0, 1, 2}  # the three distinct rows first


@pytest.mark.parametrize("few, pairs, chunk", [(0, 3, 2), (10**9, 5, 3), (2, 10**6, 10**6)])
def test_exactness_check_paths_and_chunks_give_the_same_picks(monkeypatch, few, pairs, chunk):
    """The check's centre filter by the bound alone, by the bound then the float32 distance,
    and its chunking of candidates and of candidate-centre pairs, all pick the same."""
    import syllabus.selection.kcenter as kc

    monkeypatch.setattr(kc, "_FEW_CENTRES", few)
    monkeypatch.setattr(kc, "_PAIR_CHUNK", pairs)
    monkeypatch.setattr(kc, "_VERIFY_CHUNK", chunk)
    rng = np.random.default_rng(11)
    cases = [
        low_rank(rng, 120, 16, rank=2, noise=0.01),
        rng.integers(0, 3, (90, 6)).astype(np.float32),  # ties: many candidates per pick
        rng.standard_normal((70, 12)).astype(np.float32),
    ]
    for i, X in enumerate(cases):
        want, radius = brute_force(X, 40, seed=i)
        for bound_dim in (0, 2):
            got = kcenter_greedy(X, 40, seed=i, progress=False, bound_dim=bound_dim)
            np.testing.assert_array_equal(got.order, want)
            assert got.radius == pytest.approx(radius, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_uncentred_points_with_a_large_offset_keep_the_picks(seed):
    """center=False: the norms are large and the bound's directions include the offset."""
    rng = np.random.default_rng(100 + seed)
    X = low_rank(rng, 60, 10, rank=3, noise=0.01, offset=50.0)
    want, radius = brute_force(X, 25, seed=seed)
    for bound_dim in (0, 2, 5):
        got = kcenter_greedy(X, 25, seed=seed, progress=False, center=False, bound_dim=bound_dim)
        np.testing.assert_array_equal(got.order, want)
        assert got.radius == pytest.approx(radius, rel=1e-9)
