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

The LESS authors' code (``princeton-nlp/LESS``) differs in configuration, reproduced by the
``less-reference`` recipe: ``adam_eps: inside_sqrt`` gives their ``m / sqrt(v + eps)``;
``checkpoint_weights: normalised`` divides the ``eta_c`` by their sum (rank-neutral);
``gradients.format: tulu`` and ``cutoff: 2048`` their Tulu format
(:mod:`syllabus.models.formats`), which the warm-up then trains in too; and
``gradients.lora`` their adapters (rank 128, alpha 512 on q, k, v, o, dropout 0.1, the
dropout acting in the warm-up only). The ``less`` recipe states the project's LoRA (rank 8,
alpha 16 on q, k, v, no dropout).

Without a warm-up there is one "checkpoint": the freshly initialised adapters (B = 0, so
the gradient is a fixed random sketch of the full weight gradient; weight 1). With a warm-up
(``warmup``, :mod:`syllabus.scoring.warmup`), LoRA is trained on a seeded ``fraction`` of the
pool for ``epochs`` epochs by the training module's loop, and the adapters and Adam moments at
the end of every epoch are the checkpoints; ``influence_dot`` is then the
learning-rate-weighted mean over checkpoints of the plain dot products.

The validation items are benchmark items (:mod:`syllabus.evaluation.heldout`); the scorer
reports which it held out (:meth:`InfluenceScorer.held_out_ids`) so evaluation leaves
exactly those out.

Streaming fan-in: a shard's features are computed, dotted with the validation summaries
(a few k-vectors) and dropped; no step holds the gradients of more than one shard.

Columns: ``influence_dot``, ``influence_less``, ``influence_status``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

from syllabus import registry
from syllabus.evaluation.heldout import ValidationConfig, held_out_ids, validation_samples
from syllabus.scoring.base import Scorer, ScorerConfig
from syllabus.scoring.gradients import GradientsConfig, gradient_features
from syllabus.scoring.lora_gradients import LoraGradients
from syllabus.scoring.validation import ValidationGradients, normalise_rows, samples_hash, validation_gradients
from syllabus.scoring.warmup import Checkpoint, WarmupSettings, warmup_checkpoints, warmup_samples
from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)


class InfluenceConfig(ScorerConfig):
    key_defaults: ClassVar[dict[str, Any]] = {"adam_eps": "outside_sqrt", "checkpoint_weights": "lr"}

    gradients: GradientsConfig = GradientsConfig()
    validation: ValidationConfig = ValidationConfig()
    warmup: WarmupSettings | None = None
    adam_preconditioning: bool = True  # LESS's Gamma for training samples (only with a warm-up)
    # "outside_sqrt": Adam's own m / (sqrt(v) + eps); "inside_sqrt": the LESS authors' code,
    # m / sqrt(v + eps).
    adam_eps: Literal["outside_sqrt", "inside_sqrt"] = "outside_sqrt"
    # LESS's eta_c: "lr", each checkpoint's mean learning rate (the paper's formula);
    # "normalised", those divided by their sum (the authors' matching.py). Rank-neutral.
    checkpoint_weights: Literal["lr", "normalised"] = "lr"


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

    def held_out_ids(self) -> dict[str, list[str]]:
        """``{benchmark name: item ids}`` of the benchmark items this scorer validates on: the
        score manifest records them (``validation_ids``) and evaluation must leave them out
        (``EvalConfig.exclude_ids``). Needs no model."""
        return held_out_ids(self.config.validation)

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
            checkpoints = warmup_checkpoints(lm, samples, cfg.gradients.lora, cfg.warmup, self.store,
                                             fmt=cfg.gradients.format)
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
        less_scale = 1.0 / total_lr if cfg.checkpoint_weights == "normalised" else 1.0
        tasks = sorted(prep["validation"][0].task_means)
        dot = np.zeros(n)
        less = np.zeros((n, len(tasks)))
        status = ["ok"] * n
        stats: dict[str, Any] = {"checkpoints": []}
        for ck, val in zip(checkpoints, prep["validation"]):
            adam = cfg.warmup is not None and cfg.adam_preconditioning and ck.moments is not None
            with LoraGradients(lm.model, cfg.gradients.lora, ck.weights) as lora:
                res = gradient_features(lm, rows, cfg.gradients, lora=lora, moments=ck.moments if adam else None,
                                        also_plain=adam, eps_inside_sqrt=cfg.adam_eps == "inside_sqrt")
            plain = res.plain if adam else res.vectors
            status = [s if s != "ok" else r for s, r in zip(status, res.status)]
            dot += (ck.lr / total_lr) * (plain.astype(np.float64) @ val.mean.astype(np.float64))
            unit = normalise_rows(res.vectors.astype(np.float64))
            less += ck.lr * less_scale * (unit @ np.stack([val.task_means[t] for t in tasks]).T.astype(np.float64))
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
