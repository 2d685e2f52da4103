"""Readers for every pool format: each yields raw records with their location.

A reader never raises for one bad record: it yields a :class:`RawRecord` whose ``error`` says
what was wrong, so the caller can quarantine it. It raises :class:`PoolInputError` only when a
whole input cannot be opened. A file that breaks while it is read (a truncated ``.gz``, a
corrupt Parquet page, an I/O error) keeps the records read before the damage and ends with one
``damaged_file`` record that gives the byte offset where reading stopped.

What one record may cost is bounded while reading, not after: a text line is read at most
:func:`line_limit` bytes at a time (a longer line is skipped in chunks and quarantined, never
held whole), a CSV field may be as long as a line, and a JSON value may nest at most
:data:`MAX_DEPTH` levels.

A CSV/TSV record that spans lines is kept only when it is quoted as every CSV writer quotes a
multi-line field (RFC 4180: a closing quote is followed by the delimiter or the line's end, and
comes before the file ends). One that is not is a stray quote's fold: when the lines after its
first read as rows of the file (each with the header's number of fields, none starting with
prose's ", "), the first line is quarantined (``stray_quote``, naming the lines it swallowed) and
the others are read again as records; otherwise the whole span is one ``malformed_row`` naming
its lines. Swallowed lines are read again once, so a file full of stray quotes stays linear.

:func:`read_blocks` gives the same records, but those of JSONL and Parquet files in blocks
(:class:`LineBlock`, :class:`RowBatch`) for the vectorised path (:mod:`syllabus.pool.vectorised`).

Formats: JSONL (``.jsonl``, ``.ndjson``), JSON arrays (``.json``; a ``.json`` file that holds
JSON lines is read as JSONL), Parquet, CSV/TSV, any of them compressed (``.gz``, ``.zst``,
``.bz2``, ``.xz``),
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
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import fsspec

from syllabus.inputs import special_kind
from syllabus.pool.canonical import DEFAULT_MAX_CHARS

log = logging.getLogger(__name__)

# Deeper than any real instruction record; Python's own recursion limit (about 1,000 levels)
# would otherwise turn one hostile line into a RecursionError for the whole ingest.
MAX_DEPTH = 100
# A line longer than any the reader will hold is skipped this many bytes at a time.
_SKIP_CHUNK = 1 << 20
# Past this, a "line" is not a damaged record but a damaged (or endless: /dev/zero) file.
MAX_SKIP_BYTES = 1 << 30
_PREFIX_BYTES = 1000


def line_limit(max_chars: int = DEFAULT_MAX_CHARS) -> int:
    """The most bytes one text line may have: 8 per allowed character (JSON escapes take 6 for
    one character, and keys and metadata come on top), and never under 1 MiB."""
    return max(8 * max_chars, 1 << 20)

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
    raw_prefix: str | None = None  # the start of a record too long to keep whole
    offset: int | None = None  # byte offset of the record in the (uncompressed) file

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


# Compressed files, by suffix: zstd (the usual compression of large scraped pools) is read by
# pyarrow's codec, the others by fsspec's (the standard library's).
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}


def _kind(path: str) -> tuple[str | None, str | None]:
    name = path.lower()
    stem, suffix = posixpath.splitext(name)
    compression = COMPRESSIONS.get(suffix)
    if compression is not None:
        name = stem
    return SUFFIXES.get(posixpath.splitext(name)[1]), compression


def _display(fs, path: str) -> str:
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if proto in ("file", "local") else f"{proto}://{path}"


def _refuse_special(fs, path: str, url: str) -> None:
    """A local FIFO, device or socket is refused before it is opened: a FIFO blocks the open
    until a writer appears, a device such as /dev/zero never ends."""
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    kind = special_kind(path) if proto in ("file", "local") else None
    if kind is not None:
        raise PoolInputError(
            f"pool input {url} is {kind}, not a regular file; it was not opened (reading it could wait for ever or "
            "never end): save the data to a file and ingest that"
        )


def expand(inputs: list[str]) -> list[tuple[str, str, str]]:
    """Resolve inputs into (display name, kind, source name) triples in a stable order.

    The source name is what the canonical rows record and so what shard hashes cover: a
    named file's base name, or a file's path inside a named directory. It does not depend on
    how the input was typed (``good.jsonl``, ``pools/good.jsonl`` or an absolute path), the
    working folder or the machine, so the same data keeps its shard hashes and cached scores.

    Directories are walked recursively and sorted; a directory saved by ``datasets`` counts
    as one input of kind ``hf``. Files of unknown type inside a directory are skipped with a
    warning; a named file of unknown type is an error. A FIFO, device or socket, named or
    inside a directory, is an error before anything is opened.
    """
    out: list[tuple[str, str, str]] = []
    for url in inputs:
        fs, path = _fs(url)
        path = path.rstrip("/") or path
        if not fs.exists(path):
            raise PoolInputError(f"pool input {url} does not exist; check the path (or the bucket and credentials)")
        if fs.isdir(path):
            if _is_hf_dir(fs, path):
                out.append((_display(fs, path), "hf", posixpath.basename(path)))
                continue
            # One detailed listing gives every entry's type: no stat (an S3 request) per file.
            entries = fs.find(path, withdirs=True, detail=True)
            files = sorted(p for p, info in entries.items() if info["type"] != "directory")
            # Hidden files and whatever lies in hidden folders (.git, .cache, Jupyter's
            # .ipynb_checkpoints copies) are not the pool.
            hidden = {p: name for p in files
                      if (name := next((part for part in posixpath.relpath(p, path).split("/") if part.startswith(".")), None))}
            if hidden:
                names = sorted(set(hidden.values()))
                log.info("%s: skipping %d hidden files or files in hidden folders (%s%s)", url, len(hidden),
                         ", ".join(names[:5]), ", ..." if len(names) > 5 else "")
                files = [p for p in files if p not in hidden]
            hf_dirs = sorted(
                {posixpath.dirname(p) for p in files if posixpath.basename(p) in _HF_MARKERS and _is_hf_dir(fs, posixpath.dirname(p))}
            )
            hf_roots = [d for d in hf_dirs if not any(d != o and d.startswith(o + "/") for o in hf_dirs)]
            for root in hf_roots:
                out.append((_display(fs, root), "hf", posixpath.relpath(root, path)))
            for p in files:
                if any(p.startswith(r + "/") for r in hf_roots):
                    continue
                base = posixpath.basename(p)
                if base.endswith(".done.json"):
                    continue
                kind, _ = _kind(p)
                if kind is None:
                    log.warning("skipping %s: not a pool file type (%s)", p, ", ".join(sorted(SUFFIXES)))
                    continue
                if entries[p].get("type") != "file":  # local FIFOs, devices, sockets: "other"
                    _refuse_special(fs, p, _display(fs, p))
                out.append((_display(fs, p), kind, posixpath.relpath(p, path)))
        else:
            kind, _ = _kind(path)
            if kind is None:
                raise PoolInputError(
                    f"pool input {url} has an unsupported file type; supported: "
                    f"{', '.join(sorted(SUFFIXES))} (optionally compressed: {', '.join(COMPRESSIONS)}), directories and "
                    "saved datasets"
                )
            _refuse_special(fs, path, url)
            out.append((url, kind, posixpath.basename(path)))
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


class _Position:
    """How far a reader got: the last line (or row) it finished and the bytes it consumed."""

    def __init__(self) -> None:
        self.line = 0
        self.row = 0
        self.offset = 0
        self.records = 0


class _Utf8(io.RawIOBase):
    """A text file in another encoding, read as UTF-8 bytes (lone surrogates pass through, so
    a line holding one is quarantined as invalid UTF-8, as in a UTF-8 file)."""

    def __init__(self, fh, encoding: str):
        self.text = io.TextIOWrapper(fh, encoding=encoding, errors="surrogatepass", newline="")
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            chunk = self.text.read(1 << 16)
            if not chunk:
                return 0
            self.pending = chunk.encode("utf-8", "surrogatepass")
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self.text.close()
        super().close()


# Byte order marks of the encodings a text file is converted from (UTF-32 before UTF-16: its
# little-endian mark starts with UTF-16's).
_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def _open_input(url: str, fs, path: str, compression: str | None, kind: str, quiet: bool = False):
    """A pool file opened for reading, with ``readline(size)`` (so lines stay bounded) and
    ``peek``. A text file (JSONL, JSON, CSV, TSV) that starts with a UTF-16 or UTF-32 byte order
    mark (Notepad's and Excel's "Unicode") is read as UTF-8; its offsets count UTF-8 bytes."""
    try:
        if compression == "zstd":
            import pyarrow as pa

            fh = io.BufferedReader(pa.CompressedInputStream(fs.open(path, "rb"), "zstd"), buffer_size=1 << 16)
        else:
            fh = fs.open(path, "rb", compression=compression)
    except Exception as exc:
        raise PoolInputError(f"cannot open pool input {url}: {exc}") from exc
    if not hasattr(fh, "peek"):
        # s3fs and memory:// files: readline() takes no size there
        fh = io.BufferedReader(fh, buffer_size=1 << 16)
    if kind in ("jsonl", "json", "csv", "tsv"):
        head = fh.peek(4)[:4]
        encoding = next((enc for bom, enc in _OTHER_BOMS if head.startswith(bom)), None)
        if encoding is not None:
            if not quiet:
                log.info("%s is %s text (it starts with a %s byte order mark): read as UTF-8", url, encoding.upper(),
                         encoding.upper())
            fh = io.BufferedReader(_Utf8(fh, encoding), buffer_size=1 << 16)
    return fh


class _FileTooDamaged(Exception):
    """Reading the rest of a file is pointless (an endless line); carries the reason."""


def read(url: str, kind: str, max_chars: int = DEFAULT_MAX_CHARS) -> Iterator[RawRecord]:
    """Yield every raw record of one input.

    Whatever breaks while the file is read (a truncated or corrupt ``.gz``, a damaged Parquet
    file, an I/O error) ends the file with one ``damaged_file`` record saying where and why;
    the records before it are yielded as usual.
    """
    pos = _Position()
    try:
        if kind == "hf":
            for rec in _read_hf(url, pos):
                pos.records += 1
                yield rec
            return
        _, compression = _kind(url)
        fs, path = _fs(url)
        fh = _open_input(url, fs, path, compression, kind)
        limit = line_limit(max_chars)
        with fh:
            if kind == "jsonl":
                records = _read_jsonl(url, fh, limit, pos)
            elif kind == "json":
                records = _read_json(url, fh.read(), limit, pos)
            elif kind in ("csv", "tsv"):
                records = _read_csv(url, fh, "\t" if kind == "tsv" else ",", limit, pos)
            elif kind == "parquet":
                records = _read_parquet(url, fh, pos)
            else:  # pragma: no cover - expand() only returns known kinds
                raise PoolInputError(f"unknown pool kind {kind!r} for {url}")
            for rec in records:
                pos.records += 1
                yield rec
    except PoolInputError:
        raise
    except Exception as exc:  # one damaged file must not take the other inputs down
        yield _damaged(url, kind, pos, exc)


def _damaged(url: str, kind: str, pos: _Position, exc: Exception) -> RawRecord:
    what = str(exc) if isinstance(exc, _FileTooDamaged) else f"{type(exc).__name__}: {exc}".rstrip(": ")
    if kind in ("jsonl", "csv", "tsv"):
        where = f"after line {pos.line:,} (uncompressed byte offset {pos.offset:,})"
    elif kind == "json":
        where = "before any record could be parsed"
    else:
        where = f"after row {pos.row:,}"
    kept = f"the {pos.records:,} records before it were read" if pos.records else "no record could be read from it"
    return RawRecord(
        url, pos.line + 1 if kind in ("jsonl", "csv", "tsv") else None, pos.row if kind in ("parquet", "hf") else None,
        error=("damaged_file", f"the file is damaged {where} ({what}); {kept} and the rest of the file is lost; "
                               "re-download or re-create it and ingest again"),
        offset=pos.offset if kind in ("jsonl", "csv", "tsv") else None,
    )


def _readline(fh, limit: int, pos: _Position) -> tuple[bytes, int, bytes]:
    """One line, never holding more than ``limit`` bytes of it.

    Returns ``(line, length, prefix)``: the whole line when it fits (``length == len(line)``),
    else ``b""`` with the line's full length and its first bytes; the rest was read and dropped.
    """
    raw = fh.readline(limit + 1)
    pos.offset += len(raw)
    if len(raw) <= limit or raw.endswith(b"\n"):
        return raw, len(raw), b""
    length, prefix = len(raw), raw[:_PREFIX_BYTES]
    while True:
        chunk = fh.readline(_SKIP_CHUNK)
        pos.offset += len(chunk)
        length += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return b"", length, prefix
        if length > MAX_SKIP_BYTES:
            raise _FileTooDamaged(f"line {pos.line + 1:,} is over {MAX_SKIP_BYTES:,} bytes with no end in sight; it is not a pool file")


def _too_long(url: str, lineno: int, length: int, limit: int, prefix: bytes, offset: int) -> RawRecord:
    return RawRecord(
        url, lineno, None,
        error=("too_long", f"the line has {length:,} bytes, over the read limit of {limit:,} bytes (8 bytes per --max-chars "
                           "character); it was skipped unparsed, split the record or raise --max-chars"),
        raw_prefix=prefix.decode("utf-8", errors="replace"),
        offset=offset,
    )


too_long_record = _too_long  # for the vectorised path, which finds long lines inside a block


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists and objects deeper than ``limit`` (iteratively: no recursion)."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


class _DuplicateKey(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


_KEY_END = re.compile(r'"\s*:')  # what ends every key of a JSON object (and may sit in a string)


def _keys(value: Any) -> int:
    """The number of keys of every object in ``value``."""
    count, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            count += len(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return count


def _strict_loads(text: str) -> Any:
    """``json.loads``, except that an object naming a key twice raises :class:`_DuplicateKey`
    (Python keeps the last value silently, other readers the first: which text is the record's
    is anybody's guess). Objects are checked only when the text holds more key ends (``"`` then
    ``:``) than the parsed value has keys, as a duplicate makes it. NaN and Infinity, which the
    standard lacks but Python writes, are read as Python reads them (as a Parquet float column's
    NaN is kept)."""
    value = json.loads(text)
    if isinstance(value, (dict, list)):
        # findall's list is the quicker count for a record; a whole file's would hold millions
        ends = len(_KEY_END.findall(text)) if len(text) < 1 << 20 else sum(1 for _ in _KEY_END.finditer(text))
        if ends > _keys(value):
            json.loads(text, object_pairs_hook=_unique)
    return value


def _parse_json(text: str) -> tuple[Any, tuple[str, str] | None]:
    """``(value, None)`` or ``(None, (code, reason))``; never raises for any input text."""
    try:
        value = _strict_loads(text)
    except _DuplicateKey as exc:
        return None, ("duplicate_key", f'the record names "{exc}" twice, and JSON readers disagree on which value counts; '
                                       "keep one")
    except json.JSONDecodeError as exc:
        return None, ("malformed_json", f"malformed JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return None, ("too_deep", f"the JSON nests deeper than Python can parse; records may nest at most {MAX_DEPTH} levels")
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        return None, ("malformed_json", f"the JSON cannot be read: {exc}")
    if isinstance(value, (dict, list)) and depth_exceeds(value):
        return None, ("too_deep", f"the JSON nests more than {MAX_DEPTH} levels deep; flatten the record")
    return value, None


_BOM = b"\xef\xbb\xbf"


def jsonl_record(url: str, raw: bytes, lineno: int, offset: int) -> RawRecord | None:
    """The record of one JSONL line that fits the line limit (``None`` for a blank line).

    A UTF-8 byte order mark before the line's JSON is skipped: Windows tools (PowerShell 5's
    ``Out-File``, Notepad, Python's ``utf-8-sig``) write one at the start of a file, and
    concatenated files carry theirs to the start of a later line; json.loads refuses it."""
    stripped = raw.strip()
    if stripped.startswith(_BOM):
        stripped = stripped[len(_BOM):].strip()
    if not stripped:
        return None  # blank lines are not records
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RawRecord(
            url, lineno, None,
            error=("invalid_utf8", f"the line is not valid UTF-8 (byte 0x{stripped[exc.start]:02x} at offset {exc.start}); re-encode the file as UTF-8"),
            raw_b64=base64.b64encode(stripped).decode("ascii"),
            offset=offset,
        )
    value, error = _parse_json(text)
    return RawRecord(url, lineno, None, value=value, error=error, raw=text, offset=offset)


def _opens_array(first_line: bytes, limit: int) -> bool:
    """Whether a "JSONL" file's first line (with its newline) fits the line limit and opens a
    JSON array: a .json file under the wrong name, read as one (both paths decide alike)."""
    fits = len(first_line) <= limit + first_line.endswith(b"\n")
    return fits and first_line.removeprefix(_BOM).lstrip().startswith(b"[")


def _read_jsonl(url: str, fh, limit: int, pos: _Position, arrays: bool = True) -> Iterator[RawRecord]:
    """The records of a JSONL file, line by line. With ``arrays``, a file whose first line opens
    a JSON array is read as the JSON file it is (see :func:`_read_json`)."""
    while True:
        start = pos.offset
        raw, length, prefix = _readline(fh, limit, pos)
        if not length:
            return
        if arrays and start == 0 and not prefix and _opens_array(raw, limit):
            pos.offset = 0
            yield from _read_json(url, raw + fh.read(), limit, pos, named_jsonl=True)
            return
        pos.line += 1
        if prefix:
            yield _too_long(url, pos.line, length, limit, prefix, start)
            continue
        rec = jsonl_record(url, raw, pos.line, start)
        if rec is not None:
            yield rec


@dataclass
class LineBlock:
    """Consecutive whole lines of a JSONL file, for the vectorised path
    (:mod:`syllabus.pool.vectorised`). Every line ends with a newline except perhaps the
    file's last; a line may be longer than ``limit`` (it is then quarantined as ``too_long``,
    exactly as the per-line reader would)."""

    file: str
    data: bytes
    first_line: int  # the 1-based number of the block's first line
    offset: int  # the uncompressed byte offset of the block's first byte
    limit: int  # the line limit (see line_limit)
    starts: Any  # numpy int64 array: each line's first byte, then len(data)
    blank: Any  # numpy bool array: the lines that are blank (not records)

    @property
    def records(self) -> int:
        return len(self.blank) - int(self.blank.sum())


@dataclass
class RowBatch:
    """Consecutive rows of a Parquet file or a saved dataset, for the vectorised path."""

    file: str
    batch: Any  # pyarrow.RecordBatch
    first_row: int
    # The records at these rows of the file as the per-record reader gives them (None: the
    # batch's own rows, RecordBatch.to_pylist): a saved dataset's as ``datasets`` decodes them,
    # a JSON array's elements as parsed.
    records: Callable[[list[int]], list[RawRecord]] | None = None


class _Rewound:
    """A file whose first bytes were already read: serves them again, then the file."""

    def __init__(self, head: bytes, fh):
        self.head, self.fh = head, fh

    def readline(self, size: int = -1) -> bytes:
        if self.head:
            if 0 <= size <= len(self.head):
                out, self.head = self.head[:size], self.head[size:]
                return out
            out, self.head = self.head, b""
            return out + self.fh.readline(size - len(out) if size >= 0 else -1)
        return self.fh.readline(size)


class _DamagedHere(Exception):
    """The file broke where the reader's position says (not to be read again from a block)."""

    def __init__(self, exc: Exception):
        super().__init__(str(exc))
        self.exc = exc


