"""What every scorer shares: configs, the cache key, per-sample failure handling, and
scoring one shard into the object store.

A scorer computes columns for a shard (a ``pa.Table`` in canonical pool columns) and never
decides anything. Its output table has ``sample_id``, ``<scorer>_<metric>`` columns and
``<scorer>_status`` (``ok``, ``too_long``, ``parse_failed``, ``error: ...``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, ClassVar, Sequence

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

SCORES_PREFIX = "scores"


class ScorerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SampleError(Exception):
    """A failure that belongs to one sample; it becomes that sample's status."""


class Failed:
    """Per-item result of a batch function for an item that raised."""

    __slots__ = ("status",)

    def __init__(self, status: str):
        self.status = status


def error_status(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200] or type(exc).__name__
    return f"error: {type(exc).__name__}: {text}"


def per_item_fallback(fn: Callable[[list[int]], list[Any]]) -> Callable[[list[int]], list[Any]]:
    """Wrap a batch function so that a non-OOM failure of a batch re-runs its items one at a
    time, and an item that still fails yields :class:`Failed` instead of ending the shard.
    OOM errors propagate so the engine can shrink the batch."""
    from syllabus.models.engines import is_oom

    def run(idx: list[int]) -> list[Any]:
        try:
            return fn(idx)
        except Exception as exc:
            if is_oom(exc):
                raise
            if len(idx) == 1:
                log.warning("sample %d failed: %s", idx[0], exc)
                return [Failed(error_status(exc))]
            log.warning("a batch of %d failed (%s); retrying its samples one by one", len(idx), exc)
            return [run([i])[0] for i in idx]

    return run


class Scorer:
    """Base for scorers: a name, a version bumped whenever numbers can change, a config."""

    name: ClassVar[str]
    version: ClassVar[int]
    config_cls: ClassVar[type[ScorerConfig]]

    def __init__(self, config: ScorerConfig | dict | None = None, **overrides: Any):
        if config is None:
            config = self.config_cls(**overrides)
        elif isinstance(config, dict):
            config = self.config_cls(**{**config, **overrides})
        elif overrides:
            config = config.model_copy(update=overrides)
        self.config = config
        self.last_stats: dict[str, Any] = {}

    def columns(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:  # pragma: no cover
        raise NotImplementedError

    def key_parts(self, model_fingerprint: str, shard_hash: str) -> dict[str, Any]:
        return {
            "scorer": self.name,
            "version": self.version,
            "config": self.config.model_dump(mode="json"),
            "model": model_fingerprint,
            "shard": shard_hash,
        }

    def key(self, model_fingerprint: str, shard_hash: str) -> str:
        """Store key of this scorer's output for one shard: everything that changes the numbers
        (name, version, full config, model fingerprint, shard content hash)."""
        digest = content_hash(self.key_parts(model_fingerprint, shard_hash), length=24)
        return f"{SCORES_PREFIX}/{self.name}/v{self.version}/{digest}.parquet"


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def status_counts(statuses: Sequence[str]) -> tuple[int, int]:
    ok = sum(1 for s in statuses if s == "ok")
    return ok, len(statuses) - ok


def score_shard(
    scorer: Scorer,
    lm: Any,
    table: pa.Table,
    shard_hash: str,
    store: Store,
    engine: Any | None = None,
    force: bool = False,
) -> tuple[str, dict]:
    """Score one shard and commit the table; skip when the key is already committed.
    Returns ``(key, marker)``."""
    key = scorer.key(lm.fingerprint, shard_hash)
    if not force and store.is_committed(key):
        log.info("%s: %s already committed, skipping", scorer.name, key)
        return key, dict(store.marker(key) or {}, skipped=True)
    start = time.perf_counter()
    out = scorer.score(table, lm, engine)
    seconds = time.perf_counter() - start
    ok, failed = status_counts(out.column(f"{scorer.name}_status").to_pylist())
    meta = {
        "scorer": scorer.name,
        "version": scorer.version,
        "config": scorer.config.model_dump(mode="json"),
        "model_fingerprint": lm.fingerprint,
        "shard_hash": shard_hash,
        "rows": out.num_rows,
        "ok": ok,
        "failed": failed,
        "seconds": round(seconds, 3),
        "stats": scorer.last_stats,
    }
    marker = store.commit_table(key, out, meta)
    log.info("%s: scored %d samples (%d ok) in %.1fs -> %s", scorer.name, out.num_rows, ok, seconds, key)
    return key, dict(marker, skipped=False)
