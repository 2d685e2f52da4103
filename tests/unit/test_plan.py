"""The plan: scorer instances resolved once from recipes and overrides, one deep-merge rule,
and the CLI scoring with exactly the pipeline's configs (so the same cache keys)."""

from __future__ import annotations

import argparse

import pytest

from syllabus.config import deep_merge, parse_set
from syllabus.plan import make_plan, scorer_of
from syllabus.selection.recipes import known_recipes, load_recipe


def test_two_methods_with_one_scorer_in_different_configs_get_two_instances():
    plan = make_plan(["diq", "less"])
    assert set(plan.scorers) == {"diq_difficulty", "influence@diq", "influence@less"}
    assert plan.instances_of("diq") == ["diq_difficulty", "influence@diq"]
    assert plan.instances_of("less") == ["influence@less"]
    assert plan.scorers["influence@diq"]["gradients"]["projection"]["dim"] == 4096
    assert plan.scorers["influence@less"]["gradients"]["projection"]["dim"] == 8192
    assert scorer_of("influence@less") == "influence"
    plan = make_plan(["3ds", "3ds-reference"])  # one pipeline: the ratings once, two difficulty configs
    assert list(plan.scorers) == ["quality", "difficulty@3ds", "difficulty@3ds-reference"]
    assert plan.scorers["difficulty@3ds-reference"] == {"preset": "reference"}
    # the same config is one instance under the scorer's own name, shared by both methods
    plan = make_plan(["3ds", "ifd", "diq"])
    assert set(plan.scorers) == {"quality", "difficulty", "ifd", "diq_difficulty", "influence"}


def test_overrides_deep_merge_into_the_recipe_and_target_one_instance():
    plan = make_plan(["less"], {"influence": {"gradients": {"batch_size": 4}}})
    # the LESS recipe's projection survives a change of a sibling field (it was dropped before)
    assert plan.scorers["influence"]["gradients"] == {
        "lora": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj"], "dropout": 0.0},
        "projection": {"kind": "rademacher", "dim": 8192}, "batch_size": 4}
    plan = make_plan(["diq", "less"], {"influence@less": {"warmup": {"epochs": 1}}})
    assert plan.scorers["influence@less"]["warmup"] == {"fraction": 0.05, "epochs": 1}
    assert "warmup" not in plan.scorers["influence@diq"]


def test_selector_overrides_deep_merge_and_name_the_bad_selector():
    plan = make_plan(["3ds"], selector_overrides={"3ds": {"threshold": {"min_percentile": 20}}})
    threshold = plan.methods["3ds"].recipe.selectors[0].config
    assert threshold == {"column": "quality_score", "min_value": 90, "min_percentile": 20}
    with pytest.raises(ValueError, match="method '3ds' has no selector 'treshold'; its selectors are threshold, band"):
        make_plan(["3ds"], selector_overrides={"3ds": {"treshold": {"min_value": 1}}})
    with pytest.raises(ValueError, match="scorer difficulty config: .*max_new_tokens = 0"):
        make_plan(["3ds"], {"difficulty": {"max_new_tokens": 0}})
    with pytest.raises(ValueError, match="Did you mean 'difficulty'"):
        make_plan(["3ds"], {"dificulty": {}})
    with pytest.raises(ValueError, match="instance 'influence@less', which this run does not have; its scorer instances are influence"):
        make_plan(["less"], {"influence@less": {"warmup": {"epochs": 1}}})


def test_deep_merge_and_set_syntax():
    base = {"a": {"b": 1, "c": {"d": 2}}, "l": [1, 2]}
    assert deep_merge(base, {"a": {"c": {"e": 3}}, "l": [3]}) == {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "l": [3]}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "l": [1, 2]}  # not modified
    assert parse_set(["x.y.z=2e-4", "x.y.w=true", "n=[a, b]", "t=some text", "z=null"]) == {
        "x": {"y": {"z": 2e-4, "w": True}}, "n": ["a", "b"], "t": "some text", "z": None}
    for bad in ("novalue", "a..b=1", "=3"):
        with pytest.raises(ValueError, match="must look like PATH=VALUE"):
            parse_set([bad])


def _score_args(*argv: str) -> argparse.Namespace:
    from syllabus.cli.score import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["score", "--pool", "x", "--model", "m", *argv])


def test_the_cli_scores_every_method_with_the_pipelines_configs():
    """Same configs, so the same cache keys: a shard scored by `syllabus score --method M` is
    a cache hit for the pipeline running M, and the other way round."""
    from syllabus.pipeline.config import PipelineParams
    from syllabus.cli.score import score_config

    scored = [m for m in known_recipes() if load_recipe(m).scorers]
    assert {"3ds", "3ds-reference", "diq", "ifd", "less"} <= set(scored)
    for method in scored:
        pipeline = PipelineParams(methods=[method], scorer_configs={}, selector_overrides={}).plan()
        assert score_config(_score_args("--method", method)).scorer_configs() == pipeline.scorers, method
    assert score_config(_score_args("--method", "less", "--set", "influence.warmup.epochs=1")).scorer_configs() == \
        PipelineParams(methods=["less"], scorer_configs={"influence": {"warmup": {"epochs": 1}}}).plan().scorers
    with pytest.raises(ValueError, match="method 'random' needs no scores"):
        score_config(_score_args("--method", "random")).scorer_configs()


def test_cli_choices_come_from_the_registry_and_the_recipes():
    from syllabus import registry
    from syllabus.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    (method,) = [a for a in sub.choices["score"]._actions if a.dest == "method"]
    assert set(method.choices) == set(registry.names("scorer")) | set(known_recipes())


def test_every_command_that_takes_settings_takes_set(capsys):
    from syllabus.cli import build_parser, main

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command in ("run", "compare", "score", "select", "finetune", "evaluate"):
        options = {o for action in sub.choices[command]._actions for o in action.option_strings}
        assert "--set" in options, command
    # evaluate: the path reaches nested EvalConfig fields and a bad one fails before any model load
    assert main(["evaluate", "--model", "no-such-model", "--bench", "mmlu-medical", "--set", "mc.normalisation=words"]) == 1
    assert "mc.normalisation = 'words'" in capsys.readouterr().err


def test_compare_flags_replace_whole_fields_and_set_paths_merge(tmp_path, monkeypatch):
    """`--windows none` leaves no window (a deep merge of {} would have kept the config's three),
    `--budget` replaces a ratio, and `--set` changes one nested key."""
    from syllabus.cli import build_parser
    from syllabus.cli import run as commands
    from syllabus.pipeline.config import CompareParams

    (tmp_path / "c.yaml").write_text("budget: {ratio: 0.1}\nfinetune: {epochs: 2, batch_size: 4}\n"
                                     "windows: {easy: [0, 50], hard: [50, 100]}\n")
    args = build_parser().parse_args(["compare", str(tmp_path / "c.yaml"), "--windows", "none", "--budget", "7",
                                      "--set", "finetune.learning_rate=1e-3", "--set", "eval.limit=9"])
    params = commands._params(CompareParams, args, {"windows": commands.parse_windows(args.windows),
                                                    "budget": {"count": args.budget}})
    assert params.windows == {} and params.budget.count == 7 and params.budget.ratio is None
    assert (params.finetune.epochs, params.finetune.batch_size, params.finetune.learning_rate) == (2, 4, 1e-3)
    assert params.eval.limit == 9


def test_run_and_compare_reach_their_flows_through_the_entry_points():
    from syllabus.cli.run import load_flow

    assert load_flow("pipeline").name == "pipeline" and load_flow("compare").name == "compare"
