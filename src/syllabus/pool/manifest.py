"""Reading a pool back: its manifest, and each shard with checksum verification."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import pyarrow as pa

from syllabus.store import Store


def load_manifest(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load a pool manifest written by ``syllabus ingest`` (its checksum verified)."""
    import json

    store, key = Store.open_url(url, storage_options)
    manifest = json.loads(store.read_committed(key))
    if "shards" not in manifest or "pool_fingerprint" not in manifest:
        raise ValueError(f"{url} is not a pool manifest (no shards/pool_fingerprint); pass the 'manifest' URL that `syllabus ingest --json` printed")
    return manifest


def read_shard(shard: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Read one shard of a manifest, verifying its checksum."""
    store, key = Store.open_url(shard["url"], storage_options)
    return store.read_table(key)


def iter_shards(manifest: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> Iterator[tuple[dict, pa.Table]]:
    for shard in manifest["shards"]:
        yield shard, read_shard(shard, storage_options)


def read_pool(manifest: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """All shards concatenated (small pools, selection fan-in)."""
    tables = [t for _, t in iter_shards(manifest, storage_options)]
    return pa.concat_tables(tables) if tables else pa.table({})
