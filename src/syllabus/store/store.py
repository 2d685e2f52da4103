"""fsspec-backed object store with checksummed, marker-committed writes.

A local store writes each object to ``<key>.tmp-<32 hex digits>`` and renames it into place.
A writer that dies in between (a crash, a kill, a full disk) leaves that temporary file behind,
so the first write into a folder in a process first removes the folder's *stale* temporaries:
those not modified for :func:`stale_temp_seconds` (an hour unless ``SYLLABUS_STALE_TEMP_SECONDS``
says otherwise) whose key no live lease covers. A live writer finishes its temporary in seconds
and a worker computing a key holds and renews its lease (:mod:`syllabus.store.lease`), so a
concurrent writer's temporary is never taken for a stale one. :meth:`Store.remove_stale_temps`
sweeps a whole prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import socket
import stat
import sys
import threading
import time
import uuid
from typing import Any, Iterable, Mapping

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from syllabus.store.credentials import adopt_credentials, has_credentials, split_credentials

log = logging.getLogger(__name__)

MARKER_SUFFIX = ".done.json"
DEFAULT_STORE_ENV = "SYLLABUS_STORE"
DEFAULT_STORE = "./syllabus-store"
STALE_TEMP_ENV = "SYLLABUS_STALE_TEMP_SECONDS"
DEFAULT_STALE_TEMP_SECONDS = 3600.0
_TEMP_NAME = re.compile(r"^(?P<name>.+)\.tmp-[0-9a-f]{32}$")
_SWEPT: set[str] = set()  # folders whose stale temporaries this process already removed
_SWEPT_LOCK = threading.Lock()


def stale_temp_seconds() -> float:
    """How long a temporary file may sit unmodified before a later write removes it."""
    return float(os.environ.get(STALE_TEMP_ENV) or DEFAULT_STALE_TEMP_SECONDS)


class MissingObjectError(FileNotFoundError):
    """A key was read that has no committed object."""


class CorruptObjectError(IOError):
    """An object's bytes do not match the checksum recorded in its marker."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(obj: Any, length: int = 16) -> str:
    """A stable hash of a JSON-serialisable object (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def _device_name() -> str:
    # Only ask torch when the caller already loaded it: the store must not pull torch in.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu@{socket.gethostname()}"


def read_parquet_bytes(data: bytes, columns: Iterable[str] | None = None) -> pa.Table:
    """Parse Parquet bytes on the calling thread, with nothing left for Arrow's threads.

    ``pq.read_table`` goes through the dataset scanner, which drops its last reference to the
    Python source on one of Arrow's I/O threads (measured with pyarrow 25: in 29 of 200 reads,
    even with ``use_threads=False, pre_buffer=False``). When that happens as the interpreter
    exits, the thread cannot take the GIL, glibc unwinds it through a noexcept frame and the
    process aborts with "terminate called without an active exception" (exit 134) after its
    work is done: ``syllabus ingest`` reads shards for its summary just before it exits.
    ``ParquetFile.read`` decodes and releases everything on the calling thread.
    """
    reader = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    return reader.read(columns=list(columns) if columns else None, use_threads=False)


class Store:
    """An object store rooted at ``url``.

    ``storage_options`` go to fsspec unchanged (for S3: ``endpoint_url``, ``key``, ``secret``
    ...); when absent for ``s3://`` URLs, ``AWS_ENDPOINT_URL``/``MLFLOW_S3_ENDPOINT_URL`` and the
    usual AWS variables are honoured by s3fs/botocore.
    """

    def __init__(self, url: str | None = None, storage_options: Mapping[str, Any] | None = None):
        url = url or os.environ.get(DEFAULT_STORE_ENV) or DEFAULT_STORE
        options = dict(storage_options or {})
        if has_credentials(url):
            # The key and secret leave the URL (so no URL this store hands out, logs or writes
            # into a manifest carries them) for the environment, where readers of those URLs
            # in this process and its workers find them; the fs gets them explicitly, because
            # fsspec may reuse a filesystem made before the environment changed.
            clean = adopt_credentials(url)
            options = {**split_credentials(url)[1], **options}
            url = clean
        if url.startswith("s3://") and "endpoint_url" not in options and "client_kwargs" not in options:
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
            if endpoint:
                options["endpoint_url"] = endpoint
        self.fs, root = fsspec.core.url_to_fs(url, **options)
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.root = root.rstrip("/")
        self.storage_options = options
        if self.protocol == "file":
            self.root = os.path.abspath(self.root)
            # The first write creates the folder, not this: a read through a mistyped URL must
            # leave nothing behind. A file in the way is named now rather than as "[Errno 17]".
            existing = self.root
            while not os.path.exists(existing) and os.path.dirname(existing) != existing:
                existing = os.path.dirname(existing)
            if not os.path.isdir(existing):
                raise ValueError(
                    f"store {self.root} cannot be a folder: {existing} is a file; pass a folder (it is "
                    "created when missing), s3://bucket/prefix or memory://name to --store"
                )

    # ------------------------------------------------------------------ paths
    def path(self, key: str) -> str:
        key = key.lstrip("/")
        if ".." in key.split("/"):
            raise ValueError(f"store key {key!r} contains '..'; keys are relative to the store root")
        return posixpath.join(self.root, key) if self.protocol != "file" else os.path.join(self.root, key)

    def url(self, key: str) -> str:
        """A full URL for ``key`` that ``Store.open_url`` (and fsspec) can read."""
        if self.protocol == "file":
            return self.path(key)
        return f"{self.protocol}://{self.path(key).lstrip('/')}" if self.protocol == "s3" else f"{self.protocol}://{self.path(key)}"

    def key_of(self, url: str) -> str:
        """Inverse of :meth:`url` for URLs inside this store."""
        prefix = self.url("")
        if not url.startswith(prefix.rstrip("/")):
            raise ValueError(f"{url} is not inside the store {self.url('')}")
        return url[len(prefix.rstrip("/")) :].lstrip("/")

    def __repr__(self) -> str:
        return f"Store({self.url('')!r})"

    # ------------------------------------------------------------- raw access
    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def _find(self, prefix: str) -> list[str]:
        """Every object's key under ``prefix`` (recursive), markers and temporaries included: one listing."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return []
        root = self.root.lstrip("/") if self.protocol != "file" else self.root
        return [(p.lstrip("/") if self.protocol != "file" else p)[len(root) :].lstrip("/") for p in self.fs.find(base)]

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (recursive), without markers."""
        return sorted(rel for rel in self._find(prefix) if not rel.endswith(MARKER_SUFFIX) and ".tmp-" not in rel)

    def marked(self, prefix: str = "") -> set[str]:
        """Keys under ``prefix`` that have their object and a commit marker, from one listing
        (one request on S3, where :meth:`is_committed` per key makes two or more). The bytes are
        not checked against the marker: good for counting (a plan's preview), not for reusing."""
        found = set(self._find(prefix))
        return {rel.removesuffix(MARKER_SUFFIX) for rel in found
                if rel.endswith(MARKER_SUFFIX) and rel.removesuffix(MARKER_SUFFIX) in found}

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write atomically: readers see the old object or the new one, never half of one."""
        path = self.path(key)
        parent = posixpath.dirname(path) if self.protocol != "file" else os.path.dirname(path)
        if self.protocol == "file":
            self.fs.makedirs(parent, exist_ok=True)
            self._sweep_once(parent)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:  # a full disk, an interrupt: leave no temporary behind
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        else:
            # An S3 PUT is atomic by itself; memory:// writes the value in one assignment.
            try:
                self.fs.pipe_file(path, data)
            except FileNotFoundError as exc:  # s3fs: "The specified bucket does not exist", naming nothing
                raise FileNotFoundError(
                    f"cannot write {self.url(key)}: {exc}; create the bucket or check the store URL (--store)"
                ) from exc

    # ------------------------------------------------- stale temporary files
    def _sweep_once(self, folder: str) -> None:
        with _SWEPT_LOCK:
            if folder in _SWEPT:
                return
            _SWEPT.add(folder)
        try:
            self._remove_stale_in(folder, stale_temp_seconds())
        except OSError as exc:  # cleaning up must never fail the write
            log.warning("could not remove stale temporary files in %s: %s", folder, exc)

    def remove_stale_temps(self, prefix: str = "", max_age: float | None = None) -> list[str]:
        """Remove the stale temporary files under ``prefix`` (see the module docstring);
        returns their paths relative to the store root. Only local stores have any."""
        if self.protocol != "file":
            return []
        age = stale_temp_seconds() if max_age is None else max_age
        removed: list[str] = []
        for folder, _, _ in os.walk(self.path(prefix)):
            removed += self._remove_stale_in(folder, age)
        return removed

    def _remove_stale_in(self, folder: str, max_age: float) -> list[str]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        now, removed = time.time(), []
        for entry in entries:
            found = _TEMP_NAME.match(entry.name)
            if found is None:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # its writer renamed it into place just now
                continue
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < max_age:
                continue
            key = os.path.relpath(os.path.join(folder, found["name"]), self.root).replace(os.sep, "/")
            if self._lease_is_live(key):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(os.path.relpath(entry.path, self.root).replace(os.sep, "/"))
        if removed:
            log.info("removed %d stale temporary file(s) left by an interrupted write in %s: %s", len(removed), folder,
                     ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else ""))
        return removed

    def _lease_is_live(self, key: str) -> bool:
        """Whether a worker holds an unexpired lease on the object ``key`` (or its marker) belongs to."""
        from syllabus.store.lease import Lease

        return Lease(self, key.removesuffix(MARKER_SUFFIX)).holder() is not None

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError as exc:
            raise MissingObjectError(f"{self.url(key)} does not exist in the store") from exc

    def delete(self, key: str) -> None:
        for k in (key, key + MARKER_SUFFIX):
            if self.fs.exists(self.path(k)):
                self.fs.rm(self.path(k))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode("utf-8"))

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    # ---------------------------------------------------------- commit/verify
    def marker_key(self, key: str) -> str:
        return key + MARKER_SUFFIX

    def commit(self, key: str, data: bytes, meta: Mapping[str, Any] | None = None) -> dict:
        """Write ``data`` at ``key``, then its marker. Returns the marker."""
        start = time.perf_counter()
        self.write_bytes(key, data)
        marker = {
            "key": key,
            "bytes": len(data),
            "sha256": sha256_bytes(data),
            "device": _device_name(),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **dict(meta or {}),
        }
        marker.setdefault("seconds", round(time.perf_counter() - start, 4))
        self.write_json(self.marker_key(key), marker)
        return marker

    def marker(self, key: str) -> dict | None:
        try:
            return self.read_json(self.marker_key(key))
        except (MissingObjectError, json.JSONDecodeError):
            return None

    def is_committed(self, key: str, verify: bool = True) -> bool:
        """True when ``key`` has a marker and (with ``verify``) its bytes match the checksum."""
        marker = self.marker(key)
        if marker is None:
            return False
        if not verify:
            return self.exists(key)
        try:
            self.read_committed(key, marker=marker)
        except (MissingObjectError, CorruptObjectError) as exc:
            log.warning("%s; it will be recomputed", exc)
            return False
        return True

    def read_committed(self, key: str, marker: Mapping[str, Any] | None = None) -> bytes:
        marker = marker if marker is not None else self.marker(key)
        if marker is None:
            raise MissingObjectError(f"{self.url(key)} has no commit marker; it was never finished")
        data = self.read_bytes(key)
        actual = sha256_bytes(data)
        if actual != marker.get("sha256"):
            raise CorruptObjectError(
                f"{self.url(key)} is corrupt: its sha256 is {actual[:12]}... but its marker records "
                f"{str(marker.get('sha256'))[:12]}...; delete it or rerun to recompute"
            )
        return data

    # ---------------------------------------------------------------- parquet
    @staticmethod
    def table_bytes(table: pa.Table) -> bytes:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()

    def commit_table(self, key: str, table: pa.Table, meta: Mapping[str, Any] | None = None) -> dict:
        return self.commit(key, self.table_bytes(table), {"rows": table.num_rows, **dict(meta or {})})

    def read_table(self, key: str, verify: bool = True, columns: Iterable[str] | None = None) -> pa.Table:
        data = self.read_committed(key) if verify else self.read_bytes(key)
        return read_parquet_bytes(data, columns)

    # -------------------------------------------------------------- from URLs
    @classmethod
    def open_url(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> tuple["Store", str]:
        """Split a full object URL into (store rooted at its parent, key)."""
        if "://" in url and not url.startswith("file://"):
            proto, rest = url.split("://", 1)
            parent, name = posixpath.split(rest)
            return cls(f"{proto}://{parent}", storage_options), name
        path = url[len("file://") :] if url.startswith("file://") else url
        parent, name = os.path.split(os.path.abspath(path))
        return cls(parent, storage_options), name