def _jsonl_blocks(url: str, fh, limit: int, pos: _Position, block_bytes: int, head: bytes = b"") -> Iterator[RawRecord | LineBlock]:
    """The lines of a JSONL file in blocks of about ``block_bytes`` (``head``: its first bytes,
    already read); a line that runs past ``limit`` beyond a block's end is skipped by the
    per-line reader's own code (so what it reads, and where it stops in an endless line, are the
    same) and comes as its record."""
    pieces: list[bytes] = []  # the line being read, when it began in an earlier chunk
    size = 0
    while True:
        chunk, head = (head, b"") if head else (fh.read(block_bytes), b"")
        if not chunk:
            if pieces:
                yield _line_block(url, b"".join(pieces), pos, limit)
            return
        cut = chunk.rfind(b"\n") + 1
        if cut:
            yield _line_block(url, b"".join([*pieces, chunk[:cut]]) if pieces else chunk[:cut], pos, limit)
            pieces = [chunk[cut:]] if cut < len(chunk) else []
            size = len(chunk) - cut
        else:
            pieces.append(chunk)
            size += len(chunk)
        if size > limit:
            # The line already has more bytes than any kept line: read (and drop) the rest as
            # _readline does, from the line's first byte.
            start = pos.offset
            try:
                raw, length, prefix = _readline(_Rewound(b"".join(pieces), fh), limit, pos)
            except Exception as exc:  # pos is inside the line now: report it where it stopped
                raise _DamagedHere(exc) from exc
            pos.line += 1
            pos.records += 1
            pieces, size = [], 0
            yield _too_long(url, pos.line, length, limit, prefix, start)


