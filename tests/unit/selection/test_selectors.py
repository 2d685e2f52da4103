"""Each selector on hand-made score tables whose right answer is worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from syllabus.selection.band import BandSelector, select_band
from syllabus.selection.base import Budget
from syllabus.selection.baselines import FullSelector, RandomSelector
from syllabus.selection.quadrant import QuadrantSelector
from syllabus.selection.threshold import ThresholdSelector
from syllabus.selection.topk import TopKSelector


def ids(n: int) -> list[str]:
    return [f"s{i:02d}" for i in range(n)]


def kept_ids(frame: pd.DataFrame, outcome) -> list[str]:
    return frame["sample_id"].iloc[outcome.kept].tolist()


# ---------------------------------------------------------------------------- threshold
def test_threshold_keeps_at_and_above_delta_and_drops_missing():
    frame = pd.DataFrame(
        {
            "sample_id": ids(6),
            "quality_score": [95.0, 90.0, 89.99, np.nan, 100.0, 97.0],
            "quality_status": ["ok", "ok", "ok", "parse_failed", "ok", "error: boom"],
        }
    )
    out = ThresholdSelector().apply(frame, None, 0)
    assert kept_ids(frame, out) == ["s00", "s01", "s04"]
    assert out.reasons[2] == "quality_score = 89.99 < 90"
    assert out.reasons[3] == "quality_score missing (quality_status = parse_failed)"
    # A value present but with a failed status does not count.
    assert out.reasons[5] == "quality_score missing (quality_status = error: boom)"
    assert out.thresholds == {"quality_score": {"min": 90.0, "max": None}}


def test_threshold_configurable_delta_and_empty_survivors():
    frame = pd.DataFrame({"sample_id": ids(3), "quality_score": [10.0, 20.0, 30.0]})
    assert kept_ids(frame, ThresholdSelector({"min_value": 20}).apply(frame, None, 0)) == ["s01", "s02"]
    out = ThresholdSelector().apply(frame, None, 0)
    assert out.kept.size == 0 and all(r is not None for r in out.reasons)
    empty = frame.iloc[:0]
    assert ThresholdSelector().apply(empty, None, 0).kept.size == 0


def test_threshold_percentile_replaces_the_absolute_delta():
    frame = pd.DataFrame({"sample_id": ids(5), "quality_score": [20.0, 30.0, np.nan, 25.0, 35.0]})
    out = ThresholdSelector({"min_percentile": 50}).apply(frame, None, 0)
    # Median of [20, 25, 30, 35] = 27.5: keeps 30 and 35; min_value 90 is not used.
    assert kept_ids(frame, out) == ["s01", "s04"]
    assert out.thresholds["quality_score"] == {"min": 27.5, "max": None, "min_percentile": 50}
    none = ThresholdSelector().apply(frame, None, 0)
    assert none.kept.size == 0 and "the highest is 35" in none.notes[0]


def test_threshold_config_rejects_unknown_keys_and_inverted_bounds():
    with pytest.raises(ValueError, match="delta"):
        ThresholdSelector({"delta": 90})
    with pytest.raises(ValueError, match="swap"):
        ThresholdSelector({"min_value": 5, "max_value": 1})


# --------------------------------------------------------------------------------- band
def test_band_intersection_with_known_percentiles():
    # a = 1..9: 25th pct = 3, 75th = 7 -> rows 2..6 pass a.
    # b: pct over [9,8,7,6,5,4,3,2,1] also 3..7 -> rows 2..6 pass b.
    # c: [5]*9 except row 3 = 100 -> 25th = 75th = 5: row 3 fails c.
    frame = pd.DataFrame(
        {
            "sample_id": ids(9),
            "a": np.arange(1.0, 10.0),
            "b": np.arange(9.0, 0.0, -1.0),
            "c": [5.0, 5.0, 5.0, 100.0, 5.0, 5.0, 5.0, 5.0, 5.0],
        }
    )
    out = BandSelector({"metrics": ["a", "b", "c"], "low": 25, "high": 75}).apply(frame, None, 0)
    assert kept_ids(frame, out) == ["s02", "s04", "s05", "s06"]
    assert out.thresholds["a"] == {"low_percentile": 25, "low": 3.0, "high_percentile": 75, "high": 7.0}
    assert out.details["per_metric_survivors"] == {"a": 5, "b": 5, "c": 8}
    assert out.details["all_metrics_survivors"] == 4
    assert out.reasons[3] == "c = 100 above the band [5, 5]"
    assert out.reasons[0] == "a = 1 below the band [3, 7]; b = 9 above the band [3, 7]"


def test_band_ties_at_the_bounds_are_kept():
    keep, per_metric, bounds = select_band({"x": np.array([1.0, 2.0, 2.0, 2.0, 3.0])}, 25, 75)
    assert bounds["x"] == (2.0, 2.0)
    assert keep.tolist() == [False, True, True, True, False]


def test_band_percentiles_ignore_nan_and_drop_nan_rows():
    frame = pd.DataFrame({"sample_id": ids(6), "x": [1.0, 2.0, np.nan, 3.0, 4.0, 5.0]})
    out = BandSelector({"metrics": ["x"], "low": 25, "high": 75}).apply(frame, None, 0)
    # Percentiles over [1, 2, 3, 4, 5]: 2 and 4.
    assert out.thresholds["x"]["low"] == 2.0 and out.thresholds["x"]["high"] == 4.0
    assert kept_ids(frame, out) == ["s01", "s03", "s04"]
    assert out.reasons[2] == "x missing (no value)"


def test_band_reasons_group_metrics_missing_for_one_reason():
    frame = pd.DataFrame({
        "sample_id": ids(4),
        "difficulty_d1": [1.0, np.nan, np.nan, 2.0],
        "difficulty_d2": [1.0, np.nan, np.nan, 9.0],
        "difficulty_status": ["ok", "too_long", None, "ok"],
    })
    out = BandSelector({"metrics": ["difficulty_d1", "difficulty_d2"], "low": 0, "high": 50}).apply(frame, None, 0)
    assert out.reasons[1] == "difficulty_d1, difficulty_d2 missing (difficulty_status = too_long)"
    assert out.reasons[2] == "difficulty_d1, difficulty_d2 missing (not scored)"
    assert out.reasons[3] == "difficulty_d1 = 2 above the band [1, 1.5]; difficulty_d2 = 9 above the band [1, 5]"


def test_band_all_missing_metric_drops_everything_and_says_so():
    frame = pd.DataFrame({"sample_id": ids(3), "x": [np.nan] * 3, "y": [1.0, 2.0, 3.0]})
    out = BandSelector({"metrics": ["x", "y"]}).apply(frame, None, 0)
    assert out.kept.size == 0
    assert any("x has no usable values" in n for n in out.notes)


def test_band_config_validation():
    with pytest.raises(ValueError, match="0 <= low < high <= 100"):
        BandSelector({"low": 80, "high": 20})
    with pytest.raises(ValueError, match="twice"):
        BandSelector({"metrics": ["a", "a"]})


def test_band_missing_column_names_the_fix():
    with pytest.raises(ValueError, match="--scores"):
        BandSelector().apply(pd.DataFrame({"sample_id": ids(2), "difficulty_d1": [1.0, 2.0]}), None, 0)


# ----------------------------------------------------------------------------- quadrant
def quadrant_frame() -> pd.DataFrame:
    # D split at the 50th pct of [1,2,3,4,5,1,5,3] = 3 (high if >= 3).
    # Dot median of [8,7,6,5,4,3,2,1] = 4.5 (high if >= 4.5).
    return pd.DataFrame(
        {
            "sample_id": ids(8),
            "diq_difficulty_score": [1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 5.0, 3.0],
            "influence_dot": [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
        }
    )
    # Q1 (D>=3, Dot>=4.5): s02 (6), s03 (5)   -> by Dot desc: s02, s03
    # Q2 (D<3,  Dot>=4.5): s00 (8), s01 (7)   -> s00, s01
    # Q3 (D>=3, Dot<4.5):  s04 (4), s06 (2), s07 (1)
    # Q4 (D<3,  Dot<4.5):  s05 (3)


def test_quadrant_fills_q1_to_q4_in_order():
    frame = quadrant_frame()
    out = QuadrantSelector().apply(frame, 6, 0)
    assert kept_ids(frame, out) == ["s02", "s03", "s00", "s01", "s04", "s06"]
    assert out.thresholds["diq_difficulty_score"]["split"] == 3.0
    assert out.thresholds["influence_dot"]["value"] == 4.5
    assert out.details["quadrant_sizes"] == {"Q1": 2, "Q2": 2, "Q3": 3, "Q4": 1}
    assert out.reasons[7] == "Q3 position 3: the budget (6) was filled first"


def test_quadrant_ties_on_influence_go_to_higher_difficulty_then_id():
    frame = pd.DataFrame(
        {
            "sample_id": ["b", "a", "c", "d"],
            "diq_difficulty_score": [4.0, 4.0, 5.0, 1.0],
            "influence_dot": [2.0, 2.0, 2.0, 0.0],
        }
    )
    # D split (50th pct of [4,4,5,1]) = 4; Dot median = 2: a, b, c in Q1 with equal Dot.
    out = QuadrantSelector().apply(frame, 4, 0)
    assert kept_ids(frame, out) == ["c", "a", "b", "d"]


def test_quadrant_nan_dropped_and_budget_larger_than_pool():
    frame = quadrant_frame()
    frame.loc[0, "influence_dot"] = np.nan
    out = QuadrantSelector().apply(frame, 100, 0)
    assert out.kept.size == 7 and 0 not in out.kept
    assert out.reasons[0] == "influence_dot missing (no value)"
    assert any("fewer survivors (7) than the budget (100)" in n for n in out.notes)


def test_quadrant_tau_d_moves_the_difficulty_split():
    frame = quadrant_frame()
    out = QuadrantSelector({"tau_d": 100}).apply(frame, 2, 0)
    # Split at max D = 5: only s04, s06 are "high"; s06 and s04 both low Dot -> Q3;
    # Q1 empty, so Q2 (high Dot, low D) fills first: s00 then s01.
    assert kept_ids(frame, out) == ["s00", "s01"]


# --------------------------------------------------------------------------------- topk
def test_topk_ifd_drops_above_one_then_takes_highest_with_id_ties():
    frame = pd.DataFrame(
        {
            "sample_id": ["e", "d", "c", "b", "a"],
            "ifd_score": [1.5, 0.9, 0.7, 0.9, np.nan],
            "ifd_status": ["ok", "ok", "ok", "ok", "too_long"],
        }
    )
    out = TopKSelector({"column": "ifd_score", "drop_above": 1.0}).apply(frame, 2, 0)
    assert kept_ids(frame, out) == ["b", "d"]  # tie at 0.9 broken by sample_id
    assert out.reasons[0] == "ifd_score = 1.5 > 1 (dropped before ranking)"
    assert out.reasons[4] == "ifd_score missing (ifd_status = too_long)"
    assert out.reasons[2] == "ifd_score = 0.7 ranked below the top 2"
    assert out.thresholds["ifd_score"]["last_kept_value"] == 0.9


def test_topk_ascending_and_budget_larger_than_pool():
    frame = pd.DataFrame({"sample_id": ids(3), "x": [3.0, 1.0, 2.0]})
    out = TopKSelector({"column": "x", "descending": False}).apply(frame, 10, 0)
    assert kept_ids(frame, out) == ["s01", "s02", "s00"]
    assert any("fewer survivors (3) than the budget (10)" in n for n in out.notes)


def test_topk_exactly_one_passes_the_ifd_rule():
    frame = pd.DataFrame({"sample_id": ids(3), "ifd_score": [1.0, 1.0000001, 2.0]})
    out = TopKSelector({"column": "ifd_score", "drop_above": 1.0}).apply(frame, 3, 0)
    assert kept_ids(frame, out) == ["s00"]  # IFD == 1 is kept: only IFD > 1 is dropped


# ------------------------------------------------------------------------ random & full
def test_random_is_seeded_and_independent_of_row_order():
    frame = pd.DataFrame({"sample_id": ids(50)})
    a = kept_ids(frame, RandomSelector().apply(frame, 10, 7))
    b = kept_ids(frame, RandomSelector().apply(frame, 10, 7))
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    c = kept_ids(shuffled, RandomSelector().apply(shuffled, 10, 7))
    d = kept_ids(frame, RandomSelector().apply(frame, 10, 8))
    assert a == b == c
    assert a != d
    assert len(set(a)) == 10


def test_random_budget_larger_than_pool_and_empty_pool():
    frame = pd.DataFrame({"sample_id": ids(4)})
    out = RandomSelector().apply(frame, 10, 0)
    assert sorted(kept_ids(frame, out)) == ids(4)
    assert RandomSelector().apply(frame.iloc[:0], 10, 0).kept.size == 0


def test_full_keeps_everything_and_notes_an_ignored_budget():
    frame = pd.DataFrame({"sample_id": ["c", "a", "b"]})
    out = FullSelector().apply(frame, 1, 0)
    assert kept_ids(frame, out) == ["a", "b", "c"]
    assert out.notes and "ignored" in out.notes[0]


# ------------------------------------------------------------------------------ budget
def test_budget_count_or_ratio():
    assert Budget(count=5).resolve(100) == 5
    assert Budget(ratio=0.1).resolve(95) == 10  # 9.5 rounds half up
    assert Budget(ratio=0.01).resolve(50) == 1  # never zero from a non-empty pool
    assert Budget(ratio=0.5).resolve(0) == 0
    with pytest.raises(ValueError, match="exactly one"):
        Budget(count=5, ratio=0.1)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        Budget(ratio=1.5)
    with pytest.raises(ValueError, match="greater than or equal to 1"):  # one budget model: the pipeline's rule too
        Budget(count=0)
