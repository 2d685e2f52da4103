"""Ingest a pool: read, validate, deduplicate, shard, and commit to the store.

Every input record ends in exactly one place: a shard (``records_ok``), or the quarantine
file with its location and reason (``records_rejected`` and ``duplicates``), so
``records_in == records_ok + records_rejected + duplicates`` always holds. Duplicates are
found by :func:`canonical.dedup_key` (NFKC, invisible characters removed, whitespace
collapsed), never by the sample id, which stays the exact content hash. The unreadable rest of
a damaged file counts as one rejected record (``damaged_file``). The quarantine is written even
when no record was valid, and the error names it.

A shard's rows record the input's source name (see :func:`readers.expand`), not the path as
typed, so the same file gives the same shard hashes and pool fingerprint from any working
folder, typed relatively or absolutely, on any machine.

Sharding is per input file, in order, ``shard_size`` valid records at a time. Appending
lines to one file therefore changes only that file's last shard (and adds new ones); a new
file adds new shards; every other shard keeps its content hash, and so its cached scores.
With ``pack_small_files`` shards are cut across file ends instead (each shard's manifest entry
lists its files and their row counts), so 10,000 files of 10 records make 100 shards, not
10,000; appending a file (or lines to the last one) then changes only the pool's last shard and
adds new ones, while a file inserted before others moves the cut of every shard after it. It is
off by default: it would change the shard hashes of every pool of more than one file.
Shards are content-addressed in the store (``shards/<content_hash>.parquet``), so an
unchanged shard is not even rewritten.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from syllabus.pool import vectorised
from syllabus.pool.canonical import DEFAULT_MAX_CHARS, SCHEMA, FieldMap, RecordRejected, Sample, normalise
from syllabus.pool.dedup import Seen
from syllabus.pool.prepare_workers import PrepareWorkers
from syllabus.pool.readers import LineBlock, RawRecord, expand, read, read_blocks
from syllabus.pool.special_tokens import SpecialTokenCounts, quarantine_reason, spelled_tokens
from syllabus.pool.vectorised import attach, prepare_batch, prepare_lines
from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1000
MANIFEST_VERSION = 1
# JSONL and Parquet files take the vectorised path (syllabus.pool.vectorised); False sends
# every record through the per-record path, for tests and benchmarks that compare the two.
VECTORISED = True


class NothingValidError(ValueError):
    """No input record survived validation. ``quarantine_url`` holds the rejected records."""

    def __init__(self, message: str, quarantine_url: str | None = None):
        super().__init__(message)
        self.quarantine_url = quarantine_url


@dataclass
class FileStats:
    records_in: int = 0
    records_ok: int = 0
    records_rejected: int = 0
    duplicates: int = 0


@dataclass
class IngestResult:
    manifest: dict[str, Any]
    manifest_url: str
    quarantine_url: str
    shards_written: int
    shards_reused: int
    reasons: Counter = field(default_factory=Counter)
    per_file: dict[str, FileStats] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "records_in": m["records_in"],
            "records_ok": m["records_ok"],
            "records_rejected": m["records_rejected"],
            "duplicates": m["duplicates"],
            "shards": len(m["shards"]),
            "shards_written": self.shards_written,
            "shards_reused": self.shards_reused,
            "pool_fingerprint": m["pool_fingerprint"],
            "manifest": self.manifest_url,
            "quarantine": self.quarantine_url,
            "rejected_by_reason": dict(sorted(self.reasons.items())),
            "special_tokens": m.get("special_tokens"),
        }


def _row_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"


def shard_content_hash(rows: list[dict[str, Any]]) -> str:
    """Hash of a shard's canonical rows: independent of Parquet encoding and library versions."""
    h = hashlib.sha256()
    for row in rows:
        h.update(_row_line(row).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:20]


def _text(blob: str) -> bytes:
    """UTF-8 bytes that any JSON document survives: a lone surrogate (from a file name with
    undecodable bytes) can sit only inside a JSON string, where backslashreplace writes it as
    the ``\\udcxx`` escape json.loads reads back, so the file stays valid UTF-8."""
    return blob.encode("utf-8", "backslashreplace")


# JSON leaves these raw inside strings, and str.splitlines() (unlike a file's own line
# iteration) breaks lines at them, so a quarantine line holding one read back as two halves.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _jsonl_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


