"""One rule for overrides (issue 31 item 2): flags and ``--set`` merge by one typed rule, under
which naming one alternative of a union (the budget's count or ratio) replaces it rather than
merging into it; ``run`` and ``compare`` take ``--budget``/``--ratio``; a shared scoring flag
that no chosen scorer takes is an error naming the flag and the scorers, not silence."""

from __future__ import annotations

import argparse

import pytest

from syllabus.config import merge_changes
from syllabus.cli.run import compare_params, register as register_pipeline, run_params
from syllabus.pipeline.config import PipelineParams
from syllabus.cli.score import register as register_score, score_config
from syllabus.selection.base import Budget
from syllabus.selection.recipes import known_recipes


def _parse(register, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(argv)


def run(*argv: str) -> PipelineParams:
    return run_params(_parse(register_pipeline, ["run", *argv]))


def test_set_budget_ratio_replaces_the_budget():
    assert PipelineParams().budget == Budget(count=16, allow_short=True)  # the demo's
    assert run("--set", "budget.ratio=0.1").budget == Budget(ratio=0.1)
    assert run("--set", "budget.count=4").budget == Budget(count=4)


def test_set_of_a_budget_policy_key_merges():
    assert run("--set", "budget.allow_short=false").budget == Budget(count=16)
    assert run("--ratio", "0.2", "--set", "budget.allow_short=true").budget == Budget(ratio=0.2, allow_short=True)
    assert run("--set", "budget.ratio=0.1", "--set", "budget.fill=rank").budget == Budget(ratio=0.1, fill="rank")


def test_run_and_compare_take_budget_and_ratio():
    assert run("--budget", "8").budget == Budget(count=8)
    assert run("--ratio", "0.25").budget == Budget(ratio=0.25)
    compare = compare_params(_parse(register_pipeline, ["compare", "--ratio", "0.5", "--windows", "none"]))
    assert compare.budget == Budget(ratio=0.5)
    compare = compare_params(_parse(register_pipeline, ["compare", "--windows", "none", "--set", "budget.ratio=0.1"]))
    assert compare.budget == Budget(ratio=0.1)
    with pytest.raises(SystemExit):  # one or the other
        _parse(register_pipeline, ["run", "--budget", "8", "--ratio", "0.1"])


def test_other_sections_still_merge_key_by_key():
    params = run("--set", "finetune.epochs=2", "--set", "scorer_configs.difficulty.max_new_tokens=64")
    assert params.finetune.epochs == 2 and params.finetune.batch_size == 8  # the demo's batch size stays
    assert params.scorer_configs == {"difficulty": {"max_new_tokens": 64}}


def test_merge_changes_replaces_only_a_union_named_by_an_alternative():
    base = PipelineParams().model_dump(mode="json")
    merged = merge_changes(PipelineParams, base, {"budget": {"ratio": 0.3}, "eval": {"limit": 5}})
    assert merged["budget"] == {"ratio": 0.3}
    assert merged["eval"]["limit"] == 5 and merged["eval"]["generate"] is False


def score(*argv: str) -> dict:
    return score_config(_parse(register_score, ["score", "--pool", "x", "--model", "m", *argv])).scorer_configs()


def test_a_shared_flag_reaches_every_scorer_that_has_it():
    assert score("--method", "relevance", "--batch-size", "4")["relevance"]["batch_size"] == 4  # was ignored
    plan = score("--method", "3ds", "--batch-size", "2", "--max-new-tokens", "9")
    assert plan["quality"]["batch_size"] == plan["difficulty"]["batch_size"] == 2
    assert plan["difficulty"]["max_new_tokens"] == 9 and "max_new_tokens" not in plan["quality"]  # expected mode
    assert score("--method", "ifd", "--preset", "reference")["ifd"]["preset"] == "reference"


@pytest.mark.parametrize("argv,named", [
    (["--method", "injection", "--batch-size", "4"], r"--batch-size 4: --method injection scores with injection, "
     r"and none of them takes it: injection \(its config has no batch_size\); drop --batch-size"),
    (["--method", "3ds", "--perspective", "knowledge"], r"--perspective knowledge: --method 3ds scores with quality, "
     r"difficulty, .*quality \(its config has no perspective\); difficulty \(its config has no perspective\)"),
    (["--method", "quality", "--max-new-tokens", "9"], r"quality generates only with --quality-mode generate"),
    (["--method", "ifd", "--validation", "v.jsonl"], r"--validation v\.jsonl: .*ifd \(its config has no validation\)"),
])
def test_a_shared_flag_no_chosen_scorer_takes_is_an_error(argv, named):
    with pytest.raises(ValueError, match=named):
        score(*argv)


@pytest.mark.parametrize("method", sorted(known_recipes()))
def test_the_two_commands_with_no_settings_plan_the_same_scorer_configs(method):
    # tests/unit/test_score_and_run_keys.py compares the keys from PipelineParams; this goes
    # through both command lines' parsing and merging.
    pipeline = run("--methods", method).plan()
    if not pipeline.instances_of(method):
        return  # random, full: nothing to score (score says so: test_score_and_run_keys)
    assert score("--method", method) == {name: pipeline.scorers[name] for name in pipeline.instances_of(method)}
