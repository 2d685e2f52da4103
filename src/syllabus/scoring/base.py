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
from pydantic import BaseModel, ConfigDict, model_validator

from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

SCORES_PREFIX = "scores"


# Sizes in a scorer config: tokens or samples per sequence, batch or projection. At 0 or below
# every sample fails (``cutoff: 0`` marks all ``too_long``) or nothing runs, so they are refused
# when the config is made: one rule for the CLI, YAML recipes and Prefect forms.
POSITIVE_FIELDS = frozenset({"cutoff", "batch_size", "generate_batch_size", "max_batch_tokens", "max_new_tokens",
                             "max_response_tokens", "max_answer_tokens", "projection_group", "dim", "rank", "epochs",
                             "micro_batch_size"})


class ScorerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fields added after a config was first released, each with the value that gives the
    # numbers of before it existed: left out of cache keys while they hold it (``key_dump``),
    # so the keys of configs that do not use a new field stay what they were.
    key_defaults: ClassVar[dict[str, Any]] = {}

    def key_dump(self) -> dict[str, Any]:
        """The config as it enters cache keys: ``model_dump(mode="json")`` without the fields
        of ``key_defaults`` that hold their listed value, in nested configs too."""
        out = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, ScorerConfig):
                out[name] = value.key_dump()
            if name in self.key_defaults and out[name] == self.key_defaults[name]:
                del out[name]
        return out

    @model_validator(mode="after")
    def _positive_sizes(self) -> "ScorerConfig":
        for name in POSITIVE_FIELDS.intersection(type(self).model_fields):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"{type(self).__name__} {name} = {value} must be at least 1")
        return self


class ShardSettingError(ValueError):
    """Every sample of a shard failed the same way: a setting, not the data, is at fault."""


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


def in_batches(n: int, batch_size: int, fn: Callable[[list[int]], list[Any]]) -> tuple[list[Any], list[str]]:
    """Run ``fn`` over items ``0..n-1`` in batches of ``batch_size`` through
    :func:`per_item_fallback`; returns each item's result (None where it failed) and status
    (``ok`` or the failure's)."""
    results: list[Any] = [None] * n
    status = ["ok"] * n
    run = per_item_fallback(fn)
    for s0 in range(0, n, batch_size):
        idx = list(range(s0, min(n, s0 + batch_size)))
        for i, res in zip(idx, run(idx)):
            if isinstance(res, Failed):
                status[i] = res.status
            else:
                results[i] = res
    return results, status


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
            "config": self.config.key_dump(),
            "model": model_fingerprint,
            "shard": shard_hash,
        }

    def key(self, model_fingerprint: str, shard_hash: str) -> str:
        """Store key of this scorer's output for one shard: everything that changes the numbers
        (name, version, full config, model fingerprint, shard content hash)."""
        digest = content_hash(self.key_parts(model_fingerprint, shard_hash), length=24)
        return f"{SCORES_PREFIX}/{self.name}/v{self.version}/{digest}.parquet"


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
    wait: bool = True,
) -> tuple[str, dict]:
    """Score one shard and commit the table; skip when the key is already committed.
    Returns ``(key, marker)``.

    The shard's lease in the store (:mod:`syllabus.store.lease`) keeps concurrent workers
    from scoring it twice: one that finds it held waits for the holder's marker (or for the
    lease to expire, when the holder died), or with ``wait=False`` raises
    :class:`~syllabus.store.lease.LeaseHeld` at once so the caller can score other shards first.
    """
    from syllabus.store.lease import Lease, LeaseHeld

    key = scorer.key(lm.fingerprint, shard_hash)
    lease = Lease(store, key)
    while True:
        if not force and store.is_committed(key):
            # DEBUG: a cached rerun of a 2M-sample pool would send 62,500 of these lines a scorer to
            # the Prefect API; the progress lines and the score manifest count the cached shards.
            log.debug("%s: %s already committed, skipping", scorer.name, key)
            return key, dict(store.marker(key) or {}, skipped=True)
        if lease.acquire():
            break
        holder = lease.holder()
        if not wait:
            raise LeaseHeld(key, holder or {})
        log.info("%s: %s is being scored by %s; waiting for it", scorer.name, key,
                 (holder or {}).get("owner", "another worker"))
        time.sleep(min(5.0, lease.seconds / 10))
    committed = False
    try:
        if not force and store.is_committed(key):  # finished by the previous holder
            committed = True  # so the release removes the lease folder, not leaves an expired record in it
            return key, dict(store.marker(key) or {}, skipped=True)
        key, marker = _score_and_commit(scorer, lm, table, shard_hash, store, engine, key)
        committed = True
        return key, marker
    finally:
        lease.release(done=committed)


def _score_and_commit(scorer: Scorer, lm: Any, table: pa.Table, shard_hash: str, store: Store, engine: Any | None,
                      key: str) -> tuple[str, dict]:
    start = time.perf_counter()
    out = scorer.score(table, lm, engine)
    seconds = time.perf_counter() - start
    statuses = out.column(f"{scorer.name}_status").to_pylist()
    ok, failed = status_counts(statuses)
    if out.num_rows >= 2 and ok == 0 and len(set(statuses)) == 1:
        # Different samples failing in one identical way is a setting's doing (a cutoff below
        # every prompt, an unusable model), not the data's: a cached table of failures would be
        # reused on every rerun.
        raise ShardSettingError(
            f"{scorer.name}: all {out.num_rows} samples of shard {shard_hash} failed with status {statuses[0]!r} "
            f"under config {scorer.config.model_dump(mode='json')}; nothing was committed. Fix the setting "
            "(for too_long, raise cutoff) and rerun"
        )
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
