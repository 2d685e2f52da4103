"""How a flow run ends and what it shows: a partial run is not a green success, and what a run
produced is published where the user looks (their own run, even when the work ran in a
subflow it started).

A flow with missing shards or a failed arm returns a ``Failed`` state that carries the full
result as its (persisted) data, with a message that names what is missing and how to retry
only that; callers that want the result anyway unwrap it with ``result_of``.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable
from uuid import UUID

from prefect.artifacts import LinkArtifact, MarkdownArtifact, TableArtifact
from prefect.runtime import deployment, flow_run
from prefect.states import Failed, State

from syllabus.pipeline.partial import PARTIAL, PartialFailure, name_missing

log = logging.getLogger("flows.outcome")  # the folder's name, not the installed syllabus_flows: PREFECT_LOGGING_EXTRA_LOGGERS lists flows


def retry_hint(what: str) -> str:
    """How to retry only what is missing: the cache skips everything that was committed."""
    if deployment.id:
        return (f"Press Retry on the flow run you started in the Prefect UI (or run deployment {deployment.name!r} again "
                f"with the same parameters) to {what}; everything committed is reused from the store.")
    return f"Run the same command again to {what}; everything committed is reused from the store."


def missing_shards_message(manifests: dict[str, dict[str, Any]]) -> str | None:
    """One sentence per scorer with shards missing, naming the shards and their errors."""
    parts = []
    for name, manifest in manifests.items():
        missing = manifest.get("missing") or []
        if missing:
            total = len(missing) + len(manifest.get("shards") or [])
            parts.append(f"scorer {name}: {len(missing)} of {total} shards failed after their retries: "
                         f"{name_missing(missing)}.")
    if not parts:
        return None
    return " ".join(parts) + " " + retry_hint("score only the missing shards")


class _PartialIsReported(logging.Filter):
    """Drops the engine's "exited with unexpected exception" traceback for a partial run: its
    state, its log (``finish``) and its artifacts already say what is missing and how to retry."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, PartialFailure)


def quiet_engine_traceback() -> None:
    """Install the filter on the loggers Prefect's engine reports an ending flow run with."""
    for name in ("prefect.flow_runs", "prefect.engine"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _PartialIsReported) for f in logger.filters):
            logger.addFilter(_PartialIsReported())


def finish(result: Any, problems: Iterable[str | None]) -> Any:
    """The flow's return value: ``result`` when nothing went wrong, else a ``Failed`` state
    named "Partially failed" whose message lists the problems and whose data is a
    ``PartialFailure`` carrying ``result``."""
    problems = [p for p in problems if p]
    if not problems:
        return result
    message = " ".join(problems)
    log.error("%s", message)
    show_reason(problems[0])
    quiet_engine_traceback()
    return Failed(name=PARTIAL, message=message[:20000], data=PartialFailure(message[:20000], result))


REASON_TAG_CHARS = 90  # a chip that fits the run page's header beside the name


def show_reason(problem: str) -> None:
    """Put the reason on the run page's header, where it is read without clicking: a tag on this
    flow run and on the run the user started (the UI shows tags beside the run's name; the
    state's message is behind a click). Best effort: a missing API loses only the tag."""
    text = problem if len(problem) <= REASON_TAG_CHARS else problem[: REASON_TAG_CHARS - 3].rstrip() + "..."
    tag = f"{PARTIAL}: {text}"  # capitalised: the header sorts its tags, and shows those that fit
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            for target in _targets():
                run_id = target or flow_run.id
                if not run_id:
                    continue
                run = client.read_flow_run(UUID(str(run_id)))
                kept = [t for t in run.tags if not t.startswith(f"{PARTIAL}: ")]  # a retry's old reason goes
                client.update_flow_run(run.id, tags=[tag, *kept])  # first: the header shows the first tag, "+N" for the rest
    except Exception as exc:
        log.warning("could not tag the run with its reason (%s); its state and log say it", exc)


def result_of(state: State) -> Any:
    """The data of a flow's final state, partial or not; an exception (a crash, bad
    parameters, a partial run read back without its result) is raised as itself."""
    value = state.result(raise_on_failure=False)
    if isinstance(value, PartialFailure) and value.result is not None:
        return value.result
    if isinstance(value, BaseException):
        raise value
    return value


def _targets() -> list[UUID | None]:
    """This flow run and, when it is a subflow, the run the user started."""
    here = flow_run.id
    try:
        root = flow_run.root_flow_run_id
    except Exception as exc:  # reading the parent needs the API; this run's own artifacts still land
        log.warning("could not find the top-level flow run (%s); artifacts go to this run only", exc)
        root = here
    targets: list[UUID | None] = [None]  # None: Prefect's own context (this run, or this task run)
    if root and here and str(root) != str(here):
        targets.append(UUID(str(root)))
    return targets


def publish(markdown: str | None = None, key: str | None = None, description: str | None = None,
            link: str | None = None, link_text: str | None = None, link_key: str | None = None,
            table: list[dict[str, Any]] | None = None, table_key: str | None = None) -> None:
    """Create a markdown, link and/or table artifact on this flow run and on the top-level
    run. A missing Prefect API must not lose a result, so failures are only logged."""
    try:
        for target in _targets():
            if link:
                LinkArtifact(link=link, link_text=link_text, key=link_key, description=description,
                             flow_run_id=target).create()
            if markdown is not None:
                MarkdownArtifact(markdown=markdown, key=key, description=description, flow_run_id=target).create()
            if table is not None:
                TableArtifact(table=table, key=table_key or key, description=description, flow_run_id=target).create()
    except Exception as exc:
        log.warning("could not create the Prefect artifacts (%s); the result is still returned and in the store", exc)