def _printable(name: str) -> str:
    """A source name as stored in rows: undecodable file-name bytes become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _slug(name: str) -> str:
    tail = "/".join(name.replace("\\", "/").split("/")[-2:])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tail).strip("_")[:80] or "pool"


class _Sharder:
    """Collects valid rows of one file and commits them in fixed-size, content-addressed shards.

    Pending rows come as segments, in order: rows of the per-record path (tuples holding the
    JSON line :func:`shard_content_hash` hashes), or runs of a vectorised block's rows
    (:class:`vectorised.Prepared`, whose ``line`` column holds the same line), so a shard's
    hash and table are the same whichever path made its rows. A shard's hash and manifest entry
    are made here, in order; its Parquet is encoded and committed by a worker thread (the zstd
    encoder and the store's fsync release the GIL), at most :data:`_IN_FLIGHT` shards behind,
    so memory stays flat."""

    def __init__(self, store: Store, shard_size: int, pack: bool = False):
        self.store, self.shard_size, self.pack = store, shard_size, pack
        self.shards: list[dict[str, Any]] = []
        self.written = self.reused = 0
        # Each a list of tuples (the per-record path), or [Prepared, list of its row indices].
        self.segments: list[list] = []
        self.count = 0  # pending rows
        # The files whose rows are pending, each with its slug, its shard count so far and the
        # position of its first pending row: more than one only when small files are packed.
        self.marks: list[list] = []
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="shard-commit")
        self._in_flight: deque[Future] = deque()

    def start_file(self, source: str, file: str, slug: str) -> None:
        """Rows from here on come from ``file``. Without packing, the previous file's rows were
        cut into their own last shard (see end_file)."""
        self.marks = [m for m in self.marks if m[4] < self.count]  # a file that added no row
        self.marks.append([source, file, slug, 0, self.count])

    def end_file(self) -> None:
        if not self.pack:
            self.flush()

    def add_sample(self, sample: Sample) -> None:
        row = sample.row()
        m = sample.messages
        pair = len(m) == 2 and m[0]["role"] == "user" and m[1]["role"] == "assistant" and m[1]["content"] == sample.output \
            and len(m[0]) == 2 and len(m[1]) == 2
        row = (row["sample_id"], row["source"], row["instruction"], row["input"], row["output"],
               m[0]["content"] if pair else None, None if pair else m, row["metadata"], _row_line(row))
        if self.segments and self.segments[-1][0].__class__ is tuple:
            self.segments[-1].append(row)
        else:
            self.segments.append([row])
        self.count += 1
        if self.count == self.shard_size:
            self.flush()

    def add_rows(self, prep: Any, ks: Iterable[int]) -> None:
        """Rows ``ks`` (in order) of a vectorised block."""
        ks = list(ks)
        while ks:
            room = self.shard_size - self.count
            part, ks = ks[:room], ks[room:]
            last = self.segments[-1] if self.segments else None
            if last is not None and last[0] is prep:
                last[1] += part
            else:
                self.segments.append([prep, part])
            self.count += len(part)
            if self.count == self.shard_size:
                self.flush()

    def flush(self) -> None:
        segments, count = self.segments, self.count
        if not count:
            return
        self.segments, self.count = [], 0
        marks = [m for m in self.marks if m[4] < count]
        source, file, slug, index, _ = marks[0]
        h = hashlib.sha256()
        parts = []  # per segment: a table of SCHEMA, or the tuples
        first_id = last_id = None
        for seg in segments:
            if seg[0].__class__ is tuple:
                h.update("".join([r[8] for r in seg]).encode("utf-8", "surrogatepass"))
                ids = (seg[0][0], seg[-1][0])
                parts.append(seg)
            else:
                prep, ks = seg
                ids = (prep.sample_id(ks[0]), prep.sample_id(ks[-1]))
                cols = prep.columns
                if ks[-1] - ks[0] + 1 == len(ks):
                    cols = cols.slice(ks[0], len(ks))
                else:
                    cols = cols.take(pa.array(ks))
                lines = _one_chunk(cols.column("line"))
                offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
                h.update(memoryview(lines.buffers()[2])[int(offsets[0]):int(offsets[-1])])
                parts.append(cols)
            first_id = ids[0] if first_id is None else first_id
            last_id = ids[1]
        digest = h.hexdigest()[:20]
        key = f"shards/{digest}.parquet"
        entry = {
            "name": f"shard-{slug}-{index:05d}",
            "source": source,
            "file": file,
            "index": index,
            "key": key,
            "url": self.store.url(key),
            "content_hash": digest,
            "rows": count,
            "first_sample_id": first_id,
            "last_sample_id": last_id,
        }
        if self.pack:
            # Which files the shard holds rows of, in order, and how many of each.
            ends = [m[4] for m in marks[1:]] + [count]
            entry["files"] = [{"file": m[1], "source": m[0], "rows": end - m[4]} for m, end in zip(marks, ends)]
        self.shards.append(entry)
        marks[0][3] += 1  # the next shard that starts in that file
        current = self.marks[-1]
        current[4] = 0
        self.marks = [current]
        while len(self._in_flight) >= _IN_FLIGHT:
            self._collect(self._in_flight.popleft())
        self._in_flight.append(self._pool.submit(self._commit, key, digest, source, parts))

    def _commit(self, key: str, digest: str, source: str, parts: list) -> bool:
        if self.store.is_committed(key):
            return False
        self.store.commit_table(key, _shard_table(parts), {"content_hash": digest, "source": source})
        return True

    def _collect(self, future: Future) -> None:
        if future.result():
            self.written += 1
        else:
            self.reused += 1

    def close(self) -> None:
        """Wait for every shard's commit (raising the first failure)."""
        try:
            while self._in_flight:
                self._collect(self._in_flight.popleft())
        finally:
            for future in self._in_flight:
                future.cancel()
            self._pool.shutdown(wait=True)


# Most of a commit is waiting for the store (fsync, a PUT) or for a core: four at once, eight shards
# in flight at most (on 2 busy cores, 200 shards of 1,000 rows took 2.3 s to commit with four
# workers against 3.2 s with two; eight were no faster).
_WORKERS, _IN_FLIGHT = 4, 8


def _shard_table(parts: list) -> pa.Table:
    """A shard's table from its segments (see _Sharder.flush): the same Arrow data, and so the
    same Parquet bytes, whichever path made its rows."""
    tables = [_table(p) if isinstance(p, list) else _columns_table(p) for p in parts]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array (combine_chunks copies even a single chunk)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _columns_table(cols: pa.Table) -> pa.Table:
    """A table of SCHEMA from a vectorised block's rows (vectorised.ROW_COLUMNS)."""
    return pa.Table.from_arrays([_one_chunk(cols.column(name)) for name in SCHEMA.names], schema=SCHEMA)


def _table(rows: list[tuple]) -> pa.Table:
    """A shard's rows as a table of SCHEMA: the same Arrow data, and so the same Parquet bytes,
    as ``pa.Table.from_pylist`` of the rows' dicts."""
    n = len(rows)
    ids, sources, instructions, inputs, outputs, users, messages, metadata = list(zip(*rows))[:8]
    messages_type = SCHEMA.field("messages").type
    if all(m is None for m in messages):
        contents: list[str | None] = [None] * (2 * n)
        contents[0::2] = users
        contents[1::2] = outputs
        turns = pa.StructArray.from_arrays(
            [pa.array(["user", "assistant"] * n, pa.string()), pa.array(contents, pa.string())],
            fields=list(messages_type.value_type),
        )
        turn_lists = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), turns, type=messages_type)
    else:
        turn_lists = pa.array(
            [m if m is not None else [{"role": "user", "content": u}, {"role": "assistant", "content": o}]
             for m, u, o in zip(messages, users, outputs)],
            type=messages_type,
        )
    columns = [ids, sources, instructions, inputs, outputs, None, metadata]
    return pa.Table.from_arrays([turn_lists if c is None else pa.array(c, pa.string()) for c in columns], schema=SCHEMA)


