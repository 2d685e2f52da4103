"""``syllabus plant-defects``: every kind built as documented, labels that match the ids ingest
gives, clean shards that keep their hashes, and determinism."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from syllabus.cli import main
from syllabus.pool.defects import (
    BOILERPLATE,
    DEFAULT_KINDS,
    INJECTIONS,
    KINDS,
    DefectInputError,
    plant_defects,
    read_samples,
)
from syllabus.scoring.injection import injection_flags
from syllabus.pool.ingest import ingest_pool
from syllabus.store import Store

TOPICS = ["asthma", "gout", "anemia", "migraine"]


def _clean_pool(path, n=40):
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({"question": f"What is the outlook for {topic} case {i} ?", "focus": topic,
                     "answer": f"Case {i} of {topic} usually improves with care. Patients should rest and drink water. "
                               f"A doctor can adjust treatment number {i} when symptoms change."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


DISTRACTORS = [(f"Write a haiku about the number {i}.", f"Number {i} sits alone, quiet in the winter field, counting falling snow.")
               for i in range(30)]


def test_every_kind_is_built_as_documented(tmp_path):
    _clean_pool(tmp_path / "clean.jsonl")
    samples = read_samples([str(tmp_path / "clean.jsonl")])
    by_id = {s.sample_id: s for s in samples}
    answers = {s.output for s in samples}
    records, labels = plant_defects(samples, fraction=0.3, seed=1, distractors=list(DISTRACTORS))
    assert len(records) == round(0.3 / 0.7 * 40) == 17
    counts = Counter(l["defect"] for l in labels)
    assert set(counts) == set(DEFAULT_KINDS) and max(counts.values()) - min(counts.values()) <= 1
    for record, label in zip(records, labels):
        base = by_id.get(label["base"])
        kind, out = label["defect"], record["output"]
        assert "defect" not in json.dumps(record)  # nothing in the record marks it
        if kind == "wrong_answer":
            assert out in answers and out != base.output and record["instruction"] == base.instruction
        elif kind == "same_topic_answer":
            donor = next(s for s in samples if s.output == out)
            assert donor.metadata["focus"] == base.metadata["focus"] and donor.sample_id != base.sample_id
        elif kind == "truncated":
            assert base.output.startswith(out) and 3 <= len(out.split()) <= 8
        elif kind == "boilerplate":
            assert out in BOILERPLATE
        elif kind == "shuffled":
            assert sorted(out.split()) == sorted(base.output.split()) and out != base.output
        elif kind == "off_domain":
            assert label["base"] is None and (record["instruction"], out) in DISTRACTORS
        elif kind == "near_duplicate":
            assert out != base.output and set(out.split()) <= set(base.output.split())
            assert record["instruction"] != base.instruction and record["instruction"].rstrip(" ?") == base.instruction.rstrip(" ?")


def test_injection_adds_rater_addressed_text_to_an_intact_sample_and_is_opt_in(tmp_path):
    _clean_pool(tmp_path / "clean.jsonl")
    samples = read_samples([str(tmp_path / "clean.jsonl")])
    by_id = {s.sample_id: s for s in samples}
    assert "injection" in KINDS and "injection" not in DEFAULT_KINDS
    # the default kinds plant exactly what they planted before injection existed
    assert plant_defects(samples, seed=2, distractors=list(DISTRACTORS)) == plant_defects(
        samples, seed=2, kinds=DEFAULT_KINDS, distractors=list(DISTRACTORS))
    records, labels = plant_defects(samples, fraction=0.4, seed=5, kinds=["injection"])
    assert len(records) == round(0.4 / 0.6 * 40) and {l["defect"] for l in labels} == {"injection"}
    texts = set()
    for record, label in zip(records, labels):
        base = by_id[label["base"]]
        out, question = record["output"], record["instruction"]
        if question == base.instruction:  # the answer carries the injection, before or after the base's
            assert out != base.output and (out.startswith(base.output) or out.endswith(base.output))
            texts.add(out.replace(base.output, ""))
        else:
            assert question.startswith(base.instruction) and out == base.output
            texts.add(question[len(base.instruction):])
        assert injection_flags(record), record  # the detector sees every planted injection
    assert len(texts) >= 8 and texts <= {text for _, text in INJECTIONS}


def test_labels_match_ingest_and_clean_shards_keep_their_hashes(tmp_path):
    _clean_pool(tmp_path / "clean.jsonl")
    samples = read_samples([str(tmp_path / "clean.jsonl")])
    records, labels = plant_defects(samples, fraction=0.25, seed=0, distractors=list(DISTRACTORS))
    (tmp_path / "noisy").mkdir()
    (tmp_path / "noisy" / "defects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    clean = ingest_pool([str(tmp_path / "clean.jsonl")], Store(str(tmp_path / "s1")), shard_size=10, progress=False)
    noisy = ingest_pool([str(tmp_path / "clean.jsonl"), str(tmp_path / "noisy" / "defects.jsonl")],
                        Store(str(tmp_path / "s2")), shard_size=10, progress=False)
    assert noisy.manifest["records_rejected"] == noisy.manifest["duplicates"] == 0
    assert noisy.manifest["records_ok"] == 40 + len(records)
    clean_hashes = [s["content_hash"] for s in clean.manifest["shards"]]
    assert [s["content_hash"] for s in noisy.manifest["shards"][: len(clean_hashes)]] == clean_hashes
    store = Store(str(tmp_path / "s2"))
    ids = {i for s in noisy.manifest["shards"] for i in store.read_table(s["key"])["sample_id"].to_pylist()}
    assert {l["sample_id"] for l in labels} <= ids and len(ids) == 40 + len(labels)


def test_deterministic_for_a_seed_and_refuses_what_it_cannot_plant(tmp_path):
    _clean_pool(tmp_path / "clean.jsonl")
    samples = read_samples([str(tmp_path / "clean.jsonl")])
    a = plant_defects(samples, seed=3, distractors=list(DISTRACTORS))
    assert a == plant_defects(list(reversed(samples)), seed=3, distractors=list(DISTRACTORS))
    assert a != plant_defects(samples, seed=4, distractors=list(DISTRACTORS))
    with pytest.raises(DefectInputError, match="unknown defect kind"):
        plant_defects(samples, kinds=["typo"])
    with pytest.raises(DefectInputError, match=r"fraction 1.5 is outside \(0, 1\)"):
        plant_defects(samples, fraction=1.5)
    with pytest.raises(DefectInputError, match="could plant only"):
        plant_defects(samples[:3], fraction=0.9, kinds=["truncated"])


def test_cli_writes_defects_and_labels_outside_the_pool(tmp_path, capsys):
    (tmp_path / "pool").mkdir()
    _clean_pool(tmp_path / "pool" / "clean.jsonl")
    distractors = tmp_path / "general.jsonl"
    distractors.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in DISTRACTORS))
    assert main(["plant-defects", str(tmp_path / "pool"), "--out", str(tmp_path / "pool" / "defects.jsonl"),
                 "--labels", str(tmp_path / "labels.jsonl"), "--distractors", str(distractors)]) == 1
    assert "lies inside the clean pool" in capsys.readouterr().err
    assert main(["plant-defects", str(tmp_path / "pool"), "--out", str(tmp_path / "noisy" / "defects.jsonl"),
                 "--labels", str(tmp_path / "labels.jsonl"), "--distractors", str(distractors), "--fraction", "0.2",
                 "--kinds", "truncated,off_domain", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["defects"] == 10 and summary["per_kind"] == {"off_domain": 5, "truncated": 5}
    assert len((tmp_path / "labels.jsonl").read_text().splitlines()) == 10
