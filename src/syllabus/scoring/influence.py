"""Influence of a training sample on a validation set, from projected LoRA gradients.

- DIQ (arXiv 2508.01450): ``influence_dot = g(z) . g_val``, ``g`` the projected per-sample
  gradient of the response loss w.r.t. the LoRA adapters (``syllabus.scoring.gradients``),
  ``g_val`` the mean projected gradient of the validation set. A dot product, not a cosine:
  magnitude matters. Higher = more influential (a gradient step on ``z`` lowers the
  validation loss more, to first order).
- LESS (Xia et al., ICML 2024; arXiv 2402.04333): ``influence_less = max over tasks T of
  sum_c eta_c * mean_{v in T} cos(Gamma_c(z), g_c(v))``, with ``Gamma_c`` the Adam direction
  ``m / (sqrt(v) + eps)`` of the training gradient at warm-up checkpoint ``c`` (plain
  gradient when there is no warm-up or preconditioning is off), ``g_c(v)`` the plain
  validation gradients, and ``eta_c`` the mean learning rate of the epoch that ended at
  checkpoint ``c``. Higher = more influential.

Without a warm-up there is one "checkpoint": the freshly initialised adapters (B = 0, so
the gradient is a fixed random sketch of the full weight gradient; weight 1). With a warm-up
(``warmup``), LoRA is trained on a seeded ``fraction`` of the pool for ``epochs`` epochs
with the training module's step function, and the adapters and Adam moments at the end of
every epoch are the checkpoints; ``influence_dot`` is then the learning-rate-weighted mean
over checkpoints of the plain dot products.

Streaming fan-in: a shard's features are computed, dotted with the validation summaries
(a few k-vectors) and dropped; no step holds the gradients of more than one shard.

Columns: ``influence_dot``, ``influence_less``, ``influence_status``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from syllabus import registry
from syllabus.scoring.base import Scorer, ScorerConfig
from syllabus.scoring.gradients import GradientsConfig, LoraGradients, LoraSettings, gradient_features
from syllabus.scoring.validation import (
    ValidationConfig,
    ValidationGradients,
    normalise_rows,
    samples_hash,
    validation_gradients,
    validation_samples,
)
from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

WARMUP_VERSION = 1


class WarmupSettings(ScorerConfig):
    """LESS's warm-up (paper: 5% of the data, 4 epochs, lr 2e-5, linear decay, warmup 3%)."""

    fraction: float = Field(0.05, gt=0, le=1)
    epochs: int = Field(4, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "linear"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    batch_size: int = Field(32, ge=1)
    micro_batch_size: int = Field(4, ge=1)
    max_grad_norm: float | None = 1.0
    cutoff: int = 1024
    seed: int = 0


class InfluenceConfig(ScorerConfig):
    gradients: GradientsConfig = GradientsConfig()
    validation: ValidationConfig = ValidationConfig()
    warmup: WarmupSettings | None = None
    adam_preconditioning: bool = True  # LESS's Gamma for training samples (only with a warm-up)


@dataclass
class Checkpoint:
    epoch: int
    weights: dict | None  # canonical LoRA name -> tensor; None = fresh init
    moments: dict | None  # canonical name -> (exp_avg, exp_avg_sq)
    lr: float
    url: str | None = None


# ------------------------------------------------------------------ warm-up
def in_fraction(sample_id: str, fraction: float, seed: int) -> bool:
    """A seeded, order-free coin per sample: the warm-up subset can be picked shard by shard."""
    h = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def warmup_samples(pool_manifest_url: str, fraction: float, seed: int) -> list[dict]:
    from syllabus.pool.manifest import load_manifest, read_shard

    out = []
    for shard in load_manifest(pool_manifest_url)["shards"]:
        for row in read_shard(shard).to_pylist():
            if in_fraction(str(row["sample_id"]), fraction, seed):
                out.append(row)
    return out


def _checkpoint_bytes(ck: Checkpoint) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"epoch": ck.epoch, "weights": ck.weights, "moments": ck.moments, "lr": ck.lr}, buf)
    return buf.getvalue()


def read_checkpoint(url: str) -> dict:
    """A committed warm-up checkpoint: ``{"epoch", "weights", "moments", "lr"}``."""
    import torch

    store, key = Store.open_url(url)
    return torch.load(io.BytesIO(store.read_committed(key)), weights_only=True)


