"""Vector score columns (embeddings, gradient features) left in their Parquet until needed.

A 3DS pool of 1,000,000 samples with a 7B model's 4,096-d embeddings carries 16 GB of
``difficulty_embedding``; read whole into the candidates (an Arrow table, then a pandas
column of per-row arrays, then K-Center's matrix) it was held two to three times over, while
K-Center only ever looks at the rows that survive the quality cut and the bands (a few
percent). So the candidates hold such a column as a :class:`VectorArray`: positions into the
score shards' rows (a pandas extension array; filtering, sorting and joining move positions,
not vectors), and the vectors of exactly the rows a stage asks for are read from the shards,
one shard at a time, checksum-verified, when it asks (:meth:`VectorArray.to_arrow`). K-Center's
matrix is filled straight from each shard's buffers into one preallocated float32 array
(:meth:`VectorSource.read_matrix`): at 116,853 x 4,096 that array is 1.9 GB, and it exists
once.
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

    def _column(self, i: int) -> pa.ChunkedArray:
        from syllabus.store.store import read_parquet_bytes

        return read_parquet_bytes(self.read_bytes(self.urls[i]), columns=[self.column])[self.column].cast(self.type)

    def _shard(self, i: int) -> pa.Array:
        return self._column(i).combine_chunks()

    def _by_shard(self, positions: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(shard, the indices into ``positions`` whose rows it holds, in asked order) for
        each shard that holds one, in shard order (-1: no row)."""
        want = np.flatnonzero(positions >= 0)
        shard_of = np.searchsorted(self.starts, positions[want], side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        shards, first = np.unique(shard_of[order], return_index=True)
        return [(int(i), want[order[lo:hi]]) for i, lo, hi in zip(shards, first, [*first[1:], order.size])]

    def read_matrix(self, positions: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """The vectors at ``positions`` (-1: none) as one float32 matrix, for K-Center.

        Returns each row's vector length (-1: null or no row), the most common positive
        length ``dim`` (the smallest on ties; 0 when none), and a matrix with one row per
        ``wanted`` row that has a position, in order, holding its vector where its length is
        ``dim`` (other rows are left unset: the caller drops them).

        The matrix is allocated once and filled shard by shard from each shard's Arrow
        buffers (the values are viewed, not copied, and gathered straight into their rows), so
        the vectors exist once: no per-shard parts to concatenate, no flat copy to reshape.
        A variable-length list column's ``dim`` is taken from the first shard that has a
        vector; should the most common length over all rows turn out to be another (a column
        mixing lengths), the shards are read once more with that one."""
        positions = np.asarray(positions, dtype=np.int64)
        wanted = np.asarray(wanted, dtype=bool) & (positions >= 0)
        slot = np.full(positions.size, -1, dtype=np.int64)
        slot[wanted] = np.arange(int(wanted.sum()))
        fixed = self.type.list_size if pa.types.is_fixed_size_list(self.type) else None
        lengths, guess, matrix = self._fill(positions, slot, fixed)
        dims = lengths[lengths > 0]
        dim = int(np.bincount(dims).argmax()) if dims.size else 0
        if dim and dim != guess:
            del matrix
            lengths, _, matrix = self._fill(positions, slot, dim)
        if matrix is None or not dim:
            matrix = np.empty((int(wanted.sum()), dim), dtype=np.float32)
        return lengths, dim, matrix

    def _fill(self, positions: np.ndarray, slot: np.ndarray, dim: int | None) -> tuple[np.ndarray, int | None, np.ndarray | None]:
        """One pass of :meth:`read_matrix` (``dim`` None: the first shard with a vector decides)."""
        import pyarrow.compute as pc

        lengths = np.full(positions.size, -1, dtype=np.int64)
        matrix = None
        for i, asked in self._by_shard(positions):
            column = self._column(i)
            local = positions[asked] - self.starts[i]
            bounds = np.cumsum([0] + [len(c) for c in column.chunks])
            chunk_of = np.searchsorted(bounds, local, side="right") - 1
            chunk = None
            for j in np.unique(chunk_of):
                chunk = column.chunks[int(j)]
                sel = chunk_of == j
                rows, at = local[sel] - bounds[j], asked[sel]
                lens = pc.fill_null(pc.list_value_length(chunk), -1).to_numpy(zero_copy_only=False).astype(np.int64)[rows]
                lengths[at] = lens
                if dim is None and (lens > 0).any():
                    dim = int(np.bincount(lens[lens > 0]).argmax())
                if not dim:
                    continue
                if matrix is None:
                    matrix = np.empty((int(slot.max()) + 1 if slot.size else 0, dim), dtype=np.float32)
                fill = (slot[at] >= 0) & (lens == dim)
                if fill.any():
                    _gather_rows(chunk, rows[fill], dim, matrix, slot[at[fill]])
            del column, chunk
            # Arrow's allocator (mimalloc) kept the shards' freed buffers: 0.4 GB of resident
            # memory beside the matrix after 200 shards of 4,096-d vectors, before K-Center ran
            pa.default_memory_pool().release_unused()
        return lengths, dim, matrix

    def read(self, positions: np.ndarray) -> pa.Array:
        """The vectors at ``positions`` (row numbers over all shards, in order; -1: null), in
        the column's own type. Reads only the shards that hold one of them."""
        positions = np.asarray(positions, dtype=np.int64)
        groups = self._by_shard(positions)
        parts = [self._shard(i).take(pa.array(positions[asked] - self.starts[i], pa.int64())) for i, asked in groups]
        # Each copy of a 4,096-d survivor set is gigabytes: drop the parts once joined, and take
        # only when the asked order is not already the shards' order.
        gathered = parts[0] if len(parts) == 1 else pa.concat_arrays(parts) if parts else pa.array([], self.type)
        del parts
        # gathered is in shard order; put it back in the asked order, nulls for -1
        in_shard_order = np.concatenate([asked for _, asked in groups]) if groups else np.zeros(0, np.int64)
        back = np.full(positions.size, -1, dtype=np.int64)
        back[in_shard_order] = np.arange(in_shard_order.size)
        if in_shard_order.size == positions.size and np.array_equal(back, np.arange(back.size)):
            return gathered
        take = pa.array(back, pa.int64(), mask=back < 0)
        return gathered.take(take)


_GATHER_ROWS = 256  # rows gathered at a time: bounds the index temporary (256 x 4,096 int64: 8 MiB)


def _gather_rows(chunk: pa.Array, rows: np.ndarray, dim: int, out: np.ndarray, slots: np.ndarray) -> None:
    """``out[slots] = the vectors at rows of chunk`` (each of length ``dim``), in ``out``'s
    dtype, read from the chunk's values buffer without copying it."""
    if pa.types.is_fixed_size_list(chunk.type):
        starts = (chunk.offset + rows) * chunk.type.list_size
    else:
        starts = chunk.offsets.to_numpy(zero_copy_only=False)[rows].astype(np.int64)  # into .values, slice-aware
    # a view when the values have no nulls; a null value becomes NaN, as to_numpy always gave it
    values = chunk.values.to_numpy(zero_copy_only=False)
    span = np.arange(dim, dtype=np.int64)
    for s in range(0, rows.size, _GATHER_ROWS):
        out[slots[s : s + _GATHER_ROWS]] = values[starts[s : s + _GATHER_ROWS, None] + span]


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
