"""Vector score columns (embeddings, gradient features) left in their Parquet until needed.

A 3DS pool of 1,000,000 samples with a 7B model's 4,096-d embeddings carries 16 GB of
``difficulty_embedding``; read whole into the candidates (an Arrow table, then a pandas
column of per-row arrays, then K-Center's matrix) it was held two to three times over, while
K-Center only ever looks at the rows that survive the quality cut and the bands (a few
percent). So the candidates hold such a column as a :class:`VectorArray`: positions into the
score shards' rows (a pandas extension array; filtering, sorting and joining move positions,
not vectors), and the vectors of exactly the rows a stage asks for are read from the shards,
one shard at a time, checksum-verified, when it asks (:meth:`VectorArray.to_arrow`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.extensions import ExtensionArray, ExtensionDtype, register_extension_dtype


def is_vector_type(t: pa.DataType) -> bool:
    """A list of numbers: the columns kept lazily."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)
    return False


class VectorSource:
    """One vector column of one scorer's output: the shard URLs, their row counts, its type."""

    def __init__(self, column: str, urls: Sequence[str], counts: Sequence[int], arrow_type: pa.DataType,
                 read_bytes: Callable[[str], bytes]):
        # read_bytes: the URL's bytes, checksum-verified (scores.read_url_bytes, passed in so
        # that this module does not import the one that uses it)
        self.column, self.urls, self.type, self.read_bytes = column, list(urls), arrow_type, read_bytes
        self.starts = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @staticmethod
    def concat(sources: Sequence["VectorSource"]) -> "VectorSource":
        first = sources[0]
        counts = [int(c) for s in sources for c in np.diff(s.starts)]
        return VectorSource(first.column, [u for s in sources for u in s.urls], counts, first.type, first.read_bytes)

    def _shard(self, i: int) -> pa.Array:
        from syllabus.store.store import read_parquet_bytes

        column = read_parquet_bytes(self.read_bytes(self.urls[i]), columns=[self.column])[self.column]
        return column.combine_chunks().cast(self.type)

    def read(self, positions: np.ndarray) -> pa.Array:
        """The vectors at ``positions`` (row numbers over all shards, in order; -1: null), in
        the column's own type. Reads only the shards that hold one of them."""
        positions = np.asarray(positions, dtype=np.int64)
        want = np.flatnonzero(positions >= 0)
        shard_of = np.searchsorted(self.starts, positions[want], side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        parts: list[pa.Array] = []
        for i in np.unique(shard_of):
            rows = positions[want[order[shard_of[order] == i]]] - self.starts[i]
            parts.append(self._shard(int(i)).take(pa.array(rows, pa.int64())))
        # Each copy of a 4,096-d survivor set is gigabytes: drop the parts once joined, and take
        # only when the asked order is not already the shards' order.
        gathered = parts[0] if len(parts) == 1 else pa.concat_arrays(parts) if parts else pa.array([], self.type)
        del parts
        # gathered is in shard order (want[order]); put it back in the asked order, nulls for -1
        back = np.full(positions.size, -1, dtype=np.int64)
        back[want[order]] = np.arange(want.size)
        if want.size == positions.size and np.array_equal(back, np.arange(back.size)):
            return gathered
        take = pa.array(back, pa.int64(), mask=back < 0)
        return gathered.take(take)


@register_extension_dtype
class VectorDtype(ExtensionDtype):
    name = "syllabus_vector"
    type = np.ndarray
    kind = "O"
    na_value = None

    @classmethod
    def construct_array_type(cls) -> type["VectorArray"]:
        return VectorArray


class VectorArray(ExtensionArray):
    """Positions into a :class:`VectorSource` (-1: no vector), as a pandas column."""

    def __init__(self, source: VectorSource, positions: np.ndarray):
        self.source = source
        self.positions = np.asarray(positions, dtype=np.int64)

    # ---- what pandas needs
    @property
    def dtype(self) -> VectorDtype:
        return VectorDtype()

    def __len__(self) -> int:
        return self.positions.size

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, (int, np.integer)):
            p = int(self.positions[item])
            return None if p < 0 else self.source.read(np.array([p])).to_numpy(zero_copy_only=False)[0]
        item = pd.api.indexers.check_array_indexer(self, item)
        return VectorArray(self.source, self.positions[item])

    def take(self, indices: Sequence[int], allow_fill: bool = False, fill_value: Any = None) -> "VectorArray":
        indices = np.asarray(indices, dtype=np.int64)
        if allow_fill:
            if fill_value is not None:
                raise ValueError("a vector column can only be filled with missing values")
            if (indices < -1).any():
                raise ValueError("take: negative indices other than -1 with allow_fill")
            picked = np.where(indices >= 0, self.positions[np.where(indices >= 0, indices, 0)], -1)
            return VectorArray(self.source, picked)
        return VectorArray(self.source, self.positions[indices])

    def copy(self) -> "VectorArray":
        return VectorArray(self.source, self.positions.copy())

    def isna(self) -> np.ndarray:
        return self.positions < 0

    @property
    def nbytes(self) -> int:
        return int(self.positions.nbytes)

    @classmethod
    def _concat_same_type(cls, to_concat: Sequence["VectorArray"]) -> "VectorArray":
        sources = {id(a.source) for a in to_concat}
        if len(sources) != 1:
            raise ValueError("vector columns of different score inputs cannot be stacked")
        return VectorArray(to_concat[0].source, np.concatenate([a.positions for a in to_concat]))

    @classmethod
    def _from_sequence(cls, scalars: Any, *, dtype: Any = None, copy: bool = False) -> "VectorArray":
        raise TypeError("a vector column is read from its score shards; it cannot be built from values")

    @classmethod
    def _from_factorized(cls, values: Any, original: "VectorArray") -> "VectorArray":
        raise TypeError("vector columns cannot be factorised")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.to_arrow().to_numpy(zero_copy_only=False)
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out

    def __arrow_array__(self, type: Any = None) -> pa.Array:
        return self.to_arrow()

    # ---- ours
    def to_arrow(self) -> pa.Array:
        """The vectors of these rows, read from the shards, in the column's own type."""
        return self.source.read(self.positions)


def lazy_column(frame: pd.DataFrame, column: str) -> VectorArray | None:
    array = frame[column].array if column in frame.columns else None
    return array if isinstance(array, VectorArray) else None
