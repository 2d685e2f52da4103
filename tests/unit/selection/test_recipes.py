"""Recipes: every shipped recipe file validates; recipes run end to end with a 'why' per
candidate; the same seed gives the same selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from syllabus import registry
from syllabus.selection.base import Budget
from syllabus.selection.recipes import Recipe, load_recipe, read_recipe_file, recipe_files, run_recipe

from synthetic import score_frame

EXPECTED = {"3ds", "diq", "ifd", "less", "random", "full"}


def all_recipe_files() -> list[Path]:
    return list(recipe_files())


def test_every_method_of_the_issue_is_shipped():
    names = {read_recipe_file(p).name for p in all_recipe_files()}
    assert EXPECTED <= names


@pytest.mark.parametrize("path", all_recipe_files(), ids=lambda p: p.name)
def test_recipe_file_validates(path):
    recipe = read_recipe_file(path)
    selectors = recipe.build_selectors()  # every selector exists and its config validates
    assert selectors[-1].final and not any(s.final for s in selectors[:-1])
    for spec in recipe.scorers:
        assert spec.name in registry.names("scorer"), (
            f"{path.name} names scorer {spec.name!r}, which is not registered "
            f"(registered: {registry.names('scorer')})"
        )
    recipe.check_scorers()
    if recipe.needs_budget() and recipe.budget is None:
        assert recipe.name == "random"  # the baseline takes the budget of what it is compared with


def test_bad_recipes_fail_with_a_sentence(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nselectors:\n  - {name: kcentre}\n")
    with pytest.raises(ValueError, match="Did you mean 'kcenter'"):
        read_recipe_file(bad)
    bad.write_text("name: x\nselectors:\n  - {name: kcenter}\n  - {name: band}\n")
    with pytest.raises(ValueError, match="is not last"):
        read_recipe_file(bad).build_selectors()
    bad.write_text("name: x\nselectors:\n  - {name: band, config: {low: 90, high: 10}}\n  - {name: full}\n")
    with pytest.raises(ValueError, match="0 <= low < high <= 100"):
        read_recipe_file(bad).build_selectors()
    with pytest.raises(ValueError, match="Known methods"):
        load_recipe("3dss")
    bad.write_text("name: x\nscorers:\n  - {name: ifd, config: {no_such_option: 1}}\nselectors:\n  - {name: full}\n")
    with pytest.raises(ValueError, match="scorer ifd: invalid config"):
        read_recipe_file(bad).check_scorers()


def test_3ds_chain_counts_and_why():
    frame = score_frame()
    recipe = load_recipe("3ds")
    result = run_recipe(frame, recipe, Budget(count=10), seed=1)
    q = frame["quality_score"].where(frame["quality_status"] == "ok")
    assert result.stages[0].n_out == int((q >= 90).sum())
    assert [s.n_in for s in result.stages[1:]] == [s.n_out for s in result.stages[:-1]]
    assert result.stages[1].n_out > 10 and result.n_selected == 10
    why = result.candidates_frame()
    assert len(why) == 400 and why["why"].notna().all()
    chosen = why[why["chosen"]].sort_values("rank")
    assert chosen["rank"].tolist() == list(range(1, 11))
    assert chosen["why"].iloc[0] == "chosen at rank 1 (kcenter)"
    dropped = why[~why["chosen"]]
    assert set(dropped["dropped_by"]) == {"threshold", "band", "kcenter"}
    assert dropped["why"].str.startswith("dropped at stage ").all()
    # Thresholds are reported as values, and they are the percentiles over the stage-1 survivors.
    survivors = result.candidates.iloc[result.stage_inputs[1]]
    d1 = survivors["difficulty_d1"].where(survivors["difficulty_status"] == "ok").dropna()
    assert result.stages[1].thresholds["difficulty_d1"]["low"] == pytest.approx(np.percentile(d1, 25))


def test_3ds_ifd_drops_what_the_question_does_not_help_before_the_bands():
    frame = score_frame()
    plain = run_recipe(frame, load_recipe("3ds"), Budget(count=10), seed=1)
    guarded = run_recipe(frame, load_recipe("3ds-ifd"), Budget(count=10), seed=1)
    assert [s.selector for s in guarded.stages] == ["threshold", "threshold", "band", "kcenter"]
    assert guarded.stages[0].n_out == plain.stages[0].n_out  # Stage 1 unchanged
    after_quality = guarded.candidates.iloc[guarded.stage_inputs[1]]
    assert guarded.stages[1].n_out == int((after_quality["ifd_score"] <= 1.0).sum()) < guarded.stages[1].n_in
    chosen = guarded.candidates_frame()
    chosen = chosen[chosen["chosen"]]
    assert len(chosen) == 10 and (frame.set_index("sample_id").loc[chosen["sample_id"], "ifd_score"] <= 1.0).all()


def test_3ds_fewer_survivors_than_budget_keeps_all_and_says_so():
    # 300 of 400 candidates: more than the stages keep (a budget above the pool is an error, issue 33)
    result = run_recipe(score_frame(), load_recipe("3ds"), Budget(count=300), seed=0)
    assert result.n_selected == result.stages[1].n_out
    assert any("fewer survivors" in n and "all" in n for n in result.notes)
    assert result.shortfall == 300 - result.n_selected and result.cut_short_at() == 1


def test_same_seed_same_selection_any_row_order():
    frame = score_frame()
    shuffled = frame.sample(frac=1.0, random_state=5).reset_index(drop=True)
    for method in ("3ds", "random", "diq", "ifd", "less"):
        recipe = load_recipe(method)
        a = run_recipe(frame, recipe, Budget(count=15), seed=3).selected_ids()
        b = run_recipe(frame, recipe, Budget(count=15), seed=3).selected_ids()
        c = run_recipe(shuffled, recipe, Budget(count=15), seed=3).selected_ids()
        assert a == b == c, method
    a = run_recipe(frame, load_recipe("random"), Budget(count=15), seed=3).selected_ids()
    d = run_recipe(frame, load_recipe("random"), Budget(count=15), seed=4).selected_ids()
    assert a != d


def test_empty_survivors_flow_through_the_chain():
    frame = score_frame(50)
    frame["quality_score"] = 10.0
    result = run_recipe(frame, load_recipe("3ds"), 5, seed=0)
    assert result.n_selected == 0
    assert [s.n_out for s in result.stages] == [0, 0, 0]
    assert (result.candidates_frame()["dropped_by"] == "threshold").all()


def test_budget_ratio_counts_the_pool_and_full_ignores_budget():
    frame = score_frame(200)
    assert run_recipe(frame, load_recipe("random"), Budget(ratio=0.1), seed=0).n_selected == 20
    full = run_recipe(frame, load_recipe("full"))
    assert full.n_selected == 200 and full.budget is None
    with pytest.raises(ValueError, match="needs a budget"):
        run_recipe(frame, load_recipe("random"))


def test_duplicate_sample_ids_are_refused():
    frame = score_frame(5)
    with pytest.raises(ValueError, match="appears more than once"):
        run_recipe(pd.concat([frame, frame.iloc[:1]]), load_recipe("full"))


def test_recipe_default_budget_and_overrides():
    recipe = Recipe.model_validate({"name": "t", "selectors": [{"name": "topk", "config": {"column": "ifd_score"}}],
                                    "budget": {"count": 3}})
    assert run_recipe(score_frame(30), recipe).n_selected == 3
    assert recipe.with_selector_config(0, descending=False).selectors[0].config == {"column": "ifd_score", "descending": False}


def test_3ds_relevance_drops_the_least_related_tenth_before_the_bands():
    frame = score_frame()
    frame["relevance_score"] = np.random.default_rng(4).uniform(-0.1, 0.8, len(frame))
    frame["relevance_status"] = "ok"
    plain = run_recipe(frame, load_recipe("3ds"), Budget(count=10), seed=1)
    guarded = run_recipe(frame, load_recipe("3ds-relevance"), Budget(count=10), seed=1)
    assert [s.selector for s in guarded.stages] == ["threshold", "threshold", "band", "kcenter"]
    assert guarded.stages[0].n_out == plain.stages[0].n_out  # Stage 1 unchanged
    after_quality = guarded.candidates.iloc[guarded.stage_inputs[1]]
    cut = np.percentile(after_quality["relevance_score"], 10)
    assert guarded.stages[1].thresholds["relevance_score"]["min"] == pytest.approx(cut)
    assert guarded.stages[1].n_out == int((after_quality["relevance_score"] >= cut).sum()) < guarded.stages[1].n_in
    chosen = guarded.candidates_frame()
    chosen = chosen[chosen["chosen"]]
    assert len(chosen) == 10
    assert (frame.set_index("sample_id").loc[chosen["sample_id"], "relevance_score"] >= cut).all()


def test_threshold_max_percentile_drops_the_top_share():
    from syllabus.selection.threshold import ThresholdConfig, ThresholdSelector

    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(11)], "x": np.arange(11.0)})
    out = ThresholdSelector(ThresholdConfig(column="x", min_value=None, max_percentile=80)).apply(frame, None, 0)
    assert out.kept.tolist() == list(range(9))  # the 80th percentile of 0..10 is 8
    assert out.thresholds["x"] == {"min": None, "max": 8.0, "max_percentile": 80}
    assert out.reasons[10] == "x = 10 > 8"
    with pytest.raises(ValueError, match="min_percentile 60.0 is above max_percentile 40.0"):
        ThresholdConfig(column="x", min_percentile=60, max_percentile=40)


def test_ifd_filtered_ranks_by_ifd_after_the_relevance_and_perplexity_filters():
    frame = score_frame()
    rng = np.random.default_rng(5)
    frame["relevance_score"] = rng.uniform(-0.1, 0.8, len(frame))
    frame["relevance_status"] = "ok"
    frame["ifd_nll_alone"] = rng.uniform(1.0, 6.0, len(frame))
    result = run_recipe(frame, load_recipe("ifd-filtered"), Budget(count=10), seed=0)
    assert [s.selector for s in result.stages] == ["threshold", "threshold", "topk"]
    chosen = frame.set_index("sample_id").loc[result.selected_ids()]
    assert (chosen["relevance_score"] >= np.percentile(frame["relevance_score"], 10)).all()
    after_relevance = frame.iloc[result.stage_inputs[1]]
    assert (chosen["ifd_nll_alone"] <= np.percentile(after_relevance["ifd_nll_alone"], 90)).all()
    survivors = frame.iloc[result.stage_inputs[2]]
    best = survivors[survivors["ifd_score"] <= 1.0].nlargest(10, "ifd_score")["sample_id"]
    assert sorted(result.selected_ids()) == sorted(best)
