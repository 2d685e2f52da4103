"""``syllabus select`` end to end on a synthetic pool and score manifests in a temp store."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from syllabus.cli import main
from syllabus.store import Store

from synthetic import write_pool_and_scores


@pytest.fixture(scope="module")
def pool_and_scores(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    store = Store(str(root))
    pool_url, manifests = write_pool_and_scores(store, n=600, shard_size=250)
    return str(root), pool_url, manifests


def run_select(capsys, *argv, plots: bool = False) -> dict:
    assert main(["select", *argv, "--json", *([] if plots else ["--no-plots"])]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def read_committed_table(url):
    store, key = Store.open_url(url)
    return store.read_table(key)


def read_committed_json(url):
    store, key = Store.open_url(url)
    return json.loads(store.read_committed(key))


def test_select_3ds_writes_selection_report_why_and_pictures(pool_and_scores, capsys):
    root, pool_url, m = pool_and_scores
    out = run_select(capsys, "--method", "3ds", "--scores", m["quality"], m["difficulty"],
                     "--budget", "12", "--seed", "4", "--store", root, plots=True)
    assert out["n_candidates"] == 600 and out["n_selected"] == 12

    selected = read_committed_table(out["selected"])
    assert selected.column_names[:2] == ["sample_id", "rank"]
    assert selected["rank"].to_pylist() == list(range(1, 13))
    for col in ("instruction", "output", "messages", "quality_score", "difficulty_d2", "difficulty_embedding"):
        assert col in selected.column_names
    assert all(q >= 90 for q in selected["quality_score"].to_pylist())
    assert selected["instruction"].to_pylist()[0] == f"question {selected['sample_id'][0]}"

    report = read_committed_json(out["report"])
    assert report["seed"] == 4 and report["budget"] == {"requested": {"count": 12}, "resolved": 12}
    assert [c["stage"] for c in report["counts"]] == ["candidates", "1:threshold", "2:band", "3:kcenter"]
    band = report["stages"][1]
    assert set(band["thresholds"]) == {"difficulty_d1", "difficulty_d2", "difficulty_d3"}
    assert isinstance(band["thresholds"]["difficulty_d1"]["low"], float)
    assert band["details"]["all_metrics_survivors"] == band["n_out"]
    assert report["inputs"]["pool_manifest"] == pool_url

    why = read_committed_table(out["candidates"]).to_pandas()
    assert len(why) == 600 and why["why"].notna().all()
    assert sorted(why.loc[why["chosen"], "sample_id"]) == sorted(selected["sample_id"].to_pylist())

    assert set(out["plots"]) == {"score_distributions", "metric_correlations"}
    for url in out["plots"].values():
        store, key = Store.open_url(url)
        assert store.read_committed(key)[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_selection_and_jaccard_with_compare(pool_and_scores, capsys):
    root, _, m = pool_and_scores
    args = ["--method", "random", "--scores", m["quality"], "--budget", "50", "--store", root]
    a = run_select(capsys, *args, "--seed", "1")
    b = run_select(capsys, *args, "--seed", "1")
    ids_a = read_committed_table(a["selected"])["sample_id"].to_pylist()
    ids_b = read_committed_table(b["selected"])["sample_id"].to_pylist()
    assert ids_a == ids_b and a["selected"] == b["selected"]

    c = run_select(capsys, *args, "--seed", "2", "--compare", a["selected"], a["report"])
    ids_c = set(read_committed_table(c["selected"])["sample_id"].to_pylist())
    both = len(ids_c & set(ids_a))
    expected = both / len(ids_c | set(ids_a))
    overlap = read_committed_json(c["report"])["overlap"]
    assert [o["jaccard"] for o in overlap] == [pytest.approx(expected, abs=1e-6)] * 2
    assert overlap[0]["n_both"] == both


def test_select_diq_with_ratio_and_quadrant_picture(pool_and_scores, capsys):
    root, _, m = pool_and_scores
    out = run_select(capsys, "--method", "diq", "--scores", m["diq_difficulty"], m["influence"], "--ratio", "0.05", "--store", root, plots=True)
    assert out["n_selected"] == 30
    assert "diq_quadrants" in out["plots"]
    report = read_committed_json(out["report"])
    assert sum(report["stages"][0]["details"]["chosen_per_quadrant"].values()) == 30


def test_select_scores_parquet_directly_and_full_without_budget(pool_and_scores, capsys):
    root, pool_url, m = pool_and_scores
    shards = read_committed_json(m["ifd"])["shards"]
    out = run_select(capsys, "--method", "ifd", "--scores", shards[0]["url"], "--ratio", "0.1", "--pool", pool_url, "--store", root)
    # Only the scored shard's samples are candidates (a --limit run), and the ratio counts them.
    assert out["n_candidates"] == 250 and out["n_selected"] == 25
    report = read_committed_json(out["report"])
    assert any("350 of the pool's 600 samples have no score" in n for n in report["notes"])
    full = run_select(capsys, "--method", "full", "--pool", pool_url, "--store", root)
    assert full["n_selected"] == 600


def test_partially_scored_samples_are_dropped_with_a_reason(pool_and_scores, capsys):
    root, pool_url, m = pool_and_scores
    q_shards = read_committed_json(m["quality"])["shards"]
    d_shard = read_committed_json(m["difficulty"])["shards"][0]["url"]
    out = run_select(capsys, "--method", "3ds", "--scores", q_shards[0]["url"], q_shards[1]["url"], d_shard,
                     "--budget", "5", "--pool", pool_url, "--store", root)
    assert out["n_candidates"] == 500
    why = read_committed_table(out["candidates"]).to_pandas()
    # Quality survivors of the second shard have no difficulty scores: the band drops them.
    band_missing = why["why"].str.endswith("difficulty_d1, difficulty_d2, difficulty_d3 missing (not scored)")
    assert band_missing.any() and (why.loc[band_missing, "dropped_by"] == "band").all()


def test_composite_manifest_expands_to_its_components(pool_and_scores, capsys):
    root, pool_url, m = pool_and_scores
    store = Store(root)
    store.commit("scores/manifests/3ds-composite.json", json.dumps({
        "scorer": "3ds", "components": {"quality": m["quality"], "difficulty": m["difficulty"]},
        "pool_manifest": pool_url,
    }).encode())
    composite = store.url("scores/manifests/3ds-composite.json")
    a = run_select(capsys, "--method", "3ds", "--scores", composite, "--budget", "7", "--store", root)
    b = run_select(capsys, "--method", "3ds", "--scores", m["quality"], m["difficulty"], "--budget", "7", "--store", root)
    assert read_committed_table(a["selected"])["sample_id"].to_pylist() == read_committed_table(b["selected"])["sample_id"].to_pylist()
    assert [i["url"] for i in read_committed_json(a["report"])["inputs"]["scores"]] == [m["quality"], m["difficulty"]]


def test_errors_are_sentences(pool_and_scores, capsys):
    root, _, m = pool_and_scores
    assert main(["select", "--method", "3ds", "--scores", m["quality"], "--budget", "5", "--store", root]) == 1
    err = capsys.readouterr().err
    assert "difficulty_d1" in err and "--scores" in err
    assert main(["select", "--method", "random", "--scores", m["quality"], "--store", root]) == 1
    assert "--budget N or --ratio R" in capsys.readouterr().err
    assert main(["select", "--method", "3dz", "--scores", m["quality"], "--store", root]) == 1
    assert "Did you mean '3ds'" in capsys.readouterr().err
    shard = read_committed_json(m["ifd"])["shards"][0]["url"]
    store = Store(root)
    store.commit_table("copies/ifd-shard-00000.parquet", read_committed_table(shard))
    copy = store.url("copies/ifd-shard-00000.parquet")
    assert main(["select", "--method", "ifd", "--scores", shard, copy, "--budget", "3", "--store", root]) == 1
    assert "scored more than once" in capsys.readouterr().err
    # The same URL twice is read once.
    assert main(["select", "--method", "ifd", "--scores", shard, shard, "--budget", "3", "--store", root]) == 0
    capsys.readouterr()


def test_set_overrides_a_selector_config(pool_and_scores, capsys):
    root, _, m = pool_and_scores
    out = run_select(capsys, "--method", "3ds", "--scores", m["quality"], m["difficulty"], "--budget", "10",
                     "--set", "threshold.min_value=80", "--set", "band.low=10", "--set", "band.high=90", "--store", root)
    report = read_committed_json(out["report"])
    assert report["stages"][0]["thresholds"]["quality_score"]["min"] == 80
    assert report["stages"][1]["config"]["low"] == 10 and report["stages"][1]["config"]["high"] == 90
    assert report["recipe"]["selectors"][0]["config"]["min_value"] == 80
    assert main(["select", "--method", "3ds", "--scores", m["quality"], "--budget", "5", "--set", "kmeans.k=3", "--store", root]) == 1
    assert "has no selector 'kmeans'" in capsys.readouterr().err
    assert main(["select", "--method", "3ds", "--scores", m["quality"], "--budget", "5", "--set", "band.low=90", "--store", root]) == 1
    assert "0 <= low < high <= 100" in capsys.readouterr().err