def _line_block(url: str, data: bytes, pos: _Position, limit: int) -> LineBlock:
    import numpy as np

    newlines = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    starts = np.concatenate(([0], newlines + 1))
    if starts[-1] != len(data):
        starts = np.concatenate((starts, [len(data)]))
    # A line that starts with "{" holds a non-space byte; the others are checked one by one.
    first = np.frombuffer(data, np.uint8)[starts[:-1]] if len(data) else np.zeros(0, np.uint8)
    blank = np.zeros(len(starts) - 1, bool)
    for i in np.flatnonzero(first != ord("{")):
        blank[i] = not data[starts[i]:starts[i + 1]].strip()
    block = LineBlock(url, data, pos.line + 1, pos.offset, limit, starts, blank)
    pos.line += len(starts) - 1
    pos.offset += len(data)
    return block


# The bytes of JSONL the vectorised path parses at a time: a few thousand records.
BLOCK_BYTES = 1 << 20


def read_blocks(url: str, kind: str, max_chars: int = DEFAULT_MAX_CHARS, block_bytes: int | None = None,
                batch_rows: int = 2048) -> Iterator[RawRecord | LineBlock | RowBatch]:
    """:func:`read`, with the records of JSONL files in :class:`LineBlock` s and those of
    Parquet files and saved datasets in :class:`RowBatch` es, for the vectorised path; other
    kinds come as records.

    The consumer turns a block's records into the :class:`RawRecord` s :func:`read` would
    have yielded, where it needs them. When a file breaks while it is read, the part from the
    last whole block on is read again line by line, so the records before the damage and the
    ``damaged_file`` record are those :func:`read` gives.
    """
    if kind not in ("jsonl", "json", "parquet", "hf"):
        yield from read(url, kind, max_chars=max_chars)
        return
    pos = _Position()
    if kind == "hf":
        try:
            yield from _hf_blocks(url, pos, batch_rows)
        except PoolInputError:
            raise
        except Exception as exc:  # as read() ends a saved dataset that breaks
            yield _damaged(url, kind, pos, exc)
        return
    _, compression = _kind(url)
    fs, path = _fs(url)
    try:
        fh = _open_input(url, fs, path, compression, kind)
        with fh:
            if kind == "parquet":
                import pyarrow.parquet as pq

                pf = pq.ParquetFile(fh, pre_buffer=False)
                if _named_twice(pf.schema_arrow.names) is not None:  # every row quarantined, as read() does
                    for rec in _parquet_records(url, pf, pos):
                        pos.records += 1
                        yield rec
                    return
                for batch in pf.iter_batches(batch_size=batch_rows, use_threads=False):
                    item = RowBatch(url, batch, pos.row)
                    pos.row += batch.num_rows
                    pos.records += batch.num_rows  # rows that are records, as _read_parquet counts
                    yield item
                return
            limit, size = line_limit(max_chars), block_bytes or BLOCK_BYTES
            head = b""
            if kind == "jsonl":
                head = fh.read(size)
                while b"\n" not in head and len(head) <= limit and (more := fh.read(size)):
                    head += more  # the whole first line, or more than the limit of it
            if kind == "json" or _opens_array(head[:head.find(b"\n") + 1] or head, limit):
                data = head + fh.read()
                for item in _read_json(url, data, limit, pos, named_jsonl=kind == "jsonl", batch_rows=batch_rows):
                    pos.records += 1 if isinstance(item, RawRecord) else item.batch.num_rows
                    yield item
                return
            for item in _jsonl_blocks(url, fh, limit, pos, size, head):
                if isinstance(item, LineBlock):
                    pos.records += item.records
                yield item
    except PoolInputError:
        raise
    except _DamagedHere as exc:
        yield _damaged(url, kind, pos, exc.exc)
    except Exception as exc:
        if kind == "parquet":
            yield _damaged(url, kind, pos, exc)
            return
        yield from _resume_jsonl(url, fs, path, compression, line_limit(max_chars), pos, exc)


