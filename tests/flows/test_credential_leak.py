"""A secret typed into a store URL (`s3://KEY:SECRET@bucket/prefix`) is used, and found
nowhere after a full run: not in Prefect's database (flow-run parameters, state messages,
logs, events), not in MLflow's store or artifacts, not in the Syllabus store, not on
stdout/stderr, also when the run fails with -v."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from flow_helpers import write_pool

pytestmark = [pytest.mark.flow, pytest.mark.s3]

KEY = "AKIAPLANTEDKEY0417"
SECRET = "plantedSecret/Xy9+zz0417"


def _files_holding(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    return hits


def test_planted_secret_reaches_no_database_log_or_store(tmp_path, tiny_model_dir, s3_bucket, monkeypatch, capfd,
                                                         environ_restored):
    import boto3
    import prefect.settings
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter

    from syllabus.cli import main

    # whatever the run changes in the environment (credentials, the CLI's defaults) is undone by environ_restored
    monkeypatch.chdir(tmp_path)
    bench = tmp_path / "mc.jsonl"
    bench.write_text("".join(json.dumps({"question": f"Which number is {i}?", "options": [str(i), str(i + 1)],
                                         "answer": "A", "subject": "toy"}) + "\n" for i in range(4)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "pool": [write_pool(tmp_path / "pool.jsonl", 12)], "shard_size": 6, "model": tiny_model_dir,
        "methods": ["ifd"], "budget": {"count": 4}, "scorer_configs": {}, "selector_overrides": {},
        "finetune": {"batch_size": 2, "micro_batch_size": 2, "cutoff": 64, "learning_rate": 1e-3},
        "benches": [str(bench)], "eval": {"generate": False, "bootstrap": 10}, "evaluate_base": False,
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "credential-leak",
    }))
    bucket = s3_bucket[len("s3://"):]
    url = f"s3://{KEY}:{SECRET}@{bucket}/store"

    assert main(["run", str(config), "--store", url, "--json"]) == 0
    # the credentials were used (moved to the environment), and the run wrote to the bucket
    assert os.environ["AWS_ACCESS_KEY_ID"] == KEY and os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    objects = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    assert any(k.startswith("store/selections/") for k in objects) and any(k.startswith("store/adapters/") for k in objects)
    # a failing run, with its traceback (-v): the bucket does not exist
    assert main(["-v", "run", str(config), "--store", f"s3://{KEY}:{SECRET}@no-such-bucket-0417/store"]) == 1
    out, err = capfd.readouterr()
    assert "no-such-bucket-0417" in out + err  # the failure is reported ...
    for needle in (SECRET, KEY):  # ... and neither run printed the credentials
        assert needle not in out and needle not in err

    # Prefect, through its API: flow-run parameters, state messages and logs
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        logs = client.read_logs(LogFilter())
    assert {r.name for r in runs} and any(r.parameters.get("params", {}).get("store") == f"s3://{bucket}/store" for r in runs)
    api_text = json.dumps([[r.parameters, r.state.message if r.state else None] for r in runs], default=str)
    api_text += json.dumps([log.message for log in logs])
    assert f"s3://{bucket}/store" in api_text
    assert SECRET not in api_text and KEY not in api_text
    # ... and its database itself (events, task runs, artifacts: every table)
    db_url = str(prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value())
    db_dir = Path(db_url.split("///", 1)[1]).parent
    assert _files_holding(db_dir, [SECRET, KEY]) == []
    # MLflow's store and artifacts, and this folder (PREFECT_HOME, logs)
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlartifacts").exists()
    assert _files_holding(tmp_path, [SECRET, KEY]) == []
    # the Syllabus store on S3: manifests, markers, reports
    leaks = [k for k in objects if SECRET.encode() in s3.get_object(Bucket=bucket, Key=k)["Body"].read()
             or KEY.encode() in s3.get_object(Bucket=bucket, Key=k)["Body"].read()]
    assert leaks == []
