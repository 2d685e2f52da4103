"""Canonical samples read straight from files, without an ingest: selection Parquet files or
any pool file the pool readers accept, each record normalised as ingest would (question/answer
fields included). Fine-tuning reads its data this way, and decontamination the pools it checks.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from syllabus.pool.canonical import FieldMap, RecordRejected, normalise
from syllabus.pool.readers import expand, read

log = logging.getLogger(__name__)


def load_samples(paths: Sequence[str] | str, fields: Any = None) -> tuple[list[dict], dict]:
    """Canonical samples (instruction, input, output, messages, sample_id) from selection
    Parquet files or any pool file the pool readers accept (question/answer fields included).

    Returns ``(samples, counts)``; rejected records are logged with their reason and counted.
    """
    fields = fields or FieldMap()
    paths = [paths] if isinstance(paths, str) else list(paths)
    samples: list[dict] = []
    rejected = 0
    for url, kind, _ in expand(paths):
        for record in read(url, kind):
            if record.error is not None:
                rejected += 1
                log.warning("%s: %s; skipped", record.location, record.error[1])
                continue
            try:
                sample = normalise(record.value, source=url, fields=fields, max_chars=10**9)
            except RecordRejected as exc:
                rejected += 1
                log.warning("%s: %s; skipped", record.location, exc.reason)
                continue
            samples.append(sample.row())
    return samples, {"read": len(samples) + rejected, "rejected": rejected}
