"""Issue 33, item 7: every unknown key, in any command or config, gets one line with the
closest known key (difflib over the model's fields at that place), never pydantic's
multi-line report."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from syllabus.cli import main
from syllabus.config import describe_errors, unknown_key
from syllabus.training.config import FinetuneConfig


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"syllabus {command}: error: ")
    return err[0].removeprefix(f"syllabus {command}: error: ")


def test_unknown_key_names_the_closest_or_lists_the_keys():
    assert unknown_key("finetune.epoch", ["epochs", "seed"]) == "unknown key 'finetune.epoch' - did you mean 'finetune.epochs'?"
    assert unknown_key("zzz", ["epochs", "seed"]) == "unknown key 'zzz'; the keys there are epochs, seed"
    assert unknown_key("zzz", None) == "unknown key 'zzz'"


def test_describe_errors_walks_nested_models_and_finds_the_model_by_its_title():
    from syllabus.pipeline.config import PipelineParams

    with pytest.raises(ValidationError) as info:
        FinetuneConfig(epoch=2)
    assert describe_errors(info.value) == "unknown key 'epoch' - did you mean 'epochs'?"  # model from the title
    assert describe_errors(info.value, FinetuneConfig, "finetune") == "unknown key 'finetune.epoch' - did you mean 'finetune.epochs'?"
    with pytest.raises(ValidationError) as info:
        PipelineParams(finetune={"epoch": 2}, budjet={"count": 3})
    text = describe_errors(info.value)
    assert "unknown key 'finetune.epoch' - did you mean 'finetune.epochs'?" in text
    assert "unknown key 'budjet' - did you mean 'budget'?" in text
    assert "\n" not in text and "Extra inputs" not in text
    # other errors keep their sentence
    with pytest.raises(ValidationError) as info:
        FinetuneConfig(batch_size=0)
    assert describe_errors(info.value) == "batch_size = 0: Input should be greater than or equal to 1"


def test_scorer_configs_name_the_nested_key():
    from syllabus.plan import make_plan

    with pytest.raises(ValueError) as info:
        make_plan(["less"], {"influence": {"gradients": {"batch_sze": 4}}})
    assert str(info.value) == ("scorer influence config: unknown key 'influence.gradients.batch_sze' - did you mean "
                               "'influence.gradients.batch_size'?")


def test_select_set_typos_get_one_line(capsys):
    assert main(["select", "--method", "3ds", "--budget", "3", "--set", "threshold.min_valu=80"]) == 1
    assert one_error_line(capsys, "select") == ("recipe '3ds', selector 1 (threshold): invalid config: unknown key "
                                                "'threshold.min_valu' - did you mean 'threshold.min_value'?")
    assert main(["select", "--method", "3ds", "--budget", "3", "--set", "band.lo=10"]) == 1
    assert one_error_line(capsys, "select").endswith("unknown key 'band.lo' - did you mean 'band.low'?")
    assert main(["select", "--method", "3ds", "--budget", "3", "--set", "thresold.min_value=80"]) == 1
    assert one_error_line(capsys, "select").endswith("its selectors are threshold, band, kcenter - did you mean 'threshold'?")


def test_finetune_and_evaluate_set_typos_get_one_line(tmp_path, capsys):
    # the config is read before any data or model
    assert main(["finetune", "--data", str(tmp_path / "none.jsonl"), "--model", "none", "--set", "warmup_rato=0.1"]) == 1
    assert one_error_line(capsys, "finetune") == "unknown key 'warmup_rato' - did you mean 'warmup_ratio'?"
    assert main(["evaluate", "--model", "none", "--bench", "mmlu-medical", "--set", "limt=5"]) == 1
    assert one_error_line(capsys, "evaluate") == "unknown key 'limt' - did you mean 'limit'?"


def test_run_config_and_set_typos_get_one_line_before_any_flow(tmp_path, monkeypatch, capsys):
    from syllabus.cli import run as commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(commands, "_flow", lambda *a: pytest.fail("the flow (Prefect server, MLflow run) was started"))
    assert main(["run", "--set", "finetune.epoch=2"]) == 1
    assert one_error_line(capsys, "run") == "unknown key 'finetune.epoch' - did you mean 'finetune.epochs'?"
    (tmp_path / "run.yaml").write_text("methods: [3ds]\nselector_overrides: {3ds: {threshold: {min_percentle: 20}}}\n")
    assert main(["run", "run.yaml"]) == 1
    assert one_error_line(capsys, "run").endswith(
        "unknown key 'selector_overrides.3ds.threshold.min_percentle' - did you mean "
        "'selector_overrides.3ds.threshold.min_percentile'?")


def test_recipe_files_name_their_unknown_keys(tmp_path, capsys):
    from syllabus.selection.recipes import read_recipe_file

    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nselector:\n  - {name: random}\n")
    with pytest.raises(ValueError) as info:
        read_recipe_file(path)
    assert "unknown key 'selector' - did you mean 'selectors'?" in str(info.value) and "\n" not in str(info.value)
    path.write_text("name: mine\nselectors:\n  - {name: random, confg: {}}\n")
    with pytest.raises(ValueError, match=r"unknown key 'selectors\.0\.confg' - did you mean 'selectors\.0\.config'\?"):
        read_recipe_file(path)
    path.write_text("name: mine\nscorers:\n  - {name: ifd, config: {cutof: 64}}\nselectors:\n  - {name: random}\n")
    with pytest.raises(ValueError, match=r"scorer ifd: invalid config: unknown key 'ifd\.cutof' - did you mean 'ifd\.cutoff'\?"):
        read_recipe_file(path).check_scorers()
