"""The object store: the one place Syllabus reads and writes results.

Backed by fsspec, so a store URL can be a local directory (the default), ``s3://bucket/prefix``
(through s3fs) or ``memory://name`` (tests). Objects are addressed by keys relative to the
store root. A result is *committed* by writing the object and then a small
``<key>.done.json`` marker holding its checksum; the marker is the commit point, so a reader
that finds a marker and a matching checksum may trust the object, and anything else means
"recompute".
"""

from syllabus.store.store import (
    CorruptObjectError,
    MissingObjectError,
    Store,
    content_hash,
    read_parquet_bytes,
    sha256_bytes,
)

__all__ = ["Store", "CorruptObjectError", "MissingObjectError", "content_hash", "read_parquet_bytes", "sha256_bytes"]
