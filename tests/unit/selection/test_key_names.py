"""Names from user input that become store keys are one safe segment: a recipe file's ``name``
field in ``selections/<name>/...`` and its file stem in a scorer instance name
(``scores/manifests/<scorer>@<stem>-...``). Shipped recipes' names, and so their keys, are
unchanged."""

from __future__ import annotations

from types import SimpleNamespace

from syllabus.plan import make_plan
from syllabus.selection.recipes import load_recipe, recipe_names
from syllabus.selection.report import selection_key
from syllabus.tracking.names import label

RECIPE = """\
name: {name}
scorers:
  - name: ifd
    config: {{cutoff: 64}}
selectors:
  - name: topk
    config: {{column: ifd_score, descending: true}}
"""


def _key(recipe) -> str:
    result = SimpleNamespace(budget=4, seed=0, n_candidates=10, fill=None)
    candidates = SimpleNamespace(inputs=[SimpleNamespace(url="memory://s/scores.json")], pool_url="memory://s/pool.json")
    return selection_key(recipe, result, candidates)


def test_shipped_names_and_keys_are_unchanged():
    for name in recipe_names():
        assert label(name) == name, name
    assert {"3ds", "3ds-reference", "less-reference", "ifd-filtered"} <= set(recipe_names())
    # golden keys (the same before the name was sanitised): a change to either is a new selection
    assert _key(load_recipe("3ds")) == "selections/3ds/3ds-86614b933fcf218c"
    assert _key(load_recipe("less-reference")) == "selections/less-reference/less-reference-762544b0f5c74717"
    plan = make_plan(["3ds", "3ds-reference"])
    assert list(plan.scorers) == ["quality", "difficulty@3ds", "difficulty@3ds-reference"]


def test_a_recipe_name_with_a_slash_stays_one_key_segment(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(RECIPE.format(name="'../top ifd/v2'"))
    key = _key(load_recipe(str(path)))
    parts = key.split("/")
    assert parts[:2] == ["selections", "top_ifd_v2"] and len(parts) == 3 and parts[2].startswith("top_ifd_v2-"), key
    assert ".." not in parts, key


def test_a_recipe_file_stem_in_an_instance_name_is_one_safe_segment(tmp_path):
    path = tmp_path / "my recipe (v2)!.yaml"
    path.write_text(RECIPE.format(name="mine"))
    plan = make_plan([str(path), "ifd"])  # two configs of ifd: each instance is named after its method
    assert set(plan.scorers) == {"ifd@my_recipe_v2", "ifd@ifd"}, plan.scorers
    assert plan.instances_of(str(path)) == ["ifd@my_recipe_v2"]
