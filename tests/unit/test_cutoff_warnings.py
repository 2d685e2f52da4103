"""Issue 33, item 3: when a recipe's fixed cut-off cannot be met by the scores it will read,
``syllabus score`` says so after that scorer, before the next one starts, with the
percentile that keeps the share the recipe's budget needs."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from syllabus.selection.cutoffs import check_fixed_cutoffs, fixed_cutoff_warnings, later_keep_share
from syllabus.selection.recipes import load_recipe


def compressed_quality(n: int = 200, seed: int = 1) -> pd.DataFrame:
    """Ratings between 19 and 45, as SmolLM2-135M rates the demo pool; every tenth failed."""
    rated = np.random.default_rng(seed).uniform(19.0, 45.0, n)
    status = np.array(["ok"] * n, dtype=object)
    status[::10] = "parse_failed"
    rated[::10] = np.nan
    return pd.DataFrame({"sample_id": [f"s{i:04d}" for i in range(n)], "quality_score": rated, "quality_status": status})


def test_a_fixed_cut_off_nobody_reaches_is_named_with_the_percentile_that_keeps_the_needed_share():
    frame = compressed_quality()
    recipe = load_recipe("3ds")
    assert later_keep_share(recipe.build_selectors(), 1) == pytest.approx(0.5 ** 3)  # three 25-75 bands
    [check] = check_fixed_cutoffs(recipe, frame, budget=5)
    assert (check.stage, check.column, check.bound, check.scored, check.passing) == (1, "quality_score", ">= 90", 180, 0)
    assert check.needed == 40 and check.short  # 5 / 0.125
    assert check.percentile == math.floor(100 * (1 - 40 / 180)) == 77
    [warning] = fixed_cutoff_warnings(recipe, frame, 5)
    assert warning == (
        "3ds: stage 1 (threshold) keeps quality_score >= 90, which 0 of the 180 scored samples reach (0.0%); the budget "
        "of 5 needs about 40 to pass it, as the later filters keep a share of what passes. min_percentile 77 keeps the "
        "top 23% instead: select with --set threshold.min_percentile=77 (selector_overrides.3ds.threshold."
        "min_percentile: 77 in a run config)")
    # the percentile named does keep the rows needed
    usable = frame["quality_score"].dropna()
    assert (usable >= np.percentile(usable, 77)).sum() >= 40


def test_no_warning_when_the_cut_off_keeps_enough_or_is_a_percentile():
    frame = compressed_quality()
    frame["quality_score"] = frame["quality_score"] + 60  # 79-105: about half reach 90
    assert fixed_cutoff_warnings(load_recipe("3ds"), frame, 5) == []
    recipe = load_recipe("3ds").with_selector_config(0, min_percentile=50)
    assert check_fixed_cutoffs(recipe, compressed_quality(), 5) == []
    assert fixed_cutoff_warnings(load_recipe("random"), compressed_quality(), 5) == []  # no cut-off at all


def test_a_budget_the_scores_cannot_carry_and_one_larger_than_the_pool():
    [warning] = fixed_cutoff_warnings(load_recipe("3ds"), compressed_quality(), 30)
    assert "needs about 240 to pass it" in warning and "more than were scored" in warning
    assert "about 22 would be left for the budget" in warning  # 180 * 30 / 240
    assert fixed_cutoff_warnings(load_recipe("3ds"), compressed_quality()) == [
        "3ds: the budget of 5,000 samples is larger than the pool of 200; select with --budget 200 or less (or --ratio R)"]


def test_an_upper_cut_off_names_max_percentile():
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(100)], "ifd_score": np.linspace(1.01, 2.0, 100),
                          "ifd_status": ["ok"] * 100})
    checks = {c.column: c for c in check_fixed_cutoffs(load_recipe("3ds-ifd"), frame, 5)}
    check = checks["ifd_score"]
    assert (check.stage, check.bound, check.passing, check.percentile_key) == (2, "<= 1", 0, "max_percentile")
    assert check.needed == 40 and check.percentile == 40 and check.set_path is None  # the second threshold
    [warning] = fixed_cutoff_warnings(load_recipe("3ds-ifd"), frame, 5)
    assert warning.endswith("max_percentile 40 keeps the bottom 40% instead: set max_percentile: 40 on stage 2")


def test_score_warns_after_the_quality_stage_before_difficulty_starts(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """The real command on the tiny model: the warning is logged between the two scorers."""
    import syllabus.scoring.pool as pool_module
    from syllabus.cli import main
    from syllabus.selection.scores import read_score_input

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"instruction": f"What is {i} plus {i}?", "output": f"{2 * i}."}) + "\n"
                            for i in range(12)))
    store = str(tmp_path / "store")
    assert main(["ingest", str(pool), "--store", store, "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["manifest"]

    events: list[str] = []
    real = pool_module.score_pool

    def recording(manifest_url, name, *args, **kwargs):
        events.append(f"start {name}")
        return real(manifest_url, name, *args, **kwargs)

    class Record(logging.Handler):
        def emit(self, record):
            if record.levelno == logging.WARNING and record.name == "syllabus.pipeline.stages":
                events.append(f"warning {record.getMessage()}")

    monkeypatch.setattr(pool_module, "score_pool", recording)
    handler = Record()
    logging.getLogger("syllabus.pipeline.stages").addHandler(handler)
    try:
        rc = main(["score", "--pool", manifest, "--method", "3ds", "--model", tiny_model_dir, "--store", store,
                   "--max-new-tokens", "2", "--budget", "1", "--json"])
    finally:
        logging.getLogger("syllabus.pipeline.stages").removeHandler(handler)
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # What the warning must say follows from the committed quality scores (a random model rates them).
    table, _ = read_score_input(result["stages"]["quality"]["scores"])
    expected = fixed_cutoff_warnings(load_recipe("3ds"), table.to_pandas(), 1)
    assert result["warnings"] == expected
    assert events == ["start quality", *[f"warning {w}" for w in expected], "start difficulty"]
    rated = table.to_pandas()["quality_score"].dropna()
    if (rated >= 90).sum() < 8:  # a budget of 1 needs 8 past the 25-75 bands of three metrics
        assert len(expected) == 1 and "3ds: stage 1 (threshold) keeps quality_score >= 90" in expected[0]
