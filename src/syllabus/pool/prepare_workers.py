"""Worker processes that prepare JSONL blocks (:func:`vectorised.prepare_lines`) beside the ingest.

Most of preparing a block holds the GIL (hashing each record, building the rows' lists, the
Python between pyarrow's calls), which threads would share with the deduplication and sharding
of the ingest; a process has its own. The workers are plain subprocesses of this interpreter
(``python -c``), not multiprocessing's: spawn and forkserver run the caller's main script again
in each child (a script without an ``if __name__ == "__main__"`` guard would ingest again
there), fork copies this process's threads' held locks, and a daemonic process (a Dask or
multiprocessing worker) may not start multiprocessing children at all.

A worker reads requests from its stdin and writes results to a pipe of its own (its stdout is
sent to stderr, so a stray print cannot break a frame). A frame is a pickle (protocol 5) whose
Arrow buffers travel out of band, each padded to 64 bytes and read straight into one Arrow
allocation, so the tables arrive without a copy. A worker ends when its stdin closes, so one
outlives neither the ingest nor a killed parent.

A worker that fails (it dies, or the block raises) hands that block back to the caller, who
prepares it in its own process: the block gets the result (or the error) it would have got
without workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Callable

import pyarrow as pa

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_ALIGN = 64
_HEADER = struct.Struct("<QQ")  # pickle bytes, buffer count
_LENGTH = struct.Struct("<Q")
_PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged process (/proc/sys/fs/pipe-max-size)

# The child's first frame is the parent's sys.path, so it imports the same syllabus (a source
# tree on PYTHONPATH, a test's rootdir) whatever its working folder.
_BOOT = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from syllabus.pool.prepare_workers import serve; serve()"
)


def _pad(n: int) -> int:
    return -n % _ALIGN


def write_frame(out: BinaryIO, obj: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    head = [_HEADER.pack(len(payload), len(views))] + [_LENGTH.pack(v.nbytes) for v in views]
    out.write(b"".join(head))
    out.write(payload)
    for v in views:
        out.write(v)
        out.write(bytes(_pad(v.nbytes)))
    out.flush()


def _read_exact(src: BinaryIO, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = src.readinto(view[got:])
        if not n:
            raise EOFError("the worker's pipe closed in the middle of a frame")
        got += n


def read_frame(src: BinaryIO) -> Any:
    head = src.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("the worker's pipe closed")
    size, count = _HEADER.unpack(head)
    lengths = [_LENGTH.unpack(src.read(_LENGTH.size))[0] for _ in range(count)] if count else []
    payload = bytearray(size)
    _read_exact(src, memoryview(payload))
    total = sum(n + _pad(n) for n in lengths)
    block = pa.allocate_buffer(total)  # 64-byte aligned, as Arrow wants its buffers
    _read_exact(src, memoryview(block))
    buffers, at = [], 0
    for n in lengths:  # an empty one too: every buffer the pickle counts
        buffers.append(block.slice(at, n))
        at += n + _pad(n)
    return pickle.loads(payload, buffers=buffers)


def serve() -> None:
    """A worker's loop: (function name, arguments) in, ("ok", result) or ("error", text) out."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints and warnings go to stderr, never into a frame
    from syllabus.pool import vectorised

    functions: dict[str, Callable] = {"prepare_lines": vectorised.prepare_lines_detached}
    src = sys.stdin.buffer
    write_frame(out, ("ready", os.getpid()))
    while True:
        try:
            name, args = read_frame(src)
        except EOFError:
            out.close()
            os._exit(0)  # nothing to tidy: skip the interpreter's teardown (a few hundred ms of pyarrow's)
        try:
            result = ("ok", functions[name](*args))
        except Exception as exc:  # noqa: BLE001 -- the parent prepares the block itself, and raises it there
            result = ("error", f"{type(exc).__name__}: {exc}")
        write_frame(out, result)


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=1 << 16)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, AttributeError):  # Linux only; a larger pipe means fewer, larger copies
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        pickle.dump(list(sys.path), self.proc.stdin)
        self.proc.stdin.flush()

    def call(self, name: str, args: tuple) -> tuple[str, Any]:
        write_frame(self.proc.stdin, (name, args))
        return read_frame(self.proc.stdout)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class PrepareWorkers:
    """``count`` worker processes, started in the background; :attr:`ready` says whether they
    all answered. :meth:`submit` runs ``fallback(*args)`` here when a worker fails."""

    def __init__(self, count: int):
        self.count = count
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._failed = False
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=count, thread_name_prefix="ingest-worker")
        self._started = self._threads.submit(self._start)

    def _start(self) -> None:
        for _ in range(self.count):
            with self._lock:
                if self._failed:
                    return
                worker = _Worker()
                self._workers.append(worker)
            status, _ = read_frame(worker.proc.stdout)
            if status != "ready":
                raise RuntimeError(f"an ingest worker process answered {status!r} instead of ready")
            self._idle.put(worker)

    @property
    def ready(self) -> bool:
        """Whether every worker started (False for good once one failed)."""
        if not self._started.done() or self._failed:
            return False
        if self._started.exception() is not None:
            self._fail(f"they did not start: {self._started.exception()}")
            return False
        return True

    def _fail(self, why: str) -> None:
        with self._lock:
            if not self._failed:
                log.warning("ingest worker processes stopped (%s); preparing blocks in this process", why)
            self._failed = True

    def submit(self, name: str, args: tuple, fallback: Callable, finish: Callable = lambda value: value) -> Future:
        """A future for ``finish(name(*args))`` run by a worker, or for ``fallback(*args)``."""
        return self._threads.submit(self._call, name, args, fallback, finish)

    def _call(self, name: str, args: tuple, fallback: Callable, finish: Callable) -> Any:
        if not self._failed:
            worker = self._idle.get()
            try:
                status, value = worker.call(name, args)
            except (OSError, EOFError, pickle.PickleError, struct.error) as exc:  # the worker died or broke a frame
                self._fail(f"{type(exc).__name__}: {exc}")
                threading.Thread(target=worker.close, daemon=True).start()
            else:
                self._idle.put(worker)
                if status == "ok":
                    return finish(value)
                log.debug("an ingest worker could not prepare a block (%s); preparing it here", value)
        return fallback(*args)

    def close(self) -> None:
        with self._lock:
            self._failed = True  # blocks still queued are prepared here
        self._threads.shutdown(wait=True, cancel_futures=True)
        for worker in self._workers:
            worker.close()
