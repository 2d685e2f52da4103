"""`syllabus score --method M` and `syllabus run --methods M`, with no settings, compute the same
cache keys for every shipped recipe (issue 31 item 2, issue 33 item 2): one default per scorer,
the scorer's own. The difficulty scorer used to generate 256 tokens from the CLI and 48 from the
pipeline."""

from __future__ import annotations

import argparse

import pytest

from syllabus.pipeline.config import PipelineParams
from syllabus.cli.score import register, score_config
from syllabus.scoring.pool import make_scorer
from syllabus.selection.recipes import known_recipes

FP, SHARD = "sha256:0123456789abcdef0123", "feedfacecafebeef"


def _cli_plan(method: str) -> dict:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return score_config(parser.parse_args(["score", "--pool", "x", "--model", "m", "--method", method])).scorer_configs()


@pytest.mark.parametrize("method", sorted(known_recipes()))
def test_score_and_run_compute_the_same_keys(method):
    pipeline = PipelineParams(methods=[method]).plan()
    instances = pipeline.instances_of(method)
    if not instances:  # random, full: nothing to score
        with pytest.raises(ValueError, match="needs no scores"):
            _cli_plan(method)
        return
    cli = _cli_plan(method)
    assert sorted(cli) == sorted(instances)
    for name in instances:
        assert cli[name] == pipeline.scorers[name], (method, name)  # the same config ...
        scorer = make_scorer(name, cli[name])
        if not hasattr(scorer, "attach"):  # ... hence the same key (influence's also names its warm-up pool)
            assert scorer.key(FP, SHARD) == make_scorer(name, pipeline.scorers[name]).key(FP, SHARD)
