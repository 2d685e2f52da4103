"""The pool and each selected subset as MLflow datasets (``mlflow.log_input``).

The data stays in the Syllabus store; MLflow gets what identifies it: the store URL as the
source, the fingerprint as the digest (the pool fingerprint; for a subset, the hash of its
sample ids in rank order that ``syllabus export`` also reports), the canonical sample schema
and a row count. The runs page's Dataset column then names the pool and subset each run used,
and two runs with the same digest used the same data.
"""

from __future__ import annotations

from typing import Any, Mapping

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset

POOL_CONTEXT = "pool"
SUBSET_CONTEXT = "training"


class StoreDatasetSource(DatasetSource):
    """An object in the Syllabus store (a local path, ``s3://`` or ``memory://`` URL)."""

    def __init__(self, uri: str):
        from syllabus.store.credentials import redact

        self._uri = redact(uri)  # a URL with user-info must not carry its credentials into MLflow

    @property
    def uri(self) -> str:
        return self._uri

    @staticmethod
    def _get_source_type() -> str:
        return "syllabus_store"

    def load(self) -> str:
        return self._uri  # the store object's URL; read it with syllabus.store.Store.open_url

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built explicitly, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source: Any) -> "StoreDatasetSource":
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self._uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> "StoreDatasetSource":
        return cls(source_dict["uri"])


class StoreDataset(MetaDataset):
    """A dataset that lives in the store: MLflow's metadata-only dataset plus a profile."""

    def __init__(self, uri: str, name: str, digest: str, profile: Mapping[str, Any]):
        from mlflow.types.schema import Array, ColSpec, DataType, Object, Property, Schema

        from syllabus.pool.canonical import COLUMNS

        turn = Object([Property("role", DataType.string), Property("content", DataType.string)])
        schema = Schema([ColSpec(Array(turn) if name == "messages" else DataType.string, name) for name in COLUMNS])
        self._profile = dict(profile)
        super().__init__(StoreDatasetSource(uri), name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        import json

        out = super().to_dict()
        out["profile"] = json.dumps(self._profile)
        return out


def pool_dataset(ingest: Mapping[str, Any]) -> StoreDataset:
    """The pool as ingested: ``ingest`` is the ingest summary (``manifest``, ``pool_fingerprint``,
    counts), as ``syllabus ingest --json`` prints it and the ingest stage returns it."""
    missing = [k for k in ("manifest", "pool_fingerprint") if not ingest.get(k)]
    if missing:
        raise ValueError(f"the ingest summary has no {', '.join(missing)}; pass what `syllabus ingest --json` prints")
    profile = {"num_rows": ingest.get("records_ok"), "shards": ingest.get("shards"),
               "records_rejected": ingest.get("records_rejected"), "duplicates": ingest.get("duplicates")}
    return StoreDataset(ingest["manifest"], "pool", ingest["pool_fingerprint"],
                        {k: v for k, v in profile.items() if v is not None})


def subset_dataset(selection: Mapping[str, Any]) -> StoreDataset:
    """A selected subset: ``selection`` is the selection report (``outputs.selected``, method,
    counts), as the select stage returns it. The digest is read from the subset itself."""
    from syllabus.selection.export import default_name, read_selection, selection_fingerprint

    url = (selection.get("outputs") or {}).get("selected")
    if not url:
        raise ValueError("the selection report has no outputs.selected; pass the report `syllabus select` wrote")
    table, url = read_selection(url, columns=["sample_id"])
    profile = {"num_rows": table.num_rows, "method": selection.get("method"), "seed": selection.get("seed"),
               "n_candidates": selection.get("n_candidates")}
    return StoreDataset(url, default_name(url), selection_fingerprint(table["sample_id"].to_pylist()),
                        {k: v for k, v in profile.items() if v is not None})
