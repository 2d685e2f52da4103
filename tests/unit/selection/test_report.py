"""Report helpers and which pictures apply to which method."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from syllabus.selection.base import Budget
from syllabus.selection.plots import all_plots
from syllabus.selection.recipes import load_recipe, run_recipe
from syllabus.selection.report import jaccard, jsonable

from synthetic import score_frame


def test_jaccard():
    assert jaccard({"a", "b"}, {"b", "c"}) == 1 / 3
    assert jaccard(set(), set()) == 1.0
    assert jaccard({"a"}, set()) == 0.0


def test_jsonable_unwraps_numpy_and_drops_arrays():
    out = jsonable({"a": np.float32(1.5), "b": float("nan"), "c": np.arange(3), "d": [np.int64(2), math.inf]})
    assert out == {"a": 1.5, "b": None, "d": [2, None]}


def test_pictures_per_method():
    frame = score_frame(300)
    names = {m: set(all_plots(run_recipe(frame, load_recipe(m), Budget(count=10), seed=0)))
             for m in ("3ds", "diq", "ifd", "random")}
    assert names["3ds"] == {"score_distributions.png", "metric_correlations.png"}
    assert names["diq"] == {"diq_quadrants.png", "metric_correlations.png"}
    assert names["ifd"] == {"score_distributions.png", "metric_correlations.png"}
    assert names["random"] == {"metric_correlations.png"}
