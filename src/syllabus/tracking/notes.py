"""One-line run descriptions (MLflow's ``mlflow.note.content``): what a run compared, or what an
arm selected, trained and scored, readable in the runs table without opening the run."""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def describe_pipeline(title: str, arms: Sequence[str], budget: Mapping[str, Any], ingest: Mapping[str, Any],
                      model: str) -> str:
    size = f"{budget['count']} samples" if budget.get("count") else f"{budget.get('ratio', '?')} of the pool"
    return (f"{title}: {', '.join(arms)} at {size} from pool {ingest.get('pool_fingerprint', '?')} "
            f"({ingest.get('records_ok', '?')} samples), {model}")


def describe_arm(row: Mapping[str, Any]) -> str:
    """``3ds: 9 of 48 selected; LoRA loss 2.8045; mmlu-medical/cloze/accuracy 0.350`` (or the error)."""
    parts = [f"{row.get('method', '?')}:"]
    if row.get("n_selected") is not None:
        parts.append(f"{row['n_selected']} of {row.get('n_candidates', '?')} selected")
    finetune = row.get("finetune") or {}
    if finetune.get("train_loss") is not None:
        parts.append(f"LoRA loss {finetune['train_loss']:.4f}")
    metrics = (row.get("evaluation") or {}).get("metrics") or {}
    first = next(((k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)), None)
    if first:
        parts.append(f"{first[0]} {first[1]:.3f}")
    text = parts[0] + " " + "; ".join(parts[1:]) if len(parts) > 1 else parts[0]
    if row.get("error"):
        text += f" FAILED: {row['error']}"
    return text[:500]
