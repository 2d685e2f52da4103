"""Benchmark-only synthetic scorers: the output schema of each shipped scorer, no model.

Used by ``benchmarks/scale.py`` to run the real machinery (ingest, the per-shard scoring step
with its keys, leases and markers, score manifests, selection, export) at pool sizes no model
could score on this machine. Never shipped, never a method: each class is registered at run
time with :func:`syllabus.registry.register`, the way an out-of-tree scorer is, under a name
that starts with ``synthetic_``, so every column, cache key and manifest says "synthetic".

Each writes the columns, dtypes and shapes of the scorer it stands in for, with
``synthetic_`` in front of the scorer's name:

- ``synthetic_quality``: ``_score`` float64 in [0, 100], ``_raw`` string, ``_status``
  (as :mod:`syllabus.scoring.quality`);
- ``synthetic_difficulty``: ``_d1``, ``_d2``, ``_d3`` float64, ``_embedding``
  list<float32> of ``embedding_dim`` (576 for SmolLM2-135M, 4,096 for a 7B model),
  ``_response`` string, ``_status`` (as :mod:`syllabus.scoring.difficulty`);
- ``synthetic_ifd``: ``_score``, ``_nll_conditioned``, ``_nll_alone`` float64, ``_status``;
- ``synthetic_diq_difficulty``: ``_score`` float64, ``_raw`` string, ``_status``;
- ``synthetic_influence``: ``_dot``, ``_less`` float64, ``_status``. Like the real influence
  scorer it makes a ``[shard rows, dim]`` feature matrix per shard (the projected gradient;
  ``dim`` 8,192 as in the ``less`` recipe), dots it with the mean validation feature and takes
  the max cosine over the validation tasks' mean unit features, then drops it: the matching
  streams, one shard's features at a time;
- ``synthetic_gradients``: ``_vector`` fixed_size_list<float16>(dim), ``_loss`` float64,
  ``_tokens`` int32, ``_status`` (as :mod:`syllabus.scoring.gradients`).

Values are deterministic: drawn from a generator seeded by the shard's sample ids (and the
scorer's name), so the same shard always gets the same numbers; about one sample in a
thousand gets a failure status (``too_long``) with null values, as real scorers give.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from syllabus import registry
from syllabus.scoring.base import Scorer, ScorerConfig

FAIL_RATE = 0.001


def _rng(table: pa.Table, salt: str) -> np.random.Generator:
    h = hashlib.sha256(salt.encode())
    for sid in table.column("sample_id").to_pylist():
        h.update(sid.encode())
        h.update(b"\0")
    return np.random.default_rng(int.from_bytes(h.digest()[:8], "little"))


def _status(rng: np.random.Generator, n: int) -> tuple[np.ndarray, pa.Array]:
    bad = rng.random(n) < FAIL_RATE
    return bad, pa.array(np.where(bad, "too_long", "ok").tolist(), pa.string())


def _float(values: np.ndarray, bad: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.float64), pa.float64(), mask=bad)


class SyntheticConfig(ScorerConfig):
    seed: int = 0


class _Synthetic(Scorer):
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = SyntheticConfig

    def rng(self, table: pa.Table) -> np.random.Generator:
        return _rng(table, f"{self.name}:{self.config.seed}")


class SyntheticQualityScorer(_Synthetic):
    name: ClassVar[str] = "synthetic_quality"

    def columns(self) -> list[str]:
        return ["synthetic_quality_score", "synthetic_quality_raw", "synthetic_quality_status"]

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        rng = self.rng(table)
        n = table.num_rows
        bad, status = _status(rng, n)
        score = 100.0 * rng.beta(6.0, 1.0, n)  # about 47% at or above the 3DS cut of 90
        raw = pa.array([f"{s / 10:.0f}" for s in score], pa.string(), mask=bad)
        return pa.table({"sample_id": table.column("sample_id"), "synthetic_quality_score": _float(score, bad),
                         "synthetic_quality_raw": raw, "synthetic_quality_status": status})


class DifficultyConfig(SyntheticConfig):
    embedding_dim: int = 576


class SyntheticDifficultyScorer(_Synthetic):
    name: ClassVar[str] = "synthetic_difficulty"
    version: ClassVar[int] = 2  # 2: embeddings shaped like hidden states (1: white noise)
    config_cls: ClassVar[type[ScorerConfig]] = DifficultyConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._basis: tuple[np.ndarray, np.ndarray] | None = None

    def columns(self) -> list[str]:
        return [f"synthetic_difficulty_{c}" for c in ("d1", "d2", "d3", "embedding", "response", "status")]

    def embeddings(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Shaped like mean-pooled hidden states rather than white noise: a large shared mean
        (hidden states are anisotropic), a spread along 64 directions with a decaying spectrum,
        and a little isotropic noise. White noise in 4,096 dimensions would put every pair of
        points at nearly the same distance, which no model's embeddings do."""
        dim = self.config.embedding_dim
        if self._basis is None:
            fixed = np.random.default_rng([self.config.seed, dim, 11])
            mean = (3.0 * fixed.standard_normal(dim)).astype(np.float32)
            basis = (fixed.standard_normal((64, dim)) / np.sqrt(np.arange(1, 65))[:, None]).astype(np.float32)
            self._basis = (mean, basis)
        mean, basis = self._basis
        emb = rng.standard_normal((n, 64), dtype=np.float32) @ basis
        emb += mean
        emb += 0.1 * rng.standard_normal((n, dim), dtype=np.float32)
        return emb

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        rng = self.rng(table)
        n, dim = table.num_rows, self.config.embedding_dim
        bad, status = _status(rng, n)
        d = rng.lognormal(0.5, 0.6, (3, n))
        emb = self.embeddings(rng, n)
        offsets = np.arange(0, (n + 1) * dim, dim, dtype=np.int32)
        # list<float32>, null where the status is not ok, as the real scorer writes
        embedding = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(emb.reshape(-1), pa.float32()),
                                             mask=pa.array(bad))
        response = pa.array(["synthetic response"] * n, pa.string(), mask=bad)
        return pa.table({"sample_id": table.column("sample_id"),
                         "synthetic_difficulty_d1": _float(d[0], bad), "synthetic_difficulty_d2": _float(d[1], bad),
                         "synthetic_difficulty_d3": _float(d[2], bad), "synthetic_difficulty_embedding": embedding,
                         "synthetic_difficulty_response": response, "synthetic_difficulty_status": status})


