"""Issue 33, item 7: files a pipeline or compare config names are checked before any Prefect
server or flow starts (``syllabus.config.check_config_paths``)."""

from __future__ import annotations

import os

import pytest

from syllabus.config import check_config_paths, check_input_paths
from syllabus.pipeline.config import CompareParams, PipelineParams


def test_a_missing_pool_file_is_named_with_where_relative_paths_are_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.jsonl").write_text("{}\n")
    params = PipelineParams(pool=["here.jsonl", "data/missing.jsonl"])
    with pytest.raises(ValueError) as info:
        check_config_paths(params, "run.yaml")
    assert str(info.value) == (f"run.yaml: pool names data/missing.jsonl, which does not exist (relative paths are read "
                               f"from {tmp_path}); fix the path before anything starts")
    check_config_paths(PipelineParams(pool=["here.jsonl", str(tmp_path)]))  # files and directories that exist pass
    check_config_paths(PipelineParams())  # the embedded demo names no file
    check_config_paths(PipelineParams(pool=["s3://bucket/pool.jsonl", "memory://x/pool.jsonl"]))  # left to ingest


def test_labels_and_benchmark_files_are_checked_and_built_in_benchmarks_are_not(tmp_path):
    with pytest.raises(ValueError, match=r"labels names .*labels\.jsonl, which does not exist; fix the path"):
        check_config_paths(CompareParams(labels=str(tmp_path / "labels.jsonl")))
    with pytest.raises(ValueError, match=r"benches names .*bench\.jsonl, which does not exist"):
        check_config_paths(PipelineParams(benches=["mmlu-medical", str(tmp_path / "bench.jsonl")]))
    check_config_paths(PipelineParams(benches=["mmlu-medical", "mmlu:anatomy"]))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pool.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="pool input .* is a FIFO"):
        check_input_paths("pool", [str(fifo)])
