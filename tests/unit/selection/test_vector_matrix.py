"""K-Center's matrix read straight from the score shards (``VectorSource.read_matrix`` through
``embedding_matrix``) is the matrix, the positions and the reasons of reading every vector into
the frame first, whatever the column's type, the shards' row groups, the rows' order, missing
rows, odd lengths, nulls and NaN."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from syllabus.selection.kcenter import embedding_matrix
from syllabus.selection.scores import load_candidates
from syllabus.selection.vectors import VectorArray
from syllabus.store import Store

from test_vectors import eager


def write_scores(store: Store, shards: list[pa.Table], row_group_size: int) -> str:
    """Score shards (Parquet with small row groups: several chunks a shard) and their manifest."""
    entries = []
    for i, table in enumerate(shards):
        sink = io.BytesIO()
        pq.write_table(table, sink, row_group_size=row_group_size)
        key = f"scores/difficulty/shard-{i:05d}.parquet"
        store.commit(key, sink.getvalue(), {"rows": table.num_rows})
        entries.append({"shard": f"shard-{i:05d}", "url": store.url(key), "rows": table.num_rows})
    store.commit("scores/difficulty/manifest.json", json.dumps({
        "scorer": "difficulty", "version": 1, "config": {}, "model_fingerprint": "test", "shards": entries,
    }).encode())
    return store.url("scores/difficulty/manifest.json")


def shard(ids: list[str], emb: list, arrow_type: pa.DataType, status: list[str] | None = None) -> pa.Table:
    return pa.table({"sample_id": ids, "difficulty_d1": np.arange(len(ids), dtype=np.float64),
                     "difficulty_embedding": pa.array(emb, arrow_type),
                     "difficulty_status": status or ["ok"] * len(ids)})


def same_as_eager(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert isinstance(frame["difficulty_embedding"].array, VectorArray)
    m1, p1, r1 = embedding_matrix(frame, "difficulty_embedding")
    m2, p2, r2 = embedding_matrix(eager(frame), "difficulty_embedding")
    assert m1.dtype == m2.dtype == np.float32 and m1.shape == m2.shape
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(p1, p2)
    assert list(r1) == list(r2)
    return m1, p1, r1


def reorder(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The rows shuffled, one repeated, and one id no shard has (a -1 position)."""
    rows = rng.permutation(len(frame))
    out = frame.iloc[np.r_[rows, rows[:1]]].reset_index(drop=True)
    return pd.DataFrame({"sample_id": ["absent"] + out["sample_id"].tolist()}).merge(out, on="sample_id", how="left")


@pytest.mark.parametrize("arrow_type", [pa.list_(pa.float32()), pa.large_list(pa.float64()),
                                        pa.list_(pa.float16(), 6), pa.list_(pa.int32())])
def test_matrix_from_shards_equals_the_eager_one(tmp_path, arrow_type):
    rng = np.random.default_rng(0)
    fixed = pa.types.is_fixed_size_list(arrow_type)
    shards, n = [], 0
    for size in (23, 1, 40, 17):
        ids = [f"s{n + i:04d}" for i in range(size)]
        emb: list = [(rng.standard_normal(6) * 4).round().tolist() for _ in ids]
        status = ["ok"] * size
        if size > 10:
            if not fixed:  # pyarrow cannot read back a fixed-size list column holding a null list
                emb[3] = None
            status[5] = "too_long"
            emb[7] = [1.0, float("nan"), 0.0, 0.0, 0.0, 2.0] if pa.types.is_floating(arrow_type.value_type) else emb[7]
            emb[8] = [1.0, 2.0, None, 0.0, 0.0, 3.0]  # a null value: NaN in the matrix, dropped as such
            if not fixed:
                emb[9] = [1.0, 2.0]  # another length
                emb[10] = []
        shards.append(shard(ids, emb, arrow_type, status))
        n += size
    store = Store(str(tmp_path))
    frame = load_candidates([write_scores(store, shards, row_group_size=7)]).frame
    m, p, r = same_as_eager(frame)
    assert m.shape[1] == 6 and 0 < len(p) < len(frame)
    same_as_eager(reorder(frame, rng))
    same_as_eager(frame.iloc[::3].reset_index(drop=True))


def test_a_first_shard_of_another_length_is_read_again_with_the_common_one(tmp_path):
    """The first shard's vectors are 3-d, most rows' are 5-d: the matrix is the 5-d rows."""
    rng = np.random.default_rng(1)
    t = pa.list_(pa.float32())
    shards = [shard([f"a{i}" for i in range(4)], [rng.standard_normal(3).tolist() for _ in range(4)], t),
              shard([f"b{i}" for i in range(9)], [rng.standard_normal(5).tolist() for _ in range(9)], t)]
    frame = load_candidates([write_scores(Store(str(tmp_path)), shards, row_group_size=3)]).frame
    m, p, r = same_as_eager(frame)
    assert m.shape == (9, 5)
    assert r[0] == "difficulty_embedding has 3 dimensions where the others have 5"


def test_no_usable_vector_gives_an_empty_matrix(tmp_path):
    t = pa.list_(pa.float32())
    shards = [shard(["a", "b"], [None, []], t), shard(["c"], [[1.0, 2.0]], t, ["too_long"])]
    frame = load_candidates([write_scores(Store(str(tmp_path)), shards, row_group_size=2)]).frame
    m, p, r = same_as_eager(frame)
    assert m.shape == (0, 2) and p.size == 0 and all(x is not None for x in r)
