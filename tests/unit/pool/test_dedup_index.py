"""The numpy hash table behind the ingest's deduplication (syllabus.pool.dedup) against a dict."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from syllabus.pool.dedup import KeyIndex, code_of, codes

# Codes that share their low bits (so probes collide and wrap around the table), 0 (the empty
# slot's marker, kept aside) and the largest.
_CODES = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 40), st.integers(0, 40).map(lambda i: i << 40),
                   st.just(2**64 - 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_CODES, max_size=80), max_size=12), st.integers(0, 6))
def test_the_index_answers_as_a_dict(batches, log_capacity):
    index, ref = KeyIndex(1 << log_capacity), {}
    for n, batch in enumerate(batches):
        new = [c for c in dict.fromkeys(batch) if c not in ref]
        asked = np.array(batch + list(ref)[:20], np.uint64)
        assert index.find(asked).tolist() == [ref.get(c, -1) for c in asked.tolist()]
        values = [1000 * n + i for i in range(len(new))]
        index.add(np.array(new, np.uint64), np.array(values, np.int64))
        ref.update(zip(new, values))
        assert len(index) == len(ref)
    assert index.find(np.array(list(ref), np.uint64)).tolist() == list(ref.values())
    assert index.get(None) is None


def test_keys_are_read_as_their_numbers_and_nothing_else_is():
    assert codes(["0000000000000000", "00000000000000ff", "ffffffffffffffff"]).tolist() == [0, 255, 2**64 - 1]
    assert code_of("00000000000000ff") == 255
    # Upper case, other lengths and other characters never equal a key (hexdigest is lower case).
    assert [code_of(t) for t in ("00000000000000FF", "0ff", "00000000000000fg", "0" * 17, "")] == [None] * 5


def test_runs_with_colliding_keys_and_ids_dedup_as_record_by_record(tmp_path, monkeypatch):
    """A block whose runs hold repeated texts, repeated own ids, an own id that spells another
    record's content hash or dedup key, and whitespace variants: the vectorised path (which
    keeps the records sharing nothing at once and tests the rest one by one) quarantines and
    keeps exactly what the per-record path does."""
    import json

    from syllabus.pool import vectorised
    from syllabus.pool.canonical import messages_hash
    from syllabus.pool.ingest import ingest_pool
    from syllabus.store import Store

    monkeypatch.setattr(vectorised, "MIN_ROWS", 1)

    def rec(i, text=None, **kw):
        return {"instruction": text or f"Question {i} about dosing?", "output": f"Answer {i}.", **kw}

    hashed = messages_hash([{"role": "user", "content": "Question 3 about dosing?"},
                            {"role": "assistant", "content": "Answer 3."}])
    lines = [rec(i, id=f"r{i}") for i in range(40)]
    lines[10] = rec(10, text="Question 3 about dosing?", id="r10")  # different id, text of 3: duplicate content
    lines[11] = rec(11, id="r5")  # an id used before with other content
    lines[12] = rec(12, id=hashed)  # an own id spelling record 3's content hash (3 has its own id: no clash)
    lines[13] = rec(13, text="Question  13   about dosing?", id="r13")  # whitespace: key is not the content hash
    lines[14] = rec(13, text="Question 13 about dosing?", id="r14")  # the same after normalisation
    lines[15] = {"instruction": "Question 3 about dosing?", "output": "Answer 3."}  # no id: duplicate content of 3
    lines[16] = rec(16, id=hashed)  # an id already taken (by record 12)
    lines += [rec(i) for i in range(40, 60)] + [rec(41), rec(60, text="Question 40 about dosing?")]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    results = {}
    for vec in (True, False):
        r = ingest_pool([str(path)], Store(str(tmp_path / f"s-{vec}")), shard_size=7, progress=False, vectorised=vec)
        store, key = Store.open_url(r.quarantine_url)
        results[vec] = (r.manifest["pool_fingerprint"], r.summary()["rejected_by_reason"],
                        [{k: v for k, v in q.items() if k != "file"} for q in map(json.loads, store.read_committed(key).decode().splitlines())])
    assert results[True] == results[False]
    assert sum(results[True][1].values()) >= 5
