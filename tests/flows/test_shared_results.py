"""Stage results in the shared store (issue 30 item 3), against moto's S3 server on 127.0.0.1 and
the test harness's Prefect server: after `python -m syllabus_flows.results --store s3://...`,
a flow's persisted result lands in <store>/prefect-results (not the worker's disk) and a process
with another Prefect home (another machine) reads it back through the API; a benchmark given as
an s3:// URL is evaluated like a local file, and a missing one is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.flow, pytest.mark.s3]

READ_BACK = """
import json, sys
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    state = client.read_flow_run(sys.argv[1]).state
print(json.dumps(state.result()["metrics"], sort_keys=True))
"""


def _env(**changes) -> dict:
    from prefect.settings import PREFECT_API_URL

    return dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), **changes)


def test_flow_results_and_benchmarks_live_in_the_shared_store(s3_bucket, tmp_path, tiny_model_dir, monkeypatch):
    import fsspec
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    from syllabus.evaluation.benchmarks import load_benchmark
    from syllabus.models.ref import fingerprint, resolve
    from syllabus_flows.results import clear_shared_results
    from syllabus_flows.stages import evaluate

    store = f"{s3_bucket}/store"
    bench = f"{s3_bucket}/benches/toy-mc.jsonl"
    fs = fsspec.filesystem("s3")
    with fs.open(bench, "w") as fh:
        fh.write("".join(json.dumps({"question": f"Which number is {i}?", "options": [str(i), str(i + 1)],
                                     "answer": "A", "subject": "toy"}) + "\n" for i in range(4)))

    assert len(load_benchmark(bench).items) == 4
    with pytest.raises(FileNotFoundError, match="benches/missing.jsonl"):
        load_benchmark(f"{s3_bucket}/benches/missing.jsonl")
    # A model given as a URL: copied once to the model cache, the same fingerprint as the local folder.
    monkeypatch.setenv("SYLLABUS_MODEL_CACHE", str(tmp_path / "model-cache"))
    model = f"{s3_bucket}/models/tiny"
    fs.put(f"{tiny_model_dir}/", f"{model}/", recursive=True)
    ref = resolve(model)
    assert ref.kind == "hf_dir" and ref.path.startswith(str(tmp_path / "model-cache")) and ref.spec == model
    assert fingerprint(ref) == fingerprint(resolve(str(tiny_model_dir)))
    with pytest.raises(FileNotFoundError, match="models/none"):
        resolve(f"{s3_bucket}/models/none")

    out = subprocess.run([sys.executable, "-m", "syllabus_flows.results", "--store", store], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and f"{store}/prefect-results" in out.stdout, out.stdout + out.stderr
    local = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    before = set(local.rglob("*")) if local.exists() else set()
    try:
        state = evaluate(model=model, adapter=None, benches=[bench], store=store,
                         config={"generate": False, "bootstrap": 20}, return_state=True)
        assert state.is_completed(), state
        metrics = state.result()["metrics"]
        assert metrics, metrics
        results = [p for p in fs.find(f"{store}/prefect-results")]
        assert results, "no flow result in the shared store"
        assert (set(local.rglob("*")) if local.exists() else set()) == before, "a result was written to the local disk"

        # Another machine: its own (empty) Prefect home, the same server and bucket.
        other = tmp_path / "other-machine"
        read = subprocess.run([sys.executable, "-c", READ_BACK, str(state.state_details.flow_run_id)],
                              env=_env(PREFECT_HOME=str(other)), capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert read.returncode == 0, read.stderr[-3000:]
        assert json.loads(read.stdout.strip().splitlines()[-1]) == json.loads(json.dumps(metrics, sort_keys=True))
    finally:
        clear_shared_results()

    local_store = subprocess.run([sys.executable, "-m", "syllabus_flows.results", "--store", str(tmp_path / "store")],
                                 env=_env(), capture_output=True, text=True, timeout=300)
    assert local_store.returncode == 0 and "local folder" in local_store.stdout, local_store.stdout + local_store.stderr
