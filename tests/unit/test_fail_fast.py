"""Settings that can be checked without the model are checked before any work: an unreachable
MLflow tracking URI fails in seconds (MLflow's own retries take minutes), and a device that
does not exist fails before the model loads or the pool is ingested."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest

from syllabus.cli import main
from syllabus.models.loading import check_device
from syllabus.tracking.lineage import TrackingUnreachable, check_tracking_uri

LIMIT_S = 5.0


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dead_uri() -> str:
    return f"http://127.0.0.1:{unused_port()}"


@pytest.fixture
def silent_uri():
    """A port that accepts connections and never answers (a hung server or a firewall)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def answering_uri():
    """An HTTP server that answers /health with 200 and everything else with 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path.endswith("/health") else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_unreachable_tracking_uri_fails_within_seconds_naming_it(dead_uri):
    start = time.perf_counter()
    with pytest.raises(TrackingUnreachable, match=rf"MLflow tracking URI {dead_uri} cannot be reached"):
        check_tracking_uri(dead_uri)
    assert time.perf_counter() - start < LIMIT_S


def test_a_server_that_never_answers_fails_at_the_timeout(silent_uri):
    start = time.perf_counter()
    with pytest.raises(TrackingUnreachable, match=rf"MLflow tracking URI {silent_uri} cannot be reached"):
        check_tracking_uri(silent_uri, timeout=1.0)
    assert time.perf_counter() - start < 1.0 + 2.0


def test_a_server_that_answers_passes(answering_uri, tmp_path):
    assert check_tracking_uri(answering_uri) == answering_uri
    assert check_tracking_uri(answering_uri + "/prefix") == answering_uri + "/prefix"  # a 404 still answers
    assert check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db").endswith("mlflow.db")
    with pytest.raises(TrackingUnreachable, match="which is not a folder"):
        check_tracking_uri(f"sqlite:///{tmp_path}/missing/mlflow.db")


def test_lineage_checks_before_mlflow_retries(dead_uri):
    from syllabus.tracking.lineage import Lineage, end_open_runs

    start = time.perf_counter()
    with pytest.raises(TrackingUnreachable):
        Lineage(dead_uri)
    with pytest.raises(TrackingUnreachable):  # the flows' failure hooks end runs through this
        end_open_runs(dead_uri, "prefect.flow_run_id", "x", "FAILED")
    assert time.perf_counter() - start < 2 * LIMIT_S


def _no_flow(monkeypatch):
    from syllabus.cli import run as commands

    monkeypatch.setattr(commands, "load_flow", lambda name: pytest.fail(f"the {name} flow was started"))


@pytest.mark.parametrize("command", ["run", "compare"])
def test_run_and_compare_fail_on_the_tracking_uri_before_the_flow(command, dead_uri, tmp_path, capsys, monkeypatch):
    from syllabus.pipeline.config import CompareParams

    # Outside the timing: the CLI's first start (registering every command) and the parameters'
    # own validation, which imports every scorer module of the plan (seconds on a busy machine).
    with pytest.raises(SystemExit):
        main([command, "--help"])
    CompareParams()
    _no_flow(monkeypatch)
    config = tmp_path / "config.yaml"
    config.write_text(f"tracking_uri: {dead_uri}\nstore: {tmp_path / 'store'}\n")
    start = time.perf_counter()
    assert main([command, str(config)]) == 1
    assert time.perf_counter() - start < LIMIT_S
    assert f"MLflow tracking URI {dead_uri} cannot be reached" in capsys.readouterr().err


def test_run_fails_on_a_device_that_does_not_exist_before_the_flow(tmp_path, capsys, monkeypatch):
    _no_flow(monkeypatch)
    monkeypatch.setenv("SYLLABUS_DEVICE", "tpu:9")
    config = tmp_path / "config.yaml"
    config.write_text(f"tracking_uri: sqlite:///{tmp_path}/mlflow.db\nstore: {tmp_path / 'store'}\n")
    assert main(["run", str(config)]) == 1
    assert "SYLLABUS_DEVICE: device 'tpu:9' is not a torch device" in capsys.readouterr().err


@pytest.mark.parametrize("device,message", [("tpu:9", "is not a torch device"), ("cuda:99", "cuda:99"), ("meta", "meta device"),
                                            ("CPU", "is not a torch device"), ("", "is not a torch device")])
def test_check_device_refuses_what_torch_cannot_compute_on(device, message):
    with pytest.raises(ValueError, match=message):
        check_device(device)
    assert check_device("cpu") == "cpu"


def _fake_model_dir(tmp_path) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # resolves as a model directory; never loaded
    return str(folder)


def _fail_on_load(monkeypatch):
    import transformers

    from syllabus import models
    from syllabus.models import loading

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(cls, "from_pretrained", lambda *a, **k: pytest.fail("weights were read"))


def test_score_with_a_device_that_does_not_exist_fails_before_ingest_and_model(tmp_path, capsys, monkeypatch):
    _fail_on_load(monkeypatch)
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"instruction": "Q?", "output": "A."}) + "\n")
    store = tmp_path / "store"
    rc = main(["score", str(pool), "--method", "ifd", "--model", _fake_model_dir(tmp_path), "--device", "tpu:9",
               "--store", str(store)])
    assert rc == 1
    assert "device 'tpu:9' is not a torch device" in capsys.readouterr().err
    assert not store.exists()  # nothing ingested


def test_score_with_an_unreachable_tracking_uri_fails_before_ingest(tmp_path, dead_uri, capsys, monkeypatch):
    _fail_on_load(monkeypatch)
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"instruction": "Q?", "output": "A."}) + "\n")
    store = tmp_path / "store"
    start = time.perf_counter()
    rc = main(["score", str(pool), "--method", "ifd", "--model", _fake_model_dir(tmp_path), "--device", "cpu",
               "--tracking-uri", dead_uri, "--store", str(store)])
    assert rc == 1 and time.perf_counter() - start < LIMIT_S
    assert f"MLflow tracking URI {dead_uri} cannot be reached" in capsys.readouterr().err
    assert not store.exists()


def test_load_model_checks_the_device_before_reading_weights(tmp_path, monkeypatch):
    import transformers

    from syllabus.models.loading import load_model

    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(cls, "from_pretrained", lambda *a, **k: pytest.fail("weights were read"))
    with pytest.raises(ValueError, match="device 'tpu:9' is not a torch device"):
        load_model(_fake_model_dir(tmp_path), device="tpu:9", reuse=False)


@pytest.mark.parametrize("dtype", ["float8", "cuda", "Tensor"])
def test_score_with_a_dtype_that_is_not_one_fails_before_ingest(dtype, tmp_path, capsys, monkeypatch):
    _fail_on_load(monkeypatch)
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"instruction": "Q?", "output": "A."}) + "\n")
    store = tmp_path / "store"
    rc = main(["score", str(pool), "--method", "ifd", "--model", _fake_model_dir(tmp_path), "--device", "cpu",
               "--dtype", dtype, "--store", str(store)])
    assert rc == 1
    assert f"dtype {dtype!r} is not a torch dtype" in capsys.readouterr().err
    assert not store.exists()
