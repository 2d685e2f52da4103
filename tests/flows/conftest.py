"""Flow tier: Prefect's test harness (a temporary local server), a tiny model saved to disk,
and the fault-injection scorer registered under the name ``fault``."""

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


@pytest.fixture(scope="session", autouse=True)
def fault_scorer_registered():
    from syllabus import registry

    registry.register("scorer", "fault", "fault_scorer:FaultScorer")  # tests/flows is on sys.path
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer, tiny_llama):
    """A 2-layer random Llama with the SmolLM2 tokenizer, saved as a Hugging Face directory."""
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_llama.save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return str(path)
