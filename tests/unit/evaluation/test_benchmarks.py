import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from syllabus.evaluation.benchmarks import (
    FieldMap,
    MMLU_MEDICAL_SUBSETS,
    benchmark_from_string,
    load_benchmark,
    parse_answer,
)

OPTS = ["aspirin", "ibuprofen", "paracetamol", "codeine"]


@pytest.mark.parametrize(
    "answer,index_base,expected",
    [("C", 0, 2), ("(b)", 0, 1), ("d.", 0, 3), (2, 0, 2), (3, 1, 2), ("1", 0, 1), ("Paracetamol", 0, 2), ("codeine", 0, 3)],
)
def test_parse_answer_letter_index_text(answer, index_base, expected):
    assert parse_answer(answer, OPTS, index_base) == expected


def test_parse_answer_rejects_with_sentence():
    with pytest.raises(ValueError, match="neither a letter"):
        parse_answer("morphine", OPTS)
    with pytest.raises(ValueError, match="outside"):
        parse_answer(4, OPTS)


def test_mmlu_medical_counts_and_header_rows_dropped():
    bench = load_benchmark("mmlu-medical")
    assert bench.kind == "mc"
    counts = {s: 0 for s in MMLU_MEDICAL_SUBSETS}
    for item in bench.items:
        counts[item.subject] += 1
        assert len(item.options) == 4 and 0 <= item.answer < 4
    assert counts == {
        "anatomy": 135,
        "clinical knowledge": 265,
        "college medicine": 173,
        "medical genetics": 100,
        "professional medicine": 272,
        "college biology": 144,
    }
    assert len(load_benchmark("mmlu:medical_genetics")) == 100
    with pytest.raises(ValueError, match="no topic 'astrology'"):
        load_benchmark("mmlu:astrology")


def test_limit_is_seeded_subset_in_order():
    bench = load_benchmark("mmlu:anatomy")
    a, b = bench.limit(10, seed=1), bench.limit(10, seed=1)
    assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
    positions = [bench.items.index(i) for i in a.items]
    assert positions == sorted(positions) and len(a) == 10


def test_jsonl_layouts_detected(tmp_path):
    rows = [
        {"question": "Q1", "options": OPTS, "answer": "B", "subject": "pharm"},
        {"question": "Q2", "options": OPTS, "answer": 3, "subject": "pharm"},
    ]
    path = tmp_path / "b.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    bench = load_benchmark(str(path))
    assert bench.kind == "mc" and [i.answer for i in bench.items] == [1, 3]
    assert bench.items[0].subject == "pharm"

    medmcqa = benchmark_from_string(json.dumps({"question": "Q", "opa": "x", "opb": "y", "opc": "z", "opd": "w", "cop": 1}), "m")
    assert medmcqa.items[0].options == ("x", "y", "z", "w") and medmcqa.items[0].answer == 1


def test_csv_and_field_mapping(tmp_path):
    text = "stem,A,B,C,gold\nWhich?,one,two,three,two\n"
    bench = benchmark_from_string(text, "c", fmt="csv", fields=FieldMap(question="stem", answer="gold"))
    assert bench.items[0].options == ("one", "two", "three") and bench.items[0].answer == 1
    table = pa.table({"q": ["x?"], "opts": [["p", "q"]], "ans": [2]})
    pq.write_table(table, tmp_path / "t.parquet")
    bench = load_benchmark(str(tmp_path / "t.parquet"), FieldMap(question="q", options="opts", answer="ans", answer_index_base=1))
    assert bench.items[0].answer == 1


def test_open_qa_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "What is X?", "answer": "X is Y."}) + "\n")
    bench = load_benchmark(str(path))
    assert bench.kind == "qa" and bench.items[0].reference == "X is Y."


def test_missing_benchmark_names_fix():
    with pytest.raises(FileNotFoundError, match="built-in name"):
        load_benchmark("no-such-bench")


def test_split_validation_is_disjoint_per_subject_and_seeded():
    bench = load_benchmark("mmlu-medical")
    val, rest = bench.split_validation(per_subject=5, seed=2)
    # duplicated items (same content, same id) leave the evaluation side with the held-out copy
    assert len(val) == 30 and len(rest) + len(val) <= len(bench)
    assert not {i.item_id for i in val.items} & {i.item_id for i in rest.items}
    assert len({i.item_id for i in val.items}) == 30
    # 78 items of the file appear under two subjects; every subject still contributes
    assert {i.subject for i in val.items} == set(MMLU_MEDICAL_SUBSETS)
    again, _ = bench.split_validation(per_subject=5, seed=2)
    assert [i.item_id for i in again.items] == [i.item_id for i in val.items]
