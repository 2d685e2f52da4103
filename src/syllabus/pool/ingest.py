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
Shards are content-addressed in the store (``shards/<content_hash>.parquet``), so an
unchanged shard is not even rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa
from tqdm.auto import tqdm

from syllabus.pool.canonical import DEFAULT_MAX_CHARS, SCHEMA, FieldMap, RecordRejected, Sample, normalise
from syllabus.pool.readers import RawRecord, expand, read
from syllabus.pool.special_tokens import SpecialTokenCounts, quarantine_reason, spelled_tokens
from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1000
MANIFEST_VERSION = 1


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


def shard_content_hash(rows: list[dict[str, Any]]) -> str:
    """Hash of a shard's canonical rows: independent of Parquet encoding and library versions."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
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
    """Collects valid rows of one file and commits them in fixed-size, content-addressed shards."""

    def __init__(self, store: Store, shard_size: int):
        self.store, self.shard_size = store, shard_size
        self.shards: list[dict[str, Any]] = []
        self.written = self.reused = 0

    def flush(self, source: str, file: str, slug: str, index: int, rows: list[dict[str, Any]]) -> None:
        digest = shard_content_hash(rows)
        key = f"shards/{digest}.parquet"
        if self.store.is_committed(key):
            self.reused += 1
        else:
            table = pa.Table.from_pylist(rows, schema=SCHEMA)
            self.store.commit_table(key, table, {"content_hash": digest, "source": source})
            self.written += 1
        self.shards.append(
            {
                "name": f"shard-{slug}-{index:05d}",
                "source": source,
                "file": file,
                "index": index,
                "key": key,
                "url": self.store.url(key),
                "content_hash": digest,
                "rows": len(rows),
                "first_sample_id": rows[0]["sample_id"],
                "last_sample_id": rows[-1]["sample_id"],
            }
        )


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


def ingest_pool(
    inputs: Iterable[str],
    store: Store,
    shard_size: int = DEFAULT_SHARD_SIZE,
    fields: FieldMap = FieldMap(),
    max_chars: int = DEFAULT_MAX_CHARS,
    progress: bool | None = None,
    special_tokens: str = "keep",
) -> IngestResult:
    """Ingest ``inputs`` (files, directories, saved datasets, URLs) into ``store``.
    ``special_tokens``: what to do with records that spell chat-template tokens (``keep`` them
    as text, or ``quarantine`` them; :mod:`syllabus.pool.special_tokens`)."""
    if shard_size < 1:
        raise ValueError(f"shard size {shard_size} must be at least 1")
    if max_chars < 1:
        raise ValueError(f"--max-chars {max_chars} must be at least 1: it is the most characters a record may have")
    spelled_counts = SpecialTokenCounts(special_tokens)
    started = time.perf_counter()
    files = expand(list(inputs))
    sharder = _Sharder(store, shard_size)
    quarantine: list[dict[str, Any]] = []
    reasons: Counter = Counter()
    per_file: dict[str, FileStats] = {}
    # One entry per sample, so kept small (a million records held 390 MB with location
    # strings in both maps): (file, line, row) shares the file's string, and an id that is the
    # dedup key (the content hash of text already normalised) needs no second entry, as the
    # content map already catches its repeats.
    seen_content: dict[str, tuple[str, int | None, int | None]] = {}  # dedup key -> first copy
    seen_ids: dict[str, tuple[str, int | None, int | None]] = {}  # an id that is not the dedup key -> its record

    slugs: set[str] = set()

    bar = tqdm(desc="ingest", unit="rec", disable=progress is False if progress is not None else None)
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
        rows: list[dict[str, Any]] = []
        index = 0
        for rec in read(url, kind, max_chars=max_chars):
            bar.update(1)
            stats.records_in += 1
            code, reason, duplicate = None, None, False
            sample: Sample | None = None
            if rec.error is not None:
                code, reason = rec.error
            else:
                # A saved dataset's records are named url[split]: keep the split in the source.
                suffix = rec.file[len(url):] if rec.file != url and rec.file.startswith(url) else ""
                try:
                    sample = normalise(rec.value, source + suffix, fields, max_chars)
                except RecordRejected as exc:
                    code, reason = exc.code, exc.reason
            spelled = spelled_tokens(t["content"] for t in sample.messages) if sample is not None else []
            if spelled and special_tokens == "quarantine":
                code, reason, sample = "special_tokens", quarantine_reason(spelled), None
                spelled_counts.add(spelled)
            if sample is not None:
                own_id = sample.sample_id != sample.content_hash
                # Duplicates are found by the dedup key (canonical's docstring: Unicode spelling,
                # invisible characters and whitespace do not count); ids stay the exact hashes.
                first = seen_content.get(sample.dedup_key)
                # An own id may equal another record's content-hash id, and the other way round.
                prior = seen_ids.get(sample.sample_id) or (seen_content.get(sample.sample_id) if own_id else None)
                if first is not None:
                    code, reason, duplicate = "duplicate_content", (
                        f"duplicate of the record at {RawRecord(*first).location} (compared after Unicode NFKC "
                        "normalisation, with invisible characters removed and whitespace collapsed)"), True
                elif prior is not None:
                    code = "duplicate_id"
                    reason = f'id "{sample.sample_id}" is already used by the record at {RawRecord(*prior).location} with different content; give the records distinct ids'
                else:
                    where = (rec.file, rec.line, rec.row)
                    seen_content[sample.dedup_key] = where
                    if sample.sample_id != sample.dedup_key:
                        seen_ids[sample.sample_id] = where
            if code is not None:
                quarantine.append(_quarantine_entry(rec, code, reason))
                reasons[code] += 1
                if duplicate:
                    stats.duplicates += 1
                else:
                    stats.records_rejected += 1
                continue
            stats.records_ok += 1
            spelled_counts.add(spelled)
            rows.append(sample.row())
            if len(rows) == shard_size:
                sharder.flush(source, url, slug, index, rows)
                rows, index = [], index + 1
        if rows:
            sharder.flush(source, url, slug, index, rows)
    bar.close()

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
