"""The Prefect layer's packaging: flows/ and tasks/ install as syllabus_flows and syllabus_tasks
(never as top-level `flows` and `tasks`), the CLI reaches the flows only through the
``syllabus.flows`` entry points, and the command line imports no prefect until a flow starts."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GROUP = "syllabus.flows"


def _python(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter of this environment, in ``cwd``; it prints one JSON line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                         env=dict(env, PREFECT_HOME=str(cwd / "prefect-home")))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cli_finds_its_flows_through_the_declared_entry_points():
    from prefect import Flow

    from syllabus.cli.run import FLOW_ENTRY_POINTS, load_flow

    assert FLOW_ENTRY_POINTS == GROUP
    declared = {ep.name: ep for ep in entry_points(group=GROUP)}
    assert {"pipeline", "compare"} <= set(declared)  # the two that `syllabus run` and `syllabus compare` start
    for name, ep in declared.items():
        flow = load_flow(name)
        assert isinstance(flow, Flow), f"entry point {name} = {ep.value} is not a Prefect flow"
        assert flow.name == name, f"entry point {name} loads the flow named {flow.name!r}"
        assert Path(inspect.getsourcefile(flow.fn)).resolve().parent == ROOT / "flows", ep.value


def test_every_deployment_entrypoint_is_declared_as_an_entry_point():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    # flows/score.py:score, as a deployment names it, is syllabus_flows.score:score once installed
    deployed = {"syllabus_flows." + d["entrypoint"].removeprefix("flows/").replace(".py:", ":") for d in spec["deployments"]}
    assert deployed == {ep.value for ep in entry_points(group=GROUP)}


def test_an_unknown_flow_name_says_how_to_install_the_prefect_layer():
    import pytest

    from syllabus.cli.run import load_flow

    with pytest.raises(RuntimeError, match=r"no flow named 'nope'.*pip install -e \."):
        load_flow("nope")


def test_the_installed_distribution_has_no_top_level_flows_or_tasks(tmp_path):
    # From a folder outside the repository, so the checkout's own folders are not on the path.
    found = _python(
        "import importlib.util, json\n"
        "from importlib.metadata import distribution\n"
        "spec = {n: (s.origin if (s := importlib.util.find_spec(n)) else None) "
        "for n in ('flows', 'tasks', 'syllabus_flows', 'syllabus_tasks')}\n"
        "print(json.dumps({'spec': spec, 'top_level': (distribution('syllabus').read_text('top_level.txt') or '').split()}))",
        tmp_path)
    assert found["spec"]["flows"] is None and found["spec"]["tasks"] is None, found
    assert found["spec"]["syllabus_flows"] == str(ROOT / "flows" / "__init__.py"), "reinstall: pip install -e ."
    assert found["spec"]["syllabus_tasks"] == str(ROOT / "tasks" / "__init__.py"), "reinstall: pip install -e ."
    assert not {"flows", "tasks"} & set(found["top_level"]), found["top_level"]


def test_every_package_under_src_is_in_the_package_list():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    src = ROOT / "src"
    with_code = {".".join(p.parent.relative_to(src).parts) for p in (src / "syllabus").rglob("*.py")
                 if "__pycache__" not in p.parts}
    assert with_code - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert not {"flows", "tasks"} & listed


def test_nothing_imports_the_prefect_layer_by_its_folder_names():
    # From the repository root `import flows` still works (the folder is on the path), so a stale
    # import passes here and fails on a worker that loads an entrypoint by path.
    offenders = []
    for folder in ("src", "flows", "tasks", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                              if n.split(".")[0] in ("flows", "tasks")]
    assert offenders == [], "import syllabus_flows / syllabus_tasks instead"


def test_a_worker_loads_every_entrypoint_by_path_from_any_folder(tmp_path):
    # What a process worker does with `flows/score.py:score`: run the file as a script, whose
    # imports must resolve through the installed packages, wherever the worker was started.
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    entrypoints = [str(ROOT / d["entrypoint"]) for d in spec["deployments"]]
    loaded = _python(
        "import json\n"
        "from prefect.flows import load_flow_from_entrypoint\n"
        f"print(json.dumps([load_flow_from_entrypoint(e, use_placeholder_flow=False).name for e in {entrypoints!r}]))",
        tmp_path)
    assert loaded == [d["entrypoint"].rsplit(":", 1)[1] for d in spec["deployments"]]


def test_the_command_line_imports_no_prefect_until_a_flow_starts(tmp_path):
    loaded = _python(
        "import json, sys\n"
        "import syllabus.cli\n"
        "after_import = sorted(sys.modules)\n"
        "try:\n"
        "    syllabus.cli.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps({'import': after_import, 'help': sorted(sys.modules)}))",
        tmp_path)
    for when, modules in loaded.items():
        layer = [m for m in modules if m.split(".")[0] in ("prefect", "syllabus_flows", "syllabus_tasks")]
        assert layer == [], f"after {when}: {layer[:5]}"
