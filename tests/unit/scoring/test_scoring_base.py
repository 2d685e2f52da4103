"""Per-sample failure isolation in batch functions."""

from __future__ import annotations

import pytest

from syllabus.scoring.base import Failed, per_item_fallback


def test_a_failing_item_gets_a_status_and_the_others_are_computed():
    def fn(idx):
        if 3 in idx:
            raise ValueError("sample 3 is broken")
        return [i * 2 for i in idx]

    out = per_item_fallback(fn)([1, 3, 5])
    assert out[0] == 2 and out[2] == 10
    assert isinstance(out[1], Failed) and out[1].status.startswith("error: ValueError: sample 3 is broken")


def test_oom_is_not_swallowed():
    def fn(idx):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError):
        per_item_fallback(fn)([1, 2])
