"""State hooks: a cancelled, crashed or failed flow run ends its MLflow runs as KILLED or
FAILED. A crashed run's process may die before its ``with`` blocks close the runs, a cancelled
one leaves them through an exception that MLflow records as FAILED, and a watch run's subflows
get no hook of their own, so the runs are found by the Prefect ids tagged on them (this run,
or the top-level run that started it)."""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect.runtime import flow_run as current_run

from syllabus.tracking.lineage import default_tracking_uri, end_open_runs

log = logging.getLogger("flows.hooks")  # the folder's name, not the installed syllabus_flows: PREFECT_LOGGING_EXTRA_LOGGERS lists flows


def root_flow_run_id() -> str:
    """The id of the flow run the user started (this run when it is not a subflow)."""
    try:
        return str(current_run.root_flow_run_id or current_run.id or "")
    except Exception as exc:  # reading the parents needs the API; without one this run is the root
        log.warning("could not read the top-level flow run (%s); tagging this run's id", exc)
        return str(current_run.id or "")


def _tracking_uri(flow_run: Any) -> str | None:
    """The run's tracking URI: its parameters, else its environment. A cancellation hook may run
    in the worker, whose environment lacks the deployment's job variables, so those are read too."""
    params = (flow_run.parameters or {}).get("params") or {}
    if hasattr(params, "model_dump"):
        params = params.model_dump()
    found = params.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if found:
        return found
    env = (getattr(flow_run, "job_variables", None) or {}).get("env") or {}
    if not env.get("MLFLOW_TRACKING_URI") and flow_run.deployment_id:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            env = (client.read_deployment(flow_run.deployment_id).job_variables or {}).get("env") or {}
    return env.get("MLFLOW_TRACKING_URI") or None


def _end(flow_run: Any, state: Any, status: str, among: tuple[str, ...] = ("RUNNING",)) -> None:
    reason = f"Prefect flow run {flow_run.name} ({flow_run.id}) ended {state.name}: {state.message or ''}".strip()
    ended: list[str] = []
    try:
        uri = _tracking_uri(flow_run) or default_tracking_uri()
        if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
            return  # no run was ever logged there; opening it would create an empty database
        for tag in ("prefect.flow_run_id", "prefect.root_flow_run_id"):
            ended += end_open_runs(uri, tag, str(flow_run.id), status, reason, among)
    except Exception as exc:  # the hook must not hide the state that triggered it
        log.warning("could not end the MLflow runs of flow run %s as %s: %s", flow_run.id, status, exc)
        return
    if ended:
        log.info("MLflow runs %s ended as %s (%s)", ", ".join(ended), status, state.name)


def end_mlflow_runs_as_killed(flow, flow_run, state) -> None:
    # Cancelling stops the flow with an exception, so its `with` blocks have already marked the runs FAILED.
    _end(flow_run, state, "KILLED", among=("RUNNING", "FAILED"))


def end_mlflow_runs_as_failed(flow, flow_run, state) -> None:
    _end(flow_run, state, "FAILED")