def _resume_jsonl(url: str, fs, path: str, compression: str | None, limit: int, pos: _Position, exc: Exception) -> Iterator[RawRecord]:
    """After a JSONL file broke inside a block: read it again from the last whole block on,
    line by line, so the records up to the damage and where it stops are the per-line reader's."""
    try:
        with _open_input(url, fs, path, compression, "jsonl", quiet=True) as fh:
            left = pos.offset
            while left:
                got = fh.read(min(left, 1 << 20))
                if not got:
                    raise exc
                left -= len(got)
            for rec in _read_jsonl(url, fh, limit, pos, arrays=False):
                pos.records += 1
                yield rec
    except Exception as again:
        yield _damaged(url, "jsonl", pos, again)


def _read_json(url: str, data: bytes, limit: int, pos: _Position, named_jsonl: bool = False,
               batch_rows: int | None = None) -> Iterator[RawRecord | RowBatch]:
    """The records of a JSON file's ``data``: an array of records, one record, or an object
    holding one array of records. JSON lines saved as .json are read line by line, and so is a
    .jsonl file (``named_jsonl``) that opens an array but is not one JSON document. With
    ``batch_rows``, the array's objects come as :class:`RowBatch` es of that many (a run whose
    values pyarrow cannot type, or that holds a non-object, comes element by element)."""
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad string rejects
    # only the record holding it (canonical.normalise finds it) instead of the whole file.
    text = data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    try:
        value = _strict_loads(text)
    except _DuplicateKey:
        # Only the records that name a key twice go.
        if text.lstrip()[:1] == "[":
            yield from _read_json_elements(url, text)
        else:
            value, error = _parse_json(text)
            yield RawRecord(url, None, None, value=value, error=error, raw=text[:10_000])
        return
    except (RecursionError, ValueError) as exc:
        first = text.lstrip()[:1]
        if (first == "{" or named_jsonl) and "\n" in text.strip():
            # JSON lines saved as .json, or lines of a .jsonl file that are not one array
            yield from _read_jsonl(url, io.BytesIO(data), limit, pos, arrays=False)
            return
        if isinstance(exc, RecursionError):
            # One record nests too deep for the parser: parse element by element instead, so
            # only that element is rejected.
            yield from _read_json_elements(url, text)
            return
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        yield RawRecord(
            url, getattr(exc, "lineno", None), None,
            error=("malformed_json", f"the file is not valid JSON ({detail}); no record could be read from it, fix the file and re-ingest"),
            raw_b64=base64.b64encode(data).decode("ascii") if len(data) < 50_000_000 else None,
        )
        return
    if named_jsonl:
        log.info("%s holds one JSON document, not JSON lines: read as a JSON file (name it .json)", url)
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) == 1 and not any(k in value for k in ("instruction", "question", "messages", "conversations")):
            value = value[lists[0]]
        else:
            value = [value]
    if not isinstance(value, list):
        yield RawRecord(url, None, None, error=("wrong_type", f"the file holds a JSON {type(value).__name__}; expected an array of objects"), raw=text[:10_000])
        return
    items = value

    def element(i: int) -> RawRecord:
        item = items[i]
        if isinstance(item, (dict, list)) and depth_exceeds(item):
            return RawRecord(url, None, i, error=("too_deep", f"the record nests more than {MAX_DEPTH} levels deep; flatten it"),
                             raw_prefix=json.dumps(item, ensure_ascii=True)[:_PREFIX_BYTES] if not depth_exceeds(item, 500) else None)
        return RawRecord(url, None, i, value=item, raw=json.dumps(item, ensure_ascii=True))

    if batch_rows is None:
        yield from (element(i) for i in range(len(items)))
        return
    import pyarrow as pa

    def records(rows: list[int]) -> list[RawRecord]:
        return [element(i) for i in rows]

    for start in range(0, len(items), batch_rows):
        chunk = items[start:start + batch_rows]
        table = None
        if all(type(item) is dict for item in chunk):
            # Every key of the run, each a column typed over all its values (from_pylist would
            # take the first object's keys only); a key an object lacks is a null there, and
            # rows with nulls go on (see vectorised.prepare_batch), read as they are.
            keys = list(dict.fromkeys(key for item in chunk for key in item))
            try:
                table = pa.table({key: pa.array([item.get(key) for item in chunk]) for key in keys})
            except (pa.ArrowException, OverflowError, RecursionError, TypeError, ValueError):
                table = None  # types pyarrow cannot put in one column: element by element
        batches = table.combine_chunks().to_batches() if table is not None and table.num_columns else []
        if len(batches) != 1 or batches[0].num_rows != len(chunk):
            yield from (element(i) for i in range(start, start + len(chunk)))
        else:
            yield RowBatch(url, batches[0], start, records)


