"""The comparison's arithmetic on hand-made per-item results: paired differences against the
per-item mean of the random seeds, verdicts that follow the interval, difficulty analyses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from syllabus.pipeline import compare as C
from syllabus.cli.run import parse_windows
from syllabus.store import Store


def _eval(store: Store, name: str, correct: list[bool], nll: list[float]) -> dict:
    rows = [{"benchmark": "mc", "method": "cloze", "item_id": f"q{i}", "correct": c, "ref_nll": None} for i, c in enumerate(correct)]
    rows += [{"benchmark": "qa", "method": "open_qa", "item_id": f"a{i}", "correct": None, "ref_nll": v} for i, v in enumerate(nll)]
    store.commit_table(f"evals/{name}.parquet", pa.Table.from_pylist(rows), {})
    return {"results": store.url(f"evals/{name}.parquet")}


def test_paired_deltas_against_random_seed_mean(tmp_path):
    store = Store(str(tmp_path))
    rng = np.random.default_rng(0)
    n = 200
    base_nll = rng.normal(2.0, 0.5, n)  # large item-to-item spread: only a paired interval sees a 0.05 shift
    correct = list(rng.random(n) < 0.4)
    rows = [
        {"method": "random@0", "group": "random", "n_selected": 10, "evaluation": _eval(store, "r0", correct, list(base_nll + 0.01))},
        {"method": "random@1", "group": "random", "n_selected": 10, "evaluation": _eval(store, "r1", correct, list(base_nll - 0.01))},
        {"method": "good", "group": "good", "n_selected": 10, "evaluation": _eval(store, "g", correct, list(base_nll - 0.05))},
        {"method": "same", "group": "same", "n_selected": 10,
         "evaluation": _eval(store, "s", correct, list(base_nll + rng.normal(0, 0.05, n)))},
        {"method": "broken", "group": "broken", "error": "boom"},
    ]
    out = C.comparison(rows, n_resamples=500)
    assert out["metrics"] == ["mc cloze acc", "qa ref NLL"]
    arms = {a["name"]: a for a in out["arms"]}
    good = arms["good"]["values"]["qa ref NLL"]
    assert good["delta"] == pytest.approx(-0.05)
    assert good["delta_ci"][1] < 0 and good["verdict"] == "better"
    assert good["value"] == pytest.approx(float(np.mean(base_nll)) - 0.05)
    # The unpaired interval of the value is wide (item spread); the paired one is not.
    assert good["ci"][1] - good["ci"][0] > 10 * (good["delta_ci"][1] - good["delta_ci"][0])
    assert arms["same"]["values"]["qa ref NLL"]["verdict"] == "no detectable difference"
    assert arms["good"]["values"]["mc cloze acc"]["delta"] == 0.0
    assert "delta" not in arms["random@0"]["values"]["qa ref NLL"]
    assert arms["broken"]["values"] == {} and arms["broken"]["error"] == "boom"
    spread = out["random"]["qa ref NLL"]
    assert spread["seeds"] == 2 and spread["max"] - spread["min"] == pytest.approx(0.02)
    rows[2]["finetune"] = {"seconds": 0.5, "compute_seconds": 200.0, "cached": True, "samples": 10, "steps": 2}
    rows[2]["evaluation"].update(seconds=0.2, cached=True, metrics={"seconds": 150.0})
    costs = C.costs(rows, {"quality": {"samples": 30, "shards_scored": 0, "shards_cached": 3, "seconds": 0.0, "compute_seconds": 90.0}},
                    {"ingest_seconds": 0.1, "total_seconds": 3.0})
    md = C.comparison_markdown(out, {}, {"pool": "test"}, costs)
    assert "| good | 10 |" in md and "better" in md and "broken: boom" in md
    # a cached stage shows what it cost when it ran, and that this run only read it
    assert "| score: quality | 90 | 0 | 30 samples; 0 shards scored, 3 cached |" in md
    assert "| good: fine-tune | 200 | 0 | 10 samples, 2 steps; cached |" in md and "| good: evaluation | 150 | 0 | cached |" in md
    assert C.plot_comparison(out)[:4] == b"\x89PNG"


@pytest.mark.parametrize("metric,ci,expected", [
    ("x ref NLL", [-0.2, -0.1], "better"), ("x ref NLL", [0.1, 0.2], "worse"), ("x cloze acc", [0.01, 0.03], "better"),
    ("x cloze acc", [-0.03, -0.01], "worse"), ("x cloze acc", [-0.01, 0.01], "no detectable difference"),
    ("x cloze acc", [float("nan"), 0.1], "undefined")])
def test_verdict_follows_the_interval_and_the_metric_direction(metric, ci, expected):
    assert C.verdict(metric, ci) == expected


def test_across_runs_pairs_each_shared_arm_item_by_item_and_pools_random_seeds(tmp_path):
    """A clean and a noisy run of the same arms: noisy - clean per item, random as the mean of
    its seeds, only arms both runs have (``evaluation`` is the results URL, as in a report)."""
    store = Store(str(tmp_path))
    rng = np.random.default_rng(1)
    n = 150
    nll = rng.normal(2.0, 0.5, n)
    correct = list(rng.random(n) < 0.4)

    def row(run: str, method: str, shift: float) -> dict:
        return {"method": method, "evaluation": _eval(store, f"{run}-{method}", correct, list(nll + shift))["results"]}

    clean = [row("c", "random@0", 0.00), row("c", "random@1", 0.02), row("c", "3ds", 0.0), row("c", "only-clean", 0.0),
             {"method": "base model", "evaluation": store.url("evals/base.parquet")}]
    _eval(store, "base", correct, list(nll + 0.4))
    noisy = [row("n", "random@0", 0.05), row("n", "random@1", 0.05), row("n", "3ds", 0.0 + rng.normal(0, 0.01, n)),
             row("n", "ifd", 0.3), clean[-1]]  # the base model: one evaluation, in both runs
    out = {(r["arm"], r["metric"]): r for r in C.across_runs(clean, noisy, n_resamples=500)}
    assert set(out) == {("random", "qa ref NLL"), ("random", "mc cloze acc"), ("3ds", "qa ref NLL"), ("3ds", "mc cloze acc")}
    rand = out[("random", "qa ref NLL")]
    assert rand["seeds"] == (2, 2) and rand["n_paired"] == n
    assert rand["delta"] == pytest.approx(0.04) and rand["verdict"] == "worse"   # the noisy pool's arm is worse
    assert rand["b"] - rand["a"] == pytest.approx(0.04)
    assert out[("3ds", "qa ref NLL")]["verdict"] == "no detectable difference"
    assert out[("3ds", "mc cloze acc")]["delta"] == 0.0
    assert C.plot_across_runs(list(out.values()), ("clean", "noisy"))[:4] == b"\x89PNG"


def test_difficulty_analysis_correlations_and_band_shares():
    rng = np.random.default_rng(1)
    d1 = rng.normal(size=400)
    frame = pd.DataFrame({"difficulty_d1": d1, "difficulty_d2": d1 + rng.normal(scale=0.1, size=400),
                          "difficulty_d3": rng.normal(size=400)})
    frame.loc[0, "difficulty_d3"] = np.nan  # dropped, not counted
    out = C.difficulty_analysis(frame, {"easy": (0, 50)}, band=(25, 75))
    assert out["n"] == 399
    assert out["spearman"]["D1-D2"] > 0.95 and abs(out["spearman"]["D1-D3"]) < 0.15
    paper = out["inside_all_bands"]["paper band [25, 75]"]
    # D1 and D2 nearly agree, D3 is independent: about half x half survive.
    assert 0.15 < paper["share"] < 0.35
    assert "easy [0, 50]" in out["inside_all_bands"]
    assert C.plot_difficulty(frame.dropna(), out)[:4] == b"\x89PNG"


def test_arms_expand_random_seeds_and_windows():
    arms = C.compare_arms(["3ds", "random"], 3, 5, {"3ds": {"threshold": {"min_value": 20}}}, {"hard": (50, 100)})
    assert [a["name"] for a in arms] == ["3ds", "random@5", "random@6", "random@7", "3ds-hard"]
    assert arms[-1]["overrides"] == {"threshold": {"min_value": 20}, "band": {"low": 50.0, "high": 100.0}}
    assert arms[0]["overrides"] == {"threshold": {"min_value": 20}}  # the window did not leak into the method's arm


def test_parse_windows():
    assert parse_windows("easy=0:50, hard=50:100") == {"easy": (0.0, 50.0), "hard": (50.0, 100.0)}
    assert parse_windows("none") == {}
    with pytest.raises(ValueError, match="NAME=LOW:HIGH"):
        parse_windows("easy=0-50")


def test_arms_with_the_same_samples_are_named_as_one_result(tmp_path):
    store = Store(str(tmp_path))

    def arm(name: str, ids: list[str]) -> dict:
        store.commit_table(f"sel/{name}.parquet", pa.table({"sample_id": ids, "rank": list(range(1, len(ids) + 1))}), {})
        return {"method": name, "selection": {"n_selected": len(ids), "outputs": {"selected": store.url(f"sel/{name}.parquet")}}}

    rows = [arm("3ds", ["a", "b", "c"]), arm("3ds-medium", ["c", "a", "b"]), arm("random@0", ["a", "b", "d"]),
            {"method": "full", "selection": {"n_selected": 0}}, arm("3ds-ifd", ["b", "c", "a"])]
    identical = C.identical_selections(rows)
    assert identical == {"3ds-medium": "3ds", "3ds-ifd": "3ds"}
    md = C.comparison_markdown({"metrics": [], "arms": [], "random": {}}, {}, {"pool": "test"}, [], identical=identical)
    assert "## Identical selections" in md and "- 3ds-medium = 3ds" in md


def test_plot_losses_draws_each_arm_with_losses_smoothed_on_a_log_axis_for_unequal_lengths():
    rng = np.random.default_rng(0)
    rows = [{"method": "full", "finetune": {"losses": list(rng.normal(2, 1, 1400))}},
            {"method": "3ds", "finetune": {"losses": list(rng.normal(2, 1, 100))}},
            {"method": "one step", "finetune": {"losses": [2.0]}},
            {"method": "base model", "finetune": None}]
    assert C.plot_losses(rows)[:4] == b"\x89PNG"
