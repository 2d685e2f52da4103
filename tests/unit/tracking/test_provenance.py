"""The provenance check (issue 30): a run started in a checkout executes that checkout's code or
fails before any work, saying which package differs, where it was imported from, the commit,
the files and the fix. Checkouts here are tmp git repos holding copies of the imported packages."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from syllabus.tracking import provenance
from syllabus.tracking.provenance import (ALLOW_ENV, CODE_HASH_TAG, COMMIT_TAG, MISMATCH_TAG, CodeMismatchError,
                                          check_code_provenance, file_digests, imported_dirs, tree_hash)

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def _commit(repo: Path, message: str) -> str:
    subprocess.run([*GIT, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-q", "-m", message], check=True)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(autouse=True)
def _restore_recorded(monkeypatch):
    """The check records its result for the process's MLflow runs: keep other tests' runs untouched."""
    monkeypatch.setattr(provenance, "_recorded", None)


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> tuple[Path, str]:
    """A git repo holding exact copies of the imported packages at its package folders; its commit."""
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    repo = tmp_path / "clone"
    for name, where in imported_dirs().items():
        shutil.copytree(where, repo / provenance.PACKAGES[name], ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo, _commit(repo, "A")


def test_same_code_passes_and_records_the_commit_and_code_hash(checkout):
    repo, commit = checkout
    result = check_code_provenance(repo / "flows")  # any folder of the checkout
    assert result.checkout == repo.resolve() and result.commit == commit and result.mismatch is None
    expected = tree_hash({f"{n}/{p}": d for n, where in imported_dirs().items() for p, d in file_digests(where).items()})
    assert result.code_hash == expected and len(expected) == 64
    assert provenance.recorded_tags() == {COMMIT_TAG: commit, CODE_HASH_TAG: expected}


def test_one_changed_file_fails_naming_package_place_commit_file_and_fix(checkout):
    repo, _ = checkout
    target = repo / "tasks" / "stages.py"
    target.write_text(target.read_text() + "\n# commit B\n")
    commit_b = _commit(repo, "B")
    with pytest.raises(CodeMismatchError) as err:
        check_code_provenance(repo)
    message = str(err.value)
    tasks_dir = imported_dirs()["syllabus_tasks"]
    total = len(file_digests(tasks_dir))
    assert f"package syllabus_tasks (imported from {tasks_dir}) differs from tasks/ in the checkout in 1 of {total} .py and .yaml files (stages.py)" in message
    assert commit_b[:12] in message and str(repo.resolve()) in message
    assert f"`pip install -e {repo.resolve()}`" in message and "start the worker from an environment built from" in message
    assert "syllabus_flows" not in message and "package syllabus " not in message  # only the package that differs
    assert provenance.recorded_tags() == {}  # a failed check leaves nothing to tag


def test_added_and_removed_files_count_and_many_are_summed_up(checkout):
    repo, _ = checkout
    for i in range(7):
        (repo / "src" / "syllabus" / f"new_{i}.py").write_text(f"X = {i}\n")
    (repo / "flows" / "logs.py").unlink()
    _commit(repo, "B")
    with pytest.raises(CodeMismatchError) as err:
        check_code_provenance(repo)
    message = str(err.value)
    assert "7 of" in message and "(new_0.py, new_1.py, new_2.py, new_3.py, new_4.py and 2 more)" in message
    assert "package syllabus_flows" in message and "(logs.py)" in message


def test_escape_hatch_warns_and_tags_the_mismatch_not_the_commit(checkout, monkeypatch, caplog):
    repo, _ = checkout
    target = repo / "src" / "syllabus" / "tracking" / "source.py"
    target.write_text(target.read_text() + "\n# commit B\n")
    commit_b = _commit(repo, "B")
    monkeypatch.setenv(ALLOW_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="syllabus.tracking.provenance"):
        result = check_code_provenance(repo)
    assert result.mismatch and "tracking/source.py" in result.mismatch
    assert any(r.levelno == logging.WARNING and "tracking/source.py" in r.getMessage() for r in caplog.records)
    tags = provenance.recorded_tags()
    assert tags[MISMATCH_TAG] == result.mismatch and tags[provenance.CLONE_COMMIT_TAG] == commit_b
    assert COMMIT_TAG not in tags and tags[CODE_HASH_TAG] == result.code_hash  # the hash is of the code that ran


def test_not_a_checkout_is_skipped_with_a_debug_line(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="syllabus.tracking.provenance"):
        result = check_code_provenance(tmp_path)
    assert result.checkout is None and result.commit is None and result.mismatch is None
    assert provenance.recorded_tags() == {CODE_HASH_TAG: result.code_hash}
    assert any(r.levelno == logging.DEBUG and "not in a git checkout" in r.getMessage() for r in caplog.records)


def test_a_checkout_of_another_project_is_skipped(tmp_path, caplog):
    (tmp_path / "src" / "other").mkdir(parents=True)
    (tmp_path / "src" / "other" / "__init__.py").write_text("")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    _commit(tmp_path, "other project")
    with caplog.at_level(logging.DEBUG, logger="syllabus.tracking.provenance"):
        result = check_code_provenance(tmp_path)
    assert result.checkout is None
    assert any("holds no src/syllabus" in r.getMessage() for r in caplog.records)


def test_lineage_runs_carry_the_checks_tags(checkout, tmp_path, monkeypatch):
    """The tags reach MLflow: a run opened after the check names the checkout's commit and the code hash."""
    from mlflow.tracking import MlflowClient

    from syllabus.tracking.lineage import Lineage

    repo, commit = checkout
    result = check_code_provenance(repo)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lineage = Lineage(tracking, "provenance")
    with lineage.run("r") as run:
        pass
    tags = MlflowClient(tracking).get_run(run.info.run_id).data.tags
    assert tags[COMMIT_TAG] == commit and tags[CODE_HASH_TAG] == result.code_hash


def test_local_edits_in_a_matching_checkout_are_tagged(checkout, tmp_path):
    """A developer's checkout, editable-installed, with an uncommitted edit: the code matches the
    folder, but the commit alone is not that code, so the edited files are tagged too."""
    repo, commit = checkout
    imported = {name: repo / folder for name, folder in provenance.PACKAGES.items()}
    edited = repo / "flows" / "logs.py"
    edited.write_text(edited.read_text() + "\n# local edit\n")
    (repo / "tasks" / "scratch.py").write_text("X = 1\n")
    result = check_code_provenance(repo, imported=imported)
    assert result.mismatch is None and result.commit == commit
    assert provenance.recorded_tags()[provenance.UNCOMMITTED_TAG] == "flows/logs.py, tasks/scratch.py"
    assert tree_hash({f"{n}/{p}": d for n, where in imported.items() for p, d in file_digests(where).items()}) == result.code_hash


def test_a_changed_recipe_is_a_code_change(checkout):
    """A method is its recipe: a recipe edited in the clone but not in the worker's install differs."""
    repo, _ = checkout
    recipe = repo / "src" / "syllabus" / "recipes" / "3ds.yaml"
    recipe.write_text(recipe.read_text().replace("min_value: 90", "min_value: 85"))
    _commit(repo, "B")
    with pytest.raises(CodeMismatchError, match=r"package syllabus .*\(recipes/3ds.yaml\)"):
        check_code_provenance(repo)
