"""MLflow lineage: one parent run per pipeline run, a nested run per method.

MLflow 3.17 defaults to ``sqlite:///mlflow.db`` in the working directory and refuses a plain
file store, so the tracking URI and the experiment's artifact location are always set
explicitly here. Artifacts that live in the Syllabus store are copied into the run
(selected subset, selection report and plots, per-item evaluation results).

Credentials never reach MLflow: parameter and tag values are scrubbed of URL user-info and
of any key that looks like a secret.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from syllabus.store.credentials import redact
from syllabus.tracking.names import mlflow_key

log = logging.getLogger(__name__)

# A key is secret when one of its words is: ``hf_token``, ``aws_secret_access_key``, ``apiKey``,
# ``password`` are; ``max_new_tokens`` and ``max_batch_tokens`` (counts: "tokens") are not.
_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "pwd", "passphrase", "token", "credential", "credentials",
                 "apikey", "auth", "authorization", "bearer", "cookie"}
_SECRET_KEY_PAIRS = {("api", "key"), ("access", "key"), ("secret", "key"), ("private", "key"), ("account", "key"),
                     ("sas", "token"), ("session", "token")}
_PARAM_MAX = 6000  # MLflow's limit on a parameter value
# MLflow 3.17's UI opens an experiment in its GenAI view (traces; the runs hidden under "Training
# runs") unless the link says ?workflowType=machine_learning, which the UI then remembers; the
# kind tag says the same to MLflow's tools and to UIs without the GenAI/Model training switch.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
RUNS_VIEW = "?workflowType=machine_learning"
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


TRACKING_CHECK_SECONDS = 5.0


class TrackingUnreachable(RuntimeError):
    """The MLflow tracking URI cannot be used: no server answers, or the database's folder is missing."""


