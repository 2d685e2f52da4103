"""`syllabus select` never reports an empty selection as a success, refuses a budget of 0 like
the YAML does, and names a --scores file that is not Parquet."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
from synthetic import write_pool_and_scores

from syllabus.cli import main
from syllabus.store import Store


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """A pool whose quality ratings lie between 19 and 45, as SmolLM2-135M rates the demo pool."""
    root = tmp_path_factory.mktemp("store")
    store = Store(str(root))
    pool_url, manifests = write_pool_and_scores(store, n=200, shard_size=200)
    quality = store.read_table("scores/quality/shard-00000.parquet")
    rated = np.random.default_rng(1).uniform(19.0, 45.0, quality.num_rows)
    table = quality.set_column(quality.column_names.index("quality_score"), "quality_score", pa.array(rated))
    table = table.set_column(table.column_names.index("quality_status"), "quality_status", pa.array(["ok"] * table.num_rows))
    store.commit_table("scores/quality/compressed.parquet", table)
    return str(root), store.url("scores/quality/compressed.parquet"), manifests["difficulty"], rated


def test_3ds_default_keeping_nothing_fails_with_the_range_and_the_fix(compressed, capsys):
    root, quality, difficulty, rated = compressed
    code = main(["select", "--method", "3ds", "--scores", quality, difficulty, "--budget", "10", "--store", root,
                 "--no-plots", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out.strip().splitlines()[-1])["n_selected"] == 0  # the report is there to inspect
    err = captured.err
    assert f"quality_score ranged {rated.min():.4g} to {rated.max():.4g}" in err and "min_value 90" in err
    # The advice is computed from the scores (issue 33: a guessed top 20% left 6 of 30, with exit 0).
    found = re.search(r"--set threshold\.min_percentile=(\d+) keeps the top \d+% of quality_score, after which the "
                      r"filters keep (\d+) rows, enough for the budget of 10", err)
    assert found, err
    assert "--fill rank" in err
    percentile = found.group(1)
    # the advice works: that percentile reaches the budget, and exits 0
    code = main(["select", "--method", "3ds", "--scores", quality, difficulty, "--budget", "10", "--store", root,
                 "--no-plots", "--json", "--set", f"threshold.min_percentile={percentile}"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["n_selected"] == 10
    # one point higher keeps too few after the band: short, so exit 1 with the count and the fixes
    code = main(["select", "--method", "3ds", "--scores", quality, difficulty, "--budget", "10", "--store", root,
                 "--no-plots", "--json", "--set", f"threshold.min_percentile={int(percentile) + 1}"])
    captured = capsys.readouterr()
    n = json.loads(captured.out.strip().splitlines()[-1])["n_selected"]
    assert code == 1 and 0 < n < 10
    assert f"3ds selected {n} of the 10 asked (its budget) from 200 candidates" in captured.err
    assert "--allow-short" in captured.err and "--fill rank" in captured.err


def test_budget_zero_is_refused_like_the_yaml(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["select", "--method", "random", "--budget", "0"])
    assert exit_info.value.code == 2 and "argument --budget: 0 is not allowed" in capsys.readouterr().err


def test_scores_that_are_not_parquet_are_named(tmp_path, capsys):
    bad = tmp_path / "scores.csv"
    bad.write_text("sample_id,quality_score\na,1\n")
    assert main(["select", "--method", "random", "--budget", "1", "--scores", str(bad), "--store", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert f"{bad} is not a Parquet file" in err and "syllabus score --json" in err and "<Buffer>" not in err


def test_select_stage_of_the_flows_fails_alike(compressed):
    from syllabus_tasks.stages import select_task

    select = select_task.fn  # the flows' select task, run without Prefect

    root, quality, difficulty, rated = compressed
    with pytest.raises(ValueError, match=r"3ds selected 0 of 200 candidates: stage 1 \(threshold\) kept none.*"
                                         r"min_percentile=\d+.*the selection report is "):
        select("3ds", [quality, difficulty], {"count": 10}, root)
    top = {"threshold": {"min_percentile": 80}}
    # short of its budget: fails as `syllabus select` exits 1, unless the budget allows it
    with pytest.raises(ValueError, match=r"3ds selected \d+ of the 10 asked \(its budget\).*allow_short: true.*"
                                         r"--set budget.allow_short=true.*the selection report is "):
        select("3ds", [quality, difficulty], {"count": 10}, root, overrides=top)
    report = select("3ds", [quality, difficulty], {"count": 10, "allow_short": True}, root, overrides=top)
    assert 0 < report["n_selected"] < 10
