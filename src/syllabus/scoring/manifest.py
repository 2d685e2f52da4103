"""The score manifest: what one scorer instance produced for a pool, as ``syllabus score`` and
the pipeline's score flow both write it (:func:`syllabus.scoring.pool.write_score_manifest`)
and as selection and evaluation read it. A JSON object in the store; fields added since the
first version are optional so older manifests still read.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ShardEntry(BaseModel):
    """One shard's committed scores."""

    model_config = ConfigDict(extra="allow")

    shard: str
    key: str
    url: str
    rows: int
    ok: int | None = None
    failed: int | None = None
    skipped: bool = False  # reused a committed result
    seconds: float | None = None  # spent in this run (0 when cached)
    compute_seconds: float | None = None  # what scoring it took when it ran, cached or not
    model_load_seconds: float = 0.0
    stats: dict[str, Any] | None = None


class MissingShard(BaseModel):
    shard: str
    error: str


class ScoreManifest(BaseModel):
    """A scorer instance's scores for a pool: per-shard entries, the shards that failed, and
    where the time went."""

    model_config = ConfigDict(extra="allow")

    scorer: str  # the registered scorer
    instance: str | None = None  # the plan's name for it (influence@less), the scorer's when alone
    version: int
    config: dict[str, Any]
    model_fingerprint: str
    pool_manifest: str
    pool_fingerprint: str | None = None
    limit: int | None = None
    shards: list[ShardEntry]
    missing: list[MissingShard] = Field(default_factory=list)
    samples: int
    shards_scored: int = 0
    shards_cached: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0
    samples_per_second: float | None = None
    timing: dict[str, Any] = Field(default_factory=dict)
    # benchmark name -> item ids the scorer held out for validation (influence): evaluation leaves them out
    validation_ids: dict[str, list[str]] | None = None
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def read_score_manifest(url: str) -> ScoreManifest:
    """The score manifest at ``url``; a file that is not one is a sentence naming it."""
    from syllabus.store import Store

    store, key = Store.open_url(url)
    try:
        return ScoreManifest.model_validate(json.loads(store.read_committed(key)))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{url} is not JSON; pass a score manifest (the 'scores' URL `syllabus score --json` prints)") from None
    except ValidationError as exc:
        from syllabus.config import describe_errors

        raise ValueError(f"{url} is not a score manifest ({describe_errors(exc)}); pass the 'scores' URL "
                         "`syllabus score --json` prints") from None
