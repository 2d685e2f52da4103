"""Screenshots of a run's pages (the Prefect flow-run page, the MLflow run page) with headless
Chromium, against servers on 127.0.0.1.

    syllabus screenshots --flow-run ID --mlflow-run ID [--prefect-ui URL] [--mlflow-ui URL] [--out DIR]

Both UIs are single-page apps: Chromium is given a virtual-time budget so the page's scripts
run and fetch the run before the picture is taken, and the rendered DOM is returned so a
caller can check that the page shows the run (not a spinner or an error page).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install Debian's chromium package: `apt-get install -y --no-install-recommends chromium`"


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(f"no headless Chromium found (looked for {', '.join(CHROMIUM_NAMES)}); {INSTALL_HINT}")


@dataclass
class Page:
    url: str
    png: Path
    dom: str


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="syllabus-chromium-") as profile:
        cmd = [find_chromium(), "--headless", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
               "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


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
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def screenshot_runs(out_dir: str | Path, prefect_ui: str | None = None, flow_run_id: str | None = None,
                    mlflow_ui: str | None = None, experiment_id: str | None = None, mlflow_run_id: str | None = None,
                    **kwargs) -> dict[str, Page]:
    """Screenshots of the Prefect flow-run page and/or the MLflow run page into ``out_dir``."""
    pages: dict[str, Page] = {}
    out = Path(out_dir)
    if prefect_ui and flow_run_id:
        pages["prefect"] = capture(prefect_flow_run_url(prefect_ui, flow_run_id), out / "prefect-flow-run.png", **kwargs)
    if mlflow_ui and experiment_id and mlflow_run_id:
        pages["mlflow"] = capture(mlflow_run_url(mlflow_ui, experiment_id, mlflow_run_id), out / "mlflow-run.png", **kwargs)
    return pages