class SyntheticIFDScorer(_Synthetic):
    name: ClassVar[str] = "synthetic_ifd"

    def columns(self) -> list[str]:
        return ["synthetic_ifd_score", "synthetic_ifd_nll_conditioned", "synthetic_ifd_nll_alone", "synthetic_ifd_status"]

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        rng = self.rng(table)
        n = table.num_rows
        bad, status = _status(rng, n)
        alone = rng.gamma(4.0, 0.5, n) + 0.1
        cond = alone * rng.lognormal(-0.15, 0.15, n)  # about 16% above 1, dropped by the IFD recipe
        return pa.table({"sample_id": table.column("sample_id"), "synthetic_ifd_score": _float(cond / alone, bad),
                         "synthetic_ifd_nll_conditioned": _float(cond, bad),
                         "synthetic_ifd_nll_alone": _float(alone, bad), "synthetic_ifd_status": status})


class SyntheticDIQDifficultyScorer(_Synthetic):
    name: ClassVar[str] = "synthetic_diq_difficulty"

    def columns(self) -> list[str]:
        return ["synthetic_diq_difficulty_score", "synthetic_diq_difficulty_raw", "synthetic_diq_difficulty_status"]

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        rng = self.rng(table)
        n = table.num_rows
        bad, status = _status(rng, n)
        score = 10.0 * rng.random(n)
        raw = pa.array([f"{s:.0f}" for s in score], pa.string(), mask=bad)
        return pa.table({"sample_id": table.column("sample_id"), "synthetic_diq_difficulty_score": _float(score, bad),
                         "synthetic_diq_difficulty_raw": raw, "synthetic_diq_difficulty_status": status})


