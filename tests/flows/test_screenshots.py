"""Screenshots of a run's pages with headless Chromium: a real Prefect server and a real MLflow
server on 127.0.0.1, a flow run and an MLflow run in them, and ``syllabus screenshots``; the
rendered pages must show the runs (their names), and the PNGs must be real pictures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flow_helpers import free_port, serve

pytestmark = pytest.mark.flow
BIN = Path(sys.executable).parent


def _not_blank(png: Path) -> None:
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels.shape[0] >= 800 and pixels.shape[1] >= 1200, pixels.shape
    assert float(pixels[..., :3].std()) > 0.05, f"{png} is a blank picture"


def test_screenshots_show_the_runs(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from syllabus.cli import main
    from syllabus.tracking.screenshots import find_chromium, screenshot_runs

    find_chromium()  # a clear error naming the package when Chromium is missing
    p_port, m_port = free_port(), free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=f"http://127.0.0.1:{p_port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    prefect = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(p_port)]
    mlflow = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
              "--host", "127.0.0.1", "--port", str(m_port)]
    with serve(prefect, f"http://127.0.0.1:{p_port}/api/health", env), serve(mlflow, f"http://127.0.0.1:{m_port}/health"):
        script = ("from prefect import flow\nfrom prefect.runtime import flow_run\n"
                  "@flow(name='syllabus-shot', flow_run_name='shot-flow-run-7f3a')\n"
                  "def f():\n    return str(flow_run.id)\nprint(f())\n")
        ran = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert ran.returncode == 0, ran.stderr
        flow_run_id = ran.stdout.strip().splitlines()[-1]

        client = MlflowClient(f"http://127.0.0.1:{m_port}")
        experiment = client.create_experiment("shots")
        run = client.create_run(experiment, run_name="shot-mlflow-run-9c2e", tags={"prefect.flow_run_id": flow_run_id})
        client.log_metric(run.info.run_id, "eval_accuracy", 0.35)
        client.set_terminated(run.info.run_id)

        pages = screenshot_runs(tmp_path / "dom", f"http://127.0.0.1:{p_port}", flow_run_id,
                                f"http://127.0.0.1:{m_port}", experiment, run.info.run_id)
        assert "shot-flow-run-7f3a" in pages["prefect"].dom and "Completed" in pages["prefect"].dom
        assert "shot-mlflow-run-9c2e" in pages["mlflow"].dom and "eval_accuracy" in pages["mlflow"].dom

        # The command finds the flow run from the MLflow run's tag.
        out = tmp_path / "shots"
        code = main(["screenshots", "--mlflow-run", run.info.run_id, "--mlflow-ui", f"http://127.0.0.1:{m_port}",
                     "--prefect-ui", f"http://127.0.0.1:{p_port}", "--out", str(out)])
        assert code == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert flow_run_id in printed["prefect"]["url"] and run.info.run_id in printed["mlflow"]["url"]
    for name in ("prefect-flow-run.png", "mlflow-run.png"):
        _not_blank(out / name)
