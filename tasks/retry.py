"""Retry policy shared by the tasks: transient faults retry with backoff, bad input does not."""

from __future__ import annotations

import os

# A config or data error fails the same way every time: retrying only delays the report.
PERMANENT = (ValueError, TypeError, KeyError, FileNotFoundError, NotImplementedError)


def retry_delays() -> list[float]:
    """Backoff delays in seconds (base from SYLLABUS_RETRY_BASE_SECONDS, default 2): 2, 8."""
    base = float(os.environ.get("SYLLABUS_RETRY_BASE_SECONDS", "2"))
    return [base, base * 4]


def is_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:
        return True
    return False
