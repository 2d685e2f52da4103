"""Leases in the store: one worker computes a key while the others wait for its marker.

Two ``syllabus score`` runs, or two Prefect workers, given the same pool would otherwise both
score every shard. Before computing a key a worker takes its lease; whoever finds the lease
held scores other shards first and comes back, or waits for the marker.

A lease is a small JSON object under ``leases/<key>/<generation>.json`` holding the owner and
an ``expires_at`` time. It is taken by an atomic create-if-absent of the next generation
(``os.link`` on a local directory, ``If-None-Match: *`` on S3, exclusive open on
``memory://``), so of two workers racing for one generation exactly one wins. A generation is
only created after the one below it expired or was released, so at most one unexpired
holder exists at a time. The holder renews its expiry from a background thread; a worker
that dies stops renewing, and its shard is taken over once the lease expires (at once when
it ran on the same machine and its process is gone). Generation
files are never reused while the key is uncommitted (a release rewrites its file as expired
rather than deleting it): deleting would let a late worker restart at generation 0 beside
a live holder. After the commit the whole lease folder is deleted.

Expiry compares wall clocks of different machines: keep them in sync (NTP) or the lease
longer than their drift.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a Store calls Lease (its stale-temporary sweep): no import circle at run time
    from syllabus.store.store import Store

log = logging.getLogger(__name__)

LEASE_PREFIX = "leases"
LEASE_SECONDS_ENV = "SYLLABUS_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 300.0


def default_lease_seconds() -> float:
    return float(os.environ.get(LEASE_SECONDS_ENV) or DEFAULT_LEASE_SECONDS)


class LeaseHeld(RuntimeError):
    """Another worker holds an unexpired lease on the key."""

    def __init__(self, key: str, holder: dict[str, Any]):
        self.key, self.holder = key, holder
        left = max(0.0, float(holder.get("expires_at", 0)) - time.time())
        super().__init__(f"{key} is being computed by {holder.get('owner', 'another worker')} "
                         f"(its lease expires in {left:.0f} s unless renewed)")


def create_exclusive(store: Store, key: str, data: bytes) -> bool:
    """Write ``data`` at ``key`` only if nothing is there; True when this call created it.
    Readers never see a partial object."""
    path = store.path(key)
    if store.protocol == "file":
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails when path exists, and publishes the whole file at once
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    try:
        # s3fs sends If-None-Match: * (moto and AWS S3 honour it); memory:// opens with "xb".
        store.fs.pipe_file(path, data, mode="create")
        return True
    except FileExistsError:
        return False


def _holder_is_dead(record: dict[str, Any]) -> bool:
    """True when the holder ran on this machine and its process is gone: a rerun after a crash
    or a kill takes the shard at once instead of waiting out the lease. A holder on another
    machine is only known dead by its expiry."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    if record["pid"] == os.getpid():
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class Lease:
    """The lease on one store key. ``acquire`` once; ``release`` when done (``done=True``
    after the key was committed, which removes the lease folder)."""

    def __init__(self, store: Store, key: str, seconds: float | None = None, owner: str | None = None):
        self.store, self.key = store, key
        self.seconds = float(seconds or default_lease_seconds())
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.folder = f"{LEASE_PREFIX}/{key}"
        self.generation: int | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # -------------------------------------------------------------------- reading
    def _generations(self) -> list[int]:
        path = self.store.path(self.folder)
        self.store.fs.invalidate_cache(path)  # s3fs caches listings; a lease needs the current one
        try:
            names = self.store.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            stem = posixpath.basename(str(name).rstrip("/"))
            if stem.endswith(".json") and stem[:-5].isdigit():
                found.append(int(stem[:-5]))
        return sorted(found)

    def _gen_key(self, generation: int) -> str:
        return f"{self.folder}/{generation:08d}.json"

    def holder(self) -> dict[str, Any] | None:
        """The current holder's record when the lease is held and unexpired, else None."""
        gens = self._generations()
        if not gens:
            return None
        try:
            record = json.loads(self.store.read_bytes(self._gen_key(gens[-1])))
        except (FileNotFoundError, json.JSONDecodeError):
            return None  # removed after a commit, or mid-rewrite: look again
        return record if float(record.get("expires_at", 0)) > time.time() and not _holder_is_dead(record) else None

    # -------------------------------------------------------------------- holding
    def _record(self, expires_at: float, released: bool = False) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "key": self.key,
                           "expires_at": expires_at, "written_at": time.time(), "released": released}).encode("utf-8")

    def _taking_over(self, record: dict[str, Any]) -> None:
        """Say why a lease is free. A released one was handed back (a failed attempt, whose
        retry is usually this same worker): nothing went wrong with the lease, so no line."""
        if record.get("released"):
            log.debug("lease on %s was released by %s; taking it", self.key, record.get("owner"))
        elif _holder_is_dead(record):
            log.info("lease on %s held by %s, whose process is gone; taking it over", self.key, record.get("owner"))
        else:
            log.info("lease on %s held by %s expired; taking it over", self.key, record.get("owner"))

    def acquire(self) -> bool:
        """Take the lease if it is free or expired; False when another worker holds it."""
        gens = self._generations()
        nxt = 0
        if gens:
            try:
                record = json.loads(self.store.read_bytes(self._gen_key(gens[-1])))
            except FileNotFoundError:
                return False  # the folder is being removed: the key was just committed
            except json.JSONDecodeError:
                record = {}  # a torn record: treat as held until its file is rewritten or ages out
                if time.time() - self._age_reference(gens[-1]) < self.seconds:
                    return False
            if record and float(record.get("expires_at", 0)) > time.time() and not _holder_is_dead(record):
                return False
            if record:
                self._taking_over(record)
            nxt = gens[-1] + 1
        if not create_exclusive(self.store, self._gen_key(nxt), self._record(time.time() + self.seconds)):
            return False
        self.generation = nxt
        self._start_renewing()
        return True

    def _age_reference(self, generation: int) -> float:
        try:
            modified = self.store.fs.modified(self.store.path(self._gen_key(generation)))
            return modified.timestamp()
        except (NotImplementedError, FileNotFoundError, AttributeError):
            return 0.0

    def _start_renewing(self) -> None:
        def renew() -> None:
            while not self._stop.wait(self.seconds / 3):
                try:
                    if self._generations()[-1:] != [self.generation]:
                        log.warning("lease on %s was taken over (this worker stalled past its expiry); "
                                    "finishing anyway, the result is the same", self.key)
                        return
                    self.store.write_bytes(self._gen_key(self.generation), self._record(time.time() + self.seconds))
                except Exception as exc:  # a missed renewal only risks a duplicate computation
                    log.warning("could not renew the lease on %s: %s", self.key, exc)

        self._stop.clear()
        self._renewer = threading.Thread(target=renew, name=f"lease-{self.key}", daemon=True)
        self._renewer.start()

    def release(self, done: bool = False) -> None:
        """Give the lease up: after a commit (``done``) remove every generation; otherwise
        mark this one expired so the next worker takes the key at once."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        if self.generation is None:
            return
        try:
            if done:
                self.store.fs.rm(self.store.path(self.folder), recursive=True)
            else:
                self.store.write_bytes(self._gen_key(self.generation), self._record(0.0, released=True))
        except FileNotFoundError:
            pass
        except Exception as exc:  # the lease then ages out by itself
            log.warning("could not release the lease on %s: %s", self.key, exc)
        self.generation = None
