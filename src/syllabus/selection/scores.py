"""Reading the candidates of a selection: score tables joined on sample_id, and the pool.

A score input is a score-manifest JSON written by ``syllabus score`` (``{"scorer", "version",
"config", "model_fingerprint", "pool_manifest", "shards": [{"shard", "url", ...}]}``) or a
single score Parquet file (``sample_id`` plus ``<scorer>_<metric>`` columns); a composite
manifest (``components``: scorer -> manifest URL) stands for its components. Inputs with the
same columns (one scorer's shards) are stacked; different scorers are joined on
``sample_id``. When a pool manifest is known (named by the score manifests or
passed explicitly) the candidates are exactly the pool's samples, each with its full record
(left in the pool's shards: only the sample ids are read to build the candidates, and the
records of the chosen samples are gathered from their shards when the selection is written);
a pool sample that a scorer did not score has missing values and is dropped, with a reason,
by any stage that needs them, while a scored id that is not in the known pool is an error (the
scores belong to another pool) naming a few of them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from syllabus.store import Store
from syllabus.store.store import read_parquet_bytes

log = logging.getLogger(__name__)


def _location(url: str) -> str:
    """A URL or path in one spelling: a local file as its absolute path, others unchanged."""
    path = url.removeprefix("file://")
    return url if "://" in path else os.path.abspath(path)


def read_url_bytes(url: str, what: str = "input") -> bytes:
    """The bytes at ``url``, checksum-verified when the object has a commit marker. A local
    FIFO or device is refused before it is opened (``what`` names it in the error)."""
    from syllabus.inputs import refuse_special_file

    refuse_special_file(url, what)
    store, key = Store.open_url(url)
    if store.marker(key) is not None:
        return store.read_committed(key)
    log.info("%s has no commit marker; read without checksum verification", url)
    return store.read_bytes(key)


def _table_of(url: str) -> pa.Table:
    data = read_url_bytes(url, "score table")
    try:
        return read_parquet_bytes(data)
    except (pa.ArrowInvalid, OSError):  # pyarrow's own message names only '<Buffer>'
        raise ValueError(
            f"{url} is not a Parquet file (pyarrow cannot read it as one); --scores takes the score manifests "
            "(.json) printed by `syllabus score --json` or score tables (.parquet)"
        ) from None


@dataclass
class ScoreInput:
    url: str
    kind: str  # "manifest" or "parquet"
    scorer: str | None
    version: Any
    model_fingerprint: str | None
    pool_manifest: str | None
    rows: int
    columns: list[str]
    config: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url, "kind": self.kind, "scorer": self.scorer, "version": self.version,
            "config": self.config, "model_fingerprint": self.model_fingerprint,
            "pool_manifest": self.pool_manifest, "rows": self.rows, "columns": self.columns,
        }


def _vector_split(url: str, lazy: bool) -> tuple[pa.Table, list[str], dict[str, pa.DataType]]:
    """One score Parquet: its table (without its vector columns when ``lazy``), every column
    name in order, and the vector columns left out with their types."""
    if not lazy:
        table = _table_of(url)
        return table, table.column_names, {}
    import pyarrow.parquet as pq

    from syllabus.selection.vectors import is_vector_type

    data = read_url_bytes(url, "score table")
    try:
        schema = pq.read_schema(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError):
        return _table_of(url), [], {}  # not Parquet: _table_of raises the explanatory error
    vectors = {f.name: f.type for f in schema if is_vector_type(f.type)}
    table = read_parquet_bytes(data, columns=[n for n in schema.names if n not in vectors])
    return table, list(schema.names), vectors


def read_score_input(url: str) -> tuple[pa.Table, ScoreInput]:
    """One score input as an Arrow table plus what it is."""
    table, info, _ = _read_score_input(url, lazy=False)
    return table, info


def _read_score_input(url: str, lazy: bool) -> tuple[pa.Table, ScoreInput, dict[str, Any]]:
    """:func:`read_score_input`; with ``lazy``, vector columns (embeddings, gradient features)
    are left in the shards: the table lacks them and the third item maps each to its
    :class:`~syllabus.selection.vectors.VectorSource` (rows in the table's order)."""
    from syllabus.selection.vectors import VectorSource

    if url.endswith(".json"):
        try:
            manifest = json.loads(read_url_bytes(url, "score manifest"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{url} is not JSON; pass a score manifest (.json) or a score Parquet file") from exc
        if not isinstance(manifest, dict) or "shards" not in manifest:
            raise ValueError(
                f"{url} is not a score manifest (no 'shards'); pass the 'scores' URL printed by `syllabus score --json`"
            )
        urls = [shard["url"] for shard in manifest["shards"]]
        parts = [_vector_split(u, lazy) for u in urls]
        tables = [t for t, _, _ in parts]
        table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({"sample_id": pa.array([], pa.string())})
        names = list(dict.fromkeys(n for _, order, _ in parts for n in order)) or table.column_names
        vector_types = {k: v for _, _, vt in parts for k, v in vt.items()}
        info = ScoreInput(
            url=url, kind="manifest", scorer=manifest.get("scorer"), version=manifest.get("version"),
            model_fingerprint=manifest.get("model_fingerprint"), pool_manifest=manifest.get("pool_manifest"),
            rows=table.num_rows, columns=[c for c in names if c != "sample_id"],
            config=manifest.get("config"),
        )
    else:
        table, names, vector_types = _vector_split(url, lazy)
        urls, tables = [url], [table]
        info = ScoreInput(
            url=url, kind="parquet", scorer=None, version=None, model_fingerprint=None, pool_manifest=None,
            rows=table.num_rows, columns=[c for c in (names or table.column_names) if c != "sample_id"],
        )
    vectors = {name: VectorSource(name, urls, [t.num_rows for t in tables], t,
                                  lambda u: read_url_bytes(u, "score table")) for name, t in vector_types.items()}
    if "sample_id" not in table.column_names:
        raise ValueError(f"score table {url} has no sample_id column; score tables must carry the pool's sample_id")
    table = table.set_column(table.column_names.index("sample_id"), "sample_id", pc.cast(table["sample_id"], pa.string()))
    ids = table["sample_id"].to_numpy(zero_copy_only=False)
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"score table {url} lists sample_id {uniq[counts > 1][0]!r} {counts.max()} times; "
            "each sample must be scored once per scorer: pass each score manifest once"
        )
    return table, info, vectors


class PoolRecords:
    """The records of a pool left in its shards, gathered by sample id when asked.

    Building it reads each shard's ``sample_id`` column (checksum-verified, as every shard
    read); :meth:`take` reads only the shards that hold the ids asked for, one at a time, and
    keeps only those rows. A selection of 5,000 out of 2,000,000 then holds 2,000,000 ids and
    5,000 records, not 2,000,000 records (a pool of a million Alpaca records is about a GB)."""

    def __init__(self, manifest: dict[str, Any], url: str):
        from syllabus.pool.manifest import read_shard

        self.shards = list(manifest["shards"])
        if not self.shards:
            raise ValueError(f"pool {url} has no sample_id column; re-ingest it with `syllabus ingest`")
        first = read_shard(self.shards[0])
        if "sample_id" not in first.column_names:
            raise ValueError(f"pool {url} has no sample_id column; re-ingest it with `syllabus ingest`")
        self.schema = first.schema
        ids = [first["sample_id"]] + [_shard_ids(s) for s in self.shards[1:]]
        del first
        counts = np.array([len(c) for c in ids], dtype=np.int64)
        self.sample_ids = pc.cast(pa.chunked_array([c for col in ids for c in _chunks(col)], ids[0].type), pa.string())
        self.starts = np.concatenate([[0], np.cumsum(counts)])  # each shard's first row

    def take(self, sample_ids: pa.Array) -> pa.Table:
        """The pool's rows for ``sample_ids``, in that order; a null row for an id not in the pool."""
        from syllabus.pool.manifest import read_shard

        rows = _row_index(sample_ids, self.sample_ids)
        found = np.flatnonzero(rows >= 0)
        shard = np.searchsorted(self.starts, rows[found], side="right") - 1
        order = np.argsort(shard, kind="stable")
        by_shard, shard = found[order], shard[order]  # the positions asked for, shard by shard
        shards, first = np.unique(shard, return_index=True)
        pieces = []
        for s, lo, hi in zip(shards, first, [*first[1:], len(shard)]):
            asked = by_shard[lo:hi]
            table = read_shard(self.shards[int(s)])
            pieces.append(table.take(pa.array(rows[asked] - self.starts[s])))
            del table
        gathered = pa.concat_tables(pieces) if pieces else self.schema.empty_table()
        where = np.full(len(rows), -1, dtype=np.int64)
        where[by_shard] = np.arange(len(by_shard))
        return gathered.take(pa.array(where, mask=where < 0))


def _shard_ids(shard: dict[str, Any]) -> pa.ChunkedArray:
    from syllabus.store import Store

    store, key = Store.open_url(shard["url"])
    return store.read_table(key, columns=["sample_id"])["sample_id"]


def _chunks(column: pa.ChunkedArray | pa.Array) -> list[pa.Array]:
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def _row_index(sample_ids: pa.Array, among: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The row of each id in ``among`` (its first occurrence), -1 where it is absent."""
    return pc.fill_null(pc.index_in(sample_ids, value_set=among), -1).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass
class Candidates:
    """Everything a selection reads: one pandas row per candidate (sample_id + scores), and
    where to gather full records from: the pool (its records left in its shards,
    :class:`PoolRecords`, or a table) and the score tables."""

    frame: pd.DataFrame
    pool: PoolRecords | pa.Table | None
    score_tables: list[pa.Table]
    inputs: list[ScoreInput]
    pool_url: str | None
    notes: list[str] = field(default_factory=list)
    # Per score table: its vector columns left in the shards (VectorSource, rows in the
    # table's order) and every column name in the scorer's order.
    vectors: list[dict[str, Any]] = field(default_factory=list)
    column_orders: list[list[str]] = field(default_factory=list)

    def records(self, sample_ids: list[str]) -> pa.Table:
        """Full records plus scores for ``sample_ids``, in that order (pool columns first)."""
        wanted = pa.array(sample_ids, pa.string())
        out = pa.table({"sample_id": wanted})
        if isinstance(self.pool, PoolRecords):
            gathered = self.pool.take(wanted)
            for name in gathered.column_names:
                if name != "sample_id" and name not in out.column_names:
                    out = out.append_column(name, gathered[name])
            del gathered
        sources = [(self.pool, {}, None)] if isinstance(self.pool, pa.Table) else []
        sources += [(t, self.vectors[i] if i < len(self.vectors) else {},
                     self.column_orders[i] if i < len(self.column_orders) else None)
                    for i, t in enumerate(self.score_tables)]
        for table, vectors, order in sources:
            rows = _row_index(wanted, table["sample_id"])
            take = pa.array(rows, mask=rows < 0)  # absent -> null row
            for name in order or table.column_names:
                if name == "sample_id" or name in out.column_names:
                    continue
                if name in vectors:  # read from the shards, only these rows
                    out = out.append_column(name, vectors[name].read(rows))
                else:
                    out = out.append_column(name, table[name].take(take))
        return out


def expand_score_urls(score_urls: list[str]) -> list[str]:
    """Replace a composite manifest (``syllabus score --method 3ds`` writes one naming its
    quality and difficulty manifests under ``components``) by its components; drop repeats."""
    out: list[str] = []
    for url in score_urls:
        parts = [url]
        if url.endswith(".json"):
            try:
                doc = json.loads(read_url_bytes(url, "score manifest"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{url} is not JSON; pass a score manifest (.json) or a score Parquet file") from exc
            if isinstance(doc, dict) and "shards" not in doc and isinstance(doc.get("components"), dict):
                parts = list(doc["components"].values())
        out += [p for p in parts if p not in out]
    return out


def _isin(ids: pd.Series, among: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``ids.isin(among)`` by pyarrow's hash lookup: pandas' isin on Arrow-backed strings
    turned every id into a Python object (10 s for two 100,000-row calls under load)."""
    values = pc.cast(pa.array(ids), pa.string())
    return pc.is_in(values, value_set=pc.unique(among)).to_numpy(zero_copy_only=False)


def load_candidates(score_urls: list[str], pool_url: str | None = None) -> Candidates:
    """Join the score inputs on sample_id and attach the pool (explicit, or named by the
    score manifests).

    The candidates are the pool's samples that at least one input scored (all of the pool
    when no scores are given: random, full). A sample scored by one input but not another
    has missing values there and is dropped, with a reason, by a stage that needs them.
    """
    from syllabus.selection.vectors import VectorArray, VectorSource

    inputs: list[ScoreInput] = []
    # Inputs with the same columns are parts of one scorer's output (e.g. shard Parquets):
    # stack them; different column sets are different scorers: join them on sample_id.
    # Vector columns stay in the shards (syllabus.selection.vectors): read when a stage needs them.
    groups: dict[tuple[str, ...], list[tuple[pa.Table, ScoreInput]]] = {}
    lazy: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for url in expand_score_urls(score_urls):
        table, info, vectors = _read_score_input(url, lazy=True)
        groups.setdefault(tuple(sorted(info.columns)), []).append((table, info))
        lazy.setdefault(tuple(sorted(info.columns)), []).append(vectors)
        inputs.append(info)
    tables: list[pa.Table] = []
    vector_sources: list[dict[str, Any]] = []
    orders: list[list[str]] = []
    owner: dict[str, str] = {}
    for columns, members in groups.items():
        vector_sources.append({name: VectorSource.concat([v[name] for v in lazy[columns]]) for name in lazy[columns][0]})
        orders.append(["sample_id"] + list(members[0][1].columns))
        urls = ", ".join(i.url for _, i in members)
        for col in columns:
            if col in owner:
                raise ValueError(
                    f"column {col!r} comes from both {owner[col]} and {urls}; pass each scorer's scores once"
                )
            owner[col] = urls
        table = pa.concat_tables([t for t, _ in members], promote_options="default")
        ids = pd.Series(table["sample_id"].to_pylist())
        if ids.duplicated().any():
            raise ValueError(
                f"sample_id {ids[ids.duplicated()].iloc[0]!r} is scored more than once across {urls}; "
                "pass each shard (or manifest) once"
            )
        tables.append(table)

    notes: list[str] = []
    named = sorted({i.pool_manifest for i in inputs if i.pool_manifest})
    if pool_url is None and len(named) > 1:
        raise ValueError(
            f"the score manifests name different pools ({', '.join(named)}); pass --pool with the one to select from"
        )
    pool_url = pool_url or (named[0] if named else None)
    if pool_url and named and any(_location(n) != _location(pool_url) for n in named):
        notes.append(f"--pool {pool_url} overrides the pool named by the score manifests ({', '.join(named)})")

    pool = None
    if pool_url:
        from syllabus.pool.manifest import load_manifest

        # The records stay in the shards (PoolRecords): only the chosen ones are read back.
        pool = PoolRecords(load_manifest(pool_url), pool_url)
        frame = pd.DataFrame({"sample_id": pool.sample_ids.to_pylist()})
    elif tables:
        ids = sorted(set().union(*[set(t["sample_id"].to_pylist()) for t in tables]))
        frame = pd.DataFrame({"sample_id": ids})
        notes.append("no pool manifest (none named by the scores, no --pool): the selected Parquet holds scores only")
    else:
        raise ValueError("nothing to select from: pass --scores with score manifests or Parquet files, or --pool")

    if pool is not None and tables:
        scored = pa.chunked_array([t["sample_id"] for t in tables], pa.string())
        in_scores = pd.Series(_isin(frame["sample_id"], scored), index=frame.index)
        if not in_scores.all():
            notes.append(
                f"{int((~in_scores).sum())} of the pool's {len(frame)} samples have no score in any input "
                "(scored with --limit?); they are not candidates"
            )
            frame = frame[in_scores].reset_index(drop=True)
    known = pc.cast(pa.array(frame["sample_id"]), pa.string())
    for table, columns, vectors, order in zip(tables, groups, vector_sources, orders):
        label = ", ".join(i.url for _, i in groups[columns])
        scores = table.to_pandas()
        for name in [c for c in order if c in vectors]:
            scores.insert(min(order.index(name), len(scores.columns)), name,
                          VectorArray(vectors[name], np.arange(table.num_rows, dtype=np.int64)))
        extra = pd.Series(~_isin(scores["sample_id"], known), index=scores.index)
        if extra.any() and pool is not None:
            # Scores of another pool (or of records since quarantined): joining them would
            # silently score the wrong samples, so a known pool must cover every scored id.
            some = ", ".join(repr(i) for i in scores.loc[extra, "sample_id"].head(3))
            raise ValueError(
                f"score table {label} names {int(extra.sum()):,} sample id(s) that are not in the pool {pool_url} "
                f"(e.g. {some}); pass the scores computed on this pool, or the pool they were computed on with --pool"
            )
        unscored = len(frame) - len(scores)
        if unscored:
            notes.append(f"{unscored} candidates have no score in {label}")
        frame = frame.merge(scores, on="sample_id", how="left")
    return Candidates(frame=frame, pool=pool, score_tables=tables, inputs=inputs, pool_url=pool_url, notes=notes,
                      vectors=vector_sources, column_orders=orders)
