"""A selection gathers the chosen records from the pool's shards by id (``PoolRecords``)
instead of holding every record of the pool: the selected Parquet is the same, byte for byte,
as gathering from the whole pool read at once (what selection did before), and only the shards
that hold a chosen sample are read in full."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from syllabus.pool.manifest import load_manifest, read_pool
from syllabus.selection.scores import PoolRecords, load_candidates
from syllabus.store import Store

from synthetic import write_pool_and_scores


@pytest.fixture(scope="module")
def pool_and_scores(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("store")))
    pool_url, manifests = write_pool_and_scores(store, n=500, shard_size=40)  # 13 shards
    return store, pool_url, manifests


def whole_pool_records(candidates, sample_ids: list[str]) -> pa.Table:
    """The records as selection gathered them before: the whole pool read at once (read_pool),
    rows found through a dict of every id of each table."""
    pool = read_pool(load_manifest(candidates.pool_url))
    pool = pool.set_column(pool.column_names.index("sample_id"), "sample_id", pc.cast(pool["sample_id"], pa.string()))
    out = pa.table({"sample_id": pa.array(sample_ids, pa.string())})
    sources = [(pool, {}, None)] + list(zip(candidates.score_tables, candidates.vectors, candidates.column_orders))
    for table, vectors, order in sources:
        index = {sid: i for i, sid in enumerate(table["sample_id"].to_pylist())}
        rows = [index.get(s) for s in sample_ids]
        take = pa.array(rows, pa.int64())
        for name in order or table.column_names:
            if name == "sample_id" or name in out.column_names:
                continue
            if name in vectors:
                out = out.append_column(name, vectors[name].read(np.array([-1 if r is None else r for r in rows],
                                                                           dtype=np.int64)))
            else:
                out = out.append_column(name, table[name].take(take))
    return out


def chosen_ids(n_pool: int, k: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"id{i:05d}" for i in rng.choice(n_pool, size=k, replace=False)]


@pytest.mark.parametrize("k", [1, 7, 120, 500])
def test_gathered_records_are_the_whole_pool_gather_byte_for_byte(pool_and_scores, k):
    store, pool_url, m = pool_and_scores
    candidates = load_candidates([m["quality"], m["difficulty"]], pool_url)
    assert isinstance(candidates.pool, PoolRecords)
    ids = chosen_ids(500, k, seed=k)
    got, want = candidates.records(ids), whole_pool_records(candidates, ids)
    assert got.schema == want.schema and repr(got.to_pylist()) == repr(want.to_pylist())  # NaN scores: as text
    assert Store.table_bytes(got) == Store.table_bytes(want)


def test_an_id_not_in_the_pool_gets_a_null_row_as_before(pool_and_scores):
    store, pool_url, m = pool_and_scores
    candidates = load_candidates([m["ifd"]], pool_url)
    ids = ["id00003", "not-in-pool", "id00499", "id00000"]
    got = candidates.records(ids)
    assert Store.table_bytes(got) == Store.table_bytes(whole_pool_records(candidates, ids))
    assert got["instruction"].to_pylist() == ["question id00003", None, "question id00499", "question id00000"]
    empty = candidates.records([])
    assert empty.num_rows == 0 and empty.schema == got.schema


def test_only_the_shards_holding_chosen_samples_are_read_whole(pool_and_scores, monkeypatch):
    import syllabus.pool.manifest as manifest_module

    store, pool_url, m = pool_and_scores
    whole: list[str] = []
    real = manifest_module.read_shard

    def counting(shard, *args, **kwargs):
        whole.append(shard["name"])
        return real(shard, *args, **kwargs)

    monkeypatch.setattr(manifest_module, "read_shard", counting)
    candidates = load_candidates([m["ifd"]], pool_url)
    assert whole == ["shard-00000"]  # its schema; every other shard gives its sample_id column only
    assert len(candidates.frame) == 500
    whole.clear()
    # ids in shards 2 (80-119) and 12 (480-499), asked out of shard order
    candidates.records(["id00495", "id00081", "id00480", "id00119"])
    assert whole == ["shard-00002", "shard-00012"]


def test_a_pool_shard_without_sample_id_is_named(tmp_path):
    import json

    store = Store(str(tmp_path))
    store.commit_table("pool/s0.parquet", pa.table({"instruction": ["q"]}))
    store.commit("pool/manifest.json", json.dumps({"pool_fingerprint": "x", "shards": [
        {"name": "s0", "key": "pool/s0.parquet", "url": store.url("pool/s0.parquet"), "content_hash": "s0", "rows": 1}]}).encode())
    with pytest.raises(ValueError, match="has no sample_id column; re-ingest it"):
        load_candidates([], store.url("pool/manifest.json"))
