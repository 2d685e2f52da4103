"""Decontamination: find pool samples whose question is a benchmark question.

Evaluation items must never leak into a training pool. For each benchmark, every pool
sample's question text (``instruction`` plus ``input``) is compared with every benchmark
question after normalisation (Unicode NFKC, lower case, punctuation dropped, whitespace
collapsed):

- **exact**: the normalised texts are equal;
- **near**: the word n-gram sets (n = 5 by default; every CJK character counts as a word)
  have Jaccard similarity >= ``jaccard_threshold`` (a paraphrase or light edit), or the
  benchmark question's n-grams are contained in the pool text's n-grams at a rate
  >= ``containment_threshold`` (the question pasted inside a longer instruction, the case
  GPT-3's and Llama 2's contamination studies look for with n-gram overlap).
Texts shorter than n words use their whole token sequence as a single gram, so a short
question is caught only by an exact or near-exact match.

Candidate pairs come from an inverted index of benchmark n-grams, so the cost grows with
the number of shared grams, not with pool x benchmark. Higher scores mean more contaminated.
``decontaminate`` reports the matches and, when enforced, drops the contaminated pool rows.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter, defaultdict
from typing import Iterable, Sequence

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from syllabus.evaluation.benchmarks import Benchmark
from syllabus.store import content_hash

log = logging.getLogger(__name__)

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\s\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


class DecontaminationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    ngram: int = Field(5, ge=1)
    # 0.7: at 0.6 MedQuAD's templated questions about different diseases ("What are the genetic
    # changes related to X ?") matched each other (measured: 3 of 4 flags on a 200/100 split).
    jaccard_threshold: float = Field(0.7, gt=0.0, le=1.0)
    containment_threshold: float = Field(0.8, gt=0.0, le=1.0)
    pool_fields: tuple[str, ...] = ("instruction", "input")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text).replace("_", " ")
    return " ".join(text.split())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of already-normalised text (one gram of every token when shorter than n)."""
    tokens = _TOKEN.findall(text)
    if not tokens:
        return set()
    if len(tokens) < n:
        return {tuple(tokens)}
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _pool_text(row: dict, fields: Sequence[str]) -> str:
    parts = []
    for f in fields:
        value = row.get(f)
        if value:
            parts.append(str(value))
    if not parts and row.get("messages"):
        # A chat-format sample: its user turns are the question.
        parts = [m["content"] for m in row["messages"] if m.get("role") == "user"]
    return "\n\n".join(parts)


def find_contamination(
    pool_rows: Iterable[dict], benchmark: Benchmark, config: DecontaminationConfig | None = None
) -> list[dict]:
    """Matches between pool rows and one benchmark's questions, one dict per (pool row, item)."""
    config = config or DecontaminationConfig()
    exact_index: dict[str, list[int]] = defaultdict(list)
    gram_index: dict[tuple, list[int]] = defaultdict(list)
    bench_sizes: list[int] = []
    for i, item in enumerate(benchmark.items):
        norm = normalise(item.question)
        exact_index[norm].append(i)
        grams = ngrams(norm, config.ngram)
        bench_sizes.append(len(grams))
        for g in grams:
            gram_index[g].append(i)

    matches = []
    rows = list(pool_rows)
    for row in tqdm(rows, desc=f"decontaminate vs {benchmark.name}", unit="sample", leave=False):
        text = _pool_text(row, config.pool_fields)
        norm = normalise(text)
        sample_id = str(row.get("sample_id") or content_hash(text, 16))
        hit: dict[int, dict] = {}
        for i in exact_index.get(norm, []):
            hit[i] = {"kind": "exact", "jaccard": 1.0, "containment": 1.0}
        grams = ngrams(norm, config.ngram)
        shared: Counter = Counter()
        for g in grams:
            for i in gram_index.get(g, ()):
                shared[i] += 1
        for i, k in shared.items():
            if i in hit:
                continue
            jaccard = k / (len(grams) + bench_sizes[i] - k)
            containment = k / bench_sizes[i]
            if jaccard >= config.jaccard_threshold or containment >= config.containment_threshold:
                hit[i] = {"kind": "near", "jaccard": jaccard, "containment": containment}
        for i, h in hit.items():
            item = benchmark.items[i]
            matches.append({"sample_id": sample_id, "benchmark": benchmark.name, "item_id": item.item_id, **h})
    return matches


def decontaminate(
    pool: pa.Table | Sequence[dict],
    benchmarks: Sequence[Benchmark],
    config: DecontaminationConfig | None = None,
    enforce: bool = False,
) -> tuple[pa.Table | list[dict], dict, list[dict]]:
    """Check ``pool`` against each benchmark; with ``enforce``, drop the contaminated rows.

    Returns ``(pool, report, matches)``: the (filtered when enforced) pool in the type it came
    in, a report ``{benchmark: {items, pool_rows, contaminated_rows, contaminated_items,
    exact, near}}`` plus ``"dropped"``, and the list of matches.
    """
    config = config or DecontaminationConfig()
    rows = pool.to_pylist() if isinstance(pool, pa.Table) else list(pool)
    report: dict = {}
    all_matches: list[dict] = []
    for bench in benchmarks:
        matches = find_contamination(rows, bench, config)
        all_matches.extend(matches)
        report[bench.name] = {
            "items": len(bench),
            "pool_rows": len(rows),
            "contaminated_rows": len({m["sample_id"] for m in matches}),
            "contaminated_items": len({m["item_id"] for m in matches}),
            "exact": sum(m["kind"] == "exact" for m in matches),
            "near": sum(m["kind"] == "near" for m in matches),
        }
        log.info("decontamination vs %s: %s", bench.name, report[bench.name])
    bad = {m["sample_id"] for m in all_matches}
    report["dropped"] = 0
    if enforce and bad:
        ids = [str(r.get("sample_id") or content_hash(_pool_text(r, config.pool_fields), 16)) for r in rows]
        keep = [i for i, sid in enumerate(ids) if sid not in bad]
        report["dropped"] = len(rows) - len(keep)
        if isinstance(pool, pa.Table):
            return pool.take(pa.array(keep, type=pa.int64())), report, all_matches
        return [rows[i] for i in keep], report, all_matches
    return pool if isinstance(pool, pa.Table) else rows, report, all_matches


def load_pool_rows(sources: Sequence[str]) -> list[dict]:
    """Pool rows from pool manifests (``.../manifest.json`` written by ``syllabus ingest``, read
    shard by shard with checksums) or any pool/selection file the pool readers accept."""
    from syllabus.pool.manifest import iter_shards, load_manifest
    from syllabus.pool.samples import load_samples

    rows: list[dict] = []
    files = []
    for src in sources:
        if src.endswith("manifest.json"):
            for _, table in iter_shards(load_manifest(src)):
                rows.extend(table.to_pylist())
        else:
            files.append(src)
    if files:
        rows.extend(load_samples(files)[0])
    return rows
