"""A synthetic pool and score tables, committed to a store the way ingest and score write them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from syllabus.store import Store


def pool_table(n: int, offset: int = 0) -> pa.Table:
    ids = [f"id{offset + i:05d}" for i in range(n)]
    return pa.table({
        "sample_id": ids,
        "source": ["synthetic"] * n,
        "instruction": [f"question {i}" for i in ids],
        "input": [""] * n,
        "output": [f"answer {i}" for i in ids],
        "messages": pa.array(
            [[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}] for i in ids],
            pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
        ),
        "metadata": ["{}"] * n,
    })


def score_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Every scorer's columns of ``score_columns`` joined on sample_id: the table recipes select from."""
    ids = [f"id{i:05d}" for i in range(n)]
    frame = pd.DataFrame({"sample_id": ids})
    for table in score_columns(ids, seed).values():
        frame = frame.merge(table.to_pandas(), on="sample_id")
    return frame


def score_columns(ids: list[str], seed: int, dim: int = 8) -> dict[str, pa.Table]:
    """Per-scorer tables with the shared column contract; a few failures of each kind."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    quality = rng.uniform(60, 100, n)
    q_status = np.array(["ok"] * n, dtype=object)
    q_status[::17] = "parse_failed"
    quality[::17] = np.nan
    d = rng.lognormal(1.0, 0.4, (n, 3))
    d_status = np.array(["ok"] * n, dtype=object)
    d_status[5::23] = "too_long"
    d[5::23] = np.nan
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb_list = [None if s != "ok" else e for s, e in zip(d_status, emb)]
    return {
        "quality": pa.table({
            "sample_id": ids, "quality_score": quality, "quality_raw": [None if np.isnan(q) else f"{q:.0f}" for q in quality],
            "quality_status": list(q_status),
        }),
        "difficulty": pa.table({
            "sample_id": ids, "difficulty_d1": d[:, 0], "difficulty_d2": d[:, 1], "difficulty_d3": d[:, 2],
            "difficulty_embedding": pa.array(emb_list, pa.list_(pa.float32())),
            "difficulty_response": ["r"] * n, "difficulty_status": list(d_status),
        }),
        "ifd": pa.table({"sample_id": ids, "ifd_score": rng.uniform(0.3, 1.3, n), "ifd_status": ["ok"] * n}),
        "influence": pa.table({
            "sample_id": ids, "influence_dot": rng.standard_normal(n), "influence_less": rng.uniform(-1, 1, n),
            "influence_status": ["ok"] * n,
        }),
        "diq_difficulty": pa.table({
            "sample_id": ids, "diq_difficulty_score": rng.integers(1, 6, n).astype(float), "diq_difficulty_status": ["ok"] * n,
        }),
    }


def write_pool_and_scores(store: Store, n: int = 300, shard_size: int = 120, seed: int = 0, dim: int = 8) -> tuple[str, dict[str, str]]:
    """(pool manifest URL, scorer -> score manifest URL)."""
    shards = []
    per_scorer: dict[str, list[dict]] = {}
    for s, start in enumerate(range(0, n, shard_size)):
        table = pool_table(min(shard_size, n - start), offset=start)
        name = f"shard-{s:05d}"
        key = f"pool/{name}.parquet"
        store.commit_table(key, table)
        shards.append({"name": name, "key": key, "url": store.url(key), "content_hash": name, "rows": table.num_rows})
        for scorer, scores in score_columns(table["sample_id"].to_pylist(), seed + s, dim).items():
            skey = f"scores/{scorer}/{name}.parquet"
            store.commit_table(skey, scores)
            per_scorer.setdefault(scorer, []).append({"shard": name, "url": store.url(skey), "rows": scores.num_rows, "ok": scores.num_rows, "failed": 0})
    store.commit("pool/manifest.json", json.dumps({"pool_fingerprint": "synthetic", "shards": shards}).encode())
    pool_url = store.url("pool/manifest.json")
    manifests = {}
    for scorer, entries in per_scorer.items():
        key = f"scores/{scorer}/manifest.json"
        store.commit(key, json.dumps({
            "scorer": scorer, "version": 1, "config": {}, "model_fingerprint": "test",
            "pool_manifest": pool_url, "shards": entries,
        }).encode())
        manifests[scorer] = store.url(key)
    return pool_url, manifests
