"""The registry: the scan of the packages' source finds exactly the names the decorators register;
listing names imports no torch; a scorer added in two places (its module and a recipe line) runs end to end and is gone
once its module is removed; plugins are found through their entry point."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pyarrow as pa
import pytest

import syllabus.scoring
from syllabus import registry
from syllabus.scoring.base import score_shard
from syllabus.scoring.pool import make_scorer
from syllabus.selection.recipes import load_recipe, recipe_names, run_recipe
from syllabus.store import Store


@pytest.mark.parametrize("kind", sorted(registry.PACKAGES))
def test_the_scan_finds_what_the_decorators_register(kind):
    package = registry.PACKAGES[kind]
    scanned = registry.scan(kind)
    assert registry.discover(kind) == {}, f"every module of {package} must import"
    decorated = {name: cls for name, cls in registry.classes(kind).items() if cls.__module__.startswith(f"{package}.")}
    problems = []
    for name, target in sorted(scanned.items()):
        module, attr = target.split(":")
        obj = getattr(importlib.import_module(module), attr, None)
        if obj is None or decorated.get(name) is not obj:
            problems.append(f"the scan reads @registry.{kind}({name!r}) above {target}, but that class is not what "
                            f"the registry holds as {kind} {name!r}; put the decorator directly above its class")
    for name, cls in sorted(decorated.items()):
        if name not in scanned:
            problems.append(f"{cls.__module__}:{cls.__qualname__} registers {kind} {name!r} in a way the scan cannot "
                            f'read; write `@registry.{kind}("{name}")` at the start of the line above `class '
                            f"{cls.__qualname__}`")
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        targets = [t for n in body if isinstance(n, (ast.Assign, ast.AnnAssign))
                   for t in (n.targets if isinstance(n, ast.Assign) else [n.target])]
        if any(isinstance(t, ast.Name) and t.id == "name" for t in targets):
            problems.append(f"{cls.__module__}:{cls.__qualname__} states its name twice; delete its `name = ...` line "
                            "(the decorator sets it)")
    assert len(scanned) >= 7 and not problems, "\n".join(problems)


def test_the_scan_reads_only_decorators_at_the_start_of_a_line(tmp_path, monkeypatch):
    folder = tmp_path / "scoring"
    folder.mkdir()
    (folder / "mixed.py").write_text(textwrap.dedent('''
        """An example in a docstring is not a registration:

            @registry.scorer("in_docstring")
            class Example: ...
        """
        from syllabus import registry


        @registry.scorer('single_quoted')  # a comment
        @dataclass
        class SingleQuoted:
            pass


        @registry.selector("a_selector")
        class NotAScorer:
            pass
    '''))
    monkeypatch.setattr(syllabus.scoring, "__path__", [str(folder)])
    assert registry.scan("scorer") == {"single_quoted": "syllabus.scoring.mixed:SingleQuoted"}
    (folder / "mixed.py").write_text("@registry.scorer('renamed')\nclass Renamed:\n    pass\n")
    assert registry.scan("scorer") == {"renamed": "syllabus.scoring.mixed:Renamed"}  # read again once changed


def test_listing_names_and_recipes_imports_no_torch():
    code = (
        "import sys\n"
        "import syllabus.registry as r\n"
        "assert {'quality', 'difficulty', 'ifd', 'influence', 'relevance'} <= set(r.names('scorer'))\n"
        "assert {'threshold', 'band', 'kcenter', 'topk', 'random'} <= set(r.names('selector'))\n"
        "from syllabus.selection.recipes import load_recipe, recipe_names\n"
        "for method in recipe_names():\n"
        "    load_recipe(method)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'syllabus.scoring.quality') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_help_imports_no_torch_prefect_or_scorer_module():
    code = (
        "import sys\n"
        "import syllabus.cli\n"
        "try:\n"
        "    syllabus.cli.main(['score', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'prefect') or "
        "m in ('syllabus.scoring.quality', 'syllabus.scoring.difficulty', 'syllabus.selection.kcenter')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--method METHOD" in out.stdout and "quality" in out.stdout  # the choices came from the scan
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:] + out.stderr


def test_recipe_names_are_the_shipped_methods():
    assert {"3ds", "diq", "ifd", "less", "random", "full"} <= set(recipe_names())


def test_a_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"recipe file .*nope\.yaml does not exist; .*3ds"):
        load_recipe(tmp_path / "nope.yaml")


TOY_SCORER = '''
"""A toy scorer: the length of each output, in characters, times ``scale``."""

from typing import ClassVar

import pyarrow as pa

from syllabus import registry
from syllabus.scoring.base import Scorer, ScorerConfig


class ToyLengthConfig(ScorerConfig):
    scale: float = 1.0


@registry.scorer("toy_length")
class ToyLengthScorer(Scorer):
    version: ClassVar[int] = 1
    config_cls = ToyLengthConfig

    def columns(self):
        return ["toy_length_chars", "toy_length_status"]

    def score(self, table, lm, engine=None):
        outputs = table.column("output").to_pylist()
        return pa.table({
            "sample_id": table.column("sample_id"),
            "toy_length_chars": [len(o) * self.config.scale for o in outputs],
            "toy_length_status": ["ok"] * len(outputs),
        })
'''

TOY_RECIPE = """
name: toy
scorers:
  - {name: toy_length, config: {scale: 2.0}}
