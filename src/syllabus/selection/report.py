"""The audit trail of a selection, committed to the store next to each other:

- ``selected.parquet``: the chosen samples in rank order (rank, full record, scores);
- ``candidates.parquet``: every candidate with ``why`` (the stage that dropped it and the
  reason, or the rank it was chosen at) and ``filled`` (chosen by the budget's ``fill: rank``
  after a stage had dropped it; its ``why`` names that stage);
- ``report.json``: counts after every stage, the thresholds used (values, not only
  percentiles), the seed, the budget, notes, the inputs and the Jaccard overlap with other
  selections;
- the PNG pictures from :mod:`syllabus.selection.plots`.

The key prefix is a content hash of everything that decides the selection (method recipe,
budget, seed, inputs), so re-running the same selection writes to the same place.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from syllabus.config import label
from syllabus.selection.recipes import Recipe, SelectionResult
from syllabus.selection.scores import Candidates, read_url_bytes
from syllabus.store import Store, content_hash
from syllabus.store.store import read_parquet_bytes

log = logging.getLogger(__name__)


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/inf as null, arrays left out."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def jaccard(a: set[str], b: set[str]) -> float:
    """|A n B| / |A u B|; 1.0 for two empty selections."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def read_selection_ids(url: str) -> set[str]:
    """Sample ids of a selection given as its selected Parquet or its report JSON (a local FIFO
    or device is refused unopened, a missing one is named)."""
    what = "selection to compare with"
    if url.endswith(".json"):
        report = json.loads(read_url_bytes(url, what))
        selected = report.get("outputs", {}).get("selected") if isinstance(report, dict) else None
        if not selected:
            raise ValueError(f"{url} is not a selection report (no outputs.selected); pass a report.json or selected.parquet")
        url = selected
    table = read_parquet_bytes(read_url_bytes(url, what), columns=["sample_id"])
    return set(map(str, table["sample_id"].to_pylist()))


def selection_key(recipe: Recipe, result: SelectionResult, candidates: Candidates) -> str:
    identity = {
        "recipe": recipe.model_dump(mode="json"),
        "budget": result.budget,
        "seed": result.seed,
        "scores": [i.url for i in candidates.inputs],
        "pool": candidates.pool_url,
        "n_candidates": result.n_candidates,
    }
    if result.fill is not None:  # only when set: the keys of selections without a fill stay as they were
        identity["fill"] = result.fill
    # A recipe file's name field is user input: one safe segment (a shipped name is unchanged,
    # so are its keys), never a slash that would nest the key or a '..' that would leave it.
    name = label(recipe.name)
    return f"selections/{name}/{name}-{content_hash(identity)}"


def build_report(
    recipe: Recipe,
    result: SelectionResult,
    candidates: Candidates,
    budget_request: dict[str, Any] | None,
    overlaps: list[dict[str, Any]],
    outputs: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    stages = []
    for s in result.stages:
        stages.append({
            "index": s.index, "selector": s.selector, "config": s.config,
            "n_in": s.n_in, "n_out": s.n_out, "n_dropped": s.n_in - s.n_out,
            "thresholds": s.thresholds, "notes": s.notes,
            "details": {k: v for k, v in s.details.items() if k != "kept_ranges"},
            "seconds": s.seconds,
        })
    return jsonable({
        "method": recipe.name,
        "paper": recipe.paper,
        "recipe": recipe.model_dump(mode="json"),
        "seed": result.seed,
        "budget": {"requested": budget_request, "resolved": result.budget},
        "n_candidates": result.n_candidates,
        "n_selected": result.n_selected,
        "counts": result.stage_counts(),
        "stages": stages,
        "notes": candidates.notes + result.notes,
        "inputs": {
            "scores": [i.describe() for i in candidates.inputs],
            "pool_manifest": candidates.pool_url,
        },
        "overlap": overlaps,
        "outputs": outputs,
        "seconds": round(seconds, 3),
    })


def write_selection(
    store: Store,
    recipe: Recipe,
    result: SelectionResult,
    candidates: Candidates,
    *,
    budget_request: dict[str, Any] | None = None,
    compare: Mapping[str, set[str]] | None = None,
    plots: bool = True,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """Commit the selected Parquet, the candidates Parquet, the pictures and the report, with
    the overlap against each of ``compare`` ({selection URL: its sample ids, as
    :func:`read_selection_ids` reads them before the selection runs}).

    Returns the report (its ``outputs`` hold every URL)."""
    prefix = selection_key(recipe, result, candidates)
    ids = result.selected_ids()
    selected = candidates.records(ids)
    selected = selected.add_column(1, "rank", pa.array(np.arange(1, len(ids) + 1, dtype=np.int64)))
    meta = {"method": recipe.name, "seed": result.seed, "n_selected": result.n_selected}
    store.commit_table(f"{prefix}/selected.parquet", selected, meta)
    why = pa.Table.from_pandas(result.candidates_frame(), preserve_index=False)
    store.commit_table(f"{prefix}/candidates.parquet", why, meta)
    outputs: dict[str, Any] = {
        "selected": store.url(f"{prefix}/selected.parquet"),
        "candidates": store.url(f"{prefix}/candidates.parquet"),
        "plots": {},
    }
    if plots:
        from syllabus.selection.plots import all_plots

        for name, png in all_plots(result).items():
            store.commit(f"{prefix}/{name}", png, {"kind": "png"})
            outputs["plots"][name.removesuffix(".png")] = store.url(f"{prefix}/{name}")

    mine = set(ids)
    overlaps = []
    for url, other in (compare or {}).items():
        overlaps.append({
            "selection": url, "n_other": len(other), "n_both": len(mine & other),
            "jaccard": round(jaccard(mine, other), 6),
        })
    report_key = f"{prefix}/report.json"
    outputs["report"] = store.url(report_key)
    report = build_report(recipe, result, candidates, budget_request, overlaps, outputs, seconds)
    store.commit(report_key, json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8"), meta)
    log.info("selection %s: %d of %d chosen; report %s", recipe.name, result.n_selected, result.n_candidates, outputs["report"])
    return report
