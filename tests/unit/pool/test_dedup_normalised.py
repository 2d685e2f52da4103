"""Deduplication on normalised text (NFKC, invisible characters removed, whitespace collapsed),
with sample ids, shard hashes and pool fingerprints left exactly as they were."""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

import pytest

from syllabus.pool.canonical import IGNORABLE, RecordRejected, dedup_key, dedup_text, messages_hash, normalise
from syllabus.pool.ingest import ingest_pool
from syllabus.pool.manifest import read_pool
from syllabus.store import Store


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def quarantine_of(result) -> list[dict]:
    store, key = Store.open_url(result.quarantine_url)
    return [json.loads(line) for line in store.read_committed(key).decode().splitlines()]


@pytest.fixture
def store(tmp_path_factory):
    return Store(str(tmp_path_factory.mktemp("store")))


def golden_pool(folder: Path) -> list[str]:
    """Plain ASCII records of every shape: Alpaca, own string and integer ids, inputs with
    padding and double spaces and answers with paragraph breaks (with and without an own id:
    text the dedup key changes), a multi-turn conversation with a system turn, a Q&A pair with
    metadata, an exact duplicate and an empty answer."""
    a = [{"instruction": f"Explain condition number {i}.", "input": "", "output": f"Condition {i} is explained here."} for i in range(7)]
    a.append({"instruction": "Translate to English", "input": "fever", "output": "fever", "id": "own-7"})
    a.append(dict(a[2]))  # exact duplicate
    a.append({"instruction": "List two symptoms.", "input": "  Patient: adult  ", "output": "Cough\n\nand  fever.", "id": 42})
    a.append({"instruction": "Describe  the rash.", "input": "", "output": "Red spots.\n\nThey itch.\n"})
    b = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Dose of X?"},
                       {"role": "assistant", "content": "Ask a pharmacist."}]},
         {"question": "What is BP?", "answer": "Blood pressure.", "topic": "cardio"},
         {"question": "Empty?", "answer": "   "}]
    return [write_jsonl(folder / "a.jsonl", a), write_jsonl(folder / "b.jsonl", b)]


def test_golden_plain_ascii_pool_keeps_its_ids_shards_and_fingerprint(tmp_path, store):
    # Computed with the code before the dedup key existed (the content-hash id was the dedup key
    # then): the proof's committed store and every score cache key depend on these staying put.
    # The experiment's own pools (experiments/proof/prepare.py: clean 818c8bf92a59f099bacd, noisy
    # 31fa92d96261bd94a4b1) and the embedded demo pool (88fabe3aadb98ae54c77) were checked the same way.
    result = ingest_pool(golden_pool(tmp_path), store, shard_size=4, progress=False)
    m = result.manifest
    assert m["pool_fingerprint"] == "2ae2b18cb7c688d86ad4"
    assert [s["content_hash"] for s in m["shards"]] == [
        "5b7411258b94e243aa29", "009e0a2accf0a63472fc", "3531b37c2c85010e833c", "d903931ebf2aa0eddede"]
    assert (m["records_ok"], m["duplicates"], m["records_rejected"]) == (12, 1, 1)
    assert m["rejected_by_reason"] == {"duplicate_content": 1, "empty_field": 1}
    assert read_pool(m)["sample_id"].to_pylist() == [
        "b8085b1f0e05cd44", "5c74e592bfd17db6", "a8cbe2b4502d7960", "fb221c718ed0e322", "5ff32e15c380737c",
        "6745b226f8218073", "20ec41131cf40e59", "own-7", "42", "75c816cafa9be104", "99eb317af02f5ff6", "52f079a9e7c6a541"]


def qa(question: str, answer: str, **extra) -> dict:
    return {"instruction": question, "input": "", "output": answer, **extra}


def test_nfc_and_nfd_spellings_are_one_sample(tmp_path, store):
    nfc = unicodedata.normalize("NFC", "Qu'est-ce que la fièvre ? Une température élevée.")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    path = write_jsonl(tmp_path / "p.jsonl", [qa("Définir fièvre", nfc), qa(unicodedata.normalize("NFD", "Définir fièvre"), nfd)])
    result = ingest_pool([path], store, progress=False)
    assert (result.manifest["records_ok"], result.manifest["duplicates"]) == (1, 1)
    (entry,) = quarantine_of(result)
    assert entry["code"] == "duplicate_content" and entry["line"] == 2
    assert entry["reason"].startswith(f"duplicate of the record at {path} line 1 (compared after Unicode NFKC")
    # The kept record's id is still the hash of its text exactly as written.
    kept = read_pool(result.manifest).to_pylist()[0]
    assert kept["output"] == nfc
    assert kept["sample_id"] == messages_hash([{"role": "user", "content": "Définir fièvre"}, {"role": "assistant", "content": nfc}])


