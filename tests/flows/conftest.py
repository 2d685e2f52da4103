"""Flow tier: Prefect's test harness (a temporary local server) and the fault-injection
scorer registered under the name ``fault`` (the tiny model directory is in tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

# Retry delays are read when tasks/ is imported: no waiting between retries in tests.
os.environ.setdefault("SYLLABUS_RETRY_BASE_SECONDS", "0")


@pytest.fixture(scope="session", autouse=True)
def prefect_server(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on 127.0.0.1 (sqlite backend, artifacts proxied); yields its URL."""
    import sys
    from pathlib import Path

    from flow_helpers import free_port, serve

    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
           "--artifacts-destination", str(tmp_path / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port)]
    with serve(cmd, f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session", autouse=True)
def fault_scorer_registered():
    from syllabus import registry

    registry.register("scorer", "fault", "fault_scorer:FaultScorer")  # tests/flows is on sys.path
    yield
