"""`syllabus score` says what it will do and how long it takes before the work (issue 33, item 2):
samples cached and left per scorer, a rate calibrated on a few samples or remembered from an
earlier run on this machine, and the expected time."""

from __future__ import annotations

import json
import re

import pytest

from syllabus.scoring.preview import CALIBRATE_FROM, CALIBRATION_SAMPLES, say_plan, scorer_line


def _pool(tmp_path, n: int, tag: str) -> str:
    path = tmp_path / f"pool-{tag}.jsonl"
    path.write_text("\n".join(json.dumps({"instruction": f"What is condition {tag}-{i}?", "input": "",
                                          "output": f"Condition {tag}-{i} is a disorder of the blood, treated with rest."})
                              for i in range(n)))
    return str(path)


def _score(args, capsys):
    from syllabus.cli import main

    assert main(["score", *args, "--method", "quality", "--json"]) == 0
    return capsys.readouterr().out


def test_score_prints_the_plan_and_an_estimate_before_the_work(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("SYLLABUS_RATES", str(tmp_path / "rates.json"))
    store = str(tmp_path / "store")
    common = ["--model", tiny_model_dir, "--store", store]
    out = _score([_pool(tmp_path, CALIBRATE_FROM, "a"), *common], capsys)
    assert f"plan: score {CALIBRATE_FROM} samples for quality" in out
    line = next(l for l in out.splitlines() if l.startswith("  quality: ") and "to score" in l)
    assert line.startswith(f"  quality: {CALIBRATE_FROM} to score, 0 already in the store; about ")
    assert f"calibrated on {CALIBRATION_SAMPLES} samples" in line
    assert "expected: about" in out and out.index("expected: about") < out.index("scores table")
    rates = json.loads((tmp_path / "rates.json").read_text())
    assert len(rates) == 1 and next(iter(rates.values()))["samples"] == CALIBRATE_FROM
    # The same pool again: nothing left to score, nothing calibrated.
    out = _score([_pool(tmp_path, CALIBRATE_FROM, "a"), *common], capsys)
    assert f"  quality: 0 to score, {CALIBRATE_FROM} already in the store" in out and "calibrated" not in out
    # A new pool: the rate of the first run, no calibration.
    out = _score([_pool(tmp_path, CALIBRATE_FROM, "b"), *common], capsys)
    line = next(l for l in out.splitlines() if l.startswith("  quality: ") and "to score" in l)
    assert "measured by an earlier run on this machine" in line and "calibrated" not in out
    seconds_per_sample = float(re.search(r"\(([\d.]+) s a sample", line).group(1))
    assert seconds_per_sample == pytest.approx(next(iter(rates.values()))["seconds_per_sample"], abs=0.006)


def test_few_samples_are_not_calibrated_and_say_so(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("SYLLABUS_RATES", str(tmp_path / "rates.json"))
    out = _score([_pool(tmp_path, 5, "c"), "--model", tiny_model_dir, "--store", str(tmp_path / "s")], capsys)
    assert "  quality: 5 to score, 0 already in the store; no rate measured yet on this machine" in out


def test_the_plan_said_adds_up_and_names_scorers_without_a_rate():
    preview = [
        {"instance": "quality", "samples": 200, "cached": 100, "to_score": 100, "seconds_per_sample": 0.6,
         "rate_source": "calibrated on 4 samples", "seconds": 60.0},
        {"instance": "difficulty", "samples": 200, "cached": 0, "to_score": 200, "seconds_per_sample": 1.5,
         "rate_source": "measured by an earlier run on this machine", "seconds": 300.0},
        {"instance": "influence", "samples": 200, "cached": 0, "to_score": 200, "seconds_per_sample": None,
         "rate_source": None, "seconds": None},
    ]
    lines: list[str] = []
    assert say_plan("diq", "smollm2-135m", 200, lines.append, iter(preview)) == preview
    assert lines[0] == "plan: score 200 samples for diq with smollm2-135m"
    assert lines[1] == "  quality: 100 to score, 100 already in the store; about 60 s (0.60 s a sample, calibrated on 4 samples)"
    assert lines[-1] == "  expected: about 6 min, plus influence (loading the model not included)"


def test_a_flow_stage_estimates_from_recorded_rates_without_loading_the_model(tmp_path, tiny_model_dir, monkeypatch):
    """The flows (run, compare, the score deployment) say the plan before their scoring stage
    from cached rates only, and record the rates their stage measured for the next run."""
    from syllabus.pool.ingest import ingest_pool
    from syllabus.scoring.pool import LazyModel, score_pool
    from syllabus.scoring.preview import record_stage_rates, stage_preview
    from syllabus.store import Store

    monkeypatch.setenv("SYLLABUS_RATES", str(tmp_path / "rates.json"))
    store_url = str(tmp_path / "store")
    first = ingest_pool([_pool(tmp_path, 40, "f")], Store(store_url)).manifest_url
    preview = stage_preview({"quality": {}}, first, tiny_model_dir, store_url)
    assert [(p["to_score"], p["cached"], p["seconds"]) for p in preview] == [(40, 0, None)]  # nothing calibrated
    assert "no rate measured yet on this machine" in scorer_line(preview[0])
    lm = LazyModel(tiny_model_dir)
    manifest = score_pool(first, "quality", {}, lm, Store(store_url))
    record_stage_rates(preview, {"quality": manifest})
    again = stage_preview({"quality": {}}, first, tiny_model_dir, store_url)
    assert [(p["to_score"], p["cached"]) for p in again] == [(0, 40)]
    second = ingest_pool([_pool(tmp_path, 20, "g")], Store(store_url)).manifest_url
    (p,) = stage_preview({"quality": {}}, second, tiny_model_dir, store_url)
    assert p["to_score"] == 20 and p["rate_source"] == "measured by an earlier run on this machine"
    assert p["seconds"] == pytest.approx(20 * manifest["timing"]["seconds_per_sample"])
    # A stage that only read its cache records nothing new.
    cached = score_pool(first, "quality", {}, lm, Store(store_url))
    before = (tmp_path / "rates.json").read_text()
    record_stage_rates(again, {"quality": cached})
    assert (tmp_path / "rates.json").read_text() == before