_WS = " \t\r\n"


def _skip_value(text: str, i: int) -> int:
    """The index just past the JSON value that starts at ``i``, found by bracket matching
    (strings respected), for a value too deep to parse."""
    depth, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _read_json_elements(url: str, text: str) -> Iterator[RawRecord]:
    decoder = json.JSONDecoder()
    n, i, row = len(text), 0, 0

    def skip_ws(j: int) -> int:
        while j < n and text[j] in _WS:
            j += 1
        return j

    i = skip_ws(i)
    if i >= n or text[i] != "[":
        yield RawRecord(url, None, None, error=("too_deep", f"the file nests more than {MAX_DEPTH} levels deep and is not an array of records; flatten it"))
        return
    i = skip_ws(i + 1)
    while i < n and text[i] != "]":
        try:
            item, end = decoder.raw_decode(text, i)
        except RecursionError:
            end = _skip_value(text, i)
            yield RawRecord(url, None, row, error=("too_deep", f"the record nests more than {MAX_DEPTH} levels deep; flatten it"),
                            raw_prefix=text[i:min(end, i + _PREFIX_BYTES)])
        except ValueError as exc:
            yield RawRecord(url, None, row, error=("malformed_json", f"the file is not valid JSON from row {row} on ({exc}); the rows before it were read, fix the file and re-ingest"))
            return
        else:
            item, error = _parse_json(text[i:end])  # the depth and duplicate keys
            if error is not None:
                yield RawRecord(url, None, row, error=error, raw_prefix=text[i:min(end, i + _PREFIX_BYTES)])
            else:
                yield RawRecord(url, None, row, value=item, raw=json.dumps(item, ensure_ascii=True))
        row += 1
        i = skip_ws(end)
        if i < n and text[i] == ",":
            i = skip_ws(i + 1)


