"""A benchmark file that is not valid UTF-8 is named, with its line (issue 17)."""

from __future__ import annotations

import gzip

import pytest

from syllabus.evaluation.benchmarks import read_records


@pytest.mark.parametrize("name", ["bench.jsonl", "bench.csv.gz"])
def test_bad_utf8_names_the_file_and_line(tmp_path, name):
    if name.endswith(".csv.gz"):
        body = b"question,answer\nok,A\ncaf\xe9,B\n"
        (tmp_path / name).write_bytes(gzip.compress(body))
        line = 3
    else:
        body = b'{"question": "ok", "answer": "A"}\n{"question": "caf\xe9", "answer": "B"}\n'
        (tmp_path / name).write_bytes(body)
        line = 2
    with pytest.raises(ValueError, match=rf"benchmark file .*{name} line {line} \(byte 0xe9\) is not valid UTF-8"):
        read_records(tmp_path / name)