def warmup_checkpoints(lm: Any, samples: list[dict], lora: LoraSettings, warm: WarmupSettings,
                       store: Store | None = None, progress: bool = True) -> list[Checkpoint]:
    """Train LoRA on ``samples`` and return a checkpoint (adapters, Adam moments, mean lr of
    the epoch) at the end of every epoch. The step is the training module's (exact
    gradient accumulation over micro-batches, response-only loss). Committed to ``store``
    under a key of everything that changes them, and reused from there."""
    import torch
    from tqdm.auto import tqdm

    from syllabus.training.config import FinetuneConfig
    from syllabus.training.data import build_examples
    from syllabus.training.lora import _schedule, accumulate_gradients, training_order

    tok = lm.tokenizer
    examples, counts = build_examples(tok, samples, warm.cutoff)
    if not examples:
        raise ValueError(f"the warm-up has no usable samples ({len(samples)} picked, {counts}); raise warmup.fraction")
    digest = content_hash({"v": WARMUP_VERSION, "model": lm.fingerprint, "lora": lora.model_dump(mode="json"),
                           "warmup": warm.model_dump(mode="json"),
                           "data": content_hash([[e.input_ids, e.labels] for e in examples], 20)}, 24)
    keys = [f"influence/warmup/v{WARMUP_VERSION}/{digest}/checkpoint-{e + 1}.pt" for e in range(warm.epochs)]
    if store is not None and all(store.is_committed(k) for k in keys):
        log.info("warm-up: reusing %d committed checkpoints under %s", len(keys), store.url(keys[0]).rsplit("/", 1)[0])
        return [Checkpoint(d["epoch"], d["weights"], d["moments"], d["lr"], store.url(k))
                for k, d in ((k, read_checkpoint(store.url(k))) for k in keys)]
    ft = FinetuneConfig(lora_rank=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0,
                        target_modules=tuple(lora.target_modules), learning_rate=warm.learning_rate,
                        lr_scheduler=warm.lr_scheduler, warmup_ratio=warm.warmup_ratio, epochs=warm.epochs,
                        cutoff=warm.cutoff, batch_size=warm.batch_size, micro_batch_size=warm.micro_batch_size,
                        max_grad_norm=warm.max_grad_norm, seed=warm.seed)
    n = len(examples)
    order = training_order(n, ft)
    per_epoch = -(-n // warm.batch_size)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    out: list[Checkpoint] = []
    torch.manual_seed(warm.seed)
    with LoraGradients(lm.model, lora) as wrapped:
        params = {f"{m.name}.lora_A": m.a.weight for m in wrapped.modules}
        params.update({f"{m.name}.lora_B": m.b.weight for m in wrapped.modules})
        opt = torch.optim.AdamW(list(params.values()), lr=warm.learning_rate, weight_decay=0.0)
        sched = _schedule(opt, ft, per_epoch * warm.epochs)
        device = next(wrapped.peft_model.parameters()).device
        bar = tqdm(total=len(order), desc="warm-up", unit="sample", disable=not progress)
        for epoch in range(warm.epochs):
            epoch_order = order[epoch * n : (epoch + 1) * n]
            lrs = []
            for s0 in range(0, len(epoch_order), warm.batch_size):
                step = [examples[i] for i in epoch_order[s0 : s0 + warm.batch_size]]
                opt.zero_grad(set_to_none=True)
                lrs.append(sched.get_last_lr()[0])
                accumulate_gradients(wrapped.peft_model, step, warm.micro_batch_size, pad_id, device,
                                     on_micro_batch=bar.update)
                if warm.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(list(params.values()), warm.max_grad_norm)
                opt.step()
                sched.step()
            moments = {name: (opt.state[p]["exp_avg"].detach().cpu().clone(),
                              opt.state[p]["exp_avg_sq"].detach().cpu().clone()) for name, p in params.items()}
            ck = Checkpoint(epoch + 1, wrapped.state(), moments, float(np.mean(lrs)))
            if store is not None:
                store.commit(keys[epoch], _checkpoint_bytes(ck), {"kind": "warmup_checkpoint", "epoch": ck.epoch,
                                                                  "lr": ck.lr, "samples": n})
                ck.url = store.url(keys[epoch])
            out.append(ck)
        bar.close()
    log.info("warm-up: %d samples, %d epochs, mean lr per epoch %s", n, warm.epochs, [f"{c.lr:.2e}" for c in out])
    return out


def _weights_id(weights: dict | None) -> str | None:
    if weights is None:
        return None
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        h.update(weights[name].float().numpy().tobytes())
    return "sha256:" + h.hexdigest()[:32]


# ------------------------------------------------------------------ scorer
@registry.scorer("influence")
class InfluenceScorer(Scorer):
    """DIQ dot-product and LESS cosine influence (see the module docstring)."""

    name: ClassVar[str] = "influence"
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = InfluenceConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.store: Store | None = None
        self.pool_manifest: str | None = None
        self._validation: list[dict] | None = None
        self._prepared: dict[str, Any] = {}

    def attach(self, store: Store | None = None, pool_manifest: str | None = None) -> "InfluenceScorer":
        """Where validation gradients and warm-up checkpoints are cached, and the pool the
        warm-up samples come from (needed only with ``warmup``)."""
        self.store = store
        self.pool_manifest = pool_manifest
        return self

    def columns(self) -> list[str]:
        return ["influence_dot", "influence_less", "influence_status"]

    def validation(self) -> list[dict]:
        if self._validation is None:
            self._validation = validation_samples(self.config.validation)
        return self._validation

    def key_parts(self, model_fingerprint: str, shard_hash: str) -> dict[str, Any]:
        """A validation file can change under the same path, and the warm-up depends on the
        pool: both are part of the key."""
        parts = super().key_parts(model_fingerprint, shard_hash)
        parts["validation_items"] = samples_hash(self.validation())
        if self.config.warmup is not None:
            parts["warmup_pool"] = self._pool_fingerprint()
        return parts

    def _pool_fingerprint(self) -> str:
        if not self.pool_manifest:
            raise ValueError("influence with a warm-up needs the pool it warms up on: call attach(pool_manifest=URL)")
        from syllabus.pool.manifest import load_manifest

        m = load_manifest(self.pool_manifest)
        return str(m.get("pool_fingerprint") or content_hash([s["content_hash"] for s in m["shards"]], 20))

    def prepare(self, lm: Any) -> dict[str, Any]:
        """Checkpoints and their validation gradients, once per model."""
        if lm.fingerprint in self._prepared:
            return self._prepared[lm.fingerprint]
        cfg: InfluenceConfig = self.config
        if cfg.warmup is None:
            checkpoints = [Checkpoint(0, None, None, 1.0)]
        else:
            samples = warmup_samples(self.pool_manifest or "", cfg.warmup.fraction, cfg.warmup.seed) \
                if self.pool_manifest else []
            if not self.pool_manifest:
                self._pool_fingerprint()  # raises the explanatory error
            checkpoints = warmup_checkpoints(lm, samples, cfg.gradients.lora, cfg.warmup, self.store)
        val = self.validation()
        summaries: list[ValidationGradients] = []
        for ck in checkpoints:
            with LoraGradients(lm.model, cfg.gradients.lora, ck.weights) as lora:
                ck_id = ck.url or _weights_id(ck.weights)
                summaries.append(validation_gradients(lm, val, cfg.gradients, self.store, lora=lora, checkpoint=ck_id))
        prepared = {"checkpoints": checkpoints, "validation": summaries}
        self._prepared[lm.fingerprint] = prepared
        return prepared

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        cfg: InfluenceConfig = self.config
        start = time.perf_counter()
        prep = self.prepare(lm)
        rows = table.to_pylist()
        n = len(rows)
        checkpoints: list[Checkpoint] = prep["checkpoints"]
        total_lr = sum(c.lr for c in checkpoints)
        tasks = sorted(prep["validation"][0].task_means)
        dot = np.zeros(n)
        less = np.zeros((n, len(tasks)))
        status = ["ok"] * n
        stats: dict[str, Any] = {"checkpoints": []}
        for ck, val in zip(checkpoints, prep["validation"]):
            adam = cfg.warmup is not None and cfg.adam_preconditioning and ck.moments is not None
            with LoraGradients(lm.model, cfg.gradients.lora, ck.weights) as lora:
                res = gradient_features(lm, rows, cfg.gradients, lora=lora, moments=ck.moments if adam else None,
                                        also_plain=adam)
            plain = res.plain if adam else res.vectors
            status = [s if s != "ok" else r for s, r in zip(status, res.status)]
            dot += (ck.lr / total_lr) * (plain.astype(np.float64) @ val.mean.astype(np.float64))
            unit = normalise_rows(res.vectors.astype(np.float64))
            less += ck.lr * (unit @ np.stack([val.task_means[t] for t in tasks]).T.astype(np.float64))
            stats["checkpoints"].append({"epoch": ck.epoch, "lr": ck.lr, **res.stats})
        ok = np.array([s == "ok" for s in status])
        dot[~ok] = np.nan
        less_best = less.max(axis=1) if tasks else np.full(n, np.nan)
        less_best[~ok] = np.nan
        stats["validation"] = {"tasks": prep["validation"][0].counts, "failed": prep["validation"][0].failed}
        stats["seconds"] = round(time.perf_counter() - start, 3)
        self.last_stats = stats
        return pa.table({
            "sample_id": table.column("sample_id"),
            "influence_dot": pa.array([float(x) if math.isfinite(x) else math.nan for x in dot], pa.float64()),
            "influence_less": pa.array([float(x) for x in less_best], pa.float64()),
            "influence_status": pa.array(status, pa.string()),
        })
