"""One registry: names of scorers, selectors and methods mapped to ``"module:Class"`` strings.

Entries are imported lazily, so listing or validating a recipe never loads torch. An unknown
name raises an error listing the known names and the closest matches (as
lm-evaluation-harness does in ``lm_eval/api/registry.py``).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

_REGISTRY: dict[str, dict[str, str]] = {
    "scorer": {
        "quality": "syllabus.scoring.quality:QualityScorer",
        "difficulty": "syllabus.scoring.difficulty:DifficultyScorer",
        "ifd": "syllabus.scoring.ifd:IFDScorer",
        "gradients": "syllabus.scoring.gradients:GradientsScorer",
        "influence": "syllabus.scoring.influence:InfluenceScorer",
        "diq_difficulty": "syllabus.scoring.diq_difficulty:DIQDifficultyScorer",
    },
    "selector": {
        "threshold": "syllabus.selection.threshold:ThresholdSelector",
        "band": "syllabus.selection.band:BandSelector",
        "kcenter": "syllabus.selection.kcenter:KCenterSelector",
        "quadrant": "syllabus.selection.quadrant:QuadrantSelector",
        "topk": "syllabus.selection.topk:TopKSelector",
        "random": "syllabus.selection.baselines:RandomSelector",
        "full": "syllabus.selection.baselines:FullSelector",
    },
}


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError would print the repr with quotes
        return str(self.args[0])


def register(kind: str, name: str, target: str) -> None:
    """Register ``target`` ("package.module:Attr") under ``name`` for ``kind``."""
    if ":" not in target:
        raise ValueError(f"registry target {target!r} must look like 'package.module:Attr'")
    _REGISTRY.setdefault(kind, {})[name] = target


def names(kind: str) -> list[str]:
    return sorted(_REGISTRY.get(kind, {}))


def lookup(kind: str, name: str) -> Any:
    """Import and return the object registered as ``name`` of ``kind``."""
    table = _REGISTRY.get(kind)
    if table is None:
        raise UnknownNameError(f"unknown registry kind {kind!r}; known kinds: {', '.join(sorted(_REGISTRY))}")
    if name not in table:
        close = difflib.get_close_matches(name, table, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(sorted(table)) or '(none)'}."
        )
    module_name, attr = table[name].split(":", 1)
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ImportError(f"registry entry {kind} {name!r} points to {table[name]}, which does not exist") from exc
