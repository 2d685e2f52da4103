"""``syllabus run CONFIG`` and ``syllabus compare CONFIG`` check the files the config names
before any Prefect server or flow starts: a missing pool path is one line on stderr, in the
seconds the CLI needs to start (issue 33; ``syllabus.config.check_config_paths``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def test_a_missing_pool_path_fails_before_the_flow(tmp_path, monkeypatch, capsys):
    from syllabus.cli import main
    from syllabus.cli import run as commands

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(commands, "_flow", lambda *a: pytest.fail("the flow (Prefect server, MLflow run) was started"))
    (tmp_path / "bad.yaml").write_text("pool: [data/missing.jsonl]\nmethods: [random]\n")
    assert main(["run", "bad.yaml"]) == 1
    assert capsys.readouterr().err == (
        f"syllabus run: error: bad.yaml: pool names data/missing.jsonl, which does not exist (relative paths are read "
        f"from {tmp_path}); fix the path before anything starts\n")

    (tmp_path / "cmp.yaml").write_text("methods: [random]\nlabels: labels.jsonl\n")
    assert main(["compare", "cmp.yaml"]) == 1
    assert "syllabus compare: error: cmp.yaml: labels names labels.jsonl, which does not exist" in capsys.readouterr().err
    # a path given on the command line is not blamed on the config file
    assert main(["compare", "cmp.yaml", "--pool", "other/missing.jsonl"]) == 1
    assert capsys.readouterr().err.startswith("syllabus compare: error: pool names other/missing.jsonl, which does not exist")
    assert main(["run", "bad.yaml", "--set", f"pool=[{tmp_path / 'gone.jsonl'}]"]) == 1
    assert capsys.readouterr().err.startswith(f"syllabus run: error: pool names {tmp_path / 'gone.jsonl'}, which does not")
    assert not (tmp_path / ".prefect").exists() and not (tmp_path / "mlflow.db").exists()


def test_the_command_fails_fast_and_starts_no_server(tmp_path):
    """The real command in its own process: one line, exit 1, no Prefect home or MLflow file
    written (where a started flow puts them), in seconds (a flow's temporary server alone takes
    several, a model load more)."""
    (tmp_path / "bad.yaml").write_text("pool: [missing.jsonl]\nmethods: [random]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    syllabus = Path(sys.executable).parent / "syllabus"
    start = time.perf_counter()
    done = subprocess.run([str(syllabus), "run", "bad.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    seconds = time.perf_counter() - start
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("syllabus run: error: bad.yaml: pool names missing.jsonl, which does "
                                                   "not exist"), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no .prefect, mlflow.db or store
    assert seconds < 30, seconds
