"""Where a local store may live (issue 17): reading through a mistyped URL creates nothing,
and a regular file given as the store is named in a sentence, not "[Errno 17] File exists"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from syllabus.pool.manifest import load_manifest
from syllabus.store import MissingObjectError, Store


def test_a_failed_read_creates_no_directories(tmp_path):
    missing = tmp_path / "no" / "such" / "store"
    with pytest.raises(MissingObjectError):
        load_manifest(str(missing / "ingests" / "abc" / "manifest.json"))
    with pytest.raises(MissingObjectError):
        Store(str(missing)).read_bytes("x.json")
    assert not (tmp_path / "no").exists()
    # The first write still creates the folder.
    store = Store(str(missing))
    store.commit("a/b.json", b"{}")
    assert store.read_committed("a/b.json") == b"{}"


@pytest.mark.parametrize("below", ["", "sub/store"])
def test_a_regular_file_as_the_store_is_named(tmp_path, below):
    (tmp_path / "notes.txt").write_text("not a store")
    url = str(tmp_path / "notes.txt" / below) if below else str(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"notes\.txt is a file; pass a folder"):
        Store(url)


def test_the_ingest_command_says_so_and_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("not a store")
    (tmp_path / "p.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "syllabus.cli", "ingest", "p.jsonl", "--store", "notes.txt"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "notes.txt is a file; pass a folder" in proc.stderr and "Errno" not in proc.stderr
