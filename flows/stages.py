"""One flow per stage, for teams that run them separately (each is a deployment).

Each publishes what it produced (counts and URLs) as an artifact on its run, keyed by the
stage, and returns it as a persisted JSON result, so the next stage's form can be filled from
the UI: ingest's pool manifest goes to score, score's manifests to select, select's subset to
finetune, finetune's adapter to evaluate.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from syllabus_flows.outcome import publish
from syllabus.pipeline.config import BudgetParam, IngestConfig, SpecialTokens
from syllabus.pool.ingest import DEFAULT_SHARD_SIZE
from syllabus.tracking.provenance import check_code_provenance
from syllabus_tasks.stages import evaluate_task, finetune_task, ingest_task, select_task

# JSON, not pickle: the result file is readable by anyone (and any tool) that fills the next form.
_PERSISTED = dict(persist_result=True, result_serializer="json")


def _table(title: str, counts: dict[str, Any], urls: dict[str, Any], next_step: str) -> str:
    lines = [f"### {title}", "", "| what | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    lines += [f"| {k} | `{v}` |" for k, v in urls.items() if v]
    return "\n".join(lines + ["", next_step])


@flow(name="ingest", **_PERSISTED)
def ingest(pool: list[str], store: str | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
           special_tokens: SpecialTokens = "keep") -> dict[str, Any]:
    """Read, validate, deduplicate and shard a pool into the store; returns the ingest summary.

    Args:
        pool: pool files, directories or URLs (JSONL, JSON, CSV, Parquet, Alpaca, ShareGPT, ...).
        store: store URL (a directory, s3://bucket/prefix, memory://name); default $SYLLABUS_STORE or ./syllabus-store.
        shard_size: samples per shard: the unit of scoring, caching and retry.
        special_tokens: records whose text spells a chat-template token (<|im_end|>, <s>, [INST] ...):
            keep them (the strings stay plain text) or quarantine them.
    """
    check_code_provenance()  # the code that runs is the commit recorded, or the run fails here
    out = ingest_task(IngestConfig(inputs=pool, shard_size=shard_size, special_tokens=special_tokens), store)
    counts = {k: out.get(k) for k in ("records_in", "records_ok", "records_rejected", "duplicates", "shards", "pool_fingerprint")}
    publish(markdown=_table("Pool ingested", counts, {"pool manifest": out.get("manifest")},
                            "Next: run the **score** deployment with `pool_manifest` set to the pool manifest above."),
            key="ingest", description="Ingest: counts and the pool manifest URL for score and select")
    return out


@flow(name="select", **_PERSISTED)
def select(method: str, scores: list[str], budget: BudgetParam, store: str | None = None, seed: int = 0,
           overrides: dict[str, dict[str, Any]] | None = None, pool: str | None = None) -> dict[str, Any]:
    """Re-select from cached scores with new settings: seconds, no model.

    Args:
        method: the selection method (3ds, diq, ifd, less, random, full, ...).
        scores: score manifest URLs the method's selectors read (the score run's "scores" artifact lists them).
        budget: how many samples to keep: exactly one of count or ratio.
        store: store URL; default $SYLLABUS_STORE or ./syllabus-store.
        seed: random seed for the method's random choices (random, tie-breaking).
        overrides: per selector config changes, e.g. {"threshold": {"min_value": 85}}.
        pool: the pool manifest URL, to carry every sample's text into the subset (optional when scores name it).
    """
    check_code_provenance()  # the code that runs is the commit recorded, or the run fails here
    out = select_task(method, scores, budget.model_dump(exclude_none=True), store, seed, overrides, pool)
    outputs = out.get("outputs") or {}
    publish(markdown=_table(f"Selection: {method}", {"selected": out.get("n_selected"), "candidates": out.get("n_candidates")},
                            {"selected subset": outputs.get("selected"), "report": outputs.get("report"),
                             "candidates": outputs.get("candidates")},
                            "Next: run the **finetune** deployment with `selected` set to the subset above."),
            key="select", description="Selection: counts and the subset URL for finetune")
    return out


@flow(name="finetune", **_PERSISTED)
def finetune(selected: str, model: str = "smollm2-135m", config: dict[str, Any] | None = None,
             store: str | None = None) -> dict[str, Any]:
    """LoRA fine-tune the model on a selected subset; returns the adapter's URL and training summary.

    Args:
        selected: URL of a selected subset (the select run's "select" artifact shows it).
        model: the base model: an alias (smollm2-135m), a Hugging Face directory, a .gguf file or a hub id.
        config: LoRA fine-tuning settings (FinetuneConfig fields), e.g. {"epochs": 1, "learning_rate": 2e-4}.
        store: store URL; default $SYLLABUS_STORE or ./syllabus-store.
    """
    check_code_provenance()  # the code that runs is the commit recorded, or the run fails here
    out = finetune_task(selected, model, config or {}, store)
    publish(markdown=_table("Fine-tuned adapter", {k: out.get(k) for k in ("samples", "steps", "train_loss", "seconds")},
                            {"adapter": out.get("adapter")},
                            "Next: run the **evaluate** deployment with `adapter` set to the adapter above."),
            key="finetune", description="Fine-tune: the adapter URL for evaluate")
    return out


@flow(name="evaluate", **_PERSISTED)
def evaluate(model: str = "smollm2-135m", adapter: str | None = None, benches: list[str] | None = None,
             config: dict[str, Any] | None = None, store: str | None = None) -> dict[str, Any]:
    """Evaluate the base model, or it with an adapter, on benchmarks; returns the metrics and per-item results URL.

    Args:
        model: the base model: an alias (smollm2-135m), a Hugging Face directory, a .gguf file or a hub id.
        adapter: URL of a LoRA adapter from finetune; empty evaluates the base model.
        benches: built-in benchmark names (mmlu-medical, ...) or benchmark files; default mmlu-medical.
        config: evaluation settings (EvalConfig fields), e.g. {"limit": 40, "generate": false}.
        store: store URL; default $SYLLABUS_STORE or ./syllabus-store.
    """
    check_code_provenance()  # the code that runs is the commit recorded, or the run fails here
    out = evaluate_task(model, adapter, benches or ["mmlu-medical"], config or {}, store)
    metrics = {k: v for k, v in (out.get("metrics") or {}).items() if isinstance(v, (int, float))}
    publish(markdown=_table("Evaluation", metrics, {"per-item results": out.get("results")},
                            "Next: evaluate another adapter (or the base model) on the same benchmarks and compare, "
                            "or run the **compare** deployment to have every method evaluated side by side."),
            key="evaluate", description="Evaluation: metrics and the per-item results URL")
    return out