selectors:
  - {name: topk, config: {column: toy_length_chars}}
budget: {count: 2}
"""


@pytest.fixture
def scoring_folder(tmp_path, monkeypatch):
    """A folder that is part of the ``syllabus.scoring`` package, as a user's own module in
    the installed package would be; cleaned up even when the test fails half-way."""
    folder = tmp_path / "scoring"
    folder.mkdir()
    monkeypatch.setattr(syllabus.scoring, "__path__", [*syllabus.scoring.__path__, str(folder)])
    yield folder
    sys.modules.pop("syllabus.scoring.toy_length", None)
    if "toy_length" in registry.classes("scorer"):
        registry.unregister("scorer", "toy_length")


def test_a_scorer_added_in_two_places_runs_end_to_end_and_goes_away(tmp_path, scoring_folder, monkeypatch):
    # Place 1: the module, with the decorator and nothing else. Place 2: the recipe line.
    module = scoring_folder / "toy_length.py"
    module.write_text(textwrap.dedent(TOY_SCORER))
    recipe_file = tmp_path / "toy.yaml"
    recipe_file.write_text(TOY_RECIPE)

    assert "syllabus.scoring.toy_length" not in sys.modules
    assert "toy_length" in registry.names("scorer")  # read from its source, not imported
    assert "syllabus.scoring.toy_length" not in sys.modules
    recipe = load_recipe(recipe_file)
    recipe.check_scorers()
    cls = registry.lookup("scorer", "toy_length")  # imports that one module
    assert cls.__module__ == "syllabus.scoring.toy_length" and cls.name == "toy_length"
    assert "toy_length" in registry.names("scorer")

    outputs = ["a", "a much longer answer", "mid-size", "the longest answer of them all", ""]
    table = pa.table({"sample_id": [f"s{i}" for i in range(5)], "instruction": ["q"] * 5, "output": outputs})
    scorer = make_scorer("toy_length", recipe.scorers[0].config)
    store = Store("memory://registry-toy-scorer")
    key, marker = score_shard(scorer, SimpleNamespace(fingerprint="toy-model"), table, "toyshard", store)
    assert key.startswith("scores/toy_length/v1/") and marker["ok"] == 5
    scores = store.read_table(key)
    assert scores.column("toy_length_chars").to_pylist() == [2.0 * len(o) for o in outputs]
    result = run_recipe(scores.to_pandas(), recipe)
    assert result.selected_ids() == ["s3", "s1"]

    # Removing the module (and forgetting what it registered in this process) removes the scorer.
    module.unlink()
    sys.modules.pop("syllabus.scoring.toy_length")
    registry.unregister("scorer", "toy_length")
    assert "toy_length" not in registry.names("scorer")
    with pytest.raises(registry.UnknownNameError, match=r"unknown scorer 'toy_length'\. .*Known scorers: .*quality"):
        registry.lookup("scorer", "toy_length")
    with pytest.raises(ValueError, match=r"recipe 'toy': unknown scorer 'toy_length'"):
        load_recipe(recipe_file).check_scorers()


PLUGIN = '''
from syllabus import registry
from syllabus.selection.baselines import FullSelector


@registry.selector("toy_plugin_full")
class ToyPluginFull(FullSelector):
    """Every candidate, from a plugin package."""
'''


def test_a_plugin_module_is_found_through_its_entry_point(tmp_path, monkeypatch):
    (tmp_path / "toy_syllabus_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "toy_syllabus_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-syllabus-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{registry.PLUGIN_GROUP}]\ntoy = toy_syllabus_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cls = registry.lookup("selector", "toy_plugin_full")
        assert cls.__module__ == "toy_syllabus_plugin" and cls.name == "toy_plugin_full"
        assert cls().final
    finally:
        sys.modules.pop("toy_syllabus_plugin", None)
        if "toy_plugin_full" in registry.classes("selector"):
            registry.unregister("selector", "toy_plugin_full")


def test_unknown_names_after_discovery_suggest_the_closest():
    with pytest.raises(registry.UnknownNameError, match=r"unknown selector 'kcentre'\. Did you mean 'kcenter'\?"):
        registry.lookup("selector", "kcentre")
    with pytest.raises(registry.UnknownNameError, match="unknown registry kind 'scorers'"):
        registry.lookup("scorers", "quality")


def test_registration_refuses_a_clash_or_a_contradicting_name():
    from syllabus.selection.baselines import FullSelector

    with pytest.raises(registry.RegistrationError, match=r"selector 'full' is registered twice, by "
                       r"syllabus\.selection\.baselines:FullSelector and by .*Other"):
        @registry.selector("full")
        class Other(FullSelector):
            name = "full"

    with pytest.raises(registry.RegistrationError, match=r"registered as selector 'fuller' but its name attribute is 'full'"):
        @registry.selector("fuller")
        class Fuller(FullSelector):
            name = "full"

    assert registry.lookup("selector", "full") is FullSelector
    with pytest.raises(registry.UnknownNameError, match="nothing to unregister"):
        registry.unregister("selector", "no_such_selector")
