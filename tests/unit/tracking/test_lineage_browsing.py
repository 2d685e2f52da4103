"""What a team sees in MLflow, on a sqlite tracking store in a temp dir: the experiment opens on
its runs, runs carry the source commit and a description, the pool and each subset are dataset
inputs with their fingerprints as digests, and an adapter is a logged model that
``mlflow.register_model`` accepts and ``mlflow.pyfunc`` loads and runs."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import pytest

from syllabus.cli import main
from syllabus.tracking.lineage import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, NOTE_TAG, Lineage

REPO = Path(__file__).resolve().parents[3]


def is_checkout_commit(sha: str) -> bool:
    """A full commit id of this checkout's history (HEAD moves while other work is committed, so
    the commit a process read at its start need not be HEAD when the test looks)."""
    return len(sha) == 40 and subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", sha, "HEAD"]).returncode == 0


def _cli_json(*argv: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.fixture
def tracking(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def pool_and_selection(tmp_path_factory):
    """A pool ingested and a random subset selected with the commands, in a temp store."""
    root = tmp_path_factory.mktemp("lineage")
    pool = root / "pool.jsonl"
    pool.write_text("".join(json.dumps({"instruction": f"What causes symptom {i}?", "output": f"Cause {i}."}) + "\n"
                            for i in range(30)))
    store = str(root / "store")
    ingest = _cli_json("ingest", str(pool), "--store", store, "--shard-size", "10", "--json")
    selected = _cli_json("select", "--method", "random", "--pool", ingest["manifest"], "--budget", "7", "--seed", "2",
                         "--store", store, "--no-plots", "--json")
    report = json.loads(Path(selected["report"]).read_bytes())
    return ingest, report


def test_experiment_opens_on_runs_and_a_chosen_kind_stays(tracking):
    from mlflow.tracking import MlflowClient

    lineage = Lineage(tracking, "team")
    client = MlflowClient(tracking)
    assert client.get_experiment(lineage.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    # An experiment made before (no kind) gets it; one whose kind a user chose keeps theirs.
    old = client.create_experiment("older", artifact_location=(Path(tracking[10:]).parent / "a").as_uri())
    Lineage(tracking, "older")
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    chosen = client.create_experiment("chosen", artifact_location=(Path(tracking[10:]).parent / "b").as_uri(),
                                      tags={EXPERIMENT_KIND_TAG: "genai_development"})
    Lineage(tracking, "chosen")
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_runs_carry_source_commit_and_description(tracking, monkeypatch):
    from mlflow.tracking import MlflowClient

    from syllabus.tracking import source

    monkeypatch.delenv(source.COMMIT_ENV, raising=False)
    lineage = Lineage(tracking, "team")
    with lineage.run("pipeline-x", description="3ds and random at 16 on pool abc") as parent:
        with lineage.run("3ds", nested=True) as child:
            lineage.describe("3ds: 9 of 16 selected; LoRA loss 2.80")
    client = MlflowClient(tracking)
    p, c = client.get_run(parent.info.run_id), client.get_run(child.info.run_id)
    assert is_checkout_commit(p.data.tags["mlflow.source.git.commit"])
    assert c.data.tags["mlflow.source.git.commit"] == p.data.tags["mlflow.source.git.commit"]
    assert p.data.tags[NOTE_TAG] == "3ds and random at 16 on pool abc"
    assert c.data.tags[NOTE_TAG] == "3ds: 9 of 16 selected; LoRA loss 2.80"

    # An image built without .git names its commit in the environment.
    monkeypatch.setenv(source.COMMIT_ENV, "0123456789abcdef0123456789abcdef01234567")
    with lineage.run("from-image") as run:
        pass
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert "mlflow.source.git.repoURL" not in tags


def test_pool_and_subset_are_dataset_inputs_with_fingerprint_digests(tracking, pool_and_selection):
    from mlflow.tracking import MlflowClient

    from syllabus.selection.export import export_selection

    ingest, report = pool_and_selection
    lineage = Lineage(tracking, "team")
    with lineage.run("pipeline") as parent:
        lineage.log_pool(ingest)
        with lineage.run("random", nested=True) as child:
            lineage.log_subset(report)
    client = MlflowClient(tracking)
    (pool,) = client.get_run(parent.info.run_id).inputs.dataset_inputs
    assert pool.dataset.name == "pool" and pool.dataset.digest == ingest["pool_fingerprint"]
    assert json.loads(pool.dataset.source) == {"uri": ingest["manifest"]}
    assert json.loads(pool.dataset.profile)["num_rows"] == 30 and json.loads(pool.dataset.profile)["shards"] == 3
    assert {t.key: t.value for t in pool.tags}["mlflow.data.context"] == "pool"
    assert "messages" in pool.dataset.schema

    (subset,) = client.get_run(child.info.run_id).inputs.dataset_inputs
    exported = export_selection(report["outputs"]["selected"], "jsonl", Path(tracking[10:]).parent / "export")
    assert subset.dataset.digest == exported["fingerprint"]  # an exported file matches its MLflow dataset
    assert subset.dataset.name == exported["name"] == report["outputs"]["selected"].split("/")[-2]
    assert json.loads(subset.dataset.source) == {"uri": report["outputs"]["selected"]}
    assert json.loads(subset.dataset.profile) == {"num_rows": 7, "method": "random", "seed": 2, "n_candidates": 30}
    assert {t.key: t.value for t in subset.tags}["mlflow.data.context"] == "training"


def test_dataset_source_drops_url_credentials():
    from syllabus.tracking.datasets import StoreDatasetSource

    assert StoreDatasetSource("s3://AKIA:secret@bucket/pool/manifest.json").uri == "s3://***@bucket/pool/manifest.json"


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, smol_tokenizer):
    """A tiny model on disk and a LoRA adapter trained on it, committed to a store."""
    from tiny_models import make_tiny_llama

    from syllabus.models.ref import fingerprint, resolve
    from syllabus.store import Store
    from syllabus.training.config import FinetuneConfig
    from syllabus.training.lora import finetune

    root = tmp_path_factory.mktemp("adapter")
    model_dir = root / "tiny-model"
    make_tiny_llama(len(smol_tokenizer), seed=3).save_pretrained(model_dir)
    smol_tokenizer.save_pretrained(model_dir)
    samples = [{"instruction": f"What is condition {i}?", "output": f"Condition {i} is a disease."} for i in range(4)]
    model = make_tiny_llama(len(smol_tokenizer), seed=3)
    result = finetune(model, smol_tokenizer, samples, FinetuneConfig(batch_size=2, learning_rate=1e-2), Store(str(root / "store")),
                      fingerprint(resolve(str(model_dir))), base_model=str(model_dir), progress=False)
    return str(model_dir), result.adapter_url


def test_adapter_is_a_registrable_logged_model_that_loads_and_answers(tracking, tiny_adapter):
    import mlflow
    from mlflow.tracking import MlflowClient

    from syllabus.evaluation.runner import load_eval_model
    from syllabus.models.chat import encode_prompt
    from syllabus.models.engines import TransformersEngine

    model_dir, adapter_url = tiny_adapter
    lineage = Lineage(tracking, "team")
    with lineage.run("3ds") as run:
        info = lineage.log_adapter(adapter_url)
    assert info.run_id == run.info.run_id
    logged = mlflow.get_logged_model(info.model_id)
    assert logged.tags["syllabus.kind"] == "lora_adapter" and logged.params["adapter_url"] == adapter_url
    files = {Path(f.path).name for f in MlflowClient(tracking).list_logged_model_artifacts(info.model_id, "artifacts/adapter")}
    assert {"adapter_config.json", "adapter_model.safetensors", "training.json"} <= files

    version = mlflow.register_model(info.model_uri, "syllabus-3ds-adapter")
    assert int(version.version) == 1
    loaded = mlflow.pyfunc.load_model("models:/syllabus-3ds-adapter/1")
    questions = ["What is condition 2?", "Is a fever dangerous?"]
    answers = loaded.predict(questions, params={"max_new_tokens": 6})

    # The same as the evaluation path's merged model, greedy: the adapter really is applied.
    lm = load_eval_model(model_dir, adapter_url)
    ids = TransformersEngine.from_loaded(lm, progress=False).generate(
        [encode_prompt(lm.tokenizer, {"instruction": q}).input_ids for q in questions], 6)
    assert answers == [lm.tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    base = load_eval_model(model_dir)
    base_ids = TransformersEngine.from_loaded(base, progress=False).generate(
        [encode_prompt(base.tokenizer, {"instruction": q}).input_ids for q in questions], 6)
    assert base_ids != ids  # without the adapter the answers differ


def test_no_commit_from_a_repository_that_does_not_hold_the_code(tmp_path, monkeypatch):
    """A copy of the package inside some other git repository (a wheel in a project's venv)
    must not report that repository's commit as the source of the code."""
    import importlib.util
    import shutil

    from syllabus.tracking import source

    monkeypatch.delenv(source.COMMIT_ENV, raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q",
                    "--allow-empty", "-m", "other project"], check=True)
    copy = tmp_path / "venv" / "syllabus_source.py"
    copy.parent.mkdir()
    shutil.copy(source.__file__, copy)
    spec = importlib.util.spec_from_file_location("syllabus_source_copy", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.source_tags() == {}
    assert is_checkout_commit(source.source_tags()["mlflow.source.git.commit"])
