"""Readers for every pool format: each yields raw records with their location.

A reader never raises for one bad record: it yields a :class:`RawRecord` whose ``error`` says
what was wrong, so the caller can quarantine it. It raises :class:`PoolInputError` only when a
whole input cannot be opened.

Formats: JSONL (``.jsonl``, ``.ndjson``), JSON arrays (``.json``; a ``.json`` file that holds
JSON lines is read as JSONL), Parquet, CSV/TSV, any of them gzip-compressed (``.gz``),
directories of them (recursively), a directory saved by ``datasets.save_to_disk``, and
``s3://`` (or any fsspec) URLs of all of these.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator

import fsspec

log = logging.getLogger(__name__)

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class PoolInputError(OSError):
    """An input that cannot be opened at all (missing, unreadable, unsupported)."""


@dataclass
class RawRecord:
    file: str
    line: int | None  # 1-based line (text formats) or None
    row: int | None  # 0-based row (tabular formats) or None
    value: Any = None
    error: tuple[str, str] | None = None  # (code, reason)
    raw: str | None = None  # the original text when it is text
    raw_b64: str | None = None  # the original bytes when they are not valid UTF-8

    @property
    def location(self) -> str:
        if self.line is not None:
            return f"{self.file} line {self.line}"
        if self.row is not None:
            return f"{self.file} row {self.row}"
        return self.file


def _fs(url: str):
    try:
        return fsspec.core.url_to_fs(url)
    except Exception as exc:  # unknown protocol, missing credentials library, ...
        raise PoolInputError(f"cannot open pool input {url}: {exc}") from exc


def _kind(path: str) -> tuple[str | None, str | None]:
    name = path.lower()
    compression = None
    if name.endswith(".gz"):
        compression, name = "gzip", name[:-3]
    return SUFFIXES.get(posixpath.splitext(name)[1]), compression


def _display(fs, path: str) -> str:
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if proto in ("file", "local") else f"{proto}://{path}"


def expand(inputs: list[str]) -> list[tuple[str, str]]:
    """Resolve inputs into (display name, kind) pairs in a stable order.

    Directories are walked recursively and sorted; a directory saved by ``datasets`` counts
    as one input of kind ``hf``. Files of unknown type inside a directory are skipped with a
    warning; a named file of unknown type is an error.
    """
    out: list[tuple[str, str]] = []
    for url in inputs:
        fs, path = _fs(url)
        if not fs.exists(path):
            raise PoolInputError(f"pool input {url} does not exist; check the path (or the bucket and credentials)")
        if fs.isdir(path):
            if _is_hf_dir(fs, path):
                out.append((_display(fs, path), "hf"))
                continue
            # One detailed listing gives every entry's type: no stat (an S3 request) per file.
            entries = fs.find(path, withdirs=True, detail=True)
            files = sorted(p for p, info in entries.items() if info["type"] != "directory")
            hf_dirs = sorted(
                {posixpath.dirname(p) for p in files if posixpath.basename(p) in _HF_MARKERS and _is_hf_dir(fs, posixpath.dirname(p))}
            )
            hf_roots = [d for d in hf_dirs if not any(d != o and d.startswith(o + "/") for o in hf_dirs)]
            for root in hf_roots:
                out.append((_display(fs, root), "hf"))
            for p in files:
                if any(p.startswith(r + "/") for r in hf_roots):
                    continue
                base = posixpath.basename(p)
                if base.startswith(".") or base.endswith(".done.json"):
                    continue
                kind, _ = _kind(p)
                if kind is None:
                    log.warning("skipping %s: not a pool file type (%s)", p, ", ".join(sorted(SUFFIXES)))
                    continue
                out.append((_display(fs, p), kind))
        else:
            kind, _ = _kind(path)
            if kind is None:
                raise PoolInputError(
                    f"pool input {url} has an unsupported file type; supported: "
                    f"{', '.join(sorted(SUFFIXES))} (optionally .gz), directories and saved datasets"
                )
            out.append((url, kind))
    seen: set[str] = set()
    unique = []
    for item in out:
        if item[0] not in seen:
            seen.add(item[0])
            unique.append(item)
    return unique


def _is_hf_dir(fs, path: str) -> bool:
    return fs.exists(posixpath.join(path, "dataset_dict.json")) or (
        fs.exists(posixpath.join(path, "state.json")) and fs.exists(posixpath.join(path, "dataset_info.json"))
    )


def read(url: str, kind: str) -> Iterator[RawRecord]:
    """Yield every raw record of one input."""
    if kind == "hf":
        yield from _read_hf(url)
        return
    _, compression = _kind(url)
    fs, path = _fs(url)
    try:
        fh = fs.open(path, "rb", compression=compression)
    except Exception as exc:
        raise PoolInputError(f"cannot open pool input {url}: {exc}") from exc
    with fh:
        if kind == "jsonl":
            yield from _read_jsonl(url, fh)
        elif kind == "json":
            yield from _read_json(url, fh)
        elif kind in ("csv", "tsv"):
            yield from _read_csv(url, fh, "\t" if kind == "tsv" else ",")
        elif kind == "parquet":
            yield from _read_parquet(url, fh)
        else:  # pragma: no cover - expand() only returns known kinds
            raise PoolInputError(f"unknown pool kind {kind!r} for {url}")


def _read_jsonl(url: str, fh) -> Iterator[RawRecord]:
    for lineno, raw in enumerate(fh, start=1):
        stripped = raw.strip()
        if not stripped:
            continue  # blank lines are not records
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RawRecord(
                url, lineno, None,
                error=("invalid_utf8", f"the line is not valid UTF-8 (byte 0x{stripped[exc.start]:02x} at offset {exc.start}); re-encode the file as UTF-8"),
                raw_b64=base64.b64encode(stripped).decode("ascii"),
            )
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRecord(url, lineno, None, error=("malformed_json", f"malformed JSON: {exc.msg} at column {exc.colno}"), raw=text)
            continue
        yield RawRecord(url, lineno, None, value=value, raw=text)


def _read_json(url: str, fh) -> Iterator[RawRecord]:
    data = fh.read()
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad string rejects
    # only the record holding it (canonical.normalise finds it) instead of the whole file.
    text = data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        first = text.lstrip()[:1]
        if first == "{" and "\n" in text.strip():
            yield from _read_jsonl(url, io.BytesIO(data))  # JSON lines saved as .json
            return
        yield RawRecord(
            url, exc.lineno, None,
            error=("malformed_json", f"the file is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); no record could be read from it, fix the file and re-ingest"),
            raw_b64=base64.b64encode(data).decode("ascii") if len(data) < 50_000_000 else None,
        )
        return
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) == 1 and not any(k in value for k in ("instruction", "question", "messages", "conversations")):
            value = value[lists[0]]
        else:
            value = [value]
    if not isinstance(value, list):
        yield RawRecord(url, None, None, error=("wrong_type", f"the file holds a JSON {type(value).__name__}; expected an array of objects"), raw=text[:10_000])
        return
    for i, item in enumerate(value):
        yield RawRecord(url, None, i, value=item, raw=json.dumps(item, ensure_ascii=True))


def _read_csv(url: str, fh, delimiter: str) -> Iterator[RawRecord]:
    text = io.TextIOWrapper(fh, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.DictReader(text, delimiter=delimiter)
    for rec in reader:
        if None in rec:
            yield RawRecord(
                url, reader.line_num, None,
                error=("malformed_row", f"the row has {len(reader.fieldnames or []) + len(rec[None])} fields but the header has {len(reader.fieldnames or [])}; quote fields that contain the delimiter"),
                raw=json.dumps(rec, ensure_ascii=True, default=str),
            )
        else:
            yield RawRecord(url, reader.line_num, None, value=dict(rec), raw=json.dumps(rec, ensure_ascii=True))


def _read_parquet(url: str, fh) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fh, pre_buffer=False)
    except Exception as exc:
        raise PoolInputError(f"cannot read Parquet file {url}: {exc}") from exc
    row = 0
    for batch in pf.iter_batches(batch_size=2048, use_threads=False):
        for rec in batch.to_pylist():
            yield RawRecord(url, None, row, value=rec, raw=None)
            row += 1


def _read_hf(url: str) -> Iterator[RawRecord]:
    import datasets

    try:
        ds = datasets.load_from_disk(url)
    except Exception as exc:
        raise PoolInputError(f"cannot load the saved dataset at {url}: {exc}") from exc
    splits = ds.items() if isinstance(ds, datasets.DatasetDict) else [(None, ds)]
    for split, part in splits:
        name = f"{url}[{split}]" if split else url
        for i, rec in enumerate(part):
            yield RawRecord(name, None, i, value=rec)
