"""Defect avoidance: per-stage defect shares with Wilson intervals, and ``select --labels``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from syllabus.cli import main
from syllabus.selection.defects import LabelsError, audit_selection, audit_markdown, check_labels, load_labels, plot_audit, wilson
from syllabus.store import Store

from synthetic import write_pool_and_scores


def test_wilson_matches_published_values():
    # Wilson score interval, 95%: 1 of 3 -> (0.0615, 0.7923); 0 of 10 -> (0, 0.2775); 50 of 100 -> (0.4038, 0.5962)
    assert wilson(1, 3) == pytest.approx([0.0615, 0.7923], abs=1e-4)
    assert wilson(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert wilson(50, 100) == pytest.approx([0.4038, 0.5962], abs=1e-4)
    assert wilson(0, 0) is None


def _candidates() -> pd.DataFrame:
    # 10 candidates; stage 1 drops s0, s1 (defects) and s2 (clean); stage 2 (final) chooses 3 of the 7 left.
    return pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(10)],
        "dropped_at_stage": [1, 1, 1, 2, 2, 2, 2, 0, 0, 0],
        "chosen": [False] * 7 + [True] * 3,
        "group": [None] * 7 + ["Q1", "Q1", "Q2"],
    })


def test_audit_counts_each_stage_kind_and_group():
    labels = {"s0": "boilerplate", "s1": "truncated", "s3": "truncated", "s7": "boilerplate"}
    a = audit_selection(_candidates(), labels, [{"index": 1, "selector": "threshold"}, {"index": 2, "selector": "kcenter"}])
    assert a["kinds"] == ["boilerplate", "truncated"]
    assert (a["pool"]["n"], a["pool"]["defects"]) == (10, 4)
    assert a["pool"]["per_kind"] == {"boilerplate": 2, "truncated": 2}
    after = {s["stage"]: (s["n"], s["defects"]) for s in a["stages"]}
    assert after == {"1:threshold": (7, 2), "2:kcenter": (3, 1)}
    assert a["selected"]["share"] == pytest.approx(1 / 3) and a["selected"]["ci"] == pytest.approx([0.0615, 0.7923], abs=1e-4)
    assert a["selected"]["per_kind"] == {"boilerplate": 1, "truncated": 0}
    assert {g: (c["n"], c["defects"]) for g, c in a["groups"].items()} == {"Q1": (2, 1), "Q2": (1, 0)}
    assert a["passed_per_kind"] == {"boilerplate": 0.5, "truncated": 0.0}
    md = audit_markdown({"3ds": a}, {"3ds": ["stage 2 (kcenter): fewer survivors (3) than the budget (5); all 3 were kept"]})
    assert "| pool (base rate) | 10 | 4 | 40.0% [16.8%, 68.7%] | 2 | 2 |" in md
    assert "| 3ds | 3 | 1 | 33.3% [6.1%, 79.2%] | 1 | 0 |" in md
    assert "| 3ds | group Q1 | 2 | 1 |" in md and "fewer survivors (3) than the budget (5)" in md
    assert plot_audit({"3ds": a, "random": a})[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_that_do_not_fit_the_pool_are_one_line_errors(tmp_path):
    ids = [f"s{i}" for i in range(10)]
    with pytest.raises(LabelsError, match=r"labels.jsonl names 1 id\(s\) that are not in the pool \(first: zz\)"):
        check_labels({"s1": "shuffled", "zz": "shuffled"}, ids, "labels.jsonl")
    with pytest.raises(LabelsError, match="none of its 2 ids is in the pool"):
        check_labels({"x": "a", "y": "b"}, ids, "labels.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_id": "s1", "defect": "shuffled"}\nnot json\n')
    with pytest.raises(LabelsError, match=r"bad.jsonl line 2 is not a JSON object"):
        load_labels(str(bad))
    with pytest.raises(LabelsError, match="does not exist"):
        load_labels(str(tmp_path / "missing.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(LabelsError, match="holds no label"):
        load_labels(str(tmp_path / "empty.jsonl"))


def _read_table(url):
    store, key = Store.open_url(url)
    return store.read_table(key).to_pandas()


def test_select_with_labels_reports_the_quality_stage_against_the_scores(tmp_path, capsys):
    root = str(tmp_path / "store")
    store = Store(root)
    pool_url, m = write_pool_and_scores(store, n=300, shard_size=100)
    quality = pd.concat([_read_table(s["url"]) for s in json.loads(store.read_bytes("scores/quality/manifest.json"))["shards"]])
    # Label the 40 lowest-rated and 10 of the highest-rated samples as defects.
    order = quality.sort_values("quality_score")["sample_id"].tolist()
    labels = {i: "boilerplate" for i in order[:40]} | {i: "wrong_answer" for i in order[-10:]}
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"sample_id": i, "defect": k}) + "\n" for i, k in labels.items()))

    # --allow-short: the stages keep fewer than 12 here, and the audit is of what they kept
    assert main(["select", "--method", "3ds", "--scores", m["quality"], m["difficulty"], "--budget", "12",
                 "--allow-short", "--store", root, "--labels", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    audit = result["defects"]
    # Stage 1 keeps ratings >= 90: its defects are exactly the labelled ids rated that high.
    kept = set(quality.loc[quality["quality_score"] >= 90, "sample_id"])
    assert audit["stages"][0]["stage"] == "1:threshold(quality_score)"
    assert audit["stages"][0]["n"] == len(kept)
    assert audit["stages"][0]["defects"] == len(kept & set(labels))
    assert audit["stages"][0]["per_kind"]["boilerplate"] == 0  # all 40 lowest-rated are below 90
    chosen = set(_read_table(result["selected"])["sample_id"])
    assert audit["selected"]["n"] == len(chosen) == result["n_selected"] > 0
    assert audit["selected"]["defects"] == len(chosen & set(labels))
    assert audit["pool"] == {**audit["pool"], "n": 300, "defects": 50}
    assert "| pool (base rate) | 300 | 50 | 16.7%" in out
    saved = json.loads(Store.open_url(audit["outputs"]["json"])[0].read_committed(Store.open_url(audit["outputs"]["json"])[1]))
    assert saved["selected"] == audit["selected"]

    # An id that is not in the pool: a one-line error naming the file, exit 1, before any selection is written.
    path.write_text(json.dumps({"sample_id": "not-in-pool", "defect": "x"}) + "\n" + path.read_text())
    assert main(["select", "--method", "3ds", "--scores", m["quality"], m["difficulty"], "--budget", "12",
                 "--store", root, "--labels", str(path)]) == 1
    err = capsys.readouterr().err
    assert "labels.jsonl names 1 id(s) that are not in the pool (first: not-in-pool)" in err