@pytest.mark.parametrize("insert", ["\u200b", "\u200c\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\ufe0f", "\U000e0041"])
def test_zero_width_and_format_characters_do_not_make_a_new_sample(tmp_path, store, insert):
    answer = "Take the tablet twice a day with water."
    hidden = insert.join(answer[i:i + 5] for i in range(0, len(answer), 5))
    path = write_jsonl(tmp_path / "p.jsonl", [qa("How do I take it?", answer), qa("How do I take it?", hidden)])
    result = ingest_pool([path], store, progress=False)
    assert (result.manifest["records_ok"], result.manifest["duplicates"]) == (1, 1), repr(insert)


def test_whitespace_runs_and_compatibility_forms_collapse(tmp_path, store):
    records = [qa("What is BP?", "Blood pressure:\nthe force of blood."),
               qa("What is  BP? ", "  Blood\tpressure:   the force\n\nof blood."),
               qa("Ｗｈａｔ ｉｓ ＢＰ?", "Blood pressure:\u00a0the force of blood."),  # full-width letters, no-break space
               qa("What is BP?", "Blood pressure: the force of blood!")]  # a real difference
    result = ingest_pool([write_jsonl(tmp_path / "p.jsonl", records)], store, progress=False)
    assert (result.manifest["records_ok"], result.manifest["duplicates"]) == (2, 2)


def test_an_answer_of_only_zero_width_characters_is_rejected_as_empty(tmp_path, store):
    records = [qa("Real question?", "A real answer."), qa("Question two?", "\u200b\u200b\u200d\ufeff"),
               qa("Question three?", " \u2060 \n\u200b "), qa("\u200b", "An answer to nothing.")]
    result = ingest_pool([write_jsonl(tmp_path / "p.jsonl", records)], store, progress=False)
    assert result.manifest["records_ok"] == 1
    assert result.manifest["rejected_by_reason"] == {"empty_field": 3}
    reasons = {e["line"]: e["reason"] for e in quarantine_of(result)}
    assert reasons[2] == ('field "output" holds only invisible characters (zero-width or format characters) and '
                          "whitespace; give it visible text")
    assert reasons[4].startswith('field "instruction" holds only invisible characters')


def test_a_conversation_turn_of_only_invisible_characters_is_rejected():
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\u200b\u200c"}]
    with pytest.raises(RecordRejected, match=r'messages\[1\].content" holds only invisible characters'):
        normalise({"messages": turns}, "x.jsonl")


def test_an_own_id_equal_to_a_normalised_records_content_hash_is_still_a_duplicate_id(tmp_path, store):
    # The first record's id is the hash of its text as written (a paragraph break, so its dedup
    # key differs); a later record that claims that id for other content is refused.
    first = qa("Q?", "Line one.\nLine two.")
    sample = normalise(first, "p.jsonl")
    assert sample.sample_id != sample.dedup_key
    later = qa("Other?", "Other answer.", id=sample.sample_id)
    result = ingest_pool([write_jsonl(tmp_path / "p.jsonl", [first, later])], store, progress=False)
    assert result.manifest["rejected_by_reason"] == {"duplicate_id": 1}


def test_dedup_text_and_key():
    assert dedup_text("  a\u200b b\n\n\tc\u00a0 ") == "a b c"
    assert dedup_text("ﬁne") == "fine"  # the ligature's compatibility form
    assert dedup_key([{"role": "user", "content": "a b"}]) == messages_hash([{"role": "user", "content": "a b"}])
    assert dedup_key([{"role": "user", "content": "a b"}]) != dedup_key([{"role": "assistant", "content": "a b"}])


def test_ignorable_ranges_cover_every_format_character_of_this_python():
    covered = set()
    for first, last in IGNORABLE:
        covered.update(range(first, last + 1))
    missing = [f"U+{c:04X}" for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf" and c not in covered]
    assert not missing, f"add these format characters to canonical.IGNORABLE: {missing}"
