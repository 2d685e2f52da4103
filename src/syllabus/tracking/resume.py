"""A retried flow run continues its MLflow runs: pressing Retry on a partially failed run in the
Prefect UI (or a flow-level retry) runs the same flow run again, under the same id, and its
MLflow parent run and per-method runs are resumed rather than added as a second parent with
the same name. The previous attempt's failure tags are cleared: the attempt that ends decides
how the run reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from syllabus.tracking.lineage import Lineage, flatten

log = logging.getLogger(__name__)

FLOW_RUN_TAG = "prefect.flow_run_id"
ATTEMPT_TAG = "syllabus.attempt"
# What a partial attempt leaves on its runs (Lineage.end_failed and the per-method error tag).
FAILURE_TAGS = ("error", "syllabus.missing_shards", "syllabus.failed_methods")


@dataclass
class Previous:
    """The MLflow runs an earlier attempt of the same flow run left: the parent's id (None when
    this is the first attempt), its per-arm runs by arm name, and how many attempts there were."""

    parent: str | None = None
    arms: dict[str, str] = field(default_factory=dict)
    attempts: int = 0


def previous_attempt(tracking_uri: str, experiment_id: str, flow_run_id: str, run_name: str) -> Previous:
    """The runs of an earlier attempt of flow run ``flow_run_id``: the top-level run named
    ``run_name`` tagged with it (the newest when several) and its nested runs by their
    ``method`` tag. No flow run id (a run outside Prefect): nothing to continue."""
    if not flow_run_id:
        return Previous()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    quoted = flow_run_id.replace("'", "")
    parents = [r for r in client.search_runs([experiment_id], f"tags.`{FLOW_RUN_TAG}` = '{quoted}'",
                                             order_by=["attributes.start_time DESC"])
               if not r.data.tags.get("mlflow.parentRunId") and r.info.run_name == run_name]
    if not parents:
        return Previous()
    parent = parents[0]
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"])
    arms = {}
    for child in children:
        arm = child.data.tags.get("method")
        if arm:
            arms[arm] = child.info.run_id  # the newest of a name wins
    attempts = int(parent.data.tags.get(ATTEMPT_TAG, "1") or 1)
    return Previous(parent.info.run_id, arms, attempts)


def clear_failure(tracking_uri: str, run_ids: list[str]) -> None:
    """Remove the failure tags an earlier attempt left on these runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for run_id in run_ids:
        tags = client.get_run(run_id).data.tags
        for key in FAILURE_TAGS:
            if key in tags:
                client.delete_tag(run_id, key)


class ResumableLineage(Lineage):
    """A :class:`Lineage` whose runs may be resumed by a later attempt (``attempt`` > 1). MLflow
    refuses to change a logged parameter, and a retry's values can differ from the first
    attempt's (a score manifest now names every shard): a new parameter is logged, an unchanged
    one is left, and a changed one keeps the first attempt's value with this attempt's in the tag
    ``attempt<N>.<param>``."""

    attempt: int = 1

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.attempt <= 1:
            return super().log_params(params)
        from mlflow.tracking import MlflowClient

        run_id = self.mlflow.active_run().info.run_id
        logged = MlflowClient(self.tracking_uri).get_run(run_id).data.params
        flat = flatten(params)
        new = [(k, v) for k, v in flat.items() if k not in logged]
        for i in range(0, len(new), 100):  # MLflow caps a batch at 100 params
            self.mlflow.log_params(dict(new[i:i + 100]))
        for key, value in flat.items():
            if key in logged and logged[key] != value:
                self.mlflow.set_tag(f"attempt{self.attempt}.{key}", value[:5000])
