"""The screenshot helper: its URLs, its error when Chromium is missing, --no-sandbox exactly where
Chromium needs it (as root; a machine without a usable sandbox), and real Chromium runs as the
user the tests run as (root in CI and containers), including the Chromium command in docs/team.md."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shlex
import subprocess
import threading
from pathlib import Path

import pytest

from syllabus.tracking import screenshots as S

README = Path(__file__).resolve().parents[3] / "docs" / "team.md"  # the page with the Chromium command
PAGE = "<html><body style='background:#0b5'><h1 id='marker'>syllabus-shot-4c1d</h1></body></html>"


def test_missing_chromium_names_the_package(monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install -y --no-install-recommends chromium"):
        S.find_chromium()


def test_page_urls_open_mlflow_on_its_runs():
    assert S.prefect_flow_run_url("http://127.0.0.1:4200/", "abc") == "http://127.0.0.1:4200/runs/flow-run/abc"
    assert S.mlflow_run_url("http://127.0.0.1:5000", "3", "r1") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/r1?workflowType=machine_learning"
    assert S.mlflow_runs_url("http://127.0.0.1:5000/", "3") == "http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning"


def test_no_sandbox_only_where_chromium_needs_it(monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.delenv(S.NO_SANDBOX_ENV, raising=False)
    monkeypatch.setattr(S.os, "geteuid", lambda: 0)
    assert "--no-sandbox" in S.chromium_command(["about:blank"], "/tmp/p")
    monkeypatch.setattr(S.os, "geteuid", lambda: 1000)
    assert "--no-sandbox" not in S.chromium_command(["about:blank"], "/tmp/p")
    monkeypatch.setenv(S.NO_SANDBOX_ENV, "1")
    assert "--no-sandbox" in S.chromium_command(["about:blank"], "/tmp/p")
    monkeypatch.setenv(S.NO_SANDBOX_ENV, "0")
    assert "--no-sandbox" not in S.chromium_command(["about:blank"], "/tmp/p")


def test_falls_back_to_no_sandbox_when_chromium_has_none(tmp_path, monkeypatch, caplog):
    """A stand-in browser that behaves like Chromium without a usable sandbox: it refuses to
    start unless given --no-sandbox."""
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n"
                    "case \" $* \" in *' --no-sandbox '*) ;; *) echo 'FATAL: No usable sandbox!' >&2; exit 1;; esac\n"
                    "for a in \"$@\"; do case \"$a\" in --screenshot=*) printf '\\211PNG' > \"${a#--screenshot=}\";; esac; done\n"
                    "case \" $* \" in *' --dump-dom '*) echo '<html>ok</html>';; esac\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(S.os, "geteuid", lambda: 1000)
    monkeypatch.delenv(S.NO_SANDBOX_ENV, raising=False)
    page = S.capture("http://127.0.0.1:9/", tmp_path / "out.png")
    assert page.png.read_bytes() == b"\x89PNG" and page.dom.strip() == "<html>ok</html>"
    assert "retrying with --no-sandbox" in caplog.text


@pytest.fixture
def local_page(tmp_path):
    """A page served on 127.0.0.1 by a thread of this test."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(PAGE)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


def _not_blank(png: Path) -> None:
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels.shape[0] >= 200 and float(pixels[..., :3].std()) > 0.05, f"{png} is a blank picture"


def test_capture_runs_chromium_as_this_user(local_page, tmp_path):
    S.find_chromium()  # a clear error naming the package when Chromium is missing
    page = S.capture(local_page, tmp_path / "shot.png", width=800, height=600, wait_ms=2000)
    assert "syllabus-shot-4c1d" in page.dom
    _not_blank(page.png)


def _readme_chromium_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("chromium "):
                commands.append(shlex.split(line))
    return commands


def test_readme_chromium_commands_work_as_this_user(local_page, tmp_path):
    """Each Chromium command in docs/team.md, run as written with only its URL and output file
    pointed at a local page (as root when the tests run as root)."""
    commands = _readme_chromium_commands()
    assert commands, "docs/team.md shows no chromium command"
    for i, cmd in enumerate(commands):
        png = tmp_path / f"readme-{i}.png"
        args = [S.find_chromium()] + [f"--screenshot={png}" if a.startswith("--screenshot=") else a for a in cmd[1:-1]]
        args += [f"--user-data-dir={tmp_path / f'profile-{i}'}", local_page]
        if os.geteuid() == 0:
            assert "--no-sandbox" in args, "as root Chromium needs --no-sandbox; the command in docs/team.md lacks it"
        done = subprocess.run(args, capture_output=True, text=True, timeout=180)
        assert png.exists(), f"{' '.join(cmd)} wrote no picture: {done.stderr[-1500:]}"
        _not_blank(png)
