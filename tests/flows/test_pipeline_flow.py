"""The whole pipeline on a tiny model: MLflow lineage (parent + nested runs, params, metrics,
artifacts, the Prefect flow run id), the Prefect link artifact, no credentials in MLflow, and
a rerun that scores nothing."""

from __future__ import annotations

import json

import pytest

from flow_helpers import write_pool

pytestmark = pytest.mark.flow


@pytest.fixture
def params(tmp_path, tiny_model_dir):
    from syllabus.pipeline.config import PipelineParams

    pool = write_pool(tmp_path / "pool.jsonl", 24)
    bench = tmp_path / "mc.jsonl"
    bench.write_text("".join(json.dumps({"question": f"Which number is {i}?", "options": [str(i), str(i + 1), str(i + 2)],
                                         "answer": "A", "subject": "toy"}) + "\n" for i in range(6)))
    return PipelineParams(
        pool=[pool], shard_size=8, model=tiny_model_dir, methods=["ifd", "random"], budget={"count": 6},
        store=str(tmp_path / "store"), scorer_configs={}, selector_overrides={},
        finetune={"batch_size": 4, "micro_batch_size": 2, "cutoff": 128, "learning_rate": 1e-3},
        benches=[str(bench)], eval={"generate": False, "bootstrap": 50},
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="pipeline-test",
    )


def test_pipeline_lineage_and_cached_rerun(params, monkeypatch):
    from mlflow.tracking import MlflowClient

    from syllabus_flows.pipeline import pipeline

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak-this")
    result = pipeline(params)
    rows = {r["method"]: r for r in result["results"]}
    assert set(rows) == {"base model", "ifd", "random"}
    assert all(r["error"] is None for r in rows.values()), [r["error"] for r in rows.values()]
    assert rows["ifd"]["selected"] == rows["random"]["selected"] == 6
    assert "mc.jsonl cloze acc" in rows["ifd"] and rows["ifd"]["train_loss"] > 0

    client = MlflowClient(params.tracking_uri)
    parent = client.get_run(result["mlflow_run_id"])
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    assert flow_run_id
    assert parent.data.params["pool_fingerprint"] == result["pool"]["pool_fingerprint"]
    assert parent.data.metrics["pool/records_ok"] == 24
    assert parent.data.metrics["score/ifd/shards_scored"] == 3
    assert parent.data.metrics["score/ifd/forward/tokens_per_second"] > 0  # where the scoring time went
    assert 0 <= parent.data.metrics["score/ifd/forward/padding_share"] < 1
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_method = {c.data.tags["method"]: c for c in children}
    assert set(by_method) == {"ifd", "random"}
    ifd = by_method["ifd"]
    assert ifd.data.tags["prefect.flow_run_id"] == flow_run_id
    assert ifd.data.params["method"] == "ifd" and json.loads(ifd.data.params["budget.count"]) == 6
    assert ifd.data.metrics["select/n_selected"] == 6 and "finetune/train_loss" in ifd.data.metrics
    assert any(k.startswith("eval/mc.jsonl/cloze/accuracy") for k in ifd.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(ifd.info.run_id, "selection")}
    assert {"selection/selected.parquet", "selection/report.json", "selection/candidates.parquet"} <= artifacts
    assert [a.path for a in client.list_artifacts(ifd.info.run_id, "evaluation")] == ["evaluation/per_item_results.parquet"]
    everything = json.dumps([dict(r.data.params) | dict(r.data.tags) for r in [parent, *children]])
    assert "do-not-leak-this" not in everything

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, ArtifactFilterType

    with get_client(sync_client=True) as client_api:
        links = client_api.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mlflow-run"])))
    assert any(a.flow_run_id and str(a.flow_run_id) == flow_run_id and result["mlflow_run_id"] in a.data for a in links), \
        [(a.flow_run_id, a.data) for a in links]
    # each fine-tune task showed its progress, ending at 100%
    with get_client(sync_client=True) as client_api:
        bars = client_api.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    bars = [a for a in bars if a.flow_run_id and str(a.flow_run_id) == flow_run_id]
    tuning = [a for a in bars if a.description.startswith("fine-tune")]
    assert len(tuning) == 2 and all(a.data == 100.0 and "6/6 samples seen" in a.description for a in tuning), \
        [(a.data, a.description) for a in bars]
    # and each evaluation task (the base model and both arms) showed its own, ending at 100%
    evaluating = [a for a in bars if a.description.startswith("evaluation, ")]
    assert len(evaluating) == 3 and all(a.data == 100.0 for a in evaluating), [(a.data, a.description) for a in bars]

    again = pipeline(params)
    second = MlflowClient(params.tracking_uri).get_run(again["mlflow_run_id"])
    assert second.data.metrics["score/ifd/shards_scored"] == 0 and second.data.metrics["score/ifd/shards_cached"] == 3
    # a cached rerun spends nothing on scoring but still knows what scoring cost
    assert again["score_costs"]["ifd"]["seconds"] == 0 and again["score_costs"]["ifd"]["compute_seconds"] > 0


def test_a_store_carried_without_adapter_weights_reuses_evaluations_and_retrains_only_what_it_must(params):
    """The proof's store travels in git with each adapter's marker but not its weights
    (experiments/proof/store/.gitignore). A rerun must not fine-tune an arm whose evaluation
    came along, and must train again (not fail) an arm whose evaluation did not."""
    from mlflow.tracking import MlflowClient

    from syllabus.store import Store
    from syllabus_flows.pipeline import pipeline

    client = MlflowClient(params.tracking_uri)

    def arms(result):
        runs = client.search_runs([client.get_run(result["mlflow_run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{result['mlflow_run_id']}'")
        return {r.data.tags["method"]: r for r in runs}

    first = pipeline(params)
    adapters = {m: r.data.params["adapter"] for m, r in arms(first).items()}
    store = Store(params.store)
    keys = {m: store.key_of(url) for m, url in adapters.items()}
    checksums = {m: store.marker(k)["sha256"] for m, k in keys.items()}  # what an evaluation is keyed by
    evaluations = {m: [k for k in store.list("evaluations/") if k.endswith("results.parquet")
                       and (store.marker(k) or {}).get("adapter") == checksums[m]] for m in keys}
    assert all(len(v) == 1 for v in evaluations.values()), evaluations
    for method in ("ifd", "random"):  # both lose their weights; random also loses its evaluation
        store.fs.rm(store.path(keys[method]))
    store.delete(evaluations["random"][0])

    again = pipeline(params)
    rows = {r["method"]: r for r in again["results"]}
    assert all(r["error"] is None for r in rows.values()), [r["error"] for r in rows.values()]
    before = {r["method"]: r for r in first["results"]}
    assert rows["ifd"]["mc.jsonl cloze acc"] == before["ifd"]["mc.jsonl cloze acc"]
    assert rows["random"]["train_loss"] == before["random"]["train_loss"]  # seeded: the same training again
    assert not store.exists(keys["ifd"])  # not trained again: its evaluation was found by the marker's checksum
    assert store.is_committed(keys["random"])  # trained again, and evaluated (its new checksum keys a new evaluation)
    assert [k for k in store.list("evaluations/") if k.endswith("results.parquet")
            and store.marker(k)["adapter"] == store.marker(keys["random"])["sha256"]]
    tags = {m: r.data.tags for m, r in arms(again).items()}
    assert tags["ifd"].get("adapter_pruned") == "true" and "adapter_pruned" not in tags["random"]