def _http_answers(url: str, timeout: float) -> str | None:
    """None when an HTTP server answers ``url`` (any status: a 404 or 401 still proves it is
    there), else why not."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except (OSError, ValueError) as exc:  # a timeout, a reset connection, a malformed URL
        return f"{type(exc).__name__}: {exc}".rstrip(": ")


def check_tracking_uri(tracking_uri: str | None = None, timeout: float = TRACKING_CHECK_SECONDS) -> str:
    """Fail within about ``timeout`` seconds when the tracking URI cannot work, before any work
    starts: MLflow's own client retries an unreachable server with backoff for minutes before
    it gives up. An http(s) URI must answer a GET of its ``/health`` page (the MLflow server's
    liveness page); a ``sqlite:///`` URI's folder must exist. Other schemes are left to MLflow.
    Returns the URI checked."""
    import threading
    from urllib.parse import urlsplit

    uri = tracking_uri or default_tracking_uri()
    scheme = urlsplit(uri).scheme.lower()
    shown = redact(uri)
    if scheme in ("http", "https"):
        # A thread bounds the name lookup too, which urlopen's timeout does not cover.
        result: list[str | None] = []
        probe = threading.Thread(target=lambda: result.append(_http_answers(f"{uri.rstrip('/')}/health", timeout)),
                                 name="mlflow-tracking-check", daemon=True)
        probe.start()
        probe.join(timeout + 1.0)
        problem = result[0] if result else f"no answer within {timeout:g} s"
        if problem is not None:
            raise TrackingUnreachable(
                f"MLflow tracking URI {shown} cannot be reached ({redact(problem)}); start the tracking server "
                "(`mlflow server --host 127.0.0.1 --port 5000`) or pass a reachable tracking URI (tracking_uri, "
                "--tracking-uri or MLFLOW_TRACKING_URI; sqlite:///mlflow.db for a local file)"
            )
    elif scheme == "sqlite" and uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TrackingUnreachable(
                f"MLflow tracking URI {shown} names a database in {folder}, which is not a folder; create the folder "
                "or pass another tracking URI"
            )
    return uri


def is_secret_key(name: Any) -> bool:
    """True for parameter names that hold a secret (by whole words, camelCase split)."""
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])", str(name)) if w]
    if words == ["key"] or _SECRET_WORDS.intersection(words):
        return True
    return any(pair in _SECRET_KEY_PAIRS for pair in zip(words, words[1:]))


def scrub(value: Any) -> Any:
    """Remove credentials from a value headed for MLflow params, tags or logs: the values of
    secret-named keys, and the user-info of every URL."""
    if isinstance(value, Mapping):
        return {k: ("***" if is_secret_key(k) else scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; values as JSON text, cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in scrub(dict(params)).items():
        # A param's structure is its dots: a slash in a key is data (a method given as a recipe
        # path keys selector_overrides), and MLflow refuses other characters (influence@less).
        name = f"{prefix}{str(key).replace('/', '_')}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            out[mlflow_key(name)] = text[:_PARAM_MAX]
    return out


def _artifact_root(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides (e.g. --artifacts-destination)


class Lineage:
    """Thin wrapper over the MLflow client API for the pipeline's runs."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "syllabus"):
        self.tracking_uri = check_tracking_uri(tracking_uri)
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        existing = mlflow.get_experiment_by_name(experiment)
        if existing is None:
            self.experiment_id = mlflow.create_experiment(experiment, artifact_location=_artifact_root(self.tracking_uri),
                                                          tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        else:
            self.experiment_id = existing.experiment_id
            if EXPERIMENT_KIND_TAG not in existing.tags:  # an older experiment; a kind someone chose stays
                mlflow.MlflowClient(self.tracking_uri).set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        self.experiment = experiment

    @contextmanager
    def run(self, name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
            nested: bool = False, description: str | None = None, run_id: str | None = None) -> Iterator[Any]:
        """Start a run, or resume run ``run_id`` (a retried flow run continues its runs)."""
        from syllabus.tracking.provenance import recorded_tags
        from syllabus.tracking.source import source_tags

        # The flow's provenance check (code hash; the run's checkout commit when the code is that commit's).
        tags = {**source_tags(), **recorded_tags(), **(tags or {}), **({NOTE_TAG: description} if description else {})}
        with self.mlflow.start_run(run_id=run_id, run_name=name, experiment_id=self.experiment_id, nested=nested,
                                   tags={k: str(scrub(v)) for k, v in tags.items()}) as active:
            if params:
                self.log_params(params)
            yield active

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.mlflow.log_params(dict(items[i:i + 100]))

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "") -> None:
        clean = {}
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                continue
            clean[mlflow_key(f"{prefix}{key}")] = float(value)
        if clean:
            self.mlflow.log_metrics(clean)

    def log_store_object(self, url: str, artifact_path: str | None = None, name: str | None = None) -> None:
        """Copy one committed object from the Syllabus store into the active run."""
        from syllabus.store import Store

        store, key = Store.open_url(url)
        data = store.read_committed(key)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / (name or Path(key).name)
            path.write_bytes(data)
            self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.mlflow.log_dict(scrub(obj), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.mlflow.log_text(text, artifact_file)

    def describe(self, text: str) -> None:
        """The active run's one-line description (shown under its name in the UI)."""
        self.mlflow.set_tag(NOTE_TAG, str(scrub(text)))

    def log_pool(self, ingest: Mapping[str, Any]) -> None:
        """The pool as a dataset input of the active run (digest = pool fingerprint)."""
        from syllabus.tracking.datasets import POOL_CONTEXT, pool_dataset

        self.mlflow.log_input(pool_dataset(ingest), context=POOL_CONTEXT)

    def log_subset(self, selection: Mapping[str, Any]) -> None:
        """A selected subset as a training dataset of the active run (digest = its fingerprint)."""
        from syllabus.tracking.datasets import SUBSET_CONTEXT, subset_dataset

        self.mlflow.log_input(subset_dataset(selection), context=SUBSET_CONTEXT)

    def log_adapter(self, adapter_url: str, name: str = "adapter") -> Any:
        """The adapter as a logged model of the active run, ready for ``mlflow.register_model``."""
        from syllabus.tracking.adapter_model import log_adapter

        return log_adapter(adapter_url, name=name)

    def end_failed(self, run_id: str, reason: str, tags: Mapping[str, str] | None = None) -> None:
        """End a finished run as FAILED, its reason on its page: the ``error`` tag, any
        ``tags`` (e.g. the missing shards and failed methods), and first in its description."""
        client = self.mlflow.MlflowClient(self.tracking_uri)
        note = client.get_run(run_id).data.tags.get(NOTE_TAG, "")
        for key, value in {"error": reason, **(tags or {})}.items():
            if value:
                client.set_tag(run_id, key, str(scrub(value))[:5000])
        client.set_tag(run_id, NOTE_TAG, str(scrub(f"**Partially failed.** {reason}\n\n{note}".strip())))
        client.set_terminated(run_id, status="FAILED")

    def run_url(self, run_id: str) -> str:
        """A browser link to the run: the tracking server's UI, or the local `mlflow ui` default."""
        return f"{self.experiment_url().removesuffix(RUNS_VIEW)}/runs/{run_id}{RUNS_VIEW}"

    def experiment_url(self) -> str:
        """A browser link to the experiment's runs table (not the GenAI overview)."""
        base = self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}{RUNS_VIEW}"


def end_open_runs(tracking_uri: str | None, tag: str, value: str, status: str, reason: str = "",
                  among: tuple[str, ...] = ("RUNNING",)) -> list[str]:
    """End every run (any experiment) in a status of ``among`` whose tag ``tag`` equals
    ``value`` with ``status`` (``KILLED``, ``FAILED``): a crashed flow never leaves its ``with``
    block, so its runs would stay RUNNING forever; a cancelled one leaves it through an
    exception, which MLflow records as FAILED. Returns the ids it ended."""
    uri = check_tracking_uri(tracking_uri)  # a hook must not wait minutes on a dead server
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    quoted = value.replace("'", "")
    runs = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()],
                                          filter_string=f"tags.`{tag}` = '{quoted}'")
            if r.info.status in among]
    for run in runs:
        if reason:
            client.set_tag(run.info.run_id, "error", reason[:5000])
        client.set_terminated(run.info.run_id, status=status)
    return [r.info.run_id for r in runs]
