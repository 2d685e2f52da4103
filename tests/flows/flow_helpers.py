"""Helpers shared by the flow tests."""

from __future__ import annotations

import json


def write_pool(path, n: int, start: int = 0):
    with open(path, "a") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps({"instruction": f"Question {i} about symptom {i % 7}?",
                                 "output": f"Answer {i}: " + "details " * (i % 5 + 1)}) + "\n")
    return str(path)
