"""A 3DS selection, end to end through ``syllabus.pipeline.stages.select`` (score shards read
lazily, quality threshold, difficulty bands, K-Center on the embeddings, the selection
committed), gives the committed outputs it gave when these digests were recorded: the selected
Parquet (ids, ranks, every score including each chosen row's embedding), the candidates
Parquet (the why-table) and the report (counts, thresholds, notes, each stage's details with
K-Center's radius and exactness counters), less what differs between runs (seconds, the
temporary directory). So a change to how the embeddings are read or how K-Center holds them
cannot change a selection unnoticed.

The digests were recorded with the code of commit ea2d88a, before the survivors' embeddings
were read straight into one preallocated matrix; recompute them (``digests()`` below) only for
a change that is meant to change selections, and say so in its commit."""

from __future__ import annotations

import hashlib
import json
import math

import pyarrow as pa

from syllabus.pipeline.config import SelectConfig
from syllabus.pipeline.stages import select
from syllabus.store import Store
from syllabus.store.store import read_parquet_bytes

from synthetic import write_pool_and_scores

GOLDEN = {
    "selected": "6ba18c4f29c69171",
    "candidates": "2d10d7ff294b5a00",
    "report": "8c7cb10655bddd5a",
}


def _rounded(obj):
    """Floats to 12 significant digits: the digest then holds across float64 summation orders."""
    if isinstance(obj, float):
        return obj if not math.isfinite(obj) else float(f"{obj:.12g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def _digest(obj, tmp: str) -> str:
    text = json.dumps(_rounded(obj), sort_keys=True, default=str).replace(tmp, "<tmp>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _table(url: str) -> pa.Table:
    store, key = Store.open_url(url)
    return read_parquet_bytes(store.read_committed(key))


def digests(tmp_path) -> tuple[dict[str, str], dict]:
    store = Store(str(tmp_path))
    pool_url, manifests = write_pool_and_scores(store, n=3000, shard_size=400, seed=5, dim=16)
    config = SelectConfig(method="3ds", scores=[manifests["quality"], manifests["difficulty"]],
                          budget={"count": 40}, pool=pool_url, plots=False)
    report = select(config, str(tmp_path)).report
    selected = _table(report["outputs"]["selected"])
    candidates = _table(report["outputs"]["candidates"])
    kept = {k: v for k, v in report.items() if k not in ("seconds", "outputs")}
    for stage in kept["stages"]:
        stage.pop("seconds")
    tmp = str(tmp_path)
    return {
        "selected": _digest(selected.to_pydict(), tmp),
        "candidates": _digest(candidates.to_pydict(), tmp),
        "report": _digest(kept, tmp),
    }, report


def test_3ds_selection_outputs_are_unchanged(tmp_path):
    got, report = digests(tmp_path)
    counts = [c["n"] for c in report["counts"]]
    assert counts[-1] == 40 and counts[0] == 3000 and counts[1] < 3000 and 40 < counts[2] < counts[1], counts
    kcenter = report["stages"][-1]["details"]
    assert kcenter["dimensions"] == 16 and kcenter["radius"] > 0
    assert got == GOLDEN, got