class _LineTooLong(Exception):
    def __init__(self, lineno: int, length: int, prefix: bytes, offset: int):
        super().__init__(f"line {lineno} is {length} bytes long")
        self.lineno, self.length, self.prefix, self.offset = lineno, length, prefix, offset


class _CsvLines:
    """The lines ``csv.reader`` parses, each bounded by the line limit and decoded with
    surrogateescape (a bad byte rejects one record, not the file).

    It also counts the quote characters of the record being parsed, so after an error the
    reader can skip the rest of a quoted field that spans lines instead of parsing its
    remaining lines as records, and keeps the lines of that record, so that lines a stray quote
    folded into it can be parsed again as records of their own (:meth:`push_back`). A class, not
    a generator: a generator that raises is finished, and the reader must go on after a
    too-long line.
    """

    def __init__(self, fh, limit: int, pos: _Position):
        self.fh, self.limit, self.pos = fh, limit, pos
        self.quotes = 0
        self.line = 0  # the number of the last line served (pushed-back lines come again)
        self.record_line = 1
        self.record: list[tuple[int, str]] = []  # (line number, text) of the record being parsed
        self.pending: deque[tuple[int, str]] = deque()  # pushed-back lines, served before the file's next

    def __iter__(self):
        return self

    def begin_record(self) -> None:
        self.quotes = 0
        self.record = []
        self.record_line = self.line + 1

    def push_back(self, lines: list[tuple[int, str]]) -> None:
        """Serve ``lines`` (in order) again before the rest of the file."""
        if lines:
            self.pending.extendleft(reversed(lines))
            self.line = lines[0][0] - 1

    def __next__(self) -> str:
        if self.pending:
            self.line, text = self.pending.popleft()
            self.quotes += text.count('"')
            self.record.append((self.line, text))
            return text
        start = self.pos.offset
        raw, length, prefix = _readline(self.fh, self.limit, self.pos)
        if not length:
            raise StopIteration
        self.pos.line += 1
        self.line = self.pos.line
        if prefix:
            # The skipped bytes are not counted: a too-long line is as good as lost, and the
            # quote count of its prefix says whether a quoted field was still open.
            self.quotes += prefix.count(b'"')
            raise _LineTooLong(self.pos.line, length, prefix, start)
        if self.pos.line == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        self.quotes += raw.count(b'"')
        text = raw.decode("utf-8", errors="surrogateescape")
        self.record.append((self.line, text))
        return text

    def skip_rest_of_record(self) -> None:
        """After an error inside a quoted field, drop lines until the field's quote closes."""
        while self.quotes % 2:
            try:
                next(self)
            except StopIteration:
                return
            except _LineTooLong:
                continue


