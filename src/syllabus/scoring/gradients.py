"""Gradient features: per-sample LoRA gradients of the response loss, randomly projected.

Used by DIQ (arXiv 2508.01450) and LESS (Xia et al., ICML 2024; arXiv 2402.04333).

``g(z) = P^T vec(grad_theta L(z))`` with ``L(z)`` the mean NLL over the response tokens of
``T = P + y + E`` (the training loss of one sample, shared templating) and ``theta`` the
LoRA adapters (peft) on the target model: rank 8 on ``q_proj, k_proj, v_proj`` by default
(DIQ). ``P`` is a seeded ``D x k`` Johnson-Lindenstrauss matrix (Rademacher ``+-1`` or
standard Gaussian, scaled by ``1/sqrt(k)`` so ``E[g(a) . g(b)] = grad(a) . grad(b)``);
``k = 4096`` by default (LESS uses 8192).

Per-sample gradients without one backward per sample: for a LoRA linear layer
``y = W x + s B A x`` the gradient of a sum of per-sample losses w.r.t. ``B``'s output at
token ``t`` of sample ``i`` belongs to sample ``i`` alone, so
``dL_i/dB = sum_t gB[i, t] (A x[i, t])^T`` and ``dL_i/dA = sum_t gA[i, t] x[i, t]^T`` where
``gB``, ``gA`` are the output gradients of the ``lora_B`` / ``lora_A`` submodules (the
LoRA scaling is already inside ``gB``). Hooks capture the inputs and output gradients in
one batched forward+backward of ``sum_i L_i``, and an einsum per module gives every
sample's gradient. With the standard init (B = 0) every ``dL_i/dA`` is exactly zero
(it is ``B^T`` times something), so only the B gradients are formed.

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

Output per shard (a normal score table, committed per shard under a key that names the
projection dimension and seed): ``sample_id``, ``gradients_vector`` (fixed-size list of
float16, length k), ``gradients_loss`` (the sample's mean response NLL),
``gradients_tokens`` (response tokens), ``gradients_status``.
Direction: none by itself; influence scorers dot these with validation gradients.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Literal, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pydantic import model_validator

from syllabus import registry
from syllabus.models.chat import DEFAULT_CUTOFF, encode_pair
from syllabus.scoring.base import SCORES_PREFIX, Scorer, ScorerConfig, error_status
from syllabus.store import content_hash

log = logging.getLogger(__name__)

DIQ_TARGET_MODULES = ("q_proj", "k_proj", "v_proj")


class LoraSettings(ScorerConfig):
    """Which adapters the gradient is taken with respect to (DIQ: rank 8 on q, k, v)."""

    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = DIQ_TARGET_MODULES
    init: Literal["default", "gaussian"] = "default"  # peft: kaiming-uniform A / gaussian A; B = 0 both
    init_seed: int = 0


class ProjectionSettings(ScorerConfig):
    # "kronecker": a block-structured projection built from the LoRA factors (see
    # ``KroneckerProjector``); ``dim`` must then be a multiple of the LoRA rank.
    kind: Literal["rademacher", "gaussian", "kronecker"] = "rademacher"
    dim: int = 4096
    seed: int = 0


class GradientsConfig(ScorerConfig):
    lora: LoraSettings = LoraSettings()
    projection: ProjectionSettings = ProjectionSettings()
    cutoff: int = DEFAULT_CUTOFF
    batch_size: int = 8
    # Tokens per forward+backward. Backward keeps every layer's activations and the response
    # positions' logits: about 2.5 MB a token for SmolLM2-135M. In the score flow on CPU,
    # 8,192 tokens peaked at 22 GB RSS and 2,048 at 6.7 GB (measured); a larger batch barely helps
    # (batched features cost about what batch-1 forward+backward does). Raise it on a GPU.
    max_batch_tokens: int = 2048
    projection_group: int = 256  # samples projected together (each P block generated once per group)
    # A warm-up checkpoint (see ``syllabus.scoring.influence.warmup_checkpoints``): its store URL.
    checkpoint: str | None = None
    # "adam": m / (sqrt(v) + eps) with the checkpoint's Adam moments (LESS, training samples).
    preconditioning: Literal["none", "adam"] = "none"

    @model_validator(mode="after")
    def _kronecker_dim(self) -> "GradientsConfig":
        p = self.projection
        if p.kind == "kronecker":
            check_kronecker_dim(p.dim, self.lora.rank)
        return self


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

    Per-sample gradients need never be stored: :meth:`LoraGradients.per_sample_projected`
    projects each module's gradients inside the backward hooks (:meth:`project_outer`)."""

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


