"""Validation gradients for influence scoring (DIQ arXiv 2508.01450, LESS arXiv 2402.04333).

The validation items themselves (a held-out benchmark split or a file, as training-format
samples) come from :mod:`syllabus.evaluation.heldout`, which evaluation reads too to leave
them out.

Validation gradients (plain, never preconditioned): the mean projected gradient ``g_val``
(DIQ) and, per task, the mean of the L2-normalised projected gradients (LESS: the mean
cosine with a task is the dot product with that mean). They are committed to the store per
(gradients config, model, samples, checkpoint), so every shard of a pool reads them once.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from syllabus.scoring import gradients
from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

VERSION = 1


def samples_hash(samples: Sequence[Mapping[str, Any]]) -> str:
    return content_hash([[s.get("instruction"), s.get("output"), s.get("task")] for s in samples], 20)


@dataclass
class ValidationGradients:
    mean: np.ndarray  # [k] mean projected gradient (DIQ's g_val)
    task_means: dict[str, np.ndarray]  # task -> [k] mean of L2-normalised projected gradients (LESS)
    counts: dict[str, int]  # task -> usable items
    failed: int

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        tasks = sorted(self.task_means)
        np.savez(buf, mean=self.mean, tasks=np.array(tasks), task_means=np.stack([self.task_means[t] for t in tasks]),
                 counts=np.array([self.counts[t] for t in tasks]), failed=np.array(self.failed))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ValidationGradients":
        z = np.load(io.BytesIO(data))
        tasks = [str(t) for t in z["tasks"]]
        return cls(z["mean"], {t: z["task_means"][i] for i, t in enumerate(tasks)},
                   {t: int(z["counts"][i]) for i, t in enumerate(tasks)}, int(z["failed"]))


def normalise_rows(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


def summarise(vectors: np.ndarray, tasks: Sequence[str], status: Sequence[str]) -> ValidationGradients:
    ok = np.array([s == "ok" for s in status], dtype=bool)
    if not ok.any():
        raise ValueError("no validation item gave a gradient (all too long or failed); check the validation set "
                         "and the cutoff")
    v = vectors[ok].astype(np.float64)
    task_arr = np.array(tasks, dtype=object)[ok]
    unit = normalise_rows(v)
    means, counts = {}, {}
    for t in sorted(set(task_arr)):
        sel = task_arr == t
        means[t] = unit[sel].mean(0).astype(np.float32)
        counts[t] = int(sel.sum())
    return ValidationGradients(v.mean(0).astype(np.float32), means, counts, int((~ok).sum()))


def validation_key(gradients_config: Any, model_fingerprint: str, samples: Sequence[Mapping[str, Any]],
                   checkpoint: str | None = None) -> str:
    p = gradients_config.projection
    parts = {"v": VERSION, "gradients": gradients_config.key_dump(), "model": model_fingerprint,
             "samples": samples_hash(samples), "checkpoint": checkpoint}
    return f"validation/gradients/v{VERSION}/{p.kind}-k{p.dim}-seed{p.seed}/{content_hash(parts, 24)}.npz"


def validation_gradients(
    lm: Any,
    samples: Sequence[Mapping[str, Any]],
    gradients_config: Any,
    store: Store | None = None,
    lora: Any = None,
    checkpoint: str | None = None,
    progress: bool = True,
) -> ValidationGradients:
    """Mean and per-task validation gradients, read from / committed to ``store`` when given.
    Always plain gradients: preconditioning is for training samples only (LESS)."""
    cfg = gradients_config.model_copy(update={"preconditioning": "none", "checkpoint": checkpoint})
    key = validation_key(cfg, lm.fingerprint, samples, checkpoint)
    if store is not None and store.is_committed(key):
        log.info("validation gradients: reusing %s", store.url(key))
        return ValidationGradients.from_bytes(store.read_committed(key))
    # Called through the module, so a test that counts gradient passes sees this one too.
    res = gradients.gradient_features(lm, samples, cfg, lora=lora, progress=progress)
    out = summarise(res.vectors, [s.get("task") or "all" for s in samples], res.status)
    log.info("validation gradients: %d items in %d tasks (%d failed)", sum(out.counts.values()), len(out.counts),
             out.failed)
    for sample, status in zip(samples, res.status):
        if status != "ok":  # named, so a user can fix the item or the cutoff
            log.warning("validation item %s left out: %s", sample.get("sample_id") or sample.get("id") or
                        sample.get("instruction", "")[:60], status)
    if store is not None:
        store.commit(key, out.to_bytes(), {"kind": "validation_gradients", "items": len(samples),
                                           "tasks": out.counts, "failed": out.failed})
    return out
