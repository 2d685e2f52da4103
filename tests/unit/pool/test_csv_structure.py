"""CSV structure (issue 29, item 4): a stray quote must not fold the rest of a file into one
answer. A record that spans lines is kept only when it is quoted as every CSV writer quotes a
multi-line field; otherwise the line with the stray quote is quarantined with the lines it
swallowed named, and those lines are read again as records of their own when they read as rows."""

from __future__ import annotations

import csv
import io
import json

import pytest

from syllabus.pool.ingest import ingest_pool
from syllabus.pool.manifest import read_pool
from syllabus.store import Store


def quarantine_at(url: str) -> list[dict]:
    store, key = Store.open_url(url)
    return [json.loads(line) for line in store.read_committed(key).decode("utf-8").splitlines()]


def ingest(path, tmp_path):
    result = ingest_pool([str(path)], Store(str(tmp_path / "store")), progress=False)
    s = result.summary()
    kept = read_pool(result.manifest).to_pylist()
    quarantined = quarantine_at(result.quarantine_url)
    # Every record is in exactly one place.
    assert s["records_in"] == s["records_ok"] + s["records_rejected"] + s["duplicates"]
    assert len(kept) + len(quarantined) == s["records_in"]
    return s, {r["instruction"]: r for r in kept}, quarantined


def table(rows, delimiter=",") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(["instruction", "output"])
    w.writerows(rows)
    return buf.getvalue()


ROWS = [[f"question {i}", f"answer {i}, in short"] for i in range(1, 11)]  # quoted: they hold the delimiter


@pytest.mark.parametrize("kind", ["csv", "tsv"])
def test_a_stray_quote_quarantines_its_line_and_the_rows_after_it_are_read(tmp_path, kind):
    delimiter = "\t" if kind == "tsv" else ","
    lines = table(ROWS, delimiter).splitlines(keepends=True)
    # Row 5 (file line 6) gets an opening quote that never closes; the later rows are quoted
    # (CSV) or not (TSV), so the fold ends at a bad closing quote or runs to the end of the file.
    lines[5] = f'question 5{delimiter}"answer 5 never closes\n'
    path = tmp_path / f"pool.{kind}"
    path.write_text("".join(lines))

    s, kept, quarantined = ingest(path, tmp_path)
    assert s["records_in"] == 10 and s["records_ok"] == 9, s
    assert set(kept) == {f"question {i}" for i in range(1, 11) if i != 5}
    assert kept["question 6"]["output"] == "answer 6, in short"  # not folded into question 5's answer
    assert kept["question 4"]["output"] == "answer 4, in short"
    (entry,) = quarantined
    assert (entry["code"], entry["line"]) == ("stray_quote", 6)
    assert entry["reason"].startswith("a quoted field opened on line 6 swallows line")
    assert "line 6 was quarantined and the lines after it were read again as records" in entry["reason"]
    assert entry["raw"] == lines[5]


def test_the_fold_to_the_end_of_the_file_names_every_line_it_swallowed(tmp_path):
    text = "instruction,output\nq1,a1\nq2,\"stray\nq3,a3\nq4,a4\nq5,a5\n"
    (tmp_path / "pool.csv").write_text(text)
    s, kept, (entry,) = ingest(tmp_path / "pool.csv", tmp_path)
    assert set(kept) == {"q1", "q3", "q4", "q5"} and kept["q3"]["output"] == "a3"
    assert entry["line"] == 3 and "swallows lines 4-6, which read as rows of the file" in entry["reason"]


def test_legit_multi_line_answers_are_kept_beside_a_stray_quote(tmp_path):
    answers = {
        "recipe": "Step 1, mix the flour.\nStep 2, add water.\n\nStep 3, \"knead\" it.",
        "code": 'def f(x):\n    return x, x\n',
        "list": "a,b\nc,d\ne,f",  # lines that look like rows, inside a well-quoted field
    }
    text = table([[k, v] for k, v in answers.items()])
    text += 'broken,"this quote never closes\n' + table([["after", "still, read"]]).split("\n", 1)[1]
    (tmp_path / "pool.csv").write_text(text)

    s, kept, quarantined = ingest(tmp_path / "pool.csv", tmp_path)
    assert {k: kept[k]["output"] for k in answers} == answers
    assert kept["after"]["output"] == "still, read"
    assert [(q["code"], q["line"]) for q in quarantined] == [("stray_quote", text.count("\n") - 1)]


def test_a_multi_line_field_that_is_not_rows_is_quarantined_whole(tmp_path):
    """A file cut off inside a quoted answer: the lines after the quote are prose, not rows,
    so nothing is read out of them; the record is quarantined with its lines named."""
    text = 'instruction,output\nq1,a1\nq2,"First, mix it.\nThen, bake it.\nFinally, eat it.\n'
    (tmp_path / "pool.csv").write_text(text)
    s, kept, (entry,) = ingest(tmp_path / "pool.csv", tmp_path)
    assert set(kept) == {"q1"} and s["records_in"] == 2
    assert (entry["code"], entry["line"]) == ("malformed_row", 3)
    assert "runs over lines 3-5 and does not close properly" in entry["reason"]
    assert "lines 3-5 were quarantined as one record" in entry["reason"]


def test_several_stray_quotes_each_cost_one_line(tmp_path):
    text = "instruction,output\n" + "".join(f'q{i},"a{i}\n' if i % 3 == 0 else f"q{i},a{i}\n" for i in range(1, 31))
    (tmp_path / "pool.csv").write_text(text)
    s, kept, quarantined = ingest(tmp_path / "pool.csv", tmp_path)
    assert set(kept) == {f"q{i}" for i in range(1, 31) if i % 3}
    assert sorted(q["line"] for q in quarantined) == [i + 1 for i in range(3, 31, 3)]
    assert s["records_in"] == 30


def test_a_broken_header_ends_the_file_with_a_damaged_file_record(tmp_path):
    (tmp_path / "pool.csv").write_text('instruction,"output\nq1,a1\nq2,a2\n')
    result = ingest_pool([str(tmp_path / "pool.csv"), str(_good(tmp_path))], Store(str(tmp_path / "store")),
                         progress=False)
    (entry,) = quarantine_at(result.quarantine_url)
    assert entry["code"] == "damaged_file" and "the header row's quoting is broken" in entry["reason"]
    assert "opened on line 1 runs to line 3" in entry["reason"]


def _good(tmp_path):
    path = tmp_path / "good.csv"
    path.write_text("instruction,output\nfine,yes\n")
    return path
