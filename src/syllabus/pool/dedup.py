"""The dedup keys an ingest has seen, in a numpy hash table rather than a dict of strings.

A dedup key (like a content-hash sample id) is the first 16 hex digits of a SHA-256
(:func:`canonical.messages_hash`), so it is exactly a 64-bit number: :func:`codes` turns a
block's keys into a uint64 array in one call, and :class:`KeyIndex` tests and adds them a block
at a time (open addressing, linear probing, vectorised over the block). A dict of the same
codes as Python ints is the simpler choice and was tried: 1,000,000 clean records ingested in
5.9 s with it against 5.4 s with this table (best of three each, load 0.8, `benchmarks/ingest.py
--records 1000000 --also-src`), and the table's ingest peaked about 45 MB lower; the mixed pool
took 6.6 s either way. Each key keeps an ``int64`` value: the ingest's ordinal of the record
that holds it, from which :class:`Locations` names the first copy of a duplicate.
:class:`Seen` holds an ingest's keys and ids.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter

import numpy as np

_HEX16 = re.compile(r"[0-9a-f]{16}")


def code_of(text: str) -> int | None:
    """The 64-bit number a key spells, or None for text that is no key (16 lowercase hex digits)."""
    return int(text, 16) if len(text) == 16 and _HEX16.fullmatch(text) else None


def codes(keys: list[str]) -> np.ndarray:
    """The numbers of ``keys`` (each 16 lowercase hex digits), as uint64."""
    if not keys:
        return np.zeros(0, np.uint64)
    return np.frombuffer(bytes.fromhex("".join(keys)), ">u8").astype(np.uint64)


class KeyIndex:
    """A set of 64-bit codes, each with an int64 value. Slot code 0 means empty; the code 0
    itself (the key ``0000000000000000``) is kept aside."""

    def __init__(self, capacity: int = 1 << 12):
        self._keys = np.zeros(capacity, np.uint64)
        self._values = np.zeros(capacity, np.int64)
        self._mask = np.uint64(capacity - 1)
        self._size = 0
        self._zero: int | None = None  # the value of code 0

    def __len__(self) -> int:
        return self._size + (self._zero is not None)

    def find(self, codes: np.ndarray) -> np.ndarray:
        """The value of each code, or -1 for a code not in the index."""
        out = np.full(len(codes), -1, np.int64)
        codes = np.asarray(codes, np.uint64)
        zero = codes == 0
        if zero.any() and self._zero is not None:
            out[zero] = self._zero
        active = np.flatnonzero(~zero)
        slot = codes[active] & self._mask
        while len(active):
            found = self._keys[slot]
            hit = found == codes[active]
            out[active[hit]] = self._values[slot[hit]]
            more = ~hit & (found != 0)
            active, slot = active[more], (slot[more] + np.uint64(1)) & self._mask
        return out

    def get(self, code: int | None) -> int | None:
        """The value of one code (None for None or a code not in the index): probed here, as a
        numpy call per record would cost more than the probe."""
        if code is None:
            return None
        if code == 0:
            return self._zero
        keys, mask = self._keys, int(self._mask)
        slot = code & mask
        while True:
            found = int(keys[slot])
            if found == code:
                return int(self._values[slot])
            if found == 0:
                return None
            slot = (slot + 1) & mask

    def add_one(self, code: int, value: int) -> None:
        """Add one code (not in the index yet)."""
        if code == 0:
            self._zero = value
            return
        if 2 * (self._size + 1) > len(self._keys):
            self._grow(self._size + 1)
        keys, mask = self._keys, int(self._mask)
        slot = code & mask
        while int(keys[slot]) != 0:
            slot = (slot + 1) & mask
        keys[slot] = code
        self._values[slot] = value
        self._size += 1

    def add(self, codes: np.ndarray, values: np.ndarray) -> None:
        """Add ``codes`` (distinct, and none in the index yet) with their ``values``."""
        codes = np.asarray(codes, np.uint64)
        values = np.asarray(values, np.int64)
        zero = codes == 0
        if zero.any():
            self._zero = int(values[zero][0])
            codes, values = codes[~zero], values[~zero]
        if 2 * (self._size + len(codes)) > len(self._keys):
            self._grow(self._size + len(codes))
        self._insert(codes, values)
        self._size += len(codes)

    def _insert(self, codes: np.ndarray, values: np.ndarray) -> None:
        pending = np.arange(len(codes))
        slot = codes & self._mask
        one = np.uint64(1)
        while len(pending):
            mine = codes[pending]
            empty = self._keys[slot] == 0
            # Every code that found an empty slot writes itself there; where two of this batch
            # found the same slot, one write stays, and the other code reads back another.
            self._keys[slot[empty]] = mine[empty]
            won = np.zeros(len(pending), bool)
            won[empty] = self._keys[slot[empty]] == mine[empty]
            self._values[slot[won]] = values[pending[won]]
            lost = ~won
            pending, slot = pending[lost], (slot[lost] + one) & self._mask

    def _grow(self, size: int) -> None:
        capacity = len(self._keys)
        while 2 * size > capacity:
            capacity *= 4  # rehashing is most of the cost of growing: fewer, larger steps
        used = self._keys != 0
        keys, values = self._keys[used], self._values[used]
        self._keys = np.zeros(capacity, np.uint64)
        self._values = np.zeros(capacity, np.int64)
        self._mask = np.uint64(capacity - 1)
        self._insert(keys, values)


class Locations:
    """Where each record an ingest kept is, by its ordinal (the order it was kept in). A
    vectorised run is one entry (its file and its records' positions), so a kept record costs 8
    bytes here, not a tuple."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.parts: list[tuple] = []
        self.size = 0

    def add_run(self, file: str, positions: np.ndarray, by_row: bool) -> int:
        """Records at ``positions`` (lines, or rows with ``by_row``) of ``file``; returns the
        first one's ordinal."""
        first = self.size
        self.starts.append(first)
        # A copy: a view would keep alive the buffer it came in (a worker's frame, all of a
        # block's columns) for the whole ingest.
        self.parts.append((file, np.array(positions, np.int64), by_row))
        self.size += len(positions)
        return first

    def add(self, where: tuple) -> int:
        self.starts.append(self.size)
        self.parts.append((where,))
        self.size += 1
        return self.size - 1

    def get(self, ordinal: int | None) -> tuple | None:
        """The (file, line, row) of record ``ordinal`` (None for None)."""
        if ordinal is None:
            return None
        i = bisect.bisect_right(self.starts, ordinal) - 1
        part = self.parts[i]
        if len(part) == 1:
            return part[0]
        file, positions, by_row = part
        at = int(positions[ordinal - self.starts[i]])
        return (file, None, at) if by_row else (file, at, None)


class Seen:
    """The records an ingest kept, for finding duplicates: each one's dedup key, and its sample
    id where that is not its key (an own id, or the content hash of text the dedup key
    normalised), each leading to where the record is. Keys and ids that are 16 hex digits live
    in :class:`KeyIndex` es; any other id (only an own id can be one) in a dict. A key is always
    16 hex digits, so it can never equal an id of the dict."""

    def __init__(self) -> None:
        self.keys = KeyIndex()
        self.hex_ids = KeyIndex()
        self.other_ids: dict[str, tuple] = {}
        self.locations = Locations()

    def first_copy(self, key: str) -> tuple | None:
        """Where the record with dedup key ``key`` is, if one was kept."""
        return self.locations.get(self.keys.get(code_of(key)))

    def id_holder(self, sample_id: str, content: str) -> tuple | None:
        """Where a kept record uses ``sample_id`` (as its id, or, unless ``sample_id`` is the
        record's own content hash ``content``, as its dedup key)."""
        code = code_of(sample_id)
        if code is None:
            return self.other_ids.get(sample_id)
        prior = self.locations.get(self.hex_ids.get(code))
        if prior is None and sample_id != content:
            prior = self.locations.get(self.keys.get(code))
        return prior

    def add(self, sample_id: str, key: str, where: tuple) -> None:
        """Keep a record (whose key and id were found in neither map)."""
        ordinal = self.locations.add(where)
        self.keys.add_one(code_of(key), ordinal)
        if sample_id != key:
            code = code_of(sample_id)
            if code is None:
                self.other_ids[sample_id] = where
            else:
                self.hex_ids.add_one(code, ordinal)

    @staticmethod
    def _own(prep, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i0, i1 = np.searchsorted(prep.own, k0), np.searchsorted(prep.own, k1)
        return prep.own[i0:i1], prep.own_hex[i0:i1], prep.own_codes[i0:i1]

    def all_new(self, prep, k0: int, k1: int) -> bool:
        """Whether no record ``k0:k1`` of ``prep`` (a :class:`vectorised.Prepared`) can be a
        duplicate: their dedup keys, and their ids that are not their keys, are all distinct, and
        none was seen before. (Stricter than the record-by-record test, which is what a run that
        fails it takes.)"""
        codes = prep.key_codes[k0:k1]
        if len(np.unique(codes)) != len(codes):
            return False
        if (self.keys.find(codes) >= 0).any() or (self.hex_ids.find(codes) >= 0).any():
            return False
        own, own_hex, own_codes = self._own(prep, k0, k1)
        if len(own):
            spelled = own_codes[own_hex]
            if len(np.unique(spelled)) != len(spelled) or np.isin(spelled, codes).any():
                return False
            if (self.keys.find(spelled) >= 0).any() or (self.hex_ids.find(spelled) >= 0).any():
                return False
            if not own_hex.all():
                names = [prep.sample_ids[k] for k in own[~own_hex].tolist()]
                if len(set(names)) != len(names) or not self.other_ids.keys().isdisjoint(names):
                    return False
        return True

    def add_run(self, prep, k0: int, k1: int) -> None:
        """Keep records ``k0:k1`` of ``prep`` (which passed :meth:`all_new`)."""
        self.add_records(prep, np.arange(k0, k1))

    def add_records(self, prep, ks: np.ndarray) -> None:
        """Keep records ``ks`` (in order) of ``prep``, none of which shares its key or id with a
        record seen before or another of ``ks``."""
        if not len(ks):
            return
        first = self.locations.add_run(prep.file, prep.positions[ks], prep.by_row)
        self.keys.add(prep.key_codes[ks], np.arange(first, first + len(ks), dtype=np.int64))
        at = np.searchsorted(prep.own, ks)
        mine = (at < len(prep.own)) & (prep.own[np.minimum(at, len(prep.own) - 1)] == ks) if len(prep.own) else np.zeros(len(ks), bool)
        if mine.any():
            i = at[mine]  # their entries in prep.own
            hexed = prep.own_hex[i]
            self.hex_ids.add(prep.own_codes[i][hexed], first + np.flatnonzero(mine)[hexed])
            for k in prep.own[i[~hexed]].tolist():
                self.other_ids[prep.sample_ids[k]] = prep.where(k)

    def split_run(self, prep, k0: int, k1: int) -> tuple[np.ndarray, list[int]]:
        """Records ``k0:k1`` of ``prep`` as (those that share no key or id with a record seen
        before or with another of the run, which are all kept whatever order the others are
        taken in; the rest, in order, for the record-by-record test)."""
        ks = np.arange(k0, k1)
        codes = prep.key_codes[k0:k1]
        own, own_hex, own_codes = self._own(prep, k0, k1)
        spelled = own_codes[own_hex]
        # Every 64-bit name in the run (keys, and ids of 16 hex digits): a name used twice
        # marks each record that uses it.
        names = np.concatenate([codes, spelled])
        _, inverse, counts = np.unique(names, return_inverse=True, return_counts=True)
        shared = counts[inverse] > 1
        shared |= (self.keys.find(names) >= 0) | (self.hex_ids.find(names) >= 0)
        suspect = shared[:len(codes)].copy()
        owner = own[own_hex] - k0
        suspect[owner[shared[len(codes):]]] = True
        others = own[~own_hex].tolist()
        if others:
            ids = [prep.sample_ids[k] for k in others]
            seen_twice = {i for i, n in Counter(ids).items() if n > 1}
            for k, i in zip(others, ids):
                if i in seen_twice or i in self.other_ids:
                    suspect[k - k0] = True
        return ks[~suspect], ks[suspect].tolist()
