"""Reading a shard leaves nothing Python-owned to Arrow's threads (issue 17, finding 5).

The ingest command aborted at exit ("terminate called without an active exception", exit
134) in some runs: ``pq.read_table`` let an Arrow I/O thread drop the last reference to the
Python source, and when that happens during interpreter shutdown the thread cannot take the
GIL and the process aborts. The test records on which thread the source is freed.
"""

from __future__ import annotations

import gc
import io
import threading
import time

import pyarrow as pa

from syllabus.store import Store
from syllabus.store.store import read_parquet_bytes

freed_on: list[str] = []


class TrackedBytes(bytes):
    def __del__(self):
        freed_on.append(threading.current_thread().name)


class TrackedBytesIO(io.BytesIO):
    # Only those the test's thread creates: the patch is process-wide, and a thread left by an
    # earlier test (Prefect's GlobalEventLoopThread) creates and frees its own on itself.
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.created_on = threading.current_thread().name

    def __del__(self):
        if self.created_on == threading.main_thread().name:
            freed_on.append(threading.current_thread().name)


def test_shard_bytes_are_released_on_the_reading_thread(monkeypatch):
    # Whatever Python object the read hands to Arrow (the bytes themselves, or a file
    # object wrapping them) records the thread that frees it.
    monkeypatch.setattr(io, "BytesIO", TrackedBytesIO)
    table = pa.table({"sample_id": [f"s{i}" for i in range(3000)], "messages": [[{"role": "user", "content": "x" * (i % 50)}] for i in range(3000)]})
    data = Store.table_bytes(table)
    freed_on.clear()
    for _ in range(200):
        assert read_parquet_bytes(TrackedBytes(data), columns=["sample_id"]).num_rows == 3000
    gc.collect()
    time.sleep(0.5)  # an Arrow thread that still held one would have freed it by now
    assert len(freed_on) >= 200
    assert set(freed_on) == {threading.current_thread().name}, f"freed on: {sorted(set(freed_on))}"
