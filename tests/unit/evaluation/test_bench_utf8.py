"""A benchmark file that is not valid UTF-8 is named, with its line (issue 17)."""

from __future__ import annotations

import gzip
import json

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


@pytest.mark.parametrize("name", ["bench.jsonl", "bench.json", "bench.csv", "bench.csv.gz"])
def test_a_byte_order_mark_is_skipped(tmp_path, name):
    rows = [{"question": "What is gout?", "answer": "A"}, {"question": "Is it painful?", "answer": "B"}]
    if ".csv" in name:
        body = "question,answer\n" + "".join(f"{r['question']},{r['answer']}\n" for r in rows)
    elif name.endswith(".json"):
        body = json.dumps(rows)
    else:
        body = "".join(json.dumps(r) + "\n" for r in rows)
    data = ("\ufeff" + body).encode("utf-8")
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert read_records(tmp_path / name) == rows
