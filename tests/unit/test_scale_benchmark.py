"""benchmarks/scale.py at a tiny N: the code path of the 100k/1M/2M runs (every stage in its
own process, each with its baseline), and the synthetic scorers' columns kept those of the
shipped scorers they stand in for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture()
def synthetic(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import synthetic_scorers

    return synthetic_scorers


SHIPPED = {
    "synthetic_quality": "quality", "synthetic_difficulty": "difficulty", "synthetic_ifd": "ifd",
    "synthetic_diq_difficulty": "diq_difficulty", "synthetic_influence": "influence",
    "synthetic_gradients": "gradients",
}


def test_synthetic_scorers_write_the_shipped_columns_and_types(synthetic):
    from syllabus.registry import lookup

    table = pa.table({"sample_id": [f"s{i}" for i in range(50)], "output": ["x"] * 50})
    for name, cls in synthetic.SCORERS.items():
        shipped = lookup("scorer", SHIPPED[name])()
        config = {"embedding_dim": 4096} if name == "synthetic_difficulty" else \
            {"dim": 256} if name in ("synthetic_influence", "synthetic_gradients") else {}
        scorer = cls(config)
        out = scorer.score(table, None)
        assert [c.removeprefix("synthetic_") for c in scorer.columns()] == shipped.columns()
        assert out.column_names == ["sample_id", *scorer.columns()]
        assert out.column(f"{name}_status").type == pa.string()
        again = cls(config).score(table, None)
        assert again.equals(out)  # deterministic
    emb = synthetic.SyntheticDifficultyScorer({"embedding_dim": 4096}).score(table, None)["synthetic_difficulty_embedding"]
    assert emb.type == pa.list_(pa.float32())
    assert {len(v) for v in emb.to_pylist() if v is not None} == {4096}
    vec = synthetic.SyntheticGradientsScorer({"dim": 256}).score(table, None)["synthetic_gradients_vector"]
    assert vec.type == pa.list_(pa.float16(), 256)


def test_scale_runs_every_stage_at_a_tiny_n(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--n", "900", "--dir", str(tmp_path), "--shard-size", "300",
         "--embedding-dim", "16", "--feature-dim", "32", "--kcenter-budget", "20", "--export-rows", "200"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scorers: synthetic (no model)" in proc.stdout
    rows = {r["stage"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    expected = ["ingest", *(f"score {s}" for s in ("synthetic_difficulty", "synthetic_diq_difficulty", "synthetic_ifd",
                                                   "synthetic_influence", "synthetic_quality")),
                *(f"select {m} (synthetic)" for m in ("3ds", "diq", "less", "ifd", "random")),
                *(f"export {f} (200 rows)" for f in ("jsonl", "alpaca", "sharegpt", "hf"))]
    assert sorted(rows) == sorted(expected), proc.stdout
    for name, row in rows.items():
        assert row["error"] is None, (name, row["error"])
        assert row["seconds"] > 0 and row["peak_gb"] > 0 and row["baseline_seconds"] > 0, name
        assert row["ratio"] == pytest.approx(row["baseline_seconds"] / row["seconds"])
        assert row["objects"] > 0, name
    assert rows["ingest"]["detail"]["records_ok"] == 900
    assert rows["select 3ds (synthetic)"]["detail"]["n_selected"] == 20
    assert rows["select less (synthetic)"]["detail"]["n_selected"] == 45  # the recipe's 5%
    assert rows["select random (synthetic)"]["detail"]["n_selected"] == 200
    assert rows["score synthetic_influence"]["detail"]["samples"] == 900
    assert "synthetic_quality" in rows["score synthetic_quality"]["detail"]["score_manifest"]


def test_real_mode_stops_after_select(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--n", "10", "--real", "--stop-after", "export",
                           "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--real stops after select" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before any pool or server


@pytest.mark.slow  # three servers and a process per stage: about 3 minutes on the loaded 2-core machine
def test_real_mode_runs_the_flows_against_real_servers(tmp_path):
    """``--real`` at a small N: the ingest task into S3 (moto) and a local folder, the score flow
    on a real Prefect server (task runs counted through its API), the pipeline flow with
    stop_after=select, the subset and why-table read back from a real MLflow server; servers stopped."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PREFECT_LOGGING_LEVEL="WARNING")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--real", "--n", "300", "--dir", str(tmp_path), "--shard-size", "100",
         "--methods", "random,ifd", "--export-rows", "50"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "task runs" in proc.stdout and "API median/max s" in proc.stdout
    rows = {r["stage"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert sorted(rows) == sorted(["ingest (moto S3)", "ingest (local folder)", "score synthetic_ifd",
                                   "select random (synthetic, pipeline)", "select ifd (synthetic, pipeline)"])
    for name, row in rows.items():
        assert row["error"] is None, (name, row["error"])
        assert row["seconds"] > 0 and row["peak_gb"] > 0 and row["baseline_seconds"] > 0, name
        assert row["objects"] > 0 and row["task_runs"] >= 1, name
    assert rows["ingest (moto S3)"]["detail"]["manifest"].startswith("s3://")
    assert rows["ingest (local folder)"]["detail"]["records_ok"] == 300
    score = rows["score synthetic_ifd"]
    assert score["detail"]["score_manifest"].startswith("s3://") and score["detail"]["shards_scored"] == 3
    assert score["detail"]["task_runs_by_task"]["score_shards_task"] == 3  # one batch a shard: 3 shards
    assert score["task_runs"] == sum(score["detail"]["task_runs_by_task"].values())
    assert score["api_median_max_s"] is not None
    for method, n in (("random", 50), ("ifd", 30)):  # ifd: the recipe's 10%
        detail = rows[f"select {method} (synthetic, pipeline)"]["detail"]
        mlflow = detail["mlflow"]
        assert mlflow["status"] == "FINISHED" and mlflow["n_selected"] == n
        assert mlflow["artifacts"]["selection/selected.parquet"]["rows"] == n
        assert mlflow["artifacts"]["selection/candidates.parquet"]["rows"] == 300  # the why-table: every candidate
        assert all(c["shards_scored"] == 0 for c in detail["score_costs"].values())  # the score stage's, reused
    log = (tmp_path / "stages.log").read_text()
    assert "Traceback" not in log
    servers = json.loads((tmp_path / "servers.json").read_text())
    assert all(url.startswith("http://127.0.0.1:") for url in (servers["prefect"], servers["s3"], servers["mlflow"]))
    for pid in servers["pids"]:  # each server stopped (and reaped) when the benchmark ended
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow  # three servers, five score flows and an 11-arm compare: about 4 minutes on the loaded 2-core machine
def test_real_mode_compare_selects_every_arm(tmp_path):
    """``--real --compare`` at a small N: after the score flows, the ``compare`` flow with
    stop_after=select and every arm (the synthetic 3DS, DIQ, IFD and LESS recipes by path,
    random over 3 seeds, full, and the synthetic 3DS recipe's easy/medium/hard windows), each
    arm's nested MLflow run FINISHED with its subset read back from the server."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PREFECT_LOGGING_LEVEL="WARNING")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--real", "--compare", "--n", "600", "--dir", str(tmp_path),
         "--shard-size", "200", "--embedding-dim", "16", "--feature-dim", "32", "--kcenter-budget", "10",
         "--score-baselines", "synthetic_ifd"],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["stage"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    # --compare alone: no per-method pipeline flows, every scorer the compare's arms read
    assert sorted(rows) == sorted(["ingest (moto S3)", "ingest (local folder)", "compare, 11 arms (synthetic)",
                                   *(f"score synthetic_{s}" for s in ("difficulty", "diq_difficulty", "ifd",
                                                                      "influence", "quality"))])
    row = rows["compare, 11 arms (synthetic)"]
    assert row["error"] is None and row["seconds"] > 0 and row["peak_gb"] > 0 and row["task_runs"] >= 1
    assert row["api_median_max_s"] is not None
    # the baseline: six recipes' tables read and sorted, counted once per arm
    per_recipe = row["detail"]["baseline"]["per_recipe"]
    assert sorted(per_recipe) == ["3ds", "diq", "full", "ifd", "less", "random"]
    assert row["baseline_seconds"] == pytest.approx(4 * per_recipe["3ds"] + 3 * per_recipe["random"] + per_recipe["diq"]
                                                    + per_recipe["ifd"] + per_recipe["less"] + per_recipe["full"], abs=0.05)
    ml = row["detail"]["mlflow"]
    assert ml["status"] == "FINISHED" and "comparison/report.md" in ml["comparison"]
    arms = ml["arms"]
    assert sorted(arms) == sorted(["synthetic-3ds", "synthetic-diq", "synthetic-ifd", "synthetic-less", "random@0",
                                   "random@1", "random@2", "full", "synthetic-3ds-easy", "synthetic-3ds-medium",
                                   "synthetic-3ds-hard"])
    for name, arm in arms.items():
        want = 600 if name == "full" else 10
        assert arm["status"] == "FINISHED" and arm["n_selected"] == want, name
        assert arm["artifacts"]["selection/selected.parquet"]["rows"] == want, name
        assert "selection/candidates.parquet" in arm["artifacts"], name
    # the windows move the synthetic 3DS recipe's band: medium is its own 25-75, easy and hard are others
    band = {name: arms[name]["stages"]["2_band_out"] for name in arms if name.startswith("synthetic-3ds")}
    assert band["synthetic-3ds-medium"] == band["synthetic-3ds"]
    assert band["synthetic-3ds-easy"] != band["synthetic-3ds-medium"] != band["synthetic-3ds-hard"]
    assert "Traceback" not in (tmp_path / "stages.log").read_text()
    for pid in json.loads((tmp_path / "servers.json").read_text())["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