def _quarantine_entry(rec: RawRecord, code: str, reason: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"location": rec.location, "file": rec.file, "code": code, "reason": reason}
    if rec.line is not None:
        entry["line"] = rec.line
    if rec.row is not None:
        entry["row"] = rec.row
    if rec.offset is not None:
        entry["offset"] = rec.offset
    if rec.raw is not None:
        entry["raw"] = rec.raw
    elif rec.raw_b64 is not None:
        entry["raw_b64"] = rec.raw_b64
    elif rec.raw_prefix is not None:
        entry["raw_prefix"] = rec.raw_prefix
    elif rec.value is not None:
        entry["raw"] = json.dumps(rec.value, ensure_ascii=True, default=str)
    return entry


# Blocks prepared ahead of the one being deduplicated and sharded, by this many threads (see _prepared).
_AHEAD, _PREPARERS = 3, 2
def _workers_setting(value: str | None) -> int:
    """SYLLABUS_INGEST_WORKERS: a whole number of worker processes, 0 or more (unset: 2)."""
    if value is None or not value.strip():
        return 2
    if not value.strip().isdigit():
        raise ValueError(f"SYLLABUS_INGEST_WORKERS={value!r} is not a number of worker processes; set it to 0 "
                         "(threads only), 1, 2 ... or unset it for the default of 2")
    return int(value)


