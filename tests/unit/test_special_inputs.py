"""Inputs that are not regular files (FIFOs, devices) are refused before they are opened: a FIFO
must not hang a run waiting for a writer, a device must not feed it for ever."""

from __future__ import annotations

import json
import os
import threading

import pytest

from syllabus.cli import main
from syllabus.inputs import SpecialFileError, refuse_special_file, special_kind
from syllabus.pool.ingest import ingest_pool
from syllabus.pool.readers import PoolInputError
from syllabus.selection.defects import LabelsError, load_labels
from syllabus.selection.scores import load_candidates
from syllabus.store import Store

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")

TIMEOUT_S = 10


def within_timeout(fn, fifo: str):
    """``fn()``'s outcome, failing the test if it takes over TIMEOUT_S; a call stuck opening
    ``fifo`` is released by opening the FIFO's other end, so the test run itself never hangs."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    if thread.is_alive():
        with open(fifo, "wb"):  # unblocks a reader waiting in open(); EOF once closed
            pass
        thread.join(TIMEOUT_S)
        pytest.fail(f"the call blocked on the FIFO {fifo} for over {TIMEOUT_S} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_a_fifo_pool_input_is_refused_without_opening_it(tmp_path):
    fifo = str(tmp_path / "pool.jsonl")
    os.mkfifo(fifo)
    store = Store(str(tmp_path / "store"))
    with pytest.raises(PoolInputError, match=r"pool input .*pool.jsonl is a FIFO \(named pipe\), not a regular file; it was not opened"):
        within_timeout(lambda: ingest_pool([fifo], store, progress=False), fifo)


def test_a_fifo_inside_a_pool_directory_is_refused(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"instruction": "Q?", "output": "A."}) + "\n")
    os.mkfifo(folder / "b.jsonl")
    os.mkfifo(folder / "notes.txt")  # not a pool file type: skipped like any other, never opened
    store = Store(str(tmp_path / "store"))
    with pytest.raises(PoolInputError, match=r"b.jsonl is a FIFO \(named pipe\)"):
        within_timeout(lambda: ingest_pool([str(folder)], store, progress=False), str(folder / "b.jsonl"))


def test_the_ingest_command_fails_with_the_sentence(tmp_path, capsys):
    fifo = str(tmp_path / "pool.jsonl")
    os.mkfifo(fifo)
    code = within_timeout(lambda: main(["ingest", fifo, "--store", str(tmp_path / "store")]), fifo)
    assert code != 0
    assert "is a FIFO (named pipe), not a regular file" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_link_to_a_device_is_refused(tmp_path):
    link = tmp_path / "endless.jsonl"
    link.symlink_to("/dev/zero")
    with pytest.raises(PoolInputError, match="is a character device, not a regular file"):
        ingest_pool([str(link)], Store(str(tmp_path / "store")), progress=False)
    assert special_kind(str(link)) == "a character device"
    assert special_kind(str(tmp_path)) is None and special_kind(str(tmp_path / "missing")) is None
    assert special_kind("s3://bucket/endless.jsonl") is None


def test_a_fifo_labels_file_or_score_table_is_refused(tmp_path):
    labels = str(tmp_path / "labels.jsonl")
    os.mkfifo(labels)
    with pytest.raises(LabelsError, match=r"labels file .*labels.jsonl is a FIFO \(named pipe\)"):
        within_timeout(lambda: load_labels(labels), labels)
    scores = str(tmp_path / "scores.parquet")
    os.mkfifo(scores)
    with pytest.raises(ValueError, match=r"score table .*scores.parquet is a FIFO \(named pipe\)"):
        within_timeout(lambda: load_candidates([scores]), scores)
    with pytest.raises(SpecialFileError, match=r"^config file file://.*labels.jsonl is a FIFO"):
        refuse_special_file(f"file://{labels}", "config file")


def test_a_fifo_config_or_recipe_file_is_refused(tmp_path):
    from syllabus.pipeline.config import PipelineParams
    from syllabus.selection.recipes import read_recipe_file

    config = str(tmp_path / "config.yaml")
    os.mkfifo(config)
    with pytest.raises(SpecialFileError, match=r"pipeline config .*config.yaml is a FIFO \(named pipe\)"):
        within_timeout(lambda: PipelineParams.from_file(config), config)
    recipe = str(tmp_path / "recipe.yaml")
    os.mkfifo(recipe)
    with pytest.raises(SpecialFileError, match=r"recipe file .*recipe.yaml is a FIFO \(named pipe\)"):
        within_timeout(lambda: read_recipe_file(recipe), recipe)


def test_a_fifo_benchmark_or_validation_file_is_refused(tmp_path):
    from syllabus.evaluation.benchmarks import load_benchmark, read_records

    items = str(tmp_path / "items.jsonl")
    os.mkfifo(items)
    with pytest.raises(SpecialFileError, match=r"benchmark file .*items.jsonl is a FIFO \(named pipe\)"):
        within_timeout(lambda: read_records(items), items)
    with pytest.raises(FileNotFoundError, match="neither a built-in name"):  # not a file: never opened
        within_timeout(lambda: load_benchmark(items), items)


def _never(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran before the bad input was refused")
    return fail


def test_a_fifo_selection_to_compare_with_is_refused_before_scores_are_read(tmp_path, monkeypatch):
    from syllabus.pipeline.config import SelectConfig
    from syllabus.pipeline.stages import select

    fifo = str(tmp_path / "selected.parquet")
    os.mkfifo(fifo)
    monkeypatch.setattr("syllabus.selection.scores.load_candidates", _never("reading the scores"))
    config = SelectConfig(method="random", compare=[fifo])
    with pytest.raises(SpecialFileError, match=r"selection to compare with .*selected.parquet is a FIFO"):
        within_timeout(lambda: select(config, str(tmp_path / "store")), fifo)
    missing = SelectConfig(method="random", compare=[str(tmp_path / "gone" / "report.json")])
    with pytest.raises(FileNotFoundError, match=r"gone/report.json does not exist"):
        select(missing, str(tmp_path / "store"))


@pytest.mark.parametrize("case", ["fifo", "missing", "no-judge"])
def test_evaluate_checks_compare_and_judge_before_the_model_loads(case, tmp_path, capsys, monkeypatch):
    fifo = str(tmp_path / "results.parquet")
    os.mkfifo(fifo)
    monkeypatch.setattr("syllabus.pipeline.stages.evaluate", _never("the evaluation"))
    compare = {"fifo": fifo, "missing": str(tmp_path / "evals" / "results.parquet"), "no-judge": fifo}[case]
    judge = [] if case == "no-judge" else ["--judge", "local:judge-model"]
    argv = ["evaluate", "--model", "base-model", "--bench", "mmlu-medical", "--compare", compare, *judge,
            "--store", str(tmp_path / "store")]
    code = within_timeout(lambda: main(argv), fifo)
    assert code != 0
    err = capsys.readouterr().err
    assert {"fifo": "--compare " + fifo + " is a FIFO (named pipe), not a regular file",
            "missing": "no committed evaluation results there",
            "no-judge": "--rubric and --compare need a judge"}[case] in err


def test_a_fifo_adapter_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from syllabus.evaluation.runner import adapter_checksum
    from syllabus.models.adapters import adapter_bytes

    adapter = str(tmp_path / "adapter.tar")
    os.mkfifo(adapter)
    for read in (adapter_checksum, adapter_bytes):
        with pytest.raises(SpecialFileError, match=r"^adapter .*adapter.tar is a FIFO \(named pipe\)"):
            within_timeout(lambda: read(adapter), adapter)
