"""``python -m syllabus_flows.worker --pool syllabus-process``: a Prefect worker that stops
cleanly on SIGTERM.

Prefect 3.8's ``prefect worker start`` turns a SIGTERM into a SIGINT to itself, stops taking
new runs and then waits for the runs it started, however long they take: a fine-tuning run
keeps it alive for hours, and its flow-run processes (each in a session of its own) outlive
even the SIGKILL of the worker, their runs RUNNING in Prefect and MLflow forever. This command
runs ``prefect worker start`` with the arguments it is given and, on SIGTERM (or SIGINT):

1. marks each flow run the worker is running as Cancelling, so the worker itself kills the
   run's processes, runs its on_cancellation hooks (its MLflow runs end KILLED) and records it
   Cancelled: the same path as pressing Cancel in the UI;
2. once they are Cancelled (or after ``--stop-seconds``), stops the worker;
3. a run still not final by then has its processes killed, is marked Crashed and its MLflow
   runs KILLED from here, so nothing is left RUNNING.

A second signal skips the wait.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

log = logging.getLogger("syllabus-worker")  # not under flows or syllabus: this process has no flow run to send its lines to

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
STOP_SECONDS = 120.0
REASON = "the worker running it received {signal} and is stopping"


def _flow_run_processes(worker_pid: int) -> dict[UUID, list[int]]:
    """The flow runs the worker is running, each with its processes: the worker's descendants
    whose environment names a flow run (a process worker starts each run in a process of its
    own, with ``PREFECT__FLOW_RUN_ID`` set)."""
    import psutil

    found: dict[UUID, list[int]] = {}
    try:
        children = psutil.Process(worker_pid).children(recursive=True)
    except psutil.Error:
        return found
    for child in children:
        try:
            run_id = child.environ().get("PREFECT__FLOW_RUN_ID")
        except psutil.Error:  # ended meanwhile, or not ours to read
            continue
        if run_id:
            found.setdefault(UUID(run_id), []).append(child.pid)
    return found


def _state_of(client: Any, run_id: UUID) -> str | None:
    run = client.read_flow_run(run_id)
    return run.state.type.value if run.state else None


def cancel_runs(client: Any, run_ids: list[UUID], why: str) -> list[UUID]:
    """Ask for each unfinished run to be cancelled (the worker watches for Cancelling); returns
    the runs asked."""
    from prefect.states import Cancelling

    asked = []
    for run_id in run_ids:
        try:
            if _state_of(client, run_id) in FINAL:
                continue
            client.set_flow_run_state(run_id, Cancelling(message=why))
            asked.append(run_id)
            log.warning("flow run %s: cancelling, %s", run_id, why)
        except Exception as exc:  # the rest must still be cancelled
            log.error("flow run %s: could not ask for cancellation (%s)", run_id, exc)
    return asked


def wait_final(client: Any, run_ids: list[UUID], deadline: float, skip: threading.Event) -> list[UUID]:
    """Wait until every run is final, the deadline passes or ``skip`` is set; returns the runs not final."""
    left = list(run_ids)
    while left and time.monotonic() < deadline and not skip.is_set():
        left = [r for r in left if _state_of(client, r) not in FINAL]
        if left:
            skip.wait(1.0)
    return [r for r in left if _state_of(client, r) not in FINAL]


def crash_runs(client: Any, left: dict[UUID, list[int]], why: str) -> None:
    """The last resort for runs that did not end: kill their processes, mark them Crashed and
    end their MLflow runs KILLED (their hooks never ran)."""
    from prefect.states import Crashed

    from syllabus_flows.hooks import end_mlflow_runs_as_killed

    for run_id, pids in left.items():
        for pid in pids:
            for kill in (lambda p: os.killpg(os.getpgid(p), signal.SIGKILL), lambda p: os.kill(p, signal.SIGKILL)):
                try:
                    kill(pid)
                    break
                except OSError:
                    continue
        try:
            state = Crashed(message=f"{why}; its processes did not stop in time and were killed")
            client.set_flow_run_state(run_id, state, force=True)
            end_mlflow_runs_as_killed(None, client.read_flow_run(run_id), state)
            log.warning("flow run %s: killed and marked Crashed", run_id)
        except Exception as exc:
            log.error("flow run %s: could not be marked Crashed (%s)", run_id, exc)


def stop(worker: subprocess.Popen, signame: str, stop_seconds: float, skip: threading.Event) -> None:
    """Cancel the worker's runs, wait for them, then stop the worker (see the module's text)."""
    from prefect.client.orchestration import get_client

    why = REASON.format(signal=signame)
    deadline = time.monotonic() + stop_seconds
    with get_client(sync_client=True) as client:
        seen: dict[UUID, list[int]] = {}
        # A run the worker picked up while the first ones were cancelled is cancelled as well.
        while time.monotonic() < deadline and not skip.is_set():
            running = {r: p for r, p in _flow_run_processes(worker.pid).items() if r not in seen}
            if not running:
                break
            seen.update(running)
            wait_final(client, cancel_runs(client, list(running), why), deadline, skip)
        left = [r for r in seen if _state_of(client, r) not in FINAL]
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # Prefect's handler: stop polling, wait for the runs (none left)
            try:
                worker.wait(timeout=max(10.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("the Prefect worker did not stop; killing it")
                worker.kill()
        left = [r for r in left if _state_of(client, r) not in FINAL]
        if left:
            processes = _flow_run_processes(worker.pid) if worker.poll() is None else {}
            crash_runs(client, {r: processes.get(r, seen.get(r, [])) for r in left}, why)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m syllabus_flows.worker",
        description="Start a Prefect worker (`prefect worker start` with the other arguments given) that, on "
                    "SIGTERM or SIGINT, cancels the flow runs it is running (their MLflow runs end KILLED) and stops.")
    parser.add_argument("--stop-seconds", type=float, default=float(os.environ.get("SYLLABUS_WORKER_STOP_SECONDS", STOP_SECONDS)),
                        help="how long to wait for the cancelled runs to end before killing them "
                             f"(default {STOP_SECONDS:g}, or SYLLABUS_WORKER_STOP_SECONDS)")
    ours, rest = parser.parse_known_args(argv)
    if not rest:
        parser.error("give the `prefect worker start` options, at least --pool NAME")
    prefect = Path(sys.executable).parent / "prefect"
    cmd = [str(prefect) if prefect.exists() else "prefect", "worker", "start", *rest]
    received: list[str] = []
    skip = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if received:
            skip.set()  # a second signal: stop waiting
        received.append(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    # Its own process group: a terminal's Ctrl-C reaches this process only, which then cancels the runs first.
    worker = subprocess.Popen(cmd, start_new_session=True)
    while worker.poll() is None and not received:
        time.sleep(0.5)
    if received:
        log.warning("received %s: cancelling the worker's flow runs, then stopping it", received[0])
        stop(worker, received[0], ours.stop_seconds, skip)
    code = worker.wait()
    log.warning("the Prefect worker stopped (exit code %s)", code)
    return 0 if received else code


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)-7s | %(name)s - %(message)s")
    sys.exit(main())
