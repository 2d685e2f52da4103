"""Greedy K-Center agrees with a float64 brute force that builds the full distance matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kcenter_reference import SMALL_INPUT_KINDS, brute_force, small_input

from syllabus.selection.kcenter import KCenterSelector, kcenter_greedy


@pytest.mark.parametrize("case", range(60))
def test_matches_brute_force_on_small_inputs(case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(2, 60))
    d = int(rng.integers(1, 16))
    X = small_input(rng, n, d, case % SMALL_INPUT_KINDS)
    k = int(rng.integers(1, n + 1))
    got = kcenter_greedy(X, k, seed=case, progress=False).order
    np.testing.assert_array_equal(got, brute_force(X, k, seed=case)[0])


def test_first_centre_is_seeded_and_runs_repeat():
    X = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    a = kcenter_greedy(X, 20, seed=3, progress=False)
    b = kcenter_greedy(X, 20, seed=3, progress=False)
    c = kcenter_greedy(X, 20, seed=4, progress=False)
    np.testing.assert_array_equal(a.order, b.order)
    assert a.order[0] == np.random.default_rng(3).integers(200)
    assert a.order[0] != c.order[0]


def test_radius_is_the_kcenter_objective():
    X = np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32)
    r = kcenter_greedy(X, 2, seed=0, progress=False)
    # Whatever the seeded first centre, the second is the far end of the other cluster,
    # and every point is then within 1 of a centre.
    first = int(np.random.default_rng(0).integers(4))
    assert r.order.tolist() == [first, 3 if first < 2 else 0]
    assert r.radius == pytest.approx(1.0)


def test_budget_larger_than_pool_and_zero_budget():
    X = np.eye(3, dtype=np.float32)
    assert sorted(kcenter_greedy(X, 10, progress=False).order.tolist()) == [0, 1, 2]
    assert kcenter_greedy(X, 0, progress=False).order.size == 0
    with pytest.raises(ValueError, match="NaN"):
        kcenter_greedy(np.array([[np.nan, 1.0]]), 1, progress=False)


def embedding_frame(n: int, d: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "sample_id": [f"s{i:03d}" for i in range(n)],
            "difficulty_embedding": [rng.standard_normal(d).astype(np.float32) for _ in range(n)],
            "difficulty_status": ["ok"] * n,
        }
    )


def test_selector_drops_missing_embeddings_and_keeps_all_below_budget():
    frame = embedding_frame(6)
    frame.at[1, "difficulty_embedding"] = None
    frame.at[2, "difficulty_status"] = "too_long"
    frame.at[3, "difficulty_embedding"] = np.array([1.0, np.nan, 0.0, 0.0], dtype=np.float32)
    frame.at[4, "difficulty_embedding"] = np.zeros(3, dtype=np.float32)
    out = KCenterSelector().apply(frame, 10, 0)
    assert sorted(out.kept.tolist()) == [0, 5]
    assert out.reasons[1] == "difficulty_embedding missing (no value)"
    assert out.reasons[2] == "difficulty_embedding missing (difficulty_status = too_long)"
    assert out.reasons[3] == "difficulty_embedding holds NaN or infinite values"
    assert out.reasons[4] == "difficulty_embedding has 3 dimensions where the others have 4"
    assert any("fewer survivors (2) than the budget (10); all 2 were kept" in n for n in out.notes)


def test_selector_matches_the_function_on_the_usable_rows():
    frame = embedding_frame(40, d=5, seed=2)
    out = KCenterSelector().apply(frame, 7, 11)
    X = np.stack(frame["difficulty_embedding"].to_list())
    np.testing.assert_array_equal(out.kept, brute_force(X, 7, 11)[0])
    assert sum(r is not None for r in out.reasons) == 33
