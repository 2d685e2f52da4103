"""One flow per stage, for teams that run them separately (each is a deployment)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from syllabus.pipeline.config import BudgetParams
from tasks.stages import evaluate_task, finetune_task, ingest_task, select_task


@flow(name="ingest")
def ingest(pool: list[str], store: str | None = None, shard_size: int = 1000) -> dict[str, Any]:
    return ingest_task(pool, store, shard_size)


@flow(name="select")
def select(method: str, scores: list[str], budget: BudgetParams, store: str | None = None, seed: int = 0,
           overrides: dict[str, dict[str, Any]] | None = None, pool: str | None = None) -> dict[str, Any]:
    """Re-select from cached scores with new settings: seconds, no model."""
    return select_task(method, scores, budget.model_dump(exclude_none=True), store, seed, overrides, pool)


@flow(name="finetune")
def finetune(selected: str, model: str = "smollm2-135m", config: dict[str, Any] | None = None,
             store: str | None = None) -> dict[str, Any]:
    return finetune_task(selected, model, config or {}, store)


@flow(name="evaluate")
def evaluate(model: str = "smollm2-135m", adapter: str | None = None, benches: list[str] | None = None,
             config: dict[str, Any] | None = None, store: str | None = None) -> dict[str, Any]:
    return evaluate_task(model, adapter, benches or ["mmlu-medical"], config or {}, store)
