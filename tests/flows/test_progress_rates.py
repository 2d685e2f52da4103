"""Progress lines report a rate only once one was measured: the first report of an evaluation
pass comes after its first batch, and dividing that batch by the microseconds since the
report began printed 371,195 items/s."""

from __future__ import annotations

import pytest


class Recorder:
    """Stands in for the Prefect progress artifact: keeps the descriptions it was given."""

    def __init__(self):
        self.lines: list[str] = []

    def update(self, done, total, description):
        self.lines.append(description)


@pytest.fixture
def clock(monkeypatch):
    import syllabus_tasks.progress as progress

    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_the_first_report_of_a_pass_has_no_rate_then_the_measured_one(clock):
    from syllabus_tasks.progress import EvalProgress

    seen = Recorder()
    progress = EvalProgress(seen)
    clock[0] += 30.0  # the model loads, then the first batch of 8 items runs
    progress(8, 40, "cloze")
    clock[0] += 1e-6
    progress(8, 40, "cloze")  # a repeat within microseconds measures nothing either
    clock[0] += 2.0
    progress(16, 40, "cloze")  # 8 items in the 2 s since the first report
    assert seen.lines[0] == "evaluation, cloze pass: 8/40 items, n/a items/s, time left in this pass unknown"
    assert "n/a items/s" in seen.lines[1]
    assert seen.lines[2] == "evaluation, cloze pass: 16/40 items, 4.00 items/s, time left in this pass 6 s"


def test_a_new_pass_starts_its_own_clock(clock):
    from syllabus_tasks.progress import EvalProgress

    seen = Recorder()
    progress = EvalProgress(seen)
    for done in (10, 20, 30):
        clock[0] += 1.0
        progress(done, 30, "cloze")
    clock[0] += 1.0
    progress(5, 10, "open_qa")
    clock[0] += 5.0
    progress(10, 10, "open_qa")
    assert "10.00 items/s" in seen.lines[2] and seen.lines[2].endswith("time left in this pass 0 s")
    assert "open_qa pass: 5/10 items, n/a items/s" in seen.lines[3]
    assert seen.lines[4] == "evaluation, open_qa pass: 10/10 items, 1.00 items/s, time left in this pass 0 s"
