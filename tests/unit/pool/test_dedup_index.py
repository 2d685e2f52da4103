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
