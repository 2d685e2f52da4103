import pyarrow as pa
import pytest

from syllabus.evaluation.benchmarks import Benchmark, MCItem, QAItem
from syllabus.evaluation.decontamination import DecontaminationConfig, decontaminate, find_contamination, ngrams, normalise

Q1 = "Which nerve innervates the diaphragm in most adult humans today?"
Q2 = "What is the first-line treatment for uncomplicated hypertension in adults?"
BENCH = Benchmark(
    "toy",
    "mc",
    [MCItem("i1", "anatomy", Q1, ("phrenic", "vagus"), 0), MCItem("i2", "med", Q2, ("a", "b"), 0)],
)


def test_normalise_and_ngrams():
    assert normalise("  Which NERVE, innervates?\n") == "which nerve innervates"
    assert ngrams("a b c d", 2) == {("a", "b"), ("b", "c"), ("c", "d")}
    assert ngrams("a b", 5) == {("a", "b")}
    assert ngrams(normalise("头痛怎么办"), 2) == {("头", "痛"), ("痛", "怎"), ("怎", "么"), ("么", "办")}


def test_exact_near_containment_and_clean():
    pool = [
        {"sample_id": "exact", "instruction": Q1.upper() + "  ", "input": ""},
        {"sample_id": "embedded", "instruction": "Answer carefully. " + Q2 + " Explain your reasoning step by step.", "input": ""},
        {"sample_id": "clean", "instruction": "How do I treat a mild sunburn at home?", "input": ""},
    ]
    matches = find_contamination(pool, BENCH, DecontaminationConfig())
    by_id = {m["sample_id"]: m for m in matches}
    assert by_id["exact"]["kind"] == "exact" and by_id["exact"]["item_id"] == "i1"
    assert by_id["embedded"]["kind"] == "near" and by_id["embedded"]["containment"] == pytest.approx(1.0)
    assert "clean" not in by_id


def test_near_duplicate_jaccard_hand_computed():
    bench = Benchmark("b", "qa", [QAItem("q", "s", "a b c d e f g", "ref")])
    # with n=3: bench grams abc bcd cde def efg (5); pool "a b c d e f x" grams abc bcd cde def dex->"efx" (5)
    # shared 4 -> jaccard 4/6, containment 4/5
    m = find_contamination([{"sample_id": "p", "instruction": "a b c d e f x"}], bench, DecontaminationConfig(ngram=3, jaccard_threshold=0.6))
    assert m[0]["jaccard"] == pytest.approx(4 / 6) and m[0]["containment"] == pytest.approx(4 / 5)
    none = find_contamination(
        [{"sample_id": "p", "instruction": "a b c d e f x"}],
        bench,
        DecontaminationConfig(ngram=3, jaccard_threshold=0.7, containment_threshold=0.9),
    )
    assert none == []


def test_decontaminate_reports_and_enforces_on_tables():
    table = pa.table(
        {
            "sample_id": ["s1", "s2", "s3"],
            "instruction": [Q1, "unrelated question about sleep hygiene and coffee", Q2],
            "input": ["", "", ""],
            "output": ["x", "y", "z"],
        }
    )
    kept, report, matches = decontaminate(table, [BENCH], enforce=False)
    assert kept.num_rows == 3 and report["toy"]["contaminated_rows"] == 2 and report["dropped"] == 0
    assert report["toy"]["exact"] == 2
    kept, report, _ = decontaminate(table, [BENCH], enforce=True)
    assert kept.column("sample_id").to_pylist() == ["s2"] and report["dropped"] == 2


def test_messages_rows_use_user_turns():
    rows = [{"sample_id": "m", "messages": [{"role": "user", "content": Q1}, {"role": "assistant", "content": "phrenic"}]}]
    assert find_contamination(rows, BENCH)[0]["kind"] == "exact"


def test_load_pool_rows_from_manifest_and_files(tmp_path):
    import json

    from syllabus.evaluation.decontamination import load_pool_rows
    from syllabus.pool.ingest import ingest_pool
    from syllabus.store import Store

    src = tmp_path / "pool.jsonl"
    src.write_text("\n".join(json.dumps({"instruction": q, "output": "x"}) for q in (Q1, "How do I sleep better at night?")))
    result = ingest_pool([str(src)], Store(str(tmp_path / "store")))
    from_manifest = load_pool_rows([result.manifest_url])
    from_file = load_pool_rows([str(src)])
    assert sorted(r["instruction"] for r in from_manifest) == sorted(r["instruction"] for r in from_file)
    _, report, _ = decontaminate(from_manifest, [BENCH])
    assert report["toy"]["contaminated_rows"] == 1
