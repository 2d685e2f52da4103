"""The store behaves the same on a local directory, memory:// and a real S3 endpoint (moto)."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from syllabus.store import CorruptObjectError, MissingObjectError, Store, content_hash


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path):
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    if request.param == "memory":
        return Store(f"memory://store-{uuid.uuid4().hex[:8]}")
    bucket = request.getfixturevalue("s3_bucket")
    return Store(f"{bucket}/prefix")


def test_bytes_round_trip_and_listing(store):
    store.write_bytes("a/b/one.bin", b"hello")
    store.write_bytes("a/two.bin", b"world")
    assert store.read_bytes("a/b/one.bin") == b"hello"
    assert store.exists("a/two.bin")
    assert not store.exists("a/three.bin")
    assert store.list("a") == ["a/b/one.bin", "a/two.bin"]
    with pytest.raises(MissingObjectError, match="does not exist"):
        store.read_bytes("a/missing.bin")


def test_commit_marker_is_the_commit_point(store):
    key = "results/x.bin"
    store.write_bytes(key, b"payload")  # written but never committed: an interrupted task
    assert not store.is_committed(key)
    marker = store.commit(key, b"payload", {"rows": 3})
    assert marker["rows"] == 3 and marker["bytes"] == 7
    assert store.is_committed(key)
    assert store.read_committed(key) == b"payload"
    assert store.list("results") == ["results/x.bin"]  # markers are not listed as objects


def test_marked_lists_committed_keys_in_one_listing(store):
    """A plan's preview counts cached shards from one listing of a folder: objects with a marker;
    an object without one (an interrupted write) and a marker whose object is gone are not."""
    store.commit("scores/q/v1/a.parquet", b"a")
    store.commit("scores/q/v1/b.parquet", b"b")
    store.write_bytes("scores/q/v1/c.parquet", b"c")  # never committed
    store.commit("scores/q/v1/d.parquet", b"d")
    store.fs.rm(store.path("scores/q/v1/d.parquet"))  # its marker left behind
    store.commit("scores/q/v2/a.parquet", b"other folder")
    assert store.marked("scores/q/v1") == {"scores/q/v1/a.parquet", "scores/q/v1/b.parquet"}
    assert store.marked("scores/none") == set()


def test_corruption_is_detected_and_reported(store):
    key = "results/y.bin"
    store.commit(key, b"good bytes")
    store.write_bytes(key, b"good byte")  # truncated behind the marker's back
    assert not store.is_committed(key)
    with pytest.raises(CorruptObjectError, match="is corrupt"):
        store.read_committed(key)


def test_table_round_trip_verifies_checksum(store):
    table = pa.table({"sample_id": ["a", "b"], "x": [1.5, 2.5]})
    store.commit_table("t/scores.parquet", table, {"scorer": "demo"})
    assert store.marker("t/scores.parquet")["rows"] == 2
    assert store.read_table("t/scores.parquet").equals(table)
    assert store.read_table("t/scores.parquet", columns=["x"]).column_names == ["x"]


def test_url_round_trips_through_open_url(store):
    store.commit("deep/dir/obj.json", b'{"a": 1}')
    url = store.url("deep/dir/obj.json")
    other, key = Store.open_url(url)
    assert other.read_committed(key) == b'{"a": 1}'
    assert store.key_of(url) == "deep/dir/obj.json"


def test_delete_removes_object_and_marker(store):
    store.commit("d.bin", b"1")
    store.delete("d.bin")
    assert not store.exists("d.bin") and store.marker("d.bin") is None


def test_keys_cannot_escape_the_root(tmp_path):
    with pytest.raises(ValueError, match="contains '..'"):
        Store(str(tmp_path)).path("../outside")


def test_content_hash_is_stable_and_order_independent_for_dicts():
    # Golden value (= sha256 of {"a":[1,"x"],"b":2}, checked with sha256sum): a change here changes every cache key that uses content_hash.
    assert content_hash({"b": 2, "a": [1, "x"]}) == content_hash({"a": [1, "x"], "b": 2})
    assert content_hash({"a": [1, "x"], "b": 2}) == "8cbd548a32262b76"