# JSONL blocks are prepared by this many worker processes once a file has more than
# _PROCESS_AFTER blocks (0: threads only; SYLLABUS_INGEST_WORKERS sets it). Most of preparing a block holds the GIL (hashing,
# building the rows' lists, Python between pyarrow's calls), which threads share with the
# deduplication and sharding here; a process has its own. Starting one costs about a second of
# imports, so small files (and most tests) keep to threads.
PREPARE_PROCESSES = _workers_setting(os.environ.get("SYLLABUS_INGEST_WORKERS"))
_PROCESS_AFTER = 4


class _Preparers:
    """Where blocks are prepared: threads, and for long JSONL files worker processes
    (:mod:`syllabus.pool.prepare_workers`), started once per ingest when a file grows past
    :data:`_PROCESS_AFTER` blocks. Blocks go to threads while the processes start, and for good
    if they cannot."""

    def __init__(self, processes: int):
        self.threads = ThreadPoolExecutor(max_workers=_PREPARERS, thread_name_prefix="ingest-prepare")
        self.processes = processes
        self.workers: PrepareWorkers | None = None

    def submit(self, item: Any, index: int, source: str, fields: FieldMap, max_chars: int) -> Future:
        if isinstance(item, LineBlock) and self.processes and index >= _PROCESS_AFTER:
            if self.workers is None:
                self.workers = PrepareWorkers(self.processes)
            if self.workers.ready:
                return self.workers.submit("prepare_lines", (item, source, fields, max_chars, vectorised.MIN_ROWS),
                                           _prepare_here, functools.partial(attach, block=item))
        if isinstance(item, LineBlock):
            return self.threads.submit(prepare_lines, item, source, fields, max_chars)
        return self.threads.submit(prepare_batch, item, source, fields, max_chars)

    def close(self) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)
        if self.workers is not None:
            self.workers.close()


def _prepare_here(block: LineBlock, source: str, fields: FieldMap, max_chars: int, min_rows: int) -> Any:
    """A block that a worker process could not prepare, prepared in this one."""
    return prepare_lines(block, source, fields, max_chars)


def _source_of(file: str, url: str, source: str) -> str:
    """The source rows of ``file`` (read from input ``url``, named ``source``) record: a saved
    dataset's split is named url[split], and its rows keep the split."""
    return source + file[len(url):] if file != url and file.startswith(url) else source


def _prepared(items: Iterable[Any], url: str, source: str, fields: FieldMap, max_chars: int,
              preparers: _Preparers) -> Iterator[Any]:
    """``items`` (from :func:`readers.read_blocks`) in order, each block made a
    :class:`vectorised.Prepared` by a worker thread or process (see _Preparers) up to
    :data:`_AHEAD` blocks ahead (with processes, one more per process), while this thread
    deduplicates and shards the block before (and the shard writers encode)."""
    ahead = _AHEAD
    pending: deque = deque()
    for index, item in enumerate(items):
        if isinstance(item, RawRecord):
            pending.append(item)
        else:
            pending.append(preparers.submit(item, index, _source_of(item.file, url, source), fields, max_chars))
            if preparers.workers is not None:
                ahead = _AHEAD + preparers.processes
        while len(pending) > ahead:
            head = pending.popleft()
            yield head if isinstance(head, RawRecord) else head.result()
    while pending:
        head = pending.popleft()
        yield head if isinstance(head, RawRecord) else head.result()


