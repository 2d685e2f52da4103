"""YAML safety (issue 29, item 5): configs, recipes and ``--set`` values are read by one loader
that caps what aliases expand to, so an alias bomb fails at once with a short sentence, and no
error message quotes more than a few hundred characters of its input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from syllabus.config import MAX_QUOTED_CHARS, describe_errors, load_yaml, parse_set

# Nine levels of nine aliases: 9**9 (387 million) strings once expanded, past 3 GB as Python
# objects and far more as a repr; the text itself is under 600 bytes.
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi"))
LIMIT = 2 * MAX_QUOTED_CHARS + 200  # a sentence with its source's name and a clipped quote


def _fails_fast(call, *args) -> str:
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        call(*args)
    assert time.perf_counter() - start < 1.0
    message = str(err.value)
    assert len(message) < LIMIT, message
    return message


def test_an_alias_bomb_fails_within_a_second_with_a_short_sentence(tmp_path):
    assert len(BOMB) < 600
    message = _fails_fast(load_yaml, BOMB, "pipeline config bomb.yaml")
    assert message.startswith("pipeline config bomb.yaml cannot be read as YAML: the document expands, through its "
                              "aliases, past")
    assert "write the values out instead of repeating aliases" in message

    (tmp_path / "bomb.yaml").write_text(BOMB)
    from syllabus.pipeline.config import PipelineParams
    from syllabus.selection.recipes import load_recipe

    assert f"pipeline config {tmp_path / 'bomb.yaml'} cannot be read" in _fails_fast(PipelineParams.from_file,
                                                                                       tmp_path / "bomb.yaml")
    assert f"recipe file {tmp_path / 'bomb.yaml'} cannot be read" in _fails_fast(load_recipe, tmp_path / "bomb.yaml")
    set_message = _fails_fast(parse_set, ["finetune.lora_rank=" + BOMB])
    assert set_message.startswith("the value of --set 'finetune.lora_rank' cannot be read as YAML: the document expands")


def test_the_cli_refuses_a_bomb_in_a_config_and_in_set_without_growing(tmp_path):
    """Through the command line, in a process limited to 2 GB: without the cap the bomb's
    expansion (a deep copy of the merged settings, a repr in the error) would exhaust it."""
    (tmp_path / "bomb.yaml").write_text(BOMB)
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from syllabus.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    for argv in (["run", str(tmp_path / "bomb.yaml")], ["run", "--set", "finetune=" + BOMB]):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        err = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        assert done.returncode == 1, done.stderr[-2000:]
        assert err.startswith("syllabus run: error: ") and "expands, through its aliases" in err, err
        assert len(err) < LIMIT and time.perf_counter() - start < 60


def test_legit_anchors_and_merge_keys_still_load(tmp_path):
    text = textwrap.dedent("""
        shared: &shared {lora_rank: 8, epochs: 2}
        finetune:
          <<: *shared
          epochs: 3
        benches: &benches [medqa, pubmedqa]
        again: *benches
    """)
    data = load_yaml(text, "config.yaml")
    assert data["finetune"] == {"lora_rank": 8, "epochs": 3} and data["again"] == ["medqa", "pubmedqa"]
    assert load_yaml("", "empty.yaml") is None
    assert parse_set(["a.b=[1, x]", "c=2e-4", "d=", "e=text"]) == {"a": {"b": [1, "x"]}, "c": 2e-4, "d": "", "e": "text"}


def test_every_shipped_recipe_and_experiment_config_loads():
    repo = Path(__file__).resolve().parents[2]
    files = sorted((repo / "src/syllabus/recipes").rglob("*.yaml")) + sorted((repo / "experiments").rglob("*.yaml"))
    assert len(files) > 10
    for path in files:
        assert isinstance(load_yaml(path.read_text(encoding="utf-8"), str(path)), dict), path


@pytest.mark.parametrize("text, expected", [
    ("a: &a [1, *a]\n", "an alias at line 1 refers to a node that contains it"),
    ("x: " + "[" * 5000 + "]" * 5000, "nests more than 100 brackets deep"),
    ("x:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 150)), "nests more than 100 levels deep"),
    ("a: *" + "n" * 10_000 + "\n", "found undefined alias 'nnnn"),
    ("a: [1, 2\n", "at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
])
def test_other_hostile_documents_fail_fast_and_short(text, expected):
    message = _fails_fast(load_yaml, text, "config.yaml")
    assert expected in message


def test_an_error_quotes_a_few_hundred_characters_of_a_huge_value():
    from pydantic import ValidationError

    from syllabus.training.config import FinetuneConfig

    for value in ("x" * 1_000_000, ["y" * 100_000] * 1000):
        with pytest.raises(ValidationError) as err:
            FinetuneConfig(epochs=value)
        assert len(describe_errors(err.value)) < LIMIT
    # A value shared a billion times over (built in Python, where no loader caps it): the
    # message is made without rendering it whole.
    bomb: list = ["lol"] * 9
    for _ in range(9):
        bomb = [bomb] * 9
    with pytest.raises(ValidationError) as err:
        FinetuneConfig(epochs=bomb)
    start = time.perf_counter()
    message = describe_errors(err.value)
    assert time.perf_counter() - start < 1.0 and len(message) < LIMIT
    assert message.startswith("epochs = [[[[") and "..." in message

    with pytest.raises(ValueError) as err:
        parse_set(["no-equals-sign" + "q" * 100_000])
    assert len(str(err.value)) < LIMIT and str(err.value).endswith("must look like PATH=VALUE with a dotted PATH, "
                                                                     "e.g. --set a.b.c=VALUE")


@pytest.mark.parametrize("argv", [
    ["run", "--set", "{big}=1"],
    ["run", "--set", "finetune.{big}=1"],
    ["run", "--set", "finetune.lora_rank={big}"],
    ["run", "--set", "scorer_configs.quality@{big}.batch_size=1"],
    ["select", "--method", "3ds", "--pool", "pool.json", "--set", "{big}.min_value=1"],
    ["select", "--method", "3ds", "--pool", "pool.json", "--set", "threshold={big}"],
], ids=["key", "nested-key", "value", "instance", "selector", "selector-value"])
def test_a_command_quotes_a_few_hundred_characters_of_a_huge_setting(argv, capsys):
    from syllabus.cli import main

    big = "z" * 100_000
    assert main([a.format(big=big) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and len(err[0]) < LIMIT and err[0].count("z") < 2 * MAX_QUOTED_CHARS, err[0][:1000]


def test_the_command_clips_any_error_that_quotes_a_huge_input(tmp_path, monkeypatch, capsys):
    from syllabus import cli
    from syllabus.selection import export

    def fails(*args, **kwargs):
        raise ValueError("cannot read " + "q" * 100_000)

    monkeypatch.setattr(export, "export_selection", fails)
    assert cli.main(["export", "report.json", "--format", "jsonl", "--out", str(tmp_path)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("syllabus export: error: cannot read qqq")
    assert line.endswith(f"... ({100_012 - cli.MAX_ERROR_CHARS:,} more characters; -v prints them)")
    assert len(line) < cli.MAX_ERROR_CHARS + 100


def test_config_and_recipe_files_over_the_cap_or_not_regular_are_refused_unread(tmp_path):
    """Issue 29 item 5: a config that is not one (gigabytes, or a FIFO that would block) is
    refused before it is read, in one sentence."""
    import os

    from syllabus.config import MAX_CONFIG_BYTES
    from syllabus.pipeline.config import PipelineParams
    from syllabus.selection.recipes import read_recipe_file

    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.truncate(MAX_CONFIG_BYTES + 1)  # sparse: nothing is written, nothing need be read
    with pytest.raises(ValueError, match=r"pipeline config .*big.yaml is 4,194,305 bytes; a config or recipe is at most"):
        PipelineParams.from_file(str(big))
    with pytest.raises(ValueError, match=r"recipe file .*big.yaml is 4,194,305 bytes"):
        read_recipe_file(big)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pipe.yaml is a FIFO .*not a regular file; it was not opened"):
        read_recipe_file(fifo)
