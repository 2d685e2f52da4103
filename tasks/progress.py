"""A Prefect progress artifact for long work (a fine-tune of the whole pool can take half an
hour, scoring it longer): the run's Artifacts tab shows how far it is."""

from __future__ import annotations

import logging
import threading
import time
from uuid import UUID, uuid4

from prefect.artifacts import create_progress_artifact, update_progress_artifact

log = logging.getLogger("tasks.progress")  # the folder's name, not the installed syllabus_tasks: PREFECT_LOGGING_EXTRA_LOGGERS lists tasks


def duration(seconds: float | None) -> str:
    """``95`` -> ``1 min 35 s``; unknown -> ``unknown``."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class ProgressArtifact:
    """A progress artifact created on the first update and then updated at most every
    ``min_seconds`` (and always at the end), so the API is not flooded. Callable as
    ``(done, total, loss)`` for the fine-tune's progress callback."""

    def __init__(self, what: str, min_seconds: float = 5.0, key: str | None = None):
        self.what = what
        self.min_seconds = min_seconds
        self.key = key
        self.artifact_id: UUID | None = None
        self.last = 0.0
        self.broken = False

    def update(self, done: float, total: float, description: str) -> None:
        now = time.monotonic()
        if self.broken or (self.artifact_id is not None and done < total and now - self.last < self.min_seconds):
            return
        percent = min(100.0, 100.0 * done / total) if total else 100.0
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(percent, key=self.key, description=description)
            else:
                update_progress_artifact(self.artifact_id, percent, description=description)
        except Exception as exc:  # progress display must never fail the work it reports on
            log.warning("could not update the Prefect progress artifact (%s); the log still shows progress", exc)
            self.broken = True
        self.last = now

    def __call__(self, done: int, total: int, loss: float) -> None:
        self.update(done, total, f"{self.what}: {done}/{total} samples seen, loss {loss:.4f}")


class ScoreProgress:
    """Scoring's progress: shards done of all (every scorer), samples per second over the
    shards actually computed (cached ones take no time), and the time left at that rate.

    Shards are reported one at a time, by the batch tasks as each shard ends when they run in
    this process (threads: :meth:`publish` gives them a key to find it by, see
    :func:`report_shard`), else by the flow when their batch ends; a shard reported twice
    counts once. A line goes to ``logger`` at most every ``log_every`` seconds, and for the
    last shard and every failed one, so millions of samples do not flood the run's log."""

    def __init__(self, shards: int, samples: int, artifact: ProgressArtifact | None = None,
                 logger: logging.Logger | None = None, log_every: float = 5.0):
        self.total_shards, self.total_samples = shards, samples
        self.done_shards = self.done_samples = self.computed_samples = 0
        self.cached = self.failed = 0
        self.started = time.monotonic()
        self.artifact = artifact or ProgressArtifact("scoring", key="scoring-progress")
        self.logger, self.log_every = logger, log_every
        self.logged = float("-inf")
        self.seen: set[tuple[str, str]] = set()
        self.key: str | None = None
        self._lock = threading.Lock()

    def text(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.computed_samples / elapsed if self.computed_samples and elapsed > 0 else None
        left = (self.total_samples - self.done_samples) / rate if rate else None
        return (f"scoring: {self.done_shards}/{self.total_shards} shards ({self.cached} cached, {self.failed} failed), "
                f"{self.done_samples}/{self.total_samples} samples, "
                f"{f'{rate:.2f}' if rate else 'n/a'} samples/s, time left {duration(left) if self.done_shards < self.total_shards else '0 s'}")

    def start(self) -> None:
        """Create the progress artifact now, from the flow (not from the first task to finish a shard)."""
        self.artifact.update(0, self.total_shards, self.text())

    def shard_finished(self, rows: int, cached: bool = False, failed: bool = False) -> str:
        self.done_shards += 1
        self.done_samples += rows
        self.cached += cached
        self.failed += failed
        if not cached and not failed:
            self.computed_samples += rows
        text = self.text()
        self.artifact.update(self.done_shards, self.total_shards, text)
        return text

    def report(self, scorer: str, shard: str, rows: int, cached: bool = False, failed: bool = False) -> bool:
        """Count shard ``shard`` of scorer ``scorer`` once; False when it was already counted."""
        with self._lock:
            if (scorer, shard) in self.seen:
                return False
            self.seen.add((scorer, shard))
            text = self.shard_finished(rows, cached, failed)
            now = time.monotonic()
            if self.logger is not None and (failed or self.done_shards >= self.total_shards
                                            or now - self.logged >= self.log_every):
                self.logger.info("%s", text)
                self.logged = now
            return True

    def publish(self) -> str:
        """Make this progress findable by batch tasks running in this process; returns its key."""
        self.key = uuid4().hex
        with _LIVE_LOCK:
            _LIVE[self.key] = self
        return self.key

    def close(self) -> None:
        with _LIVE_LOCK:
            _LIVE.pop(self.key or "", None)


_LIVE: dict[str, ScoreProgress] = {}
_LIVE_LOCK = threading.Lock()


def report_shard(key: str | None, scorer: str, shard: dict, entry: dict | None, error: str | None) -> bool:
    """From a batch task, as one of its shards ends: count it on the flow's progress when that
    runs in this process (False otherwise: a Dask or Ray worker process; the flow counts the
    batch's shards when it ends)."""
    with _LIVE_LOCK:
        progress = _LIVE.get(key or "")
    if progress is None:
        return False
    rows = entry["rows"] if entry else shard["rows"]
    return progress.report(scorer, shard["name"], rows, cached=bool(entry and entry["skipped"]), failed=entry is None)


class EvalProgress:
    """Evaluation's progress, pass by pass (each benchmark method runs one or more batched
    passes over its items): items done of the pass, items per second, time left in the pass.

    A pass's first report comes after its first batch, when its start is already past (and,
    in the first pass, behind the model's loading): it is where the pass's clock starts, so
    the rate is measured over the batches after it, and unknown until there are some."""

    def __init__(self, artifact: ProgressArtifact | None = None):
        self.artifact = artifact or ProgressArtifact("evaluation", key="evaluation-progress")
        self.what: str | None = None
        self.last_done = 0
        self.first_done = 0  # items the pass had done at its first report
        self.started = time.monotonic()

    def __call__(self, done: int, total: int, what: str) -> None:
        if what != self.what or done < self.last_done:  # a new pass
            self.what, self.started, self.first_done = what, time.monotonic(), done
        self.last_done = done
        elapsed = time.monotonic() - self.started
        measured = done - self.first_done
        rate = measured / elapsed if measured > 0 and elapsed > 0 else None
        left = (total - done) / rate if rate else (0.0 if done >= total else None)
        self.artifact.update(done, total, f"evaluation, {what} pass: {done}/{total} items, "
                                          f"{f'{rate:.2f}' if rate else 'n/a'} items/s, time left in this pass {duration(left)}")
