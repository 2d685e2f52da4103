"""Screenshots of a run's pages (the Prefect flow-run page, the MLflow run page and the
experiment's runs table, or any page such as a deployment's Run form) with headless Chromium,
against servers on 127.0.0.1.

    syllabus screenshots --flow-run ID --mlflow-run ID [--page NAME=URL] [--out DIR]

Both UIs are single-page apps: Chromium is given a virtual-time budget so the page's scripts
run and fetch the run before the picture is taken, and the rendered DOM is returned so a
caller can check that the page shows the run (not a spinner or an error page).

Chromium refuses to start as root with its sandbox ("Running as root without --no-sandbox is
not supported"), which is how containers and CI usually run; there, and wherever
``SYLLABUS_CHROMIUM_NO_SANDBOX=1`` says the sandbox cannot work (no user namespaces), it is
started with ``--no-sandbox``. Anywhere else it keeps its sandbox, and falls back to
``--no-sandbox`` with a warning only when Chromium itself says no sandbox is usable.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install Debian's chromium package: `apt-get install -y --no-install-recommends chromium`"
NO_SANDBOX_ENV = "SYLLABUS_CHROMIUM_NO_SANDBOX"
# What Chromium prints when it cannot start its sandbox (as root, or without user namespaces).
SANDBOX_ERRORS = ("Running as root without --no-sandbox is not supported", "No usable sandbox")
# MLflow 3.17 shows its GenAI overview unless the link asks for the runs ("Model training").
MLFLOW_RUNS_VIEW = "?workflowType=machine_learning"


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(f"no headless Chromium found (looked for {', '.join(CHROMIUM_NAMES)}); {INSTALL_HINT}")


def needs_no_sandbox() -> bool:
    """True as root (Chromium will not start its sandbox there) or when the environment says so."""
    return os.geteuid() == 0 or os.environ.get(NO_SANDBOX_ENV, "") not in ("", "0")


@dataclass
class Page:
    url: str
    png: Path
    dom: str


def chromium_command(args: list[str], profile: str, no_sandbox: bool | None = None) -> list[str]:
    sandbox = ["--no-sandbox"] if (needs_no_sandbox() if no_sandbox is None else no_sandbox) else []
    return [find_chromium(), "--headless", *sandbox, "--disable-background-networking", "--disable-gpu",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}", *args]


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="syllabus-chromium-") as profile:
        cmd = chromium_command(args, profile)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if "--no-sandbox" not in cmd and any(e in done.stderr for e in SANDBOX_ERRORS):
            log.warning("Chromium has no usable sandbox here; retrying with --no-sandbox (set %s=1 to skip the first "
                        "try)", NO_SANDBOX_ENV)
            done = subprocess.run(chromium_command(args, profile, no_sandbox=True), capture_output=True, text=True,
                                  timeout=timeout)
        return done


def capture(url: str, png: str | Path, width: int = 1440, height: int = 1000, wait_ms: int = 20000,
            timeout: float = 180.0) -> Page:
    """Render ``url`` and write a PNG screenshot; returns the page's rendered DOM too."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    common = [f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}"]
    shot = _chromium([*common, f"--screenshot={png}", url], timeout)
    if not png.exists() or png.stat().st_size == 0:
        raise RuntimeError(f"Chromium wrote no screenshot of {url} (exit {shot.returncode}): {shot.stderr[-2000:]}")
    dom = _chromium([*common, "--dump-dom", url], timeout)
    log.info("screenshot of %s -> %s (%d bytes)", url, png, png.stat().st_size)
    return Page(url, png, dom.stdout)


def prefect_flow_run_url(ui: str, flow_run_id: str) -> str:
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def mlflow_run_url(ui: str, experiment_id: str, run_id: str) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{MLFLOW_RUNS_VIEW}"


def mlflow_runs_url(ui: str, experiment_id: str) -> str:
    """The experiment's runs table."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}{MLFLOW_RUNS_VIEW}"


def screenshot_runs(out_dir: str | Path, prefect_ui: str | None = None, flow_run_id: str | None = None,
                    mlflow_ui: str | None = None, experiment_id: str | None = None, mlflow_run_id: str | None = None,
                    pages: dict[str, str] | None = None, **kwargs) -> dict[str, Page]:
    """Screenshots of the Prefect flow-run page, the MLflow run page and runs table, and any
    other ``pages`` (name -> URL, saved as ``<name>.png``) into ``out_dir``."""
    shots: dict[str, Page] = {}
    out = Path(out_dir)
    if prefect_ui and flow_run_id:
        shots["prefect"] = capture(prefect_flow_run_url(prefect_ui, flow_run_id), out / "prefect-flow-run.png", **kwargs)
    if mlflow_ui and experiment_id and mlflow_run_id:
        shots["mlflow"] = capture(mlflow_run_url(mlflow_ui, experiment_id, mlflow_run_id), out / "mlflow-run.png", **kwargs)
    if mlflow_ui and experiment_id:
        shots["mlflow-runs"] = capture(mlflow_runs_url(mlflow_ui, experiment_id), out / "mlflow-runs.png", **kwargs)
    for name, url in (pages or {}).items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"page name {name!r} must be a plain file name (it becomes {name}.png), e.g. deployment-form")
        shots[name] = capture(url, out / f"{name}.png", **kwargs)
    return shots
