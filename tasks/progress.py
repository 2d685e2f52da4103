"""A Prefect progress artifact for long work inside a task (a fine-tune of the whole pool can
take half an hour): the task run's Artifacts tab shows how far it is."""

from __future__ import annotations

import logging
import time
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

log = logging.getLogger(__name__)


class ProgressArtifact:
    """Callable ``(done, total, loss)``: creates the artifact on the first call, then updates it
    at most every ``min_seconds`` (and always at the end), so the API is not flooded."""

    def __init__(self, what: str, min_seconds: float = 5.0):
        self.what = what
        self.min_seconds = min_seconds
        self.artifact_id: UUID | None = None
        self.last = 0.0
        self.broken = False

    def __call__(self, done: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if self.broken or (self.artifact_id is not None and done < total and now - self.last < self.min_seconds):
            return
        percent = 100.0 * done / total if total else 100.0
        description = f"{self.what}: {done}/{total} samples seen, loss {loss:.4f}"
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(percent, description=description)
            else:
                update_progress_artifact(self.artifact_id, percent, description=description)
        except Exception as exc:  # progress display must never fail the work it reports on
            log.warning("could not update the Prefect progress artifact (%s); the log still shows progress", exc)
            self.broken = True
        self.last = now
