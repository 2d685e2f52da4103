"""Names from user input made safe where they become names: MLflow metric, param and tag keys,
run and artifact names, file names.

A method may be a recipe file path (``/home/me/recipes/mine.yaml``), a window or a benchmark
may be named anything, and a scorer instance carries its method's name. MLflow accepts only
alphanumerics, ``_ - . space / :`` in a key and refuses one that is not a normalised path
(``time//home/me/...``, ``a/../b``: "Names may be treated as files"), so such a name, used as
is, fails a run after all its work is done; and a slash that is data, not structure, would
nest a metric in MLflow's UI or a file in a folder.
"""

from __future__ import annotations

import re
from pathlib import PurePath

# One name segment (label) is made safe in syllabus.config, which selection uses too: that
# layer sits below this one.
from syllabus.config import label

_NOT_IN_KEY = re.compile(r"[^A-Za-z0-9_\-./ :]")  # what MLflow accepts in a key
RECIPE_SUFFIXES = (".yaml", ".yml")


def mlflow_key(name: str) -> str:
    """``name`` as a key MLflow accepts for a metric, param or tag: other characters become
    ``_`` and its slashes a normalised relative path (no empty, ``.`` or ``..`` segment)."""
    parts = [p for p in _NOT_IN_KEY.sub("_", str(name)).split("/") if p]
    return "/".join("_" if p in (".", "..") else p for p in parts) or "_"


def is_recipe_path(method: str) -> bool:
    return str(method).endswith(RECIPE_SUFFIXES)


def method_label(method: str) -> str:
    """The name a method goes by in run, metric, param and file names: a shipped method's own
    name (``3ds``); for a recipe file path, the recipe's ``name`` field (its file's stem when
    the file cannot be read here), made one safe segment."""
    if not is_recipe_path(method):
        return label(method)
    try:
        from syllabus.selection.recipes import load_recipe

        name = load_recipe(method).name
    except (OSError, ValueError):  # checked where the recipe is used; the name must not fail first
        name = PurePath(method).stem
    return label(name or PurePath(method).stem)


def unique_labels(names: list[str]) -> list[str]:
    """``names`` with repeats told apart (``mine``, ``mine-2``): two recipe files may share a
    ``name`` field, and their runs and metrics must not overwrite each other."""
    taken: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate)
        out.append(candidate)
    return out
