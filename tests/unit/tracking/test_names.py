"""Names from user input as MLflow keys, run names and file names."""

from __future__ import annotations

import pytest
from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

from syllabus.tracking.lineage import flatten
from syllabus.tracking.names import label, method_label, mlflow_key, unique_labels


@pytest.mark.parametrize("raw", ["time//home/me/recipes/mine.yaml_seconds", "a/../b", "./x", "eval/my bench?.jsonl/acc",
                                 "score/influence@less/seconds", "trailing/", "", "/", "..", "ünï/cödé"])
def test_mlflow_key_is_accepted_by_mlflow(raw):
    key = mlflow_key(raw)
    assert validate_param_and_metric_name(key) and not path_not_unique(key), key


def test_mlflow_key_keeps_structure_and_clean_names():
    assert mlflow_key("score/quality/samples_per_second") == "score/quality/samples_per_second"
    assert mlflow_key("time//home/me/mine.yaml_seconds") == "time/home/me/mine.yaml_seconds"
    assert mlflow_key("a/../b") == "a/_/b"


def test_label_is_one_safe_segment():
    assert label("3ds") == "3ds" and label("random@2") == "random@2"
    assert label("../etc/passwd") == "etc_passwd"
    assert label("top ifd/v2") == "top_ifd_v2"
    assert label("///") == "unnamed"


def test_a_recipe_path_goes_by_its_name_field(tmp_path):
    recipe = tmp_path / "dir" / "file-name.yaml"
    recipe.parent.mkdir()
    recipe.write_text("name: my method\nselectors:\n  - name: random\n    config: {}\n")
    assert method_label(str(recipe)) == "my_method"
    assert method_label("3ds") == "3ds"
    assert method_label(str(tmp_path / "missing" / "gone.yaml")) == "gone"  # unreadable: its stem


def test_repeated_labels_are_told_apart():
    assert unique_labels(["mine", "random", "mine", "mine"]) == ["mine", "random", "mine-2", "mine-3"]


def test_param_keys_from_paths_do_not_nest():
    flat = flatten({"selector_overrides": {"/home/me/r.yaml": {"topk": {"k": 3}}}, "scores.influence@less": 1})
    assert flat == {"selector_overrides._home_me_r.yaml.topk.k": "3", "scores.influence_less": "1"}
