"""Vector score columns left in their shards (syllabus.selection.vectors): the selection, the
reasons and the selected Parquet are those of reading every vector into memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from syllabus.selection.kcenter import embedding_matrix
from syllabus.selection.recipes import load_recipe, run_recipe
from syllabus.selection.scores import load_candidates, read_score_input
from syllabus.selection.vectors import VectorArray
from syllabus.store import Store

from synthetic import write_pool_and_scores


def eager(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every lazy column read into per-row arrays, as before vectors were lazy."""
    out = frame.copy()
    for name in out.columns:
        if isinstance(out[name].array, VectorArray):
            out[name] = list(np.asarray(out[name].array))
    return out


def test_3ds_on_lazy_embeddings_equals_the_eager_selection(tmp_path):
    store = Store(str(tmp_path))
    pool_url, manifests = write_pool_and_scores(store, n=700, shard_size=160, dim=6)
    candidates = load_candidates([manifests["quality"], manifests["difficulty"]], pool_url)
    column = candidates.frame["difficulty_embedding"]
    assert isinstance(column.array, VectorArray)
    recipe = load_recipe("3ds")
    lazy = run_recipe(candidates.frame, recipe, 40, 0)
    before = run_recipe(eager(candidates.frame), recipe, 40, 0)
    assert lazy.selected_ids() == before.selected_ids()
    assert list(lazy.why) == list(before.why)
    assert lazy.stages[-1].details == before.stages[-1].details

    # the selected records carry each chosen row's own embedding, in the scorer's type and column order
    ids = lazy.selected_ids()
    records = candidates.records(ids)
    full, _ = read_score_input(manifests["difficulty"])
    index = {s: i for i, s in enumerate(full["sample_id"].to_pylist())}
    expected = full["difficulty_embedding"].take(pa.array([index[s] for s in ids]))
    assert records["difficulty_embedding"].type == pa.list_(pa.float32())
    assert records["difficulty_embedding"].to_pylist() == expected.to_pylist()
    names = records.column_names
    assert names.index("difficulty_d3") < names.index("difficulty_embedding") < names.index("difficulty_response")


def test_vector_array_moves_positions_and_fills_missing_rows(tmp_path):
    store = Store(str(tmp_path))
    _, manifests = write_pool_and_scores(store, n=300, shard_size=120, dim=4)
    candidates = load_candidates([manifests["difficulty"]])
    full, _ = read_score_input(manifests["difficulty"])
    lazy = candidates.frame
    rows = np.array([250, 3, 121, 3])
    picked = lazy.iloc[rows].reset_index(drop=True)
    by_id = dict(zip(full["sample_id"].to_pylist(), full["difficulty_embedding"].to_pylist()))
    got = picked["difficulty_embedding"].array.to_arrow().to_pylist()
    assert got == [by_id[s] for s in picked["sample_id"]]
    # a left join that misses rows gives nulls, as an object column of arrays gave None
    left = pd.DataFrame({"sample_id": ["nope", picked["sample_id"][0]]}).merge(picked.drop_duplicates("sample_id"),
                                                                              on="sample_id", how="left")
    values = left["difficulty_embedding"].array.to_arrow().to_pylist()
    assert values[0] is None and values[1] == by_id[picked["sample_id"][0]]


def test_lazy_embedding_matrix_gives_the_same_reasons(tmp_path):
    n = 12
    rng = np.random.default_rng(1)
    emb: list = [rng.standard_normal(5).astype(np.float32).tolist() for _ in range(n)]
    emb[2] = None
    emb[4] = [1.0, 2.0, 3.0]  # another length
    emb[6] = [1.0, float("nan"), 0.0, 0.0, 0.0]
    status = ["ok"] * n
    status[8] = "too_long"
    table = pa.table({"sample_id": [f"s{i:02d}" for i in range(n)], "difficulty_d1": rng.random(n),
                      "difficulty_embedding": pa.array(emb, pa.list_(pa.float32())), "difficulty_status": status})
    store = Store(str(tmp_path))
    store.commit_table("scores.parquet", table)
    frame = load_candidates([store.url("scores.parquet")]).frame
    assert isinstance(frame["difficulty_embedding"].array, VectorArray)
    m1, p1, r1 = embedding_matrix(frame, "difficulty_embedding")
    m2, p2, r2 = embedding_matrix(eager(frame), "difficulty_embedding")
    assert m1.dtype == m2.dtype == np.float32
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(p1, p2)
    assert list(r1) == list(r2)
    assert r1[4] == "difficulty_embedding has 3 dimensions where the others have 5"
