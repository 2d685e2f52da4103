"""Gradient features: per-sample LoRA gradients of the response loss, randomly projected.

Used by DIQ (arXiv 2508.01450) and LESS (Xia et al., ICML 2024; arXiv 2402.04333).

``g(z) = P^T vec(grad_theta L(z))`` with ``L(z)`` the mean NLL over the response tokens of
``T = P + y + E`` (the training loss of one sample, shared templating; ``format: tulu``
writes it in the LESS authors' Tulu format, :mod:`syllabus.models.formats`) and ``theta``
the LoRA adapters (peft) on the target model: rank 8 on ``q_proj, k_proj, v_proj`` by
default (DIQ). ``P`` is a seeded ``D x k`` Johnson-Lindenstrauss matrix (Rademacher ``+-1`` or
standard Gaussian, scaled by ``1/sqrt(k)`` so ``E[g(a) . g(b)] = grad(a) . grad(b)``), or the
opt-in block-structured ``kronecker`` one; ``k = 4096`` by default (LESS uses 8192).

The parts, one module each: per-sample gradients from one batched forward+backward
(:mod:`syllabus.scoring.lora_gradients`), the projections (:mod:`syllabus.scoring.projection`),
LESS's warm-up checkpoints (:mod:`syllabus.scoring.warmup`); this module turns a list of
samples into feature vectors (:func:`gradient_features`) and is the ``gradients`` scorer.

Output per shard (a normal score table, committed per shard under a key that names the
projection dimension and seed): ``sample_id``, ``gradients_vector`` (fixed-size list of
float16, length k), ``gradients_loss`` (the sample's mean response NLL),
``gradients_tokens`` (response tokens), ``gradients_status``.
Direction: none by itself; influence scorers dot these with validation gradients.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping, Sequence

import numpy as np
import pyarrow as pa
from pydantic import model_validator

from syllabus import registry
from syllabus.models.chat import DEFAULT_CUTOFF
from syllabus.models.formats import pair_encoder
from syllabus.scoring.base import SCORES_PREFIX, Failed, Scorer, ScorerConfig, error_status, per_item_fallback
from syllabus.scoring.lora_gradients import LoraGradients, LoraSettings, adam_precondition
from syllabus.scoring.projection import KroneckerProjector, ProjectionSettings, Projector, check_kronecker_dim
from syllabus.scoring.warmup import read_checkpoint
from syllabus.store import content_hash

log = logging.getLogger(__name__)


class GradientsConfig(ScorerConfig):
    key_defaults: ClassVar[dict[str, Any]] = {"format": "chat"}

    lora: LoraSettings = LoraSettings()
    projection: ProjectionSettings = ProjectionSettings()
    # How T is written: "chat", the model's chat template (shared templating); "tulu", the
    # format the LESS authors' code uses (syllabus.models.formats).
    format: Literal["chat", "tulu"] = "chat"
    cutoff: int = DEFAULT_CUTOFF
    batch_size: int = 8
    # Tokens per forward+backward. Backward keeps every layer's activations and the response
    # positions' logits: about 2.5 MB a token for SmolLM2-135M. In the score flow on CPU,
    # 8,192 tokens peaked at 22 GB RSS and 2,048 at 6.7 GB (measured); a larger batch barely helps
    # (batched features cost about what batch-1 forward+backward does). Raise it on a GPU.
    max_batch_tokens: int = 2048
    projection_group: int = 256  # samples projected together (each P block generated once per group)
    # A warm-up checkpoint (see ``syllabus.scoring.warmup.warmup_checkpoints``): its store URL.
    checkpoint: str | None = None
    # "adam": m / (sqrt(v) + eps) with the checkpoint's Adam moments (LESS, training samples).
    preconditioning: Literal["none", "adam"] = "none"

    @model_validator(mode="after")
    def _kronecker_dim(self) -> "GradientsConfig":
        p = self.projection
        if p.kind == "kronecker":
            check_kronecker_dim(p.dim, self.lora.rank)
        return self


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
    eps_inside_sqrt: bool = False,
) -> FeatureResult:
    """Projected per-sample gradients of ``samples`` (dicts with instruction/input/output or
    messages). ``lora`` reuses an already wrapped model (with a checkpoint loaded);
    ``moments`` turns on Adam preconditioning (``eps_inside_sqrt``: the LESS authors'
    ``m / sqrt(v + eps)``, see :func:`adam_precondition`), and ``also_plain`` projects the
    plain gradients from the same backward pass as well."""
    from tqdm.auto import tqdm

    from syllabus.models.engines import TransformersEngine

    tok = lm.tokenizer
    n = len(samples)
    k = config.projection.dim
    status = ["ok"] * n
    seqs: dict[int, list[int]] = {}
    plen: dict[int, int] = {}
    encode = pair_encoder(config.format)
    for i, row in enumerate(samples):
        try:
            enc = encode(tok, _sample_dict(row), cutoff=config.cutoff)
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

            t0 = time.perf_counter()
            # One bad batch: its samples are retried alone, and a sample that still fails gets a status.
            results = engine.map_batches([len(seqs[i]) for i in members], per_item_fallback(run), desc="gradients")
            t_grad += time.perf_counter() - t0
            good = []
            for i, res in zip(members, results):
                if isinstance(res, Failed):
                    status[i] = res.status
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
                stacked = adam_precondition(stacked, moments, eps_inside_sqrt=eps_inside_sqrt)
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
