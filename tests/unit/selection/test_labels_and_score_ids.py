"""Labels: only a true-ish value is a defect, an id labelled twice is an error; a score table
naming ids outside the pool is an error naming some of them."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from syllabus.cli import main
from syllabus.selection.defects import LabelsError, audit_selection, defect_kind, load_labels
from syllabus.selection.scores import load_candidates
from syllabus.store import Store

from synthetic import write_pool_and_scores


def write_labels(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_only_true_ish_values_are_defects(tmp_path):
    rows = [{"sample_id": f"c{i}", "defect": v} for i, v in enumerate([None, False, "", 0, 0.0, "false", "No", " none ", "NULL", "clean", "0"])]
    rows += [{"sample_id": "d0", "defect": True}, {"sample_id": "d1", "defect": 1}, {"sample_id": "d2", "defect": "yes"},
             {"sample_id": "d3", "defect": "TRUE"}, {"sample_id": "d4", "defect": "1"}, {"sample_id": "d5", "defect": " truncated "}]
    labels = load_labels(write_labels(tmp_path / "labels.jsonl", rows))
    assert labels == {"d0": "defect", "d1": "defect", "d2": "defect", "d3": "defect", "d4": "defect", "d5": "truncated"}


def test_a_labels_file_with_a_byte_order_mark_reads_its_first_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"sample_id": "a", "defect": "truncated"}\n{"sample_id": "b", "defect": null}\n', encoding="utf-8-sig")
    assert load_labels(str(path)) == {"a": "truncated"}


def test_an_audit_counts_only_the_true_ish_labels(tmp_path):
    path = write_labels(tmp_path / "labels.jsonl", [{"sample_id": "s0", "defect": "boilerplate"}, {"sample_id": "s1", "defect": None},
                                                   {"sample_id": "s2", "defect": False}, {"sample_id": "s3", "defect": ""},
                                                   {"sample_id": "s4", "defect": 0}])
    candidates = pd.DataFrame({"sample_id": [f"s{i}" for i in range(5)], "dropped_at_stage": [0] * 5, "chosen": [True] * 5})
    audit = audit_selection(candidates, load_labels(path), [], path)
    assert (audit["pool"]["n"], audit["pool"]["defects"]) == (5, 1)
    assert audit["kinds"] == ["boilerplate"]


@pytest.mark.parametrize("value", [2, -1, 0.5, [1], {"kind": "x"}])
def test_a_value_that_is_no_label_is_an_error_naming_the_line(tmp_path, value):
    path = write_labels(tmp_path / "labels.jsonl", [{"sample_id": "a", "defect": "x"}, {"sample_id": "b", "defect": value}])
    with pytest.raises(LabelsError, match=r"labels.jsonl line 2: defect .* is not a defect label"):
        load_labels(path)
    with pytest.raises(ValueError):
        defect_kind(value)


def test_an_id_labelled_twice_is_an_error_naming_both_lines(tmp_path):
    path = write_labels(tmp_path / "labels.jsonl", [{"sample_id": "a", "defect": "x"}, "", {"sample_id": "b", "defect": "y"},
                                                   {"sample_id": "a", "defect": "x"}])
    with pytest.raises(LabelsError, match=r"labels sample 'a' twice, on lines 1 and 4; keep one line per sample"):
        load_labels(path)
    # A clean row and a defect row for one id are as ambiguous.
    path = write_labels(tmp_path / "labels2.jsonl", [{"sample_id": 7, "defect": None}, {"sample_id": "7", "defect": "truncated"}])
    with pytest.raises(LabelsError, match=r"labels sample '7' twice, on lines 1 and 2"):
        load_labels(path)


def test_labels_that_mark_nothing_are_an_error(tmp_path):
    path = write_labels(tmp_path / "labels.jsonl", [{"sample_id": "a", "defect": None}, {"sample_id": "b", "defect": False}])
    with pytest.raises(LabelsError, match="marks none of its 2 samples as a defect"):
        load_labels(path)


def _score_parquet(path, ids) -> str:
    pq.write_table(pa.table({"sample_id": ids, "relevance_score": [0.5] * len(ids), "relevance_status": ["ok"] * len(ids)}), path)
    return str(path)


def test_a_score_table_with_ids_outside_the_pool_is_an_error_naming_some(tmp_path, capsys):
    root = str(tmp_path / "store")
    pool_url, manifests = write_pool_and_scores(Store(root), n=60, shard_size=30)
    inside = [f"id{i:05d}" for i in range(60)]
    good = _score_parquet(tmp_path / "good.parquet", inside[:40])
    assert len(load_candidates([good], pool_url).frame) == 40
    stray = ["other-1", "other-2", "other-3", "other-4"]
    bad = _score_parquet(tmp_path / "bad.parquet", inside[:40] + stray)
    with pytest.raises(ValueError, match=r"bad.parquet names 4 sample id\(s\) that are not in the pool .*"
                                         r"\(e.g. 'other-1', 'other-2', 'other-3'\)"):
        load_candidates([bad], pool_url)
    # Through `syllabus select`: exit 1 with the sentence, nothing selected.
    assert main(["select", "--method", "random", "--scores", bad, "--pool", pool_url, "--budget", "5", "--store", root]) == 1
    assert "names 4 sample id(s) that are not in the pool" in capsys.readouterr().err
    # Without a known pool there is nothing to check against: the scores are the candidates.
    assert len(load_candidates([bad]).frame) == 44
