"""``syllabus show`` (a selection's why-table with text and scores) and ``syllabus recipe
show`` (every selector key with its default and meaning), on a synthetic pool."""

from __future__ import annotations

import json

import pytest

from syllabus.cli import main
from syllabus.store import Store

from synthetic import write_pool_and_scores


@pytest.fixture(scope="module")
def selection(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    _, m = write_pool_and_scores(Store(str(root)), n=200, shard_size=100)
    argv = ["select", "--method", "3ds", "--scores", m["quality"], m["difficulty"], "--budget", "8",
            "--set", "threshold.min_value=70", "--store", str(root), "--no-plots", "--json"]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def show(capsys, *argv) -> dict:
    assert main(["show", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_chosen_rows_come_in_rank_order_with_text_scores_and_the_ranking_stage(selection, capsys):
    out = show(capsys, selection["report"], "--chosen", "--limit", "0")
    rows = out["rows"]
    assert out["n_matching"] == len(rows) == 8 == out["n_selected"]
    assert [r["rank"] for r in rows] == list(range(1, 9))
    assert all(r["chosen"] and r["stage"] == "3:kcenter" for r in rows)
    assert rows[0]["why"] == "chosen at rank 1 (kcenter)"
    first = rows[0]
    assert first["instruction"] == f"question {first['sample_id']}" and first["output"] == f"answer {first['sample_id']}"
    assert first["messages"][-1] == {"role": "assistant", "content": f"answer {first['sample_id']}"}
    assert first["scores"]["quality_score"] >= 70
    assert {"difficulty_d1", "difficulty_d2", "difficulty_d3", "quality_status"} <= set(first["scores"])
    assert "difficulty_embedding" not in first["scores"]  # vectors stay out of the table
    # The rows are the selection's: the same ids as the committed subset, in its order.
    store, key = Store.open_url(selection["selected"])
    assert [r["sample_id"] for r in rows] == store.read_table(key)["sample_id"].to_pylist()


def test_dropped_rows_carry_the_stage_and_reason_and_filter_by_reason(selection, capsys):
    dropped = show(capsys, selection["report"], "--dropped", "--limit", "0")
    assert dropped["n_matching"] == 200 - 8
    assert not any(r["chosen"] for r in dropped["rows"])
    stages = [int(r["stage"].split(":")[0]) for r in dropped["rows"]]
    assert stages == sorted(stages) and set(stages) == {1, 2, 3}
    failed = show(capsys, selection["report"], "--reason", "PARSE_FAILED", "--limit", "0")
    assert failed["n_matching"] > 0
    assert all(r["stage"] == "1:threshold" and "parse_failed" in r["why"] for r in failed["rows"])
    assert all(r["scores"]["quality_status"] == "parse_failed" for r in failed["rows"])
    limited = show(capsys, selection["report"], "--limit", "3")
    assert len(limited["rows"]) == 3 and limited["n_matching"] == 200


def test_show_prints_a_readable_table_and_takes_the_selected_parquet(selection, capsys):
    assert main(["show", selection["selected"], "--limit", "2", "--dropped", "--reason", "threshold"]) == 0
    text = capsys.readouterr().out
    assert "3ds selection: 8 chosen of 200 candidates" in text
    assert "dropped at stage 1 (threshold)" in text and "prompt: question id" in text and "answer: answer id" in text
    assert "--limit 0 shows all" in text
    assert main(["show", selection["report"], "--reason", "no such reason"]) == 0
    assert "no rows match" in capsys.readouterr().out


def test_a_sample_cannot_drive_the_terminal():
    from syllabus.selection.show import _one_line

    assert _one_line("evil \x1b[2J text\nnext", 80) == "evil \\x1b[2J text next"
    assert _one_line("x" * 50, 10) == "xxxxxxx..."


def test_show_names_a_missing_selection(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nothing" / "report.json")]) == 1
    assert "does not exist; pass the report URL" in capsys.readouterr().err


def test_recipe_show_lists_every_selector_key_with_default_and_meaning(capsys):
    assert main(["recipe", "show", "3ds", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in info["selectors"]] == ["threshold", "band", "kcenter"]
    threshold = {k["key"]: k for k in info["selectors"][0]["keys"]}
    assert set(threshold) == {"column", "min_value", "max_value", "min_percentile", "max_percentile"}
    assert threshold["min_percentile"]["default"] is None and "percentile" in threshold["min_percentile"]["description"]
    band = {k["key"]: k for k in info["selectors"][1]["keys"]}
    assert band["low"]["default"] == 25.0 and band["metrics"]["default"] == ["difficulty_d1", "difficulty_d2", "difficulty_d3"]
    assert all(k["description"] for s in info["selectors"] for k in s["keys"])
    quality = next(s for s in info["scorers"] if s["name"] == "quality")
    assert {k["key"]: k["default"] for k in quality["keys"]}["mode"] == "expected"


def test_recipe_show_marks_what_the_recipe_sets_and_required_keys(capsys):
    assert main(["recipe", "show", "ifd-filtered"]) == 0
    text = capsys.readouterr().out
    assert "column          relevance_score  (recipe; default quality_score)" in text
    assert "(a second threshold: --set changes the first" in text
    assert main(["recipe", "show", "ifd", "--json"]) == 0
    topk = {k["key"]: k for k in json.loads(capsys.readouterr().out)["selectors"][0]["keys"]}
    assert topk["column"]["required"] and topk["column"]["value"] == "ifd_score"
    assert topk["drop_above"]["value"] == 1.0 and topk["drop_above"]["default"] is None


def test_recipe_list_and_an_unknown_recipe(capsys):
    assert main(["recipe", "list", "--json"]) == 0
    assert {"3ds", "diq", "ifd", "less", "random", "full"} <= {r["name"] for r in json.loads(capsys.readouterr().out)}
    assert main(["recipe", "show", "3dz"]) == 1
    assert "Did you mean '3ds'" in capsys.readouterr().err
