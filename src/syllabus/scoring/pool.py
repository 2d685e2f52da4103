"""Score a whole pool: every shard through a scorer instance, committed per shard, then one
score manifest per instance and (for ``syllabus score``) one combined table with a row per
sample and, for a method of several scorers, a composite manifest naming them.

:func:`score_shards` is the one loop over shards: ``syllabus score`` runs it over the whole
pool (:func:`score_pool`, called by :func:`syllabus.pipeline.stages.score`) and the pipeline's
score flow over batches of shards as Prefect tasks; both fan in with
:func:`write_score_manifest`, so they write the same manifest and, for the same method, the
same cache keys (the scorer configs come from :mod:`syllabus.plan`). A stage validates each
scorer config once (:func:`typed_configs`) and hands the typed object down: a batch builds
its scorer once, not once a shard.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa

from syllabus.scoring.base import Scorer, ScorerConfig, score_shard
from syllabus.scoring.manifest import ScoreManifest
from syllabus.scoring.timing import pool_stages
from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

# Short aliases the issue asks for in the combined table (selection reads the long names).
ALIASES = {"difficulty_d1": "d1", "difficulty_d2": "d2", "difficulty_d3": "d3", "difficulty_response": "generated",
           "influence_dot": "influence", "diq_difficulty_score": "difficulty"}


def typed_configs(configs: Mapping[str, Mapping[str, Any] | ScorerConfig]) -> dict[str, ScorerConfig]:
    """Scorer instance -> its typed config, validated here once for a whole scoring stage
    (:func:`syllabus.plan.validated_config`: an error names the instance and the field); a
    config that is already typed is kept as it is."""
    from syllabus.plan import validated_config

    return {name: config if isinstance(config, ScorerConfig) else validated_config(name, config)
            for name, config in configs.items()}


def make_scorer(name: str, config: Mapping[str, Any] | ScorerConfig | None = None, store: Store | None = None,
                pool_manifest: str | None = None) -> Scorer:
    """The registered scorer ``name`` with ``config`` (a typed config is used as it is, a
    mapping validated). A scorer with inputs shared by every shard (influence: validation
    gradients, LESS warm-up checkpoints) is attached to ``store``, where the first shard
    commits them and the rest read them, and to the pool they warm up on."""
    from syllabus.plan import scorer_of
    from syllabus.registry import lookup

    scorer = lookup("scorer", scorer_of(name))(config if isinstance(config, ScorerConfig) else dict(config or {}))
    if hasattr(scorer, "attach"):
        scorer.attach(store=store, pool_manifest=pool_manifest)
    return scorer


class LazyModel:
    """The target model, loaded on first use. Cache keys need only its fingerprint (a hash of
    the weight files), so a run whose every shard is already committed never loads it."""

    def __init__(self, spec: str, **load_kwargs: Any):
        self.spec, self.load_kwargs = spec, load_kwargs
        self._lm: Any = None
        self._fingerprint: str | None = None
        self.load_seconds = 0.0

    @property
    def fingerprint(self) -> str:
        if self._lm is not None:
            return self._lm.fingerprint
        if self._fingerprint is None:
            from syllabus.models.ref import fingerprint, resolve

            self._fingerprint = fingerprint(resolve(self.spec))
        return self._fingerprint

    @property
    def loaded(self) -> bool:
        return self._lm is not None

    def get(self) -> Any:
        if self._lm is None:
            from syllabus.models import load_model

            start = time.perf_counter()
            self._lm = load_model(self.spec, **self.load_kwargs)
            self.load_seconds = time.perf_counter() - start
        return self._lm

    def __getattr__(self, name: str) -> Any:  # model, tokenizer, device ...: the scorer is about to compute
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)


def _limit_shards(manifest: dict, limit: int | None) -> list[tuple[dict, int | None]]:
    """Shards to score and how many rows of each (``None`` = all) under a sample limit."""
    out = []
    left = limit
    for shard in manifest["shards"]:
        if left is not None and left <= 0:
            break
        take = None if left is None or shard["rows"] <= left else left
        out.append((shard, take))
        if left is not None:
            left -= shard["rows"] if take is None else take
    return out


def score_shard_entry(
    shard: Mapping[str, Any],
    scorer: Scorer,
    lm: Any,
    store: Store,
    take: int | None = None,
    force: bool = False,
    wait: bool = True,
) -> dict[str, Any]:
    """Score one shard with one scorer instance (built by :func:`make_scorer` once for its
    batch): the per-shard step of :func:`score_shards`. Returns the shard's entry in the score
    manifest; ``skipped`` is true when a committed result was reused.

    ``take`` scores only the shard's first rows (``--limit``), keyed as their own content.
    With ``wait=False`` a shard another worker holds raises
    :class:`~syllabus.store.lease.LeaseHeld` at once, so the caller can score others first.
    A committed shard is found from the key alone: neither the model nor the shard is read.
    """
    from syllabus.pool.manifest import read_shard

    shard_hash = shard["content_hash"]
    if take is not None:
        shard_hash = content_hash({"shard": shard_hash, "rows": take})
    key = scorer.key(lm.fingerprint, shard_hash)
    loaded_before = getattr(lm, "load_seconds", 0.0)
    if not force and store.is_committed(key):
        marker, skipped, rows = dict(store.marker(key) or {}), True, take or shard["rows"]
    else:
        table = read_shard(shard)
        if take is not None:
            table = table.slice(0, take)
        key, marker = score_shard(scorer, lm, table, shard_hash, store, force=force, wait=wait)
        skipped, rows = bool(marker.get("skipped")), table.num_rows
    return {
        "shard": shard["name"],
        "key": key,
        "url": store.url(key),
        "rows": marker.get("rows", rows),
        "ok": marker.get("ok"),
        "failed": marker.get("failed"),
        "skipped": skipped,
        "seconds": 0.0 if skipped else marker.get("seconds"),
        "compute_seconds": marker.get("seconds"),  # what scoring the shard took when it ran, cached or not
        # A lazily loaded model loads inside the first shard that needs it: a one-off that the
        # per-stage timing keeps apart from that shard's scoring.
        "model_load_seconds": round(getattr(lm, "load_seconds", 0.0) - loaded_before, 3),
        "stats": marker.get("stats"),
    }


def write_score_manifest(
    instance: str,
    config: Mapping[str, Any] | ScorerConfig,
    model_fingerprint: str,
    pool_manifest_url: str,
    entries: Sequence[Mapping[str, Any]],
    missing: Sequence[Mapping[str, Any]],
    store: Store,
    limit: int | None = None,
) -> dict[str, Any]:
    """Fan in one scorer instance's shard entries (in pool order) into its score manifest
    (:class:`~syllabus.scoring.manifest.ScoreManifest`, the one format of the CLI and the
    pipeline), committed to the store; returns it as JSON with its ``url``."""
    from syllabus.pool.manifest import load_manifest

    scorer = make_scorer(instance, config)
    pool = load_manifest(pool_manifest_url)
    order = {s["name"]: i for i, s in enumerate(pool["shards"])}
    entries = sorted(entries, key=lambda e: order.get(e["shard"], 1 << 30))
    scored = [e for e in entries if not e["skipped"]]
    samples = sum(e["rows"] for e in entries)
    seconds = sum(e["seconds"] or 0.0 for e in scored)
    held_out = getattr(scorer, "held_out_ids", None)
    manifest = ScoreManifest(
        scorer=scorer.name,
        instance=instance,
        version=scorer.version,
        config=scorer.config.model_dump(mode="json"),
        model_fingerprint=model_fingerprint,
        pool_manifest=pool_manifest_url,
        pool_fingerprint=pool.get("pool_fingerprint"),
        limit=limit,
        shards=list(entries),
        missing=list(missing),
        samples=samples,
        shards_scored=len(scored),
        shards_cached=len(entries) - len(scored),
        seconds=round(seconds, 3),
        compute_seconds=round(sum(e.get("compute_seconds") or 0.0 for e in entries), 3),
        samples_per_second=round(sum(e["rows"] for e in scored) / seconds, 3) if seconds else None,
        timing=pool_stages(entries),  # per stage: seconds, samples/s, tokens/s, padding share
        validation_ids=held_out() if callable(held_out) else None,
    )
    key = f"scores/manifests/{instance}-{content_hash([[e['key'] for e in entries], list(missing)], 20)}.json"
    out = manifest.to_json()
    store.commit(key, _json_bytes(out), {"scorer": scorer.name, "samples": samples})
    out["url"] = store.url(key)
    return out


def score_shards(
    shards: Sequence[Mapping[str, Any]],
    instance: str,
    config: Mapping[str, Any] | ScorerConfig,
    lm: Any,
    store: Store,
    pool_manifest_url: str | None = None,
    takes: Mapping[str, int] | None = None,
    force: bool = False,
    retry_delays: Sequence[float] = (),
    permanent: tuple[type[BaseException], ...] = (),
    on_shard: Callable[[Mapping[str, Any], Mapping[str, Any] | None, str | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    raise_errors: bool = False,
) -> dict[str, Any]:
    """Score a batch of shards with one scorer instance, one :func:`score_shard_entry` per
    shard, each committed as it finishes: a shard that fails loses nothing the others did.
    The scorer is built once for the batch, from ``config`` (typed by the stage: see
    :func:`typed_configs`).

    A shard that raises is tried again after each of ``retry_delays`` (seconds), unless its
    error is one of ``permanent`` (bad input fails the same way every time); one that still
    fails is returned under ``missing`` with its error, and the batch goes on. Shards another
    worker holds the lease of are scored last, so two runs on one store split the work. ``on_shard(shard, entry, error)`` is called once per
    shard as it ends (entry or error is None). Returns ``{"entries": [...], "missing":
    [{"shard", "error"}]}``, both in the batch's order. ``takes`` maps a shard's name to the rows
    scored of it (``--limit``); ``raise_errors`` raises a shard's error instead (``syllabus score``)."""
    from syllabus.store.lease import LeaseHeld

    takes = takes or {}
    scorer = make_scorer(instance, config, store, pool_manifest_url)
    entries: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    later: list[Mapping[str, Any]] = []
    for wait, todo in ((False, list(shards)), (True, later)):
        for shard in todo:
            attempt = 0
            while True:
                try:
                    entries[shard["name"]] = score_shard_entry(shard, scorer, lm, store, take=takes.get(shard["name"]),
                                                               force=force, wait=wait)
                    break
                except LeaseHeld as held:
                    if wait:  # cannot happen when waiting; reported like any error if it does
                        errors[shard["name"]] = f"{type(held).__name__}: {held}"
                        break
                    log.info("%s: shard %s: %s; scoring the others first", instance, shard["name"], held)
                    later.append(shard)
                    break
                except Exception as exc:
                    if raise_errors:
                        raise
                    error = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, permanent) or attempt >= len(retry_delays):
                        errors[shard["name"]] = error
                        log.warning("%s: shard %s failed%s: %s", instance, shard["name"],
                                    f" after {attempt} retries" if attempt else "", error)
                        break
                    log.warning("%s: shard %s failed (%s); retry %d of %d in %.1f s", instance, shard["name"], error,
                                attempt + 1, len(retry_delays), retry_delays[attempt])
                    sleep(retry_delays[attempt])
                    attempt += 1
            if on_shard is not None and (shard["name"] in entries or shard["name"] in errors):
                on_shard(shard, entries.get(shard["name"]), errors.get(shard["name"]))
    return {"entries": [entries[s["name"]] for s in shards if s["name"] in entries],
            "missing": [{"shard": s["name"], "error": errors[s["name"]]} for s in shards if s["name"] in errors]}