# ------------------------------------------------------------------ per-sample LoRA gradients
def lora_param_name(module_name: str, which: str) -> str:
    """Canonical parameter name, independent of peft's wrapper prefixes: ``layers.3.self_attn.q_proj.lora_B``."""
    for prefix in ("base_model.model.", "model."):
        if module_name.startswith(prefix):
            module_name = module_name[len(prefix):]
    return f"{module_name}.{which}"


@dataclass
class _LoraModule:
    name: str  # canonical module name
    layer: Any  # peft lora Linear
    a: Any  # nn.Linear r x d_in
    b: Any  # nn.Linear d_out x r


class LoraGradients:
    """The target model wrapped with LoRA adapters, computing per-sample gradients.

    Wraps ``model`` in place (peft) and restores it on :meth:`close` (adapters removed,
    ``requires_grad`` flags restored), so a process-wide cached model stays usable by other
    scorers. Use as a context manager."""

    def __init__(self, model: Any, settings: LoraSettings, state: Mapping[str, Any] | None = None):
        import torch
        from peft import LoraConfig, get_peft_model

        self._requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self._was_training = model.training
        torch.manual_seed(settings.init_seed)  # A's init is part of the features: seed it
        config = LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=0.0,
            target_modules=list(settings.target_modules),
            init_lora_weights=True if settings.init == "default" else "gaussian",
            bias="none",
        )
        self.peft_model = get_peft_model(model, config)
        self.peft_model.eval()
        self.base = self.peft_model.get_base_model()
        self.modules: list[_LoraModule] = []
        for name, mod in self.peft_model.named_modules():
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
                self.modules.append(_LoraModule(lora_param_name(name, "").rstrip("."), mod,
                                                mod.lora_A["default"], mod.lora_B["default"]))
        if not self.modules:
            raise ValueError(f"no module of the model matches the LoRA target modules {list(settings.target_modules)}")
        if state is not None:
            self.load_state(state)

    # -- adapter state -----------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for m in self.modules:
            out[f"{m.name}.lora_A"] = tuple(m.a.weight.shape)
            out[f"{m.name}.lora_B"] = tuple(m.b.weight.shape)
        return out

    def state(self) -> dict[str, Any]:
        """Canonical name -> weight (a copy), for checkpoints."""
        out = {}
        for m in self.modules:
            out[f"{m.name}.lora_A"] = m.a.weight.detach().cpu().clone()
            out[f"{m.name}.lora_B"] = m.b.weight.detach().cpu().clone()
        return out

    def load_state(self, state: Mapping[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for m in self.modules:
                m.a.weight.copy_(state[f"{m.name}.lora_A"])
                m.b.weight.copy_(state[f"{m.name}.lora_B"])

    def b_is_zero(self) -> bool:
        return all(not bool(m.b.weight.detach().any()) for m in self.modules)

    def close(self) -> None:
        try:
            self.peft_model.unload()
        finally:
            model = self.base
            for n, p in model.named_parameters():
                if n in self._requires_grad:
                    p.requires_grad_(self._requires_grad[n])
            model.train(self._was_training)

    def __enter__(self) -> "LoraGradients":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- gradients ---------------------------------------------------------------------------
    def per_sample(self, seqs: Sequence[Sequence[int]], prompt_lens: Sequence[int], pad_id: int,
                   with_a: bool | None = None) -> tuple[dict[str, Any], list[float], list[int]]:
        """Per-sample gradients of ``L_i = mean NLL over response positions`` in one batched
        forward+backward. Returns ``(grads, losses, n_tokens)`` with ``grads[name]`` a float32
        ``[n, numel]`` tensor laid out like the parameter (``A``: ``[r, d_in]``, ``B``:
        ``[d_out, r]``). ``with_a=None`` skips the A gradients when every B is zero (they are
        exactly zero then)."""
        import torch

        n = len(seqs)
        grads: dict[str, Any] = {}

        def on_grad(name: str, which: str, g: Any, x: Any) -> None:
            eq = "btr,bti->bri" if which == "lora_A" else "bto,btr->bor"
            grads[f"{name}.{which}"] = torch.einsum(eq, g.float(), x.float()).reshape(n, -1)

        losses, counts = self._forward_backward(seqs, prompt_lens, pad_id, with_a, on_grad)
        return grads, losses, counts

    def per_sample_projected(self, seqs: Sequence[Sequence[int]], prompt_lens: Sequence[int], pad_id: int,
                             projector: "KroneckerProjector", with_a: bool | None = None,
                             order: str = "auto") -> tuple[Any, list[float], list[int]]:
        """Like :meth:`per_sample`, but each module's per-sample gradients are Kronecker-projected
        inside its backward hook (:meth:`KroneckerProjector.project_outer`) and summed, so only
        the ``[n, k]`` output and one module's gradients are ever held. Returns
        ``(vectors, losses, n_tokens)`` with ``vectors`` float32 ``[n, k]`` on the model's device;
        equal to ``projector.project(per_sample(...)[0])``."""
        n = len(seqs)
        out = projector.new_output(n)
        view = out.view(n, projector.rank, projector.k1)

        def on_grad(name: str, which: str, g: Any, x: Any) -> None:
            view.add_(projector.project_outer(f"{name}.{which}", g, x, order))

        losses, counts = self._forward_backward(seqs, prompt_lens, pad_id, with_a, on_grad)
        return out.mul_(projector.scale), losses, counts

    def _forward_backward(self, seqs: Sequence[Sequence[int]], prompt_lens: Sequence[int], pad_id: int,
                          with_a: bool | None, on_grad: Any) -> tuple[list[float], list[int]]:
        """One batched forward+backward of ``sum_i L_i``; for every LoRA module, calls
        ``on_grad(module_name, "lora_B" | "lora_A", output_grad [n, T, out], input [n, T, in])``
        from the backward hooks (the per-sample weight gradient is ``sum_t out_grad input^T``).
        Returns ``(losses, n_tokens)``."""
        import torch

        from syllabus.models.engines import decoder_and_head
        from syllabus.models.losses import token_nll_from_hidden

        if with_a is None:
            with_a = not self.b_is_zero()
        device = next(self.base.parameters()).device
        n = len(seqs)
        width = max(len(s) for s in seqs)
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        wanted = torch.zeros((n, width), dtype=torch.bool)
        for i, (s, p) in enumerate(zip(seqs, prompt_lens)):
            ids[i, : len(s)] = torch.tensor(list(s))
            mask[i, : len(s)] = 1
            wanted[i, max(p, 1) : len(s)] = True
        ids, mask, wanted = ids.to(device), mask.to(device), wanted.to(device)
        counts = wanted.sum(1)
        if bool((counts == 0).any()):
            raise ValueError("a sample has no response tokens within the cutoff")

        handles = []

        def capture(m: _LoraModule):
            saved: dict[str, Any] = {}

            def on_a(_mod, inputs, output):
                if with_a:
                    saved["x"] = inputs[0]
                    output.register_hook(lambda g: on_grad(m.name, "lora_A", g, saved.pop("x")))

            def on_b(_mod, inputs, output):
                saved["h"] = inputs[0]
                output.register_hook(lambda g: on_grad(m.name, "lora_B", g, saved.pop("h")))

            handles.append(m.a.register_forward_hook(on_a))
            handles.append(m.b.register_forward_hook(on_b))

        for m in self.modules:
            capture(m)
        try:
            body, head = decoder_and_head(self.base)
            with torch.enable_grad():
                hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                nll = token_nll_from_hidden(hidden, head, ids, wanted)
                per_sample = torch.where(wanted, nll, torch.zeros_like(nll)).sum(1) / counts
                per_sample.sum().backward()
        finally:
            for h in handles:
                h.remove()
            for p in self.peft_model.parameters():
                p.grad = None
        return per_sample.detach().cpu().tolist(), counts.cpu().tolist()


def adam_precondition(grads: Mapping[str, Any], moments: Mapping[str, tuple[Any, Any]],
                      beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> dict[str, Any]:
    """LESS's Adam direction of a per-sample gradient: ``m / (sqrt(v) + eps)`` with
    ``m = b1 m0 + (1 - b1) g`` and ``v = b2 v0 + (1 - b2) g^2`` from the checkpoint's moments
    ``(m0, v0)``. Every parameter with moments is returned, including ones whose gradient is
    zero (their direction is not)."""
    import torch

    out = {}
    n = next(iter(grads.values())).shape[0]
    for name, (m0, v0) in moments.items():
        g = grads.get(name)
        m0 = m0.reshape(1, -1).float()
        v0 = v0.reshape(1, -1).float()
        if g is None:
            g = torch.zeros((n, m0.shape[1]), dtype=torch.float32)
        g = g.to(m0.device)
        m = beta1 * m0 + (1 - beta1) * g
        v = beta2 * v0 + (1 - beta2) * g * g
        out[name] = m / (v.sqrt() + eps)
    return out


# ------------------------------------------------------------------ features for a list of samples
@dataclass
class FeatureResult:
    vectors: np.ndarray  # [n, k] float32 (nan rows where status != ok)
    losses: list[float]
    tokens: list[int]
    status: list[str]
    stats: dict
    plain: np.ndarray | None = None  # with preconditioning and ``also_plain``: the plain projections too


def _sample_dict(row: Any) -> dict:
    return row if isinstance(row, dict) else dict(row)


def gradient_features(
    lm: Any,
    samples: Sequence[Mapping[str, Any]],
    config: GradientsConfig,
    lora: LoraGradients | None = None,
    moments: Mapping[str, tuple[Any, Any]] | None = None,
    progress: bool = True,
    also_plain: bool = False,
) -> FeatureResult:
    """Projected per-sample gradients of ``samples`` (dicts with instruction/input/output or
    messages). ``lora`` reuses an already wrapped model (with a checkpoint loaded);
    ``moments`` turns on Adam preconditioning, and ``also_plain`` projects the plain
    gradients from the same backward pass as well."""
    from tqdm.auto import tqdm

    from syllabus.models.engines import TransformersEngine, is_oom

    tok = lm.tokenizer
    n = len(samples)
    k = config.projection.dim
    status = ["ok"] * n
    seqs: dict[int, list[int]] = {}
    plen: dict[int, int] = {}
    for i, row in enumerate(samples):
        try:
            enc = encode_pair(tok, _sample_dict(row), cutoff=config.cutoff)
        except Exception as exc:
            status[i] = error_status(exc)
            continue
        if enc.status != "ok":
            status[i] = enc.status
            continue
        if len(enc.input_ids) <= max(enc.prompt_len, 1):
            status[i] = "error: no response tokens within the cutoff"
            continue
        seqs[i], plen[i] = list(enc.input_ids), enc.prompt_len
    vectors = np.full((n, k), np.nan, dtype=np.float32)
    plain = np.full((n, k), np.nan, dtype=np.float32) if also_plain else None
    losses = [math.nan] * n
    tokens = [0] * n
    own = lora is None
    if own:
        state = None
        if config.checkpoint:
            from syllabus.scoring.influence import read_checkpoint

            ckpt = read_checkpoint(config.checkpoint)
            state = ckpt["weights"]
            if config.preconditioning == "adam" and moments is None:
                moments = ckpt["moments"]
        lora = LoraGradients(lm.model, config.lora, state)
    if config.preconditioning == "adam" and moments is None:
        raise ValueError("gradient preconditioning 'adam' needs a warm-up checkpoint with Adam moments; "
                         "set checkpoint to a URL written by the influence warm-up")
    device = next(lm.model.parameters()).device
    # "kronecker" without preconditioning projects inside the backward hooks (no per-sample
    # gradient is kept); Adam's direction is elementwise, so it needs the whole gradients.
    kronecker = config.projection.kind == "kronecker"
    direct = kronecker and moments is None
    engine = TransformersEngine(lm.model, tok, batch_size=config.batch_size,
                                max_batch_tokens=config.max_batch_tokens, progress=False)
    pad_id = engine.pad_id
    t_grad = 0.0
    start = time.perf_counter()
    try:
        if kronecker:
            projector: Any = KroneckerProjector(config.projection, config.lora.rank, lora.param_shapes(), device)
        else:
            projector = Projector(config.projection, device)
        # Length order across the whole input, so a batch pads little; groups follow it.
        order = sorted(seqs, key=lambda i: len(seqs[i]))
        group = max(1, config.projection_group)
        bar = tqdm(total=len(order), desc="gradients", unit="sample", disable=not progress)
        for g0 in range(0, len(order), group):
            members = order[g0 : g0 + group]
            rows: dict[int, dict[str, Any]] = {}

            def run(idx: list[int]) -> list[Any]:
                ids = [members[j] for j in idx]
                if direct:
                    vecs, ls, cnt = lora.per_sample_projected([seqs[i] for i in ids], [plen[i] for i in ids],
                                                              pad_id, projector)
                else:
                    grads, ls, cnt = lora.per_sample([seqs[i] for i in ids], [plen[i] for i in ids], pad_id)
                for pos, i in enumerate(ids):
                    losses[i], tokens[i] = float(ls[pos]), int(cnt[pos])
                bar.update(len(ids))
                if direct:
                    return list(vecs.cpu())
                return [{name: g[pos].cpu() for name, g in grads.items()} for pos in range(len(ids))]

            def run_safe(idx: list[int]) -> list[Any]:
                try:
                    return run(idx)
                except Exception as exc:  # one bad batch: retry its samples alone, then give up on the sample
                    if is_oom(exc):
                        raise
                    if len(idx) == 1:
                        return [exc]
                    return [run_safe([j])[0] for j in idx]

            t0 = time.perf_counter()
            results = engine.map_batches([len(seqs[i]) for i in members], run_safe, desc="gradients")
            t_grad += time.perf_counter() - t0
            good = []
            for i, res in zip(members, results):
                if isinstance(res, Exception):
                    status[i] = error_status(res)
                else:
                    rows[i] = res
                    good.append(i)
            if not good:
                continue
            import torch

            if direct:
                vectors[good] = torch.stack([rows[i] for i in good]).numpy()
                if plain is not None:
                    plain[good] = vectors[good]
                rows.clear()
                continue
            names = sorted(rows[good[0]])
            stacked = {name: torch.stack([rows[i][name] for i in good]) for name in names}
            rows.clear()
            if moments is not None:
                if plain is not None:
                    plain[good] = projector.project(stacked).cpu().numpy()
                stacked = adam_precondition(stacked, moments)
            elif plain is not None:
                plain[good] = projector.project(stacked).cpu().numpy()
                vectors[good] = plain[good]
                continue
            projected = projector.project(stacked)
            vectors[good] = projected.cpu().numpy()
            del stacked
        bar.close()
    finally:
        if own:
            lora.close()
    stats = {
        "samples": n,
        "ok": sum(s == "ok" for s in status),
        "seconds": round(time.perf_counter() - start, 3),
        "seconds_gradients": round(t_grad, 3),
        "seconds_projection_generate": round(projector.seconds_generating, 3),
        "seconds_projection_matmul": round(projector.seconds_multiplying, 3),
        "engine": engine.stats.as_dict(),
    }
    return FeatureResult(vectors, losses, tokens, status, stats, plain)


# ------------------------------------------------------------------ scorer
def vectors_column(vectors: np.ndarray) -> pa.Array:
    """``[n, k]`` -> fixed-size-list<float16> column. Rows without a vector (nan) are stored
    as zeros, never nulls: the status column says which rows are real (Parquet readers
    reject null entries inside fixed-size lists)."""
    n, k = vectors.shape
    half = np.nan_to_num(vectors, nan=0.0).astype(np.float16)
    return pa.FixedSizeListArray.from_arrays(pa.array(half.reshape(-1), type=pa.float16()), k)


def vectors_of(table: pa.Table, column: str = "gradients_vector", status: str | None = "gradients_status") -> np.ndarray:
    """A fixed-size-list<float16> column back to an ``[n, k]`` float32 array; rows whose
    ``status`` column is not ``ok`` are nan."""
    col = table.column(column).combine_chunks()
    k = col.type.list_size
    out = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(col), k)
    if status and status in table.column_names:
        bad = np.asarray([s != "ok" for s in table.column(status).to_pylist()], dtype=bool)
        out[bad] = np.nan
    return out


@registry.scorer("gradients")
class GradientsScorer(Scorer):
    """Per-sample projected LoRA gradient features (see the module docstring)."""

    name: ClassVar[str] = "gradients"
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = GradientsConfig

    def columns(self) -> list[str]:
        return ["gradients_vector", "gradients_loss", "gradients_tokens", "gradients_status"]

    def key(self, model_fingerprint: str, shard_hash: str) -> str:
        """The projection dimension and seed are spelled out in the key, so features of
        different projections can never be mixed up by a reader of the store."""
        p = self.config.projection
        digest = content_hash(self.key_parts(model_fingerprint, shard_hash), length=24)
        return f"{SCORES_PREFIX}/{self.name}/v{self.version}/{p.kind}-k{p.dim}-seed{p.seed}/{digest}.parquet"

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        rows = table.to_pylist()
        res = gradient_features(lm, rows, self.config)
        self.last_stats = res.stats
        return pa.table({
            "sample_id": table.column("sample_id"),
            "gradients_vector": vectors_column(res.vectors),
            "gradients_loss": pa.array(res.losses, pa.float64()),
            "gradients_tokens": pa.array(res.tokens, pa.int32()),
            "gradients_status": pa.array(res.status, pa.string()),
        })


@contextlib.contextmanager
def wrapped(lm: Any, settings: LoraSettings, state: Mapping[str, Any] | None = None) -> Iterator[LoraGradients]:
    lora = LoraGradients(lm.model, settings, state)
    try:
        yield lora
    finally:
        lora.close()
