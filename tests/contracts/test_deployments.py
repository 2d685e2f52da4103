"""Static checks of what cannot run here (no Docker engine): every deployment's entrypoint is
a Prefect flow, work-pool templates are valid JSON with GPU requests, and the compose file
and Dockerfiles reference files that exist."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _installed_module(path: str):
    """The module of an entrypoint file as installed: flows/ is the package syllabus_flows."""
    folder, name = path.removesuffix(".py").split("/")
    assert folder == "flows", f"entrypoint {path} lies outside flows/"
    return importlib.import_module(f"syllabus_flows.{name}")


def test_every_deployment_entrypoint_is_a_flow():
    from prefect import Flow

    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    names = set()
    for dep in spec["deployments"]:
        path, attr = dep["entrypoint"].split(":")
        assert (ROOT / path).exists(), dep["entrypoint"]
        assert isinstance(getattr(_installed_module(path), attr), Flow), dep["entrypoint"]
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


def _spec() -> dict:
    return yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())


def _undescribed(schema: dict) -> list[str]:
    """Every property of the parameter schema, nested models included, that has no description."""
    missing = [f"parameter {name}" for name, prop in schema.get("properties", {}).items() if not prop.get("description")]
    for model, definition in schema.get("definitions", {}).items():
        missing += [f"{model}.{name}" for name, prop in definition.get("properties", {}).items() if not prop.get("description")]
    return missing


def test_every_parameter_of_every_deployment_has_a_description():
    from prefect.utilities.callables import parameter_schema_from_entrypoint

    for dep in _spec()["deployments"]:
        # What `prefect deploy` sends to the server: the schema built from the entrypoint's source.
        schema = parameter_schema_from_entrypoint(str(ROOT / dep["entrypoint"])).model_dump()
        assert schema["properties"], dep["name"]
        assert _undescribed(schema) == [], f"deployment {dep['name']}: {_undescribed(schema)}"
        assert dep.get("description"), dep["name"]


def test_budget_with_count_and_ratio_is_rejected_in_one_sentence():
    """The parameter schema leaves "exactly one" to the validator (the server could only word it
    as jsonschema does: "... is valid under each of {...}"), which says it in one sentence."""
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    from syllabus_flows.stages import select

    schema = parameter_schema(select.fn).model_dump()
    base = {"method": "random", "scores": ["s3://b/scores.json"]}
    validate({**base, "budget": {"count": 16}}, schema, raise_on_error=True)
    validate({**base, "budget": {"count": 16, "ratio": None}}, schema, raise_on_error=True)
    assert validate({**base, "budget": {"count": 0}}, schema)  # the other checks stay in the schema
    for bad, given in (({"count": 16, "ratio": 0.5}, "both (count 16, ratio 0.5)"), ({}, "neither")):
        with pytest.raises(ParameterTypeError, match=rf"budget: give exactly one of count or ratio; this budget gives {re.escape(given)}"):
            select.validate_parameters({**base, "budget": bad})


def test_deployments_share_settings_through_job_variables_and_pull_no_local_path():
    spec = _spec()
    for step in spec["pull"]:
        (name, args), = step.items()
        assert "set_working_directory" not in name, "a fixed working directory only exists on the deployer's machine"
        assert not any(str(v).startswith("/") for v in args.values()), args
    clone = spec["pull"][0]["prefect.deployments.steps.git_clone"]
    assert clone["repository"] == "{{ $SYLLABUS_GIT_URL }}"
    for dep in spec["deployments"]:
        env = dep["work_pool"]["job_variables"]["env"]
        assert {"SYLLABUS_STORE", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "SYLLABUS_GIT_URL"} <= set(env), dep["name"]
        assert set(env["PREFECT_LOGGING_EXTRA_LOGGERS"].split(",")) >= {"syllabus", "flows", "tasks"}


def test_watch_schedule_is_off_and_readme_names_every_variable_the_deployments_read():
    spec = _spec()
    watch = next(d for d in spec["deployments"] if d["name"] == "watch-pool")
    assert all(s.get("active") is False for s in watch["schedules"])
    text = (ROOT / "deployments" / "prefect.yaml").read_text()
    variables = set(re.findall(r"\{\{ \$(\w+) \}\}", text))
    assert {"SYLLABUS_WATCH_POOL", "SYLLABUS_STORE", "MLFLOW_TRACKING_URI"} <= variables
    team = (ROOT / "docs" / "team.md").read_text()
    assert [v for v in sorted(variables) if f"`{v}`" not in team and f"{v}=" not in team] == []


def test_watch_refuses_an_empty_pool():
    import pytest

    from syllabus_flows.watch import real_pool

    for empty in ([], [""], ["  ", ""]):
        with pytest.raises(ValueError, match="watch needs params.pool"):
            real_pool(empty)
    assert real_pool(["", "data/pool.jsonl"]) == ["data/pool.jsonl"]
