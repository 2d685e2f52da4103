"""Helpers shared by the flow tests."""

from __future__ import annotations

import json


def write_pool(path, n: int, start: int = 0):
    with open(path, "a") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps({"instruction": f"Question {i} about symptom {i % 7}?",
                                 "output": f"Answer {i}: " + "details " * (i % 5 + 1)}) + "\n")
    return str(path)


def uncommitted_code_allowed() -> dict[str, str]:
    """For workers that run a clone of this checkout's branch while importing its working tree:
    with local edits to the packages' .py files a run would (rightly) refuse to start, so the
    escape hatch is set then, and only then (a clean checkout, as in CI, runs the strict check)."""
    from pathlib import Path

    from syllabus.tracking.provenance import ALLOW_ENV, uncommitted_files

    return {ALLOW_ENV: "1"} if uncommitted_files(Path(__file__).resolve().parents[2]) else {}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class serve:
    """Run a server command in its own process group until the block ends; waits for
    ``health_url`` to answer first. Its output goes to the file ``log`` when given, else nowhere."""

    def __init__(self, cmd: list[str], health_url: str, env: dict | None = None, timeout: float = 180.0, cwd=None,
                 log=None):
        self.cmd, self.health_url, self.env, self.timeout, self.cwd, self.log = cmd, health_url, env, timeout, cwd, log

    def __enter__(self):
        import subprocess
        import time
        import urllib.request

        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.cwd)
        finally:
            if self.log:
                out.close()  # the child holds its own copy
        deadline = time.time() + self.timeout
        while True:
            try:
                urllib.request.urlopen(self.health_url, timeout=2)
                return self
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"{' '.join(self.cmd[:3])} did not answer {self.health_url} within {self.timeout:.0f} s")
                time.sleep(1)

    def __exit__(self, *exc):
        import os
        import signal
        import subprocess
        import warnings

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # A Prefect worker's graceful shutdown has hung past a minute on a loaded machine
            # (CI, after its test had passed): the server is stopped all the same.
            warnings.warn(f"{' '.join(self.cmd[:3])} ignored SIGTERM for 60 s; killed")
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def fault_recipe(path, name: str, fault_dir, threshold: str | None = None, topk: str = "") -> str:
    """A recipe file scoring with the test-only `fault` scorer (fault_scorer.py) and selecting the
    longest outputs by `topk` (``topk`` adds to its config, e.g. ", drop_below: 1e9"), after a
    `threshold` on fault_chars when ``threshold`` gives its bounds (e.g. "min_value: 0")."""
    stage = f"  - name: threshold\n    config: {{column: fault_chars, {threshold}}}\n" if threshold else ""
    path.write_text(f"""\
name: {name}
scorers:
  - name: fault
    config: {{fault_dir: {str(fault_dir)!r}}}
selectors:
{stage}  - name: topk
    config: {{column: fault_chars, descending: true{topk}}}
""")
    return str(path)