def ingest_pool(
    inputs: Iterable[str],
    store: Store,
    shard_size: int = DEFAULT_SHARD_SIZE,
    fields: FieldMap = FieldMap(),
    max_chars: int = DEFAULT_MAX_CHARS,
    progress: bool | None = None,
    special_tokens: str = "keep",
    vectorised: bool | None = None,
    pack_small_files: bool = False,
) -> IngestResult:
    """Ingest ``inputs`` (files, directories, saved datasets, URLs) into ``store``.
    ``special_tokens``: what to do with records that spell chat-template tokens (``keep`` them
    as text, or ``quarantine`` them; :mod:`syllabus.pool.special_tokens`). ``vectorised``
    (default :data:`VECTORISED`): read JSONL and Parquet files through
    :mod:`syllabus.pool.vectorised`; ``False`` sends every record through the per-record path
    (same ids, shards, quarantine and fingerprint, only slower). ``pack_small_files``: cut
    shards across file ends, so that many small files make full shards (each shard's entry then
    lists the files it holds rows of: ``files``); off, each file's rows end in a shard of their
    own, as pools ingested before this option were cut."""
    if vectorised is None:
        vectorised = VECTORISED
    if shard_size < 1:
        raise ValueError(f"shard size {shard_size} must be at least 1")
    if max_chars < 1:
        raise ValueError(f"--max-chars {max_chars} must be at least 1: it is the most characters a record may have")
    spelled_counts = SpecialTokenCounts(special_tokens)
    started = time.perf_counter()
    files = expand(list(inputs))
    sharder = _Sharder(store, shard_size, pack=pack_small_files)
    preparers = _Preparers(PREPARE_PROCESSES)
    quarantine: list[dict[str, Any]] = []
    reasons: Counter = Counter()
    per_file: dict[str, FileStats] = {}
    # The dedup keys and ids of the records kept, mostly as numbers in numpy tables (dicts of
    # their strings and locations held 390 MB for a million records); an id that is the dedup
    # key (the content hash of text already normalised) needs no second entry, as the keys
    # already catch its repeats.
    kept = Seen()

    slugs: set[str] = set()

    bar = tqdm(desc="ingest", unit="rec", disable=progress is False if progress is not None else None)
    try:
        for url, kind, source in files:
            source = _printable(source)
            # Two inputs may share a source name (two folders each with data.jsonl); shard names
            # must stay unique, since score manifests refer to shards by name.
            slug = base_slug = _slug(source)
            n = 2
            while slug in slugs:
                slug, n = f"{base_slug}-{n}", n + 1
            slugs.add(slug)
            stats = per_file.setdefault(url, FileStats())
            sharder.start_file(source, url, slug)

            def seen(sample_id: str, content: str, key: str, where: tuple) -> tuple[str, str] | None:
                """The duplicate code and reason for a record, or None (and it is recorded)."""
                # Duplicates are found by the dedup key (canonical's docstring: Unicode spelling,
                # invisible characters and whitespace do not count); ids stay the exact hashes.
                first = kept.first_copy(key)
                # An own id may equal another record's content-hash id, and the other way round.
                prior = kept.id_holder(sample_id, content)
                if first is not None:
                    return "duplicate_content", (
                        f"duplicate of the record at {RawRecord(*first).location} (compared after Unicode NFKC "
                        "normalisation, with invisible characters removed and whitespace collapsed)")
                if prior is not None:
                    return "duplicate_id", (
                        f'id "{sample_id}" is already used by the record at {RawRecord(*prior).location} with different '
                        "content; give the records distinct ids")
                kept.add(sample_id, key, where)
                return None

            def reject(rec: RawRecord, code: str, reason: str) -> None:
                """Quarantine ``rec``: a duplicate of content counts as a duplicate, anything else
                as rejected."""
                quarantine.append(_quarantine_entry(rec, code, reason))
                reasons[code] += 1
                if code == "duplicate_content":
                    stats.duplicates += 1
                else:
                    stats.records_rejected += 1

            def take(rec: RawRecord) -> None:
                """The per-record path."""
                stats.records_in += 1
                code, reason = None, None
                sample: Sample | None = None
                if rec.error is not None:
                    code, reason = rec.error
                else:
                    try:
                        sample = normalise(rec.value, _source_of(rec.file, url, source), fields, max_chars)
                    except RecordRejected as exc:
                        code, reason = exc.code, exc.reason
                spelled = spelled_tokens(t["content"] for t in sample.messages) if sample is not None else []
                if spelled and special_tokens == "quarantine":
                    code, reason, sample = "special_tokens", quarantine_reason(spelled), None
                    spelled_counts.add(spelled)
                if sample is not None:
                    dup = seen(sample.sample_id, sample.content_hash, sample.dedup_key, (rec.file, rec.line, rec.row))
                    if dup is not None:
                        code, reason = dup
                if code is not None:
                    reject(rec, code, reason)
                    return
                stats.records_ok += 1
                spelled_counts.add(spelled)
                sharder.add_sample(sample)

            items = _prepared(read_blocks(url, kind, max_chars=max_chars), url, source, fields, max_chars, preparers) if vectorised \
                else read(url, kind, max_chars=max_chars)
            for prep in items:
                if isinstance(prep, RawRecord):
                    bar.update(1)
                    take(prep)
                    continue
                for run in prep.runs:
                    if run.__class__ is not tuple:
                        bar.update(1)
                        take(run)
                        continue
                    k0, k1 = run
                    bar.update(k1 - k0)
                    stats.records_in += k1 - k0
                    if kept.all_new(prep, k0, k1):
                        kept.add_run(prep, k0, k1)
                        stats.records_ok += k1 - k0
                        sharder.add_rows(prep, range(k0, k1))
                        continue
                    # The records sharing no key or id with another are kept at once; the rest
                    # take the record-by-record test, in order (they can only meet each other).
                    clean, suspects = kept.split_run(prep, k0, k1)
                    kept.add_records(prep, clean)
                    taken = clean.tolist()
                    for k in suspects:
                        dup = seen(prep.sample_id(k), prep.content(k), prep.key(k), prep.where(k))
                        if dup is not None:
                            reject(prep.record(k), *dup)
                            continue
                        taken.append(k)
                    stats.records_ok += len(taken)
                    sharder.add_rows(prep, sorted(taken))
            sharder.end_file()
        sharder.flush()
    finally:
        bar.close()
        preparers.close()
        sharder.close()  # every shard committed (or the first failure raised)

    totals = FileStats()
    for s in per_file.values():
        for k in vars(totals):
            setattr(totals, k, getattr(totals, k) + getattr(s, k))
    assert totals.records_in == totals.records_ok + totals.records_rejected + totals.duplicates

    quarantine_blob = _text("".join(_jsonl_line(q) for q in quarantine))
    if totals.records_ok == 0:
        where = ", ".join(per_file) or ", ".join(inputs)
        top = ", ".join(f"{n} {c}" for c, n in reasons.most_common(3)) or "no records at all"
        quarantine_url = None
        saved = ""
        if quarantine:
            # Written so the rejects can be inspected; no manifest, as there is no pool.
            key = f"ingests/rejected-{hashlib.sha256(quarantine_blob).hexdigest()[:16]}/quarantine.jsonl"
            store.commit(key, quarantine_blob, {"rows": len(quarantine)})
            quarantine_url = store.url(key)
            saved = f"; each rejected record, with its location and reason, is in {quarantine_url}"
        raise NothingValidError(
            f"no valid record was read from {where} ({totals.records_in} records: {top}); "
            f"check the format and field names (map them with --field role=NAME){saved}",
            quarantine_url,
        )

    pool_fingerprint = content_hash([s["content_hash"] for s in sharder.shards], length=20)
    ingest_id = content_hash([pool_fingerprint, hashlib.sha256(quarantine_blob).hexdigest()], length=16)
    quarantine_key = f"ingests/{ingest_id}/quarantine.jsonl"
    manifest_key = f"ingests/{ingest_id}/manifest.json"
    store.commit(quarantine_key, quarantine_blob, {"rows": len(quarantine)})
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "pool_fingerprint": pool_fingerprint,
        "ingest_id": ingest_id,
        "store": store.url(""),
        "inputs": list(per_file),
        "shard_size": shard_size,
        "max_chars": max_chars,
        "records_in": totals.records_in,
        "records_ok": totals.records_ok,
        "records_rejected": totals.records_rejected,
        "duplicates": totals.duplicates,
        "per_file": {k: vars(v) for k, v in per_file.items()},
        "rejected_by_reason": dict(sorted(reasons.items())),
        "special_tokens": spelled_counts.summary(),
        "quarantine": store.url(quarantine_key),
        **({"pack_small_files": True} if pack_small_files else {}),
        "shards": sharder.shards,
        "seconds": round(time.perf_counter() - started, 3),
    }
    store.commit(manifest_key, _text(json.dumps(manifest, indent=2, ensure_ascii=False)), {"pool_fingerprint": pool_fingerprint})
    log.info(
        "ingested %d records: %d ok, %d rejected, %d duplicates; %d shards (%d new, %d reused)",
        totals.records_in, totals.records_ok, totals.records_rejected, totals.duplicates,
        len(sharder.shards), sharder.written, sharder.reused,
    )
    if spelled_counts.records:
        log.warning("%d records spell chat-template tokens (%s); policy %s: %s", spelled_counts.records,
                    ", ".join(f"{t} {n}" for t, n in sorted(spelled_counts.by_token.items())), special_tokens,
                    "quarantined" if special_tokens == "quarantine" else "kept, the strings stay plain text")
    return IngestResult(manifest, store.url(manifest_key), store.url(quarantine_key), sharder.written, sharder.reused, reasons, per_file)
