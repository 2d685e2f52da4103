"""Worker processes that prepare JSONL blocks (syllabus.pool.prepare_workers): the pool they
make is the golden pool of test_vectorised_golden, byte for byte, and a worker that fails
hands its blocks back to the ingest's own process, with the same result."""

from __future__ import annotations

import logging
import os

import pytest

from syllabus.pool import ingest, prepare_workers, readers, vectorised
from syllabus.pool.canonical import FieldMap
from syllabus.pool.prepare_workers import PrepareWorkers, read_frame, write_frame

from test_vectorised_golden import GOLDEN, MAX_CHARS, golden_figures, golden_lines, ingest_golden


@pytest.fixture
def workers_from_the_first_block(monkeypatch):
    """Small blocks, all prepared by worker processes (the ingest waits for them to start, where
    it would otherwise use threads meanwhile); returns the list of blocks they prepared."""
    monkeypatch.setattr(vectorised, "MIN_ROWS", 1)  # sent to the workers with each block
    monkeypatch.setattr(readers, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(ingest, "_PROCESS_AFTER", 0)
    ready = PrepareWorkers.ready.fget
    monkeypatch.setattr(PrepareWorkers, "ready", property(lambda self: (self._started.exception(), ready(self))[1]))
    prepared = []

    def attach(prep, block):
        prepared.append(block.first_line)
        return vectorised.attach(prep, block)

    monkeypatch.setattr(ingest, "attach", attach)
    return prepared


@pytest.mark.parametrize("policy", ["keep", "quarantine"])
def test_worker_processes_give_the_golden_pool(tmp_path, monkeypatch, workers_from_the_first_block, policy):
    monkeypatch.chdir(tmp_path)
    result = ingest_golden(tmp_path, policy, vectorised=True)
    assert golden_figures(result) == GOLDEN[policy]
    assert len(workers_from_the_first_block) >= 2  # golden.jsonl's blocks (second.jsonl has one line)


def test_a_worker_that_dies_leaves_its_blocks_to_this_process(tmp_path, monkeypatch, workers_from_the_first_block, caplog):
    """A worker that answers ready, then exits: the first block sent to it fails, every block is
    prepared here, and the pool is the golden one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(prepare_workers, "_BOOT", prepare_workers._BOOT.replace(
        "from syllabus.pool.prepare_workers import serve; serve()",
        "from syllabus.pool.prepare_workers import write_frame; write_frame(sys.stdout.buffer, ('ready', 0))"))
    with caplog.at_level(logging.WARNING, logger="syllabus.pool.prepare_workers"):
        result = ingest_golden(tmp_path, "keep", vectorised=True)
    assert golden_figures(result) == GOLDEN["keep"]
    assert workers_from_the_first_block == []
    assert "preparing blocks in this process" in caplog.text


def test_workers_that_cannot_start_leave_the_blocks_to_threads(tmp_path, monkeypatch, workers_from_the_first_block, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(prepare_workers, "_BOOT", "import sys; sys.exit(3)")
    with caplog.at_level(logging.WARNING, logger="syllabus.pool.prepare_workers"):
        result = ingest_golden(tmp_path, "quarantine", vectorised=True)
    assert golden_figures(result) == GOLDEN["quarantine"]
    assert workers_from_the_first_block == []
    assert "did not start" in caplog.text


def test_a_prepared_block_crosses_a_pipe_unchanged(tmp_path):
    """A frame carries a Prepared (its Arrow columns out of band) and back comes the same block:
    the same rows, ids, keys and locations, the lists made again from the numbers."""
    data = b"\n".join(golden_lines()) + b"\n"
    (tmp_path / "g.jsonl").write_bytes(data)
    blocks = [b for b in readers.read_blocks(str(tmp_path / "g.jsonl"), "jsonl", max_chars=MAX_CHARS)
              if isinstance(b, readers.LineBlock)]
    vectorised.MIN_ROWS, min_rows = 1, vectorised.MIN_ROWS
    try:
        pairs = [(vectorised.prepare_lines(b, "g.jsonl", FieldMap(), MAX_CHARS),
                  vectorised.prepare_lines_detached(b, "g.jsonl", FieldMap(), MAX_CHARS, 1)) for b in blocks]
    finally:
        vectorised.MIN_ROWS = min_rows
    assert sum(here.columns.num_rows for here, _ in pairs if here.columns is not None) > 50
    for block, (here, sent) in zip(blocks, pairs):
        r, w = os.pipe()
        with os.fdopen(w, "wb") as out:
            write_frame(out, ("ok", sent))
        with os.fdopen(r, "rb") as src:
            status, back = read_frame(src)
        back = vectorised.attach(back, block)
        assert status == "ok"
        assert (back.columns is None) == (here.columns is None)
        if here.columns is not None:
            assert back.columns.equals(here.columns)
        assert back.rows == here.rows
        assert (back.sample_ids, back.contents, back.keys, back.wheres) == (here.sample_ids, here.contents, here.keys, here.wheres)
        assert [back.record(k) for k in range(len(back.keys))] == [here.record(k) for k in range(len(here.keys))]
        assert repr(back.runs) == repr(here.runs)  # repr: a record may hold a NaN


def test_a_frame_carries_empty_and_unaligned_buffers():
    import numpy as np
    import pyarrow as pa

    sent = (np.zeros(0, np.uint64), np.arange(5, dtype=np.int8), pa.array(["a", None, "ccc"]), np.zeros(0), b"raw")
    r, w = os.pipe()
    with os.fdopen(w, "wb") as out:
        write_frame(out, sent)
    with os.fdopen(r, "rb") as src:
        back = read_frame(src)
    assert [x.tolist() for x in back[:2]] == [[], [0, 1, 2, 3, 4]] and back[2].equals(sent[2])
    assert back[3].tolist() == [] and back[4] == b"raw"


@pytest.mark.parametrize("value, workers", [(None, 2), ("", 2), ("0", 0), (" 3 ", 3)])
def test_the_workers_setting_reads_a_whole_number(value, workers):
    from syllabus.pool.ingest import _workers_setting

    assert _workers_setting(value) == workers


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_a_workers_setting_that_is_not_a_number_says_how_to_set_it(value):
    from syllabus.pool.ingest import _workers_setting

    with pytest.raises(ValueError, match=r"SYLLABUS_INGEST_WORKERS=.* is not a number of worker processes; set it to 0"):
        _workers_setting(value)
