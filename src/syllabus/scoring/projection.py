"""Seeded Johnson-Lindenstrauss projections of per-sample LoRA gradients (the ``P`` of
``g(z) = P^T vec(grad_theta L(z))`` in :mod:`syllabus.scoring.gradients`).

``P`` is a seeded ``D x k`` matrix (Rademacher ``+-1`` or standard Gaussian, scaled by
``1/sqrt(k)`` so ``E[g(a) . g(b)] = grad(a) . grad(b)``); ``k = 4096`` by default (LESS uses
8192).

The projection is never stored: block ``j`` of the rows belonging to parameter ``name`` is
regenerated from ``hash(seed, kind, name, j)`` (numpy PCG64 raw bits; Gaussian from the same
bit generator), so it is identical in every process and on every shard, and a parameter
whose gradient is known to be zero can be skipped without changing the result. Generating
a block costs as much as projecting many samples with it, so per-sample gradients are
gathered into groups (``projection_group`` samples) and each block is generated once per
group and applied to the whole group with one matrix product.

``kind="kronecker"`` (opt-in; :class:`KroneckerProjector`) uses the LoRA structure instead:
each parameter's gradient matrix ``G_m`` (one side of the rank ``r``) is projected as
``R_m^T G_m`` (``A``: ``R_m^T G_m^T``) with a small seeded ``d_m x k/r`` Rademacher factor on
its large side and the identity on its rank side, and the blocks are summed over parameters
(an unbiased JL map with ``k/r`` rows per rank column). The factors are ``1/r^2`` of a dense
matrix, generated once per process, and the projection runs inside the backward hooks, so no
sample's whole gradient is ever stored (one module's at a time); projecting one module's
``d x r`` gradient costs ``d k`` flops (forming it, ``d r T`` as before). Its features differ
from the dense kinds' (other numbers, another store key).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from syllabus.scoring.base import ScorerConfig
from syllabus.store import content_hash


class ProjectionSettings(ScorerConfig):
    # "kronecker": a block-structured projection built from the LoRA factors (see
    # ``KroneckerProjector``); ``dim`` must then be a multiple of the LoRA rank.
    kind: Literal["rademacher", "gaussian", "kronecker"] = "rademacher"
    dim: int = 4096
    seed: int = 0


# ------------------------------------------------------------------ projection
def _block_seed(seed: int, kind: str, name: str, block: int) -> int:
    return int(content_hash({"seed": seed, "kind": kind, "param": name, "block": block}, 16), 16)


_BYTE_SIGNS = None


def _byte_signs():
    """256 x 8 table: the +-1 signs spelled by the bits of each byte (least significant first)."""
    global _BYTE_SIGNS
    if _BYTE_SIGNS is None:
        import torch

        bits = (np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1
        _BYTE_SIGNS = torch.from_numpy(bits.astype(np.float32) * 2 - 1)
    return _BYTE_SIGNS


# Rows of P per generator seed. Part of the matrix's definition (changing it changes every
# feature), so it is a constant, not a setting; one block of 4096 columns is 16 MiB.
BLOCK_ROWS = 1024


def projection_block(settings: ProjectionSettings, name: str, block: int, rows: int = BLOCK_ROWS, out=None):
    """Rows ``[block * BLOCK_ROWS, block * BLOCK_ROWS + rows)`` of the projection for the
    parameter ``name``: a float32 ``[rows, dim]`` tensor, unscaled (``+-1`` or ``N(0, 1)``).
    A pure function of (seed, kind, name, block, dim); ``rows`` (at most ``BLOCK_ROWS``) cuts
    the last block of a parameter short."""
    import torch

    k = settings.dim
    bitgen = np.random.PCG64(_block_seed(settings.seed, settings.kind, name, block))
    if settings.kind == "gaussian":
        values = np.random.Generator(bitgen).standard_normal((rows, k), dtype=np.float32)
        return torch.from_numpy(values)
    if k % 8:
        raise ValueError(f"projection dim {k} must be a multiple of 8 for the Rademacher projection")
    words = bitgen.random_raw(-(-rows * k // 64))
    codes = torch.from_numpy(words.view(np.uint8)[: rows * k // 8].astype(np.int32))
    out = torch.empty((rows, k), dtype=torch.float32) if out is None else out[:rows]
    # A table lookup per byte is ~8x faster than shifting bits out one plane at a time.
    torch.index_select(_byte_signs(), 0, codes, out=out.view(-1, 8))
    return out


class Projector:
    """``x -> P^T x / sqrt(k)`` for per-sample gradients keyed by parameter name."""

    def __init__(self, settings: ProjectionSettings, device: Any = "cpu"):
        if settings.kind == "kronecker":
            raise ValueError("the 'kronecker' projection is KroneckerProjector's, not Projector's")
        self.settings = settings
        self.device = device
        self.seconds_generating = 0.0
        self.seconds_multiplying = 0.0

    def project(self, grads: Mapping[str, Any]) -> Any:
        """``grads``: name -> ``[n, numel]`` tensor (the same n for all). Returns ``[n, dim]`` float32."""
        import torch

        k, rows_per = self.settings.dim, BLOCK_ROWS
        n = next(iter(grads.values())).shape[0]
        out = torch.zeros((n, k), dtype=torch.float32, device=self.device)
        scratch = torch.empty((rows_per, k), dtype=torch.float32) if self.settings.kind == "rademacher" else None
        for name in sorted(grads):
            g = grads[name].to(self.device, torch.float32)
            numel = g.shape[1]
            for block in range(-(-numel // rows_per)):
                lo, hi = block * rows_per, min(numel, (block + 1) * rows_per)
                t0 = time.perf_counter()
                p = projection_block(self.settings, name, block, hi - lo, scratch).to(self.device)
                t1 = time.perf_counter()
                out.addmm_(g[:, lo:hi], p)
                self.seconds_generating += t1 - t0
                self.seconds_multiplying += time.perf_counter() - t1
        return out.mul_(1.0 / math.sqrt(k))


# ------------------------------------------------------------------ Kronecker projection
# Byte budget of the process-wide cache of Kronecker factors (see ``kronecker_factor``); past
# it the cache is emptied and refilled (regenerating a factor costs milliseconds).
KRONECKER_CACHE_BYTES = 1 << 30
_FACTOR_CACHE: dict[tuple, Any] = {}


def check_kronecker_dim(dim: int, rank: int) -> int:
    """``k1 = dim / rank``, the rows drawn on the large side of each LoRA matrix; a clear error
    when ``dim`` is not a positive multiple of the LoRA rank."""
    if rank < 1 or dim < rank or dim % rank:
        raise ValueError(f"projection dim {dim} must be a positive multiple of the LoRA rank {rank} for the "
                         f"'kronecker' projection (k = (k / r) x r); e.g. {max(rank, dim - dim % rank)}")
    return dim // rank


def clear_factor_cache() -> None:
    """Empty the process-wide cache of Kronecker factors (a benchmark that times their generation)."""
    _FACTOR_CACHE.clear()


def _factor_seed(seed: int, name: str, big: int, k1: int) -> int:
    return int(content_hash({"seed": seed, "kind": "kronecker", "param": name, "big": big, "k1": k1}, 16), 16)


def kronecker_factor(settings: ProjectionSettings, name: str, big: int, k1: int, device: Any = "cpu"):
    """The ``[big, k1]`` float32 ``+-1`` factor of parameter ``name`` (unscaled): a pure function
    of (seed, name, big, k1) through ``hash(seed, "kronecker", name, big, k1)`` and numpy PCG64
    raw bits (bit ``b`` of the stream is entry ``b`` in row-major order), so it is identical in
    every process. Cached per process (``KRONECKER_CACHE_BYTES``)."""
    import torch

    key = (settings.seed, name, big, k1, str(device))
    hit = _FACTOR_CACHE.get(key)
    if hit is not None:
        return hit
    nbits = big * k1
    words = np.random.PCG64(_factor_seed(settings.seed, name, big, k1)).random_raw(-(-nbits // 64))
    codes = torch.from_numpy(words.view(np.uint8)[: -(-nbits // 8)].astype(np.int32))
    signs = torch.index_select(_byte_signs(), 0, codes).reshape(-1)[:nbits].reshape(big, k1).to(device)
    if sum(t.numel() * 4 for t in _FACTOR_CACHE.values()) + nbits * 4 > KRONECKER_CACHE_BYTES:
        _FACTOR_CACHE.clear()
    _FACTOR_CACHE[key] = signs
    return signs


class KroneckerProjector:
    """``kind="kronecker"``: each LoRA gradient matrix ``G_m`` is projected on its own with a
    small seeded factor, and the projections are summed over parameters.

    Every LoRA matrix has one side of the rank ``r`` (``B``: ``d_out x r``, ``A``: ``r x d_in``)
    and one large side ``d_m``. In the ``R1 G R2^T`` form with ``k = k1 k2``: ``k2 = r`` on the
    rank side with ``R2 = I_r`` (an ``r x r`` Rademacher matrix would not reduce anything and
    would only add variance: for a rank-one ``G`` it alone gives a relative error of about
    ``sqrt(2 / r)``; an orthogonal ``R2`` such as the identity is exact), and ``k1 = k / r``
    seeded Rademacher rows ``R1_m = R_m^T`` (``R_m``: ``[d_m, k1]``, :func:`kronecker_factor`)
    on the large side. The output, read as an ``[r, k1]`` matrix, is

        ``Y = sum_m C_m^T R_m / sqrt(k1)`` with ``C_m = G_m`` for ``B`` and ``G_m^T`` for ``A``,

    i.e. ``A``'s block is laid out transposed so that the rank index lines up for every
    parameter. Row ``j`` of ``Y`` is then one ``k1 x (sum_m d_m)`` Rademacher matrix
    ``[R_1 ... R_M]^T`` applied to the concatenation of every parameter's rank-``j`` column:
    a plain JL map with ``k1`` rows per rank column, so ``E[<y(a), y(b)>] = <vec G(a), vec G(b)>``
    (unbiased) and the Achlioptas bound holds with ``k1`` rows for each rank column (in the
    worst case, all of a gradient in one rank column; spread over the columns it behaves like
    up to ``k`` rows). ``dim`` must be a multiple of ``r``.

    The factors hold ``k1 * sum_m d_m`` numbers, ``1 / r^2`` of a dense ``D x k`` matrix; they are
    generated once per process and cached as float32. SmolLM2-135M, rank 8 on q, k, v, k = 4096
    (k1 = 512): B factors ``512 x 30 x (576 + 192 + 192) x 4`` bytes = 59.0 MB; with the A factors
    (needed only when B != 0, e.g. after a warm-up) another ``512 x 30 x 3 x 576 x 4`` = 106.2 MB,
    165.2 MB in all (a dense matrix for the 645k LoRA parameters: 10.6 GB).

    Per-sample gradients need never be stored:
    :meth:`syllabus.scoring.lora_gradients.LoraGradients.per_sample_projected` projects each
    module's gradients inside the backward hooks (:meth:`project_outer`)."""

    def __init__(self, settings: ProjectionSettings, rank: int, shapes: Mapping[str, Sequence[int]] | None = None,
                 device: Any = "cpu"):
        if settings.kind != "kronecker":
            raise ValueError(f"KroneckerProjector needs kind 'kronecker', not {settings.kind!r}")
        self.settings = settings
        self.rank = rank
        self.k1 = check_kronecker_dim(settings.dim, rank)
        self.scale = 1.0 / math.sqrt(self.k1)
        self.shapes = {name: tuple(s) for name, s in (shapes or {}).items()}
        self.device = device
        self.seconds_generating = 0.0
        self.seconds_multiplying = 0.0
        for name, shape in self.shapes.items():
            self.layout(name, shape)  # every parameter has a side of the rank

    def layout(self, name: str, shape: Sequence[int]) -> tuple[int, bool]:
        """``(d_m, transposed)``: the large side of a ``rows x cols`` parameter, and whether the
        rank side is its rows (``A``-shaped). A square ``r x r`` parameter counts as ``B``-shaped."""
        rows, cols = shape
        if cols == self.rank:
            return rows, False
        if rows == self.rank:
            return cols, True
        raise ValueError(f"parameter {name} of shape {tuple(shape)} has no side of the LoRA rank {self.rank}")

    def factor(self, name: str, big: int):
        t0 = time.perf_counter()
        out = kronecker_factor(self.settings, name, big, self.k1, self.device)
        self.seconds_generating += time.perf_counter() - t0
        return out

    def new_output(self, n: int):
        import torch

        return torch.zeros((n, self.settings.dim), dtype=torch.float32, device=self.device)

    def project_matrix(self, name: str, g: Any):
        """``g``: ``[n, rows, cols]`` gradients of one parameter -> its unscaled ``[n, r, k1]`` block."""
        big, transposed = self.layout(name, g.shape[1:])
        r = self.factor(name, big)
        t0 = time.perf_counter()
        out = g.float() @ r if transposed else g.float().transpose(1, 2) @ r
        self.seconds_multiplying += time.perf_counter() - t0
        return out

    def project_outer(self, name: str, grad_out: Any, inputs: Any, order: str = "auto"):
        """The unscaled ``[n, r, k1]`` block of ``G_i = sum_t grad_out[i, t] inputs[i, t]^T``
        (``grad_out``: ``[n, T, rows]``, ``inputs``: ``[n, T, cols]``, the output gradients and
        inputs of a LoRA linear layer), without storing more than one module's gradients.

        ``order="gradient"`` contracts over tokens first (``G_i``, ``rows x cols``, then the
        factor); ``"factors"`` projects the token-level large-side factor first and contracts
        over tokens after (``sum_t (R^T u_t) v_t^T``), never forming ``G_i``. Costs per sample:
        ``rows cols (T + k1)`` vs ``T k1 (rows + cols)``; with a rank-8 side and ``k1 = 512`` the
        first is ~30x cheaper at T = 512, so ``"auto"`` picks the cheaper (nearly always
        ``"gradient"``: ``G_i`` is ``d r`` numbers, about ``k``)."""
        g, x = grad_out.float(), inputs.float()
        n, t_len, rows = g.shape
        cols = x.shape[2]
        big, transposed = self.layout(name, (rows, cols))
        if order == "auto":
            order = "factors" if t_len * self.k1 * (rows + cols) < rows * cols * (t_len + self.k1) else "gradient"
        r = self.factor(name, big)
        t0 = time.perf_counter()
        if order == "gradient":
            grad = g.transpose(1, 2) @ x  # [n, rows, cols]
            out = grad @ r if transposed else grad.transpose(1, 2) @ r
        elif order == "factors":
            out = g.transpose(1, 2) @ (x @ r) if transposed else x.transpose(1, 2) @ (g @ r)
        else:
            raise ValueError(f"unknown order {order!r}")
        self.seconds_multiplying += time.perf_counter() - t0
        return out

    def project(self, grads: Mapping[str, Any]) -> Any:
        """The plain way, from whole per-sample gradients: ``grads``: name -> ``[n, numel]``
        laid out like the parameter (shapes from the constructor). Returns ``[n, dim]`` float32."""
        n = next(iter(grads.values())).shape[0]
        out = self.new_output(n)
        view = out.view(n, self.rank, self.k1)
        for name in sorted(grads):
            if name not in self.shapes:
                raise KeyError(f"no shape known for parameter {name}: pass shapes to KroneckerProjector")
            g = grads[name].to(self.device).reshape(n, *self.shapes[name])
            view.add_(self.project_matrix(name, g))
        return out.mul_(self.scale)