def score_pool(
    manifest_url: str,
    instance: str,
    config: Mapping[str, Any] | ScorerConfig,
    lm: Any,
    store: Store,
    limit: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Score every shard of the pool (up to ``limit`` samples) with one scorer instance
    (:func:`score_shards`, a shard's error raised); returns the committed score manifest."""
    from syllabus.pool.manifest import load_manifest

    planned = _limit_shards(load_manifest(manifest_url), limit)
    takes = {shard["name"]: take for shard, take in planned if take is not None}
    result = score_shards([shard for shard, _ in planned], instance, config, lm, store, manifest_url, takes=takes,
                          force=force, raise_errors=True)
    return write_score_manifest(instance, config, lm.fingerprint, manifest_url, result["entries"], [], store, limit=limit)


def _json_bytes(obj: Any) -> bytes:
    import json

    return json.dumps(obj, indent=1, sort_keys=True, default=str).encode()


def combined_table(manifests: list[dict[str, Any]], store: Store, pool_manifest_url: str, limit: int | None) -> pa.Table:
    """One row per scored sample: ``sample_id``, ``instruction``, ``output``, every metric
    column of every manifest, and the short difficulty aliases."""
    from syllabus.pool.manifest import load_manifest, read_shard

    pool = load_manifest(pool_manifest_url)
    parts = []
    for shard, take in _limit_shards(pool, limit):
        t = read_shard(shard).select(["sample_id", "instruction", "output"])
        if take is not None:
            t = t.slice(0, take)
        for m in manifests:
            entry = next(e for e in m["shards"] if e["shard"] == shard["name"])
            scores = Store.open_url(entry["url"])[0].read_table(Store.open_url(entry["url"])[1])
            if scores.column("sample_id").to_pylist() != t.column("sample_id").to_pylist():
                raise ValueError(f"score table {entry['url']} rows do not line up with shard {shard['name']}")
            for name in scores.column_names[1:]:
                t = t.append_column(name, scores.column(name))
                if name in ALIASES:
                    t = t.append_column(ALIASES[name], scores.column(name))
        parts.append(t)
    return pa.concat_tables(parts) if parts else pa.table({})


def commit_combined(table: pa.Table, store: Store, name: str, manifests: list[dict]) -> str:
    key = f"scores/tables/{name}-{content_hash([m['url'] for m in manifests], 20)}.parquet"
    store.commit_table(key, table, {"method": name})
    return store.url(key)


def commit_composite(method: str, manifests: list[dict[str, Any]], pool_manifest_url: str, model_fingerprint: str,
                     table_url: str, store: Store) -> str:
    """The score manifest of a method of several scorers (``scores/manifests/<method>-...``):
    each scorer's manifest URL, the pool, the model and the combined table; selection reads
    it as it reads one scorer's. Returns its URL."""
    import json

    key = f"scores/manifests/{method}-{table_url.rsplit('-', 1)[-1].split('.')[0]}.json"
    composite = {"scorer": method, "components": {m["scorer"]: m["url"] for m in manifests},
                 "pool_manifest": pool_manifest_url, "model_fingerprint": model_fingerprint, "table": table_url}
    store.commit(key, json.dumps(composite, indent=1, sort_keys=True).encode(), {"scorer": method})
    return store.url(key)
