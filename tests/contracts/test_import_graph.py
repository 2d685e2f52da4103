"""The import graph of src/syllabus, flows/ (syllabus_flows) and tasks/ (syllabus_tasks) runs one
way: from the command line and the Prefect layer down to the store, never back up, and has no
circle.

Every ``import`` counts, at module level or inside a function (a lazy import is still a
dependency; it only moves the cost); imports under ``if TYPE_CHECKING:`` do not run and do not
count. Layers, lowest first; a package may import its own modules and any lower layer, never a
higher one nor another package of its own layer:

- ``syllabus`` (the package's ``__init__``), ``inputs``, ``store``: no dependencies on the rest
- ``config``, ``registry``: one merge rule and one YAML loader; names to classes
- ``models``, ``pool``: model references and loading; reading and sharding pools
- ``evaluation``: benchmarks, held-out items, metrics
- ``training``: LoRA fine-tuning (its data and loop)
- ``selection``: selectors and recipes, no model
- ``tracking``: MLflow helpers and names made safe
- ``plan``: what methods need scored and how they select
- ``scoring``: the scorers and scoring a pool
- ``pipeline``: the stages the flows and the commands call
- ``syllabus_tasks``: thin Prefect tasks
- ``syllabus_flows`` and the command line (the ``syllabus.cli`` package): the two front-ends.
  Nothing outside ``syllabus.cli`` imports it.

Run this file (``python tests/contracts/test_import_graph.py``) to print the module map: the
arrows between packages, with the number of imports behind each.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"syllabus": ROOT / "src" / "syllabus", "syllabus_flows": ROOT / "flows", "syllabus_tasks": ROOT / "tasks"}

LAYERS: list[set[str]] = [
    {"syllabus", "inputs", "store"},
    {"config", "registry"},
    {"models", "pool"},
    {"evaluation"},
    {"training"},
    {"selection"},
    {"tracking"},
    {"plan"},
    {"scoring"},
    {"pipeline"},
    {"syllabus_tasks"},
    {"syllabus_flows", "cli"},
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three import roots."""
    out: dict[str, Path] = {}
    for top, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((top, *parts))] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node, except what sits under ``if TYPE_CHECKING:`` (never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def edges(mods: dict[str, Path]) -> dict[tuple[str, str], list[str]]:
    """(importer, imported) module pairs inside the three roots -> where (file:line)."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out: dict[tuple[str, str], list[str]] = {}
    for module, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")[: None if is_package else -1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from syllabus import registry` imports the module syllabus.registry
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in mods else source for a in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target)
                if found is not None and found != module:
                    out.setdefault((module, found), []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return out


def is_command_line(module: str) -> bool:
    return module == "syllabus.cli" or module.startswith("syllabus.cli.")


def package(module: str) -> str:
    """The layer unit a module belongs to: its subpackage of syllabus (``scoring``), a top-level
    module's own name (``plan``), or the root (``syllabus_flows``)."""
    parts = module.split(".")
    if parts[0] != "syllabus":
        return parts[0]
    return parts[1] if len(parts) > 1 else "syllabus"


def unit(module: str) -> str:
    return "cli" if is_command_line(module) else package(module)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def problems(mods: dict[str, Path], graph: dict[tuple[str, str], list[str]]) -> list[str]:
    out = []
    units = {unit(m) for m in mods}
    assert units <= set(RANK) | {"cli"}, f"put these in a layer of LAYERS: {sorted(units - set(RANK))}"
    for (a, b), where in sorted(graph.items()):
        if is_command_line(b) and not is_command_line(a):
            out.append(f"{where[0]}: {a} imports the command-line module {b}; move what it needs into the library")
            continue
        ua, ub = unit(a), unit(b)
        if ua == ub:
            continue
        if RANK[ub] > RANK[ua]:
            out.append(f"{where[0]}: {a} ({ua}, layer {RANK[ua]}) imports {b} ({ub}, layer {RANK[ub]}): upward")
        elif RANK[ub] == RANK[ua]:
            out.append(f"{where[0]}: {a} imports {b}: {ua} and {ub} share layer {RANK[ua]} and must not import each other")
    module_graph: dict[str, set[str]] = {}
    for a, b in graph:
        module_graph.setdefault(a, set()).add(b)
    for component in cycles(module_graph):
        out.append(f"import circle: {' <-> '.join(component)}")
    package_graph: dict[str, set[str]] = {}
    for a, b in graph:
        if unit(a) != unit(b):
            package_graph.setdefault(unit(a), set()).add(unit(b))
    for component in cycles(package_graph):
        out.append(f"package circle: {' <-> '.join(component)}")
    return out


def test_the_walk_sees_every_root():
    mods = modules()
    assert {"syllabus.cli", "syllabus.registry", "syllabus_flows.pipeline", "syllabus_tasks.stages"} <= set(mods)
    graph = edges(mods)
    assert ("syllabus.plan", "syllabus.registry") in graph  # a function-level `from syllabus import registry`


def test_no_import_runs_upward_and_no_circle_remains():
    mods = modules()
    found = problems(mods, edges(mods))
    assert found == [], "\n".join(found)


def test_the_checks_catch_an_upward_import_a_circle_and_a_command_import():
    mods = modules()
    planted = {("syllabus.store.store", "syllabus.scoring.pool"): ["planted"],
               ("syllabus.pool.ingest", "syllabus.pool.manifest"): ["planted"],
               ("syllabus.pool.manifest", "syllabus.pool.ingest"): ["planted"],
               ("syllabus.pipeline.stages", "syllabus.cli.select"): ["planted"]}
    found = "\n".join(problems(mods, planted))
    assert "imports syllabus.scoring.pool (scoring, layer 8): upward" in found
    assert "import circle: syllabus.pool.ingest <-> syllabus.pool.manifest" in found
    assert "imports the command-line module syllabus.cli.select" in found


def module_map() -> str:
    mods = modules()
    graph = edges(mods)
    arrows: dict[tuple[str, str], int] = {}
    for a, b in graph:
        if unit(a) != unit(b):
            arrows[(unit(a), unit(b))] = arrows.get((unit(a), unit(b)), 0) + 1
    lines = [f"layers (lowest first): {' < '.join('/'.join(sorted(layer)) for layer in LAYERS)}",
             f"{len(mods)} modules, {len(graph)} import arrows, {len(arrows)} between packages:"]
    for (a, b), n in sorted(arrows.items(), key=lambda kv: (-RANK.get(kv[0][0], 99), kv[0])):
        lines.append(f"  {a} -> {b} ({n})")
    found = problems(mods, graph)
    lines.append(f"problems ({len(found)}):" if found else "problems: none")
    lines += [f"  {p}" for p in found]
    return "\n".join(lines)


if __name__ == "__main__":
    print(module_map())
