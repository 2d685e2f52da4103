"""Static checks of what cannot run here (no Docker engine): every deployment's entrypoint is
a Prefect flow, work-pool templates are valid JSON with GPU requests, and the compose file
and Dockerfiles reference files that exist."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_entrypoint_is_a_flow():
    from prefect import Flow

    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    names = set()
    for dep in spec["deployments"]:
        path, attr = dep["entrypoint"].split(":")
        assert (ROOT / path).exists(), dep["entrypoint"]
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, attr), Flow), dep["entrypoint"]
        names.add(dep["name"])
    assert {"pipeline", "compare", "watch-pool", "score", "select", "finetune", "evaluate"} <= names
    scheduled = [d for d in spec["deployments"] if d.get("schedules")]
    assert scheduled and scheduled[0]["entrypoint"] == "flows/watch.py:watch"


def test_gpu_work_pool_templates_request_gpus():
    k8s = json.loads((ROOT / "deployments" / "work-pools" / "kubernetes-gpu.json").read_text())
    container = k8s["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    docker = json.loads((ROOT / "deployments" / "work-pools" / "docker-gpu.json").read_text())
    assert docker["job_configuration"]["container_create_kwargs"]["device_requests"][0]["Capabilities"] == [["gpu"]]
    for template in (k8s, docker):
        placeholders = set(re.findall(r"{{ (\w+) }}", json.dumps(template["job_configuration"])))
        assert placeholders <= set(template["variables"]["properties"]), placeholders - set(template["variables"]["properties"])


def test_compose_and_dockerfiles_reference_existing_files():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert {"postgres", "minio", "prefect-server", "mlflow", "worker"} <= set(compose["services"])
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            assert (ROOT / "docker" / build["context"] / build["dockerfile"]).exists()
    for dockerfile in (ROOT / "docker").glob("Dockerfile.*"):
        for src in re.findall(r"^COPY (\S+) ", dockerfile.read_text(), flags=re.M):
            assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src}"