class FeatureConfig(SyntheticConfig):
    dim: int = 8192
    tasks: int = 3
    validation_per_task: int = 64


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class SyntheticInfluenceScorer(_Synthetic):
    name: ClassVar[str] = "synthetic_influence"
    config_cls: ClassVar[type[ScorerConfig]] = FeatureConfig

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._validation: tuple[np.ndarray, np.ndarray] | None = None

    def columns(self) -> list[str]:
        return ["synthetic_influence_dot", "synthetic_influence_less", "synthetic_influence_status"]

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean validation feature [dim], mean unit feature per task [tasks, dim]), float64."""
        if self._validation is None:
            cfg = self.config
            rng = np.random.default_rng([cfg.seed, cfg.dim, 7])
            feats = rng.standard_normal((cfg.tasks, cfg.validation_per_task, cfg.dim)).astype(np.float32)
            self._validation = (feats.reshape(-1, cfg.dim).mean(axis=0, dtype=np.float64),
                                np.stack([_unit(f.astype(np.float64)).mean(axis=0) for f in feats]))
        return self._validation

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        rng = self.rng(table)
        n = table.num_rows
        bad, status = _status(rng, n)
        mean, task_means = self.validation()
        # Shared direction plus noise, so influence has a spread; one shard's features, then dropped.
        features = rng.standard_normal((n, self.config.dim), dtype=np.float32)
        features += (0.02 * rng.standard_normal(n, dtype=np.float32))[:, None] * mean.astype(np.float32)[None, :]
        dot = features @ mean.astype(np.float32)
        norms = np.linalg.norm(features, axis=1)
        cos = (features @ task_means.T.astype(np.float32)) / np.where(norms > 0, norms, 1.0)[:, None]
        less = cos.max(axis=1)
        del features
        return pa.table({"sample_id": table.column("sample_id"), "synthetic_influence_dot": _float(dot, bad),
                         "synthetic_influence_less": _float(less, bad), "synthetic_influence_status": status})


class SyntheticGradientsScorer(_Synthetic):
    name: ClassVar[str] = "synthetic_gradients"
    config_cls: ClassVar[type[ScorerConfig]] = FeatureConfig

    def columns(self) -> list[str]:
        return ["synthetic_gradients_vector", "synthetic_gradients_loss", "synthetic_gradients_tokens",
                "synthetic_gradients_status"]

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        rng = self.rng(table)
        n, k = table.num_rows, self.config.dim
        bad, status = _status(rng, n)
        half = rng.standard_normal((n, k), dtype=np.float32).astype(np.float16)
        half[bad] = 0.0  # rows without a vector are zeros, never nulls (as gradients.vectors_column)
        vector = pa.FixedSizeListArray.from_arrays(pa.array(half.reshape(-1), type=pa.float16()), k)
        return pa.table({"sample_id": table.column("sample_id"), "synthetic_gradients_vector": vector,
                         "synthetic_gradients_loss": _float(rng.gamma(4.0, 0.5, n), bad),
                         "synthetic_gradients_tokens": pa.array(rng.integers(8, 512, n), pa.int32()),
                         "synthetic_gradients_status": status})


SCORERS = {cls.name: cls for cls in (SyntheticQualityScorer, SyntheticDifficultyScorer, SyntheticIFDScorer,
                                      SyntheticDIQDifficultyScorer, SyntheticInfluenceScorer,
                                      SyntheticGradientsScorer)}


def register(module: str = "synthetic_scorers") -> None:
    """Register every synthetic scorer the way an out-of-tree scorer is (``module`` must be
    importable: ``benchmarks/`` on ``sys.path``)."""
    for name, cls in SCORERS.items():
        registry.register("scorer", name, f"{module}:{cls.__name__}")
