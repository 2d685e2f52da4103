"""Pipeline settings are checked when they are read, before any Prefect server, MLflow run or
model: an unknown method, a bad scorer size, a budget of 0; credentials leave the URLs."""

from __future__ import annotations

import os
import re

import pytest

from syllabus.pipeline.config import CompareParams, PipelineParams


def test_unknown_method_is_refused_when_the_yaml_is_read(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("methods: [3ds, bogus]\n")
    with pytest.raises(ValueError, match="unknown method 'bogus'.*Known methods: .*3ds"):
        PipelineParams.from_file(config)
    with pytest.raises(ValueError, match="methods is empty"):
        PipelineParams(methods=[])


def test_run_with_a_bad_config_starts_no_server_and_no_mlflow_run(tmp_path, monkeypatch, capsys):
    from syllabus.cli import main
    from syllabus.cli import run as commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(commands, "_flow", lambda *a: pytest.fail("the flow (Prefect server, MLflow run) was started"))
    (tmp_path / "bogus.yaml").write_text("methods: [bogus]\n")
    assert main(["run", "bogus.yaml"]) == 1
    assert "unknown method 'bogus'" in capsys.readouterr().err
    (tmp_path / "sizes.yaml").write_text("methods: [3ds]\nscorer_configs: {difficulty: {max_new_tokens: -5}}\n")
    assert main(["run", "sizes.yaml"]) == 1
    err = capsys.readouterr().err
    assert "scorer difficulty config: DifficultyConfig max_new_tokens = -5 must be at least 1" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".prefect").exists()


@pytest.mark.parametrize("changes,message", [
    ({"scorer_configs": {"ifd": {"cutoff": 0}}, "methods": ["ifd"]}, "scorer ifd config: IFDConfig cutoff = 0 must be at least 1"),
    ({"scorer_configs": {"dificulty": {}}}, "unknown scorer 'dificulty'. Did you mean 'difficulty'"),
    ({"selector_overrides": {"3ds": {"treshold": {"min_value": 50}}}}, "method '3ds' has no selector 'treshold'"),
    ({"selector_overrides": {"3ds": {"threshold": {"min_percentile": 150}}}}, "threshold"),
    ({"finetune": {"batch_size": 0}}, "finetune.batch_size = 0: Input should be greater than or equal to 1"),
    # issue 33: an unknown key gets one line with the closest known key
    ({"finetune": {"epoch": 2}}, "^unknown key 'finetune.epoch' - did you mean 'finetune.epochs'\\?$"),
    ({"eval": {"limt": 5}}, "^unknown key 'eval.limt' - did you mean 'eval.limit'\\?$"),
])
def test_reading_the_config_names_the_bad_setting(changes, message):
    from pydantic import ValidationError

    from syllabus.config import describe_errors

    with pytest.raises(ValidationError) as info:
        PipelineParams(**changes)  # refused when the config is read, before any work
    assert re.search(message, describe_errors(info.value))
    PipelineParams().check()  # the defaults pass


def test_budget_of_zero_is_refused_alike_from_yaml_and_the_compare_flags(tmp_path, monkeypatch, capsys):
    from syllabus.cli import main

    with pytest.raises(ValueError, match="greater than or equal to 1"):
        CompareParams(budget={"count": 0})
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--budget", "0"])
    assert exit_info.value.code == 2 and "argument --budget: 0 is not allowed" in capsys.readouterr().err


def test_credentials_leave_the_store_and_pool_urls(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "before")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "before")
    params = PipelineParams(store="s3://AKIAEXAMPLE:wJalr/XUtn@bucket/prefix",
                            pool=["s3://AKIAEXAMPLE:wJalr/XUtn@bucket/pools/a.jsonl"])
    assert params.store == "s3://bucket/prefix" and params.pool == ["s3://bucket/pools/a.jsonl"]
    assert "wJalr" not in params.model_dump_json()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "wJalr/XUtn"
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_USERNAME"):
        PipelineParams(tracking_uri="https://user:pw@mlflow.example")


@pytest.mark.parametrize("changes,message", [
    ({"windows": {"hard": (80.0, 50.0)}}, "(?s)window 'hard': .*must satisfy 0 <= low < high <= 100"),
    ({"window_method": "random"}, "window_method 'random' has no band selector"),
])
def test_compare_windows_are_checked_before_the_flow(changes, message):
    with pytest.raises(ValueError, match=message):
        CompareParams(**changes).check()
    CompareParams().check()
