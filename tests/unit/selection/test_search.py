"""Threshold search over percentile windows (3DS Appendix H)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from syllabus.selection.recipes import Recipe
from syllabus.selection.search import band_windows, search_band_windows


def test_band_windows_grid():
    assert band_windows((50,), step=25) == [(0.0, 50.0), (25.0, 75.0), (50.0, 100.0)]
    assert band_windows((40, 60), step=20) == [(0.0, 40.0), (20.0, 60.0), (40.0, 80.0), (60.0, 100.0), (0.0, 60.0), (20.0, 80.0), (40.0, 100.0)]
    with pytest.raises(ValueError, match="positive"):
        band_windows(step=0)


def recipe() -> Recipe:
    return Recipe.model_validate({
        "name": "band-then-top",
        "selectors": [
            {"name": "band", "config": {"metrics": ["x"], "low": 25, "high": 75}},
            {"name": "topk", "config": {"column": "x", "descending": False}},
        ],
    })


def test_search_reports_every_window_and_finds_the_known_best():
    # x = 0..99; the validation metric peaks when the selected mean of x is near 60,
    # so the best window is the one whose band centre is nearest 60.
    frame = pd.DataFrame({"sample_id": [f"s{i:03d}" for i in range(100)], "x": np.arange(100.0)})
    calls = []

    def evaluate(selected: pd.DataFrame) -> float:
        calls.append(len(selected))
        return -abs(selected["x"].mean() - 60.0)

    report = search_band_windows(frame, recipe(), evaluate, budget=len(frame), windows=[(0, 40), (20, 60), (40, 80), (60, 100)])
    assert len(report["windows"]) == 4 and len(calls) == 4
    assert (report["best"]["low"], report["best"]["high"]) == (40, 80)
    first = report["windows"][0]
    assert first["thresholds"]["x"]["low"] == pytest.approx(0.0)
    assert first["thresholds"]["x"]["high"] == pytest.approx(39.6)
    assert first["n_after_band"] == 40 and first["n_selected"] == 40


def test_search_minimize_and_nan_never_wins():
    frame = pd.DataFrame({"sample_id": [f"s{i:02d}" for i in range(20)], "x": np.arange(20.0)})
    values = iter([float("nan"), 3.0, 1.0])
    report = search_band_windows(frame, recipe(), lambda s: next(values), budget=5,
                                 windows=[(0, 50), (25, 75), (50, 100)], maximize=False)
    assert report["windows"][0]["value"] is None
    assert (report["best"]["low"], report["best"]["high"]) == (50, 100)


def test_search_needs_a_band():
    no_band = Recipe.model_validate({"name": "r", "selectors": [{"name": "random"}]})
    with pytest.raises(ValueError, match="no band selector"):
        search_band_windows(pd.DataFrame({"sample_id": ["a"]}), no_band, lambda s: 0.0, budget=1)