def _well_quoted(lines: list[str], delimiter: str) -> bool:
    """Whether ``lines`` are one record quoted as RFC 4180 says: every quote that closes a field
    is followed by the delimiter or the line's end, and the field closes before the input ends.
    Every CSV writer quotes a multi-line field so; a stray quote's fold almost never is."""
    try:
        rows = list(csv.reader(lines, delimiter=delimiter, strict=True))
    except csv.Error:
        return False
    return len(rows) == 1


def _open_at_end(lines: list[str], delimiter: str) -> bool:
    """Whether a quoted field in ``lines`` is still open where they end (the file's end: on
    its last line the csv module closes it silently)."""
    try:
        list(csv.reader(lines, delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _rows_shaped(lines: list[str], delimiter: str, width: int) -> bool:
    """Whether ``lines``, parsed on their own, are rows of the file: each has the header's
    ``width`` fields and, when it spans lines, is well quoted; only a last row that starts on
    the last line may be short (it may be a record that goes on past them). A quote that opens
    again and swallows the rest is not rows: so each line is parsed again at most once, however
    many stray quotes a file has."""
    reader = csv.reader(lines, delimiter=delimiter)
    rows: list[tuple[int, int, list[str]]] = []
    try:
        start = 0
        for row in reader:
            rows.append((start, reader.line_num, row))
            start = reader.line_num
    except csv.Error:
        return False
    rows = [r for r in rows if r[2]]
    if not rows:
        return False
    for i, (start, end, row) in enumerate(rows):
        if end - start > 1 and not _well_quoted(lines[start:end], delimiter):
            return False
        last_line_start = i == len(rows) - 1 and start == len(lines) - 1
        if len(row) != width and not (last_line_start and len(row) < width):
            return False
        if any(field.startswith(" ") for field in row[1:]):
            return False  # "First, do this": prose after a comma, not a field a CSV writer wrote
    return True


def _lines(first: int, last: int) -> str:
    return f"line {first:,}" if first == last else f"lines {first:,}-{last:,}"


# Delimiters a .csv file may use instead of the comma: Excel writes ";" where the comma is the
# decimal separator, and TSV files are often named .csv.
_OTHER_DELIMITERS = (";", "\t")


def _sniffed_header(url: str, row: list[str], delimiter: str, lines: list[tuple[int, str]]) -> tuple[list[str], str]:
    """The header and the file's delimiter. A .csv header that reads as one comma-free field
    holding semicolons (or tabs) is that file's delimiter, not a column named "a;b"."""
    if delimiter != "," or len(row) != 1 or len(lines) != 1:
        return row, delimiter
    for other in _OTHER_DELIMITERS:
        if other in row[0]:
            header = next(csv.reader([lines[0][1]], delimiter=other))
            log.info("%s: its header row has no comma but %s; read as a %s-separated file", url,
                     "semicolons" if other == ";" else "tabs", "semicolon" if other == ";" else "tab")
            return header, other
    return row, delimiter


def _read_csv(url: str, fh, delimiter: str, limit: int, pos: _Position) -> Iterator[RawRecord]:
    # The csv module's own field limit (131,072 characters) is process-wide and below
    # --max-chars; a line is already bounded, so a field may be as long as a line.
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
    what = "TSV" if delimiter == "\t" else "CSV"
    lines = _CsvLines(fh, limit, pos)
    reader = csv.reader(lines, delimiter=delimiter)
    header: list[str] | None = None
    twice: str | None = None  # a column name the header holds twice

    def stray_quote(error: str | None) -> RawRecord | None:
        """A record that spans lines and broke (``error``) or is not well quoted: when the lines
        after its first parse as rows of the file, a quote on the first line went astray and
        folded them in. Only that line is quarantined; the others are parsed again."""
        first, last = lines.record_line, lines.line
        texts = [text for _, text in lines.record]
        if last <= first or header is None or not _rows_shaped(texts[1:], delimiter, len(header)):
            return None
        lines.push_back(lines.record[1:])
        why = f" ({error})" if error else ""
        return RawRecord(url, first, None, raw=texts[0], error=("stray_quote", (
            f"a quoted field opened on line {first:,} swallows {_lines(first + 1, last)}, which "
            f"{'reads as a row' if last == first + 1 else 'read as rows'} of the file{why}; line {first:,} was "
            "quarantined and the lines after it were read again as records; "
            "close or escape (\"\") the quote")))

    while True:
        lines.begin_record()
        lineno = lines.record_line
        try:
            row = next(reader)
        except StopIteration:
            return
        except _LineTooLong as exc:
            lines.skip_rest_of_record()
            yield _too_long(url, exc.lineno, exc.length, limit, exc.prefix, exc.offset)
            continue
        except csv.Error as exc:
            stray = stray_quote(str(exc))
            if stray is not None:
                yield stray
                continue
            lines.skip_rest_of_record()
            code = "too_long" if "field limit" in str(exc) else "malformed_row"
            yield RawRecord(url, lineno, None, error=(code, f"the row ({_lines(lineno, lines.line)}) cannot be parsed as "
                                                            f"{what} ({exc}); check its quoting"))
            continue
        if (lines.line > lineno and not _well_quoted([text for _, text in lines.record], delimiter)) or (
                lines.quotes % 2 and _open_at_end([text for _, text in lines.record], delimiter)):
            if header is None:
                raise _FileTooDamaged(f"the header row's quoting is broken: a quoted field opened on line {lineno:,} "
                                      f"runs to line {lines.line:,}; fix the header's quotes")
            stray = stray_quote(None)
            if stray is not None:
                yield stray
                continue
            yield RawRecord(url, lineno, None, raw=json.dumps(row, ensure_ascii=True), error=("malformed_row", (
                f"the quoted field opened in this row runs over {_lines(lineno, lines.line)} and does not close "
                f"properly (a closing quote must come before the file ends and be followed by the delimiter or the line's end); "
                f"{_lines(lineno, lines.line)} were quarantined as one record, check its quoting")))
            continue
        if header is None:
            header, delimiter = _sniffed_header(url, row, delimiter, lines.record)
            twice = _named_twice(header)
            if delimiter != reader.dialect.delimiter:
                reader = csv.reader(lines, delimiter=delimiter)
            continue
        if not row:
            continue  # blank lines are not records
        if len(row) > len(header):
            yield RawRecord(
                url, lineno, None,
                error=("malformed_row", f"the row ({_lines(lineno, lines.line)}) has {len(row)} fields but the header has "
                                        f"{len(header)}; quote fields that contain the delimiter"),
                raw=json.dumps(row, ensure_ascii=True),
            )
            continue
        if twice is not None:  # every row: which column is the field is anybody's guess
            yield RawRecord(url, lineno, None, raw=json.dumps(row, ensure_ascii=True), error=("duplicate_key", (
                f'the header names "{twice}" twice, so this row\'s "{twice}" is ambiguous; rename one of the columns')))
            continue
        rec = dict(zip(header, row + [None] * (len(header) - len(row))))
        yield RawRecord(url, lineno, None, value=rec, raw=json.dumps(rec, ensure_ascii=True))


def _read_parquet(url: str, fh, pos: _Position) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    # A file that is not Parquet at all fails here and, like a damaged page later, becomes
    # one damaged_file record (see read()): the input exists and was opened.
    yield from _parquet_records(url, pq.ParquetFile(fh, pre_buffer=False), pos)


def _parquet_records(url: str, pf, pos: _Position) -> Iterator[RawRecord]:
    """The rows of a Parquet file as records. A file with two columns of one name (Arrow allows
    it) makes every row ambiguous, and each is quarantined as ``duplicate_key``."""
    twice = _named_twice(pf.schema_arrow.names)
    for batch in pf.iter_batches(batch_size=2048, use_threads=False):
        if twice is None:
            for rec in batch.to_pylist():
                yield RawRecord(url, None, pos.row, value=rec, raw=None)
                pos.row += 1
            continue
        names = batch.schema.names
        for values in zip(*[column.to_pylist() for column in batch.columns]):
            yield RawRecord(url, None, pos.row, raw=json.dumps(list(zip(names, values)), ensure_ascii=True, default=str),
                            error=("duplicate_key", f'the file has two columns named "{twice}", so each row\'s "{twice}" '
                                                    "is ambiguous; rename one of the columns"))
            pos.row += 1


def _named_twice(names: list[str]) -> str | None:
    """The first name that ``names`` holds twice."""
    return next((name for i, name in enumerate(names) if name in names[:i]), None)


def _hf_splits(url: str) -> list[tuple[str, Any]]:
    """A saved dataset's splits: (the name its records carry, the split)."""
    import datasets

    try:
        ds = datasets.load_from_disk(url)
    except Exception as exc:
        raise PoolInputError(f"cannot load the saved dataset at {url}: {exc}") from exc
    splits = ds.items() if isinstance(ds, datasets.DatasetDict) else [(None, ds)]
    return [(f"{url}[{split}]" if split else url, part) for split, part in splits]


def _read_hf(url: str, pos: _Position) -> Iterator[RawRecord]:
    for name, part in _hf_splits(url):
        for i, rec in enumerate(part):
            yield RawRecord(name, None, i, value=rec)
            pos.row = i + 1


def _hf_blocks(url: str, pos: _Position, batch_rows: int) -> Iterator[RawRecord | RowBatch]:
    """A saved dataset's rows in Arrow batches (its files are Arrow tables already); a split
    whose rows are a selection of its table (an indices mapping) comes record by record."""
    for name, part in _hf_splits(url):
        if part._indices is not None:
            for i, rec in enumerate(part):
                pos.records += 1
                yield RawRecord(name, None, i, value=rec)
            continue

        def records(rows: list[int], part=part, name=name) -> list[RawRecord]:
            return [RawRecord(name, None, i, value=part[i]) for i in rows]

        pos.row = 0
        for batch in part.data.table.to_batches(max_chunksize=batch_rows):
            item = RowBatch(name, batch, pos.row, records)
            pos.records += batch.num_rows
            pos.row += batch.num_rows
            yield item
