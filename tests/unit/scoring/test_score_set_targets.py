"""`syllabus score --set` names a scorer the run scores, or fails with a did-you-mean (issue 33,
item 7): a change for another scorer used to be dropped without a word."""

from __future__ import annotations

import argparse

import pytest

from syllabus.cli.score import register, score_config


def _plan(*argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return score_config(parser.parse_args(["score", "--pool", "x", "--model", "m", *argv])).scorer_configs()


def test_a_change_for_a_scorer_the_method_does_not_run_is_an_error():
    with pytest.raises(ValueError, match=r"unknown key 'ifd'; the keys there are difficulty, quality"):
        _plan("--method", "3ds", "--set", "ifd.cutoff=64")
    with pytest.raises(ValueError, match=r"unknown key 'qualty' - did you mean 'quality'\?"):
        _plan("--method", "quality", "--set", "qualty.mode=generate")


def test_changes_for_the_methods_scorers_and_instances_still_apply():
    assert _plan("--method", "3ds", "--set", "difficulty.max_new_tokens=7")["difficulty"]["max_new_tokens"] == 7
    assert _plan("--method", "quality", "--set", "quality.mode=generate")["quality"]["mode"] == "generate"
