"""Retry policy shared by the tasks: transient faults retry with backoff, bad input does not.
Scoring retries each shard inside its batch task (``shard_retry_delays``, ``PERMANENT``); the
other stages retry their task (``retry_delays``, ``is_transient``)."""

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


def shard_retry_delays(jitter: float = 0.2) -> list[float]:
    """The delays before a shard's retries inside a batch task (``retry_delays``, each
    stretched by up to ``jitter`` at random, as Prefect's retry_jitter_factor does), so workers
    whose shards failed together do not retry in step."""
    import random

    return [d * (1 + random.uniform(0, jitter)) for d in retry_delays()]
