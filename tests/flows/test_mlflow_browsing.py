"""The pipeline against a real ``mlflow server`` on 127.0.0.1 (artifacts proxied by the server),
checked as a team browses it: the experiment opens on its runs, runs carry the source commit and
a one-line description, the pool and each arm's subset are dataset inputs whose digests are
their fingerprints, the adapter is a logged model that registers through the server, and the
pipeline's export option wrote each arm's subset for LLaMA-Factory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow
REPO = Path(__file__).resolve().parents[2]


def test_pipeline_runs_as_a_team_browses_them(tmp_path, tiny_model_dir, mlflow_server):
    import mlflow
    from mlflow.tracking import MlflowClient

    from syllabus_flows.pipeline import pipeline
    from syllabus.pipeline.config import PipelineParams
    from syllabus.tracking.lineage import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, NOTE_TAG

    params = PipelineParams(
        pool=[write_pool(tmp_path / "pool.jsonl", 16)], shard_size=8, model=tiny_model_dir, methods=["random"],
        budget={"count": 5}, store=str(tmp_path / "store"), scorer_configs={}, selector_overrides={},
        finetune={"batch_size": 5, "micro_batch_size": 5, "cutoff": 128, "learning_rate": 1e-3},
        benches=[], evaluate_base=False, eval={"generate": False}, tracking_uri=mlflow_server, experiment="team",
        export_format="sharegpt", export_dir=str(tmp_path / "exports"),
    )
    result = pipeline(params)
    client = MlflowClient(mlflow_server)
    parent = client.get_run(result["mlflow_run_id"])
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    commit = parent.data.tags["mlflow.source.git.commit"]  # this checkout's (HEAD moves as others commit)
    assert len(commit) == 40 and subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit, "HEAD"]).returncode == 0
    assert parent.data.tags[NOTE_TAG].startswith("pipeline: random at 5 samples from pool ")
    (pool,) = parent.inputs.dataset_inputs
    assert pool.dataset.digest == result["pool"]["pool_fingerprint"] and pool.dataset.name == "pool"

    (child,) = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert child.data.tags[NOTE_TAG].startswith("random: 5 of 16 selected; LoRA loss ")
    assert child.data.tags["mlflow.source.git.commit"] == commit
    (subset,) = child.inputs.dataset_inputs
    assert {t.key: t.value for t in subset.tags}["mlflow.data.context"] == "training"

    # The export option wrote the subset; its fingerprint is the MLflow dataset's digest.
    exports = tmp_path / "exports"
    info = json.loads((exports / "dataset_info.json").read_text())
    (name,) = info
    assert name == f"{subset.dataset.name}-sharegpt" and info[name]["formatting"] == "sharegpt"
    records = json.loads((exports / info[name]["file_name"]).read_text())
    assert len(records) == 5
    from syllabus.selection.export import selection_fingerprint

    assert selection_fingerprint(r["sample_id"] for r in records) == subset.dataset.digest

    # The adapter is a logged model of the arm's run; it registers through the server.
    mlflow.set_tracking_uri(mlflow_server)
    (model,) = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert model.source_run_id == child.info.run_id and model.tags["syllabus.kind"] == "lora_adapter"
    version = mlflow.register_model(f"models:/{model.model_id}", "team-random-adapter")
    assert int(version.version) == 1 and client.get_model_version("team-random-adapter", "1").status == "READY"

    # The link the pipeline hands out opens MLflow's UI on the runs table, not the GenAI overview.
    from syllabus.tracking.screenshots import capture

    assert result["mlflow_run_url"].endswith("?workflowType=machine_learning")
    runs_url = result["mlflow_run_url"].split("/runs/")[0] + "?workflowType=machine_learning"
    page = capture(runs_url, tmp_path / "mlflow-runs.png", wait_ms=15000)
    assert parent.info.run_name in page.dom and "Run Name" in page.dom, page.dom[-2000:]
    assert "pool" in page.dom  # the Dataset column names the pool