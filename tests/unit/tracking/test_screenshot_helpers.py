"""The screenshot helper's URLs and its error when Chromium is missing."""

from __future__ import annotations

import pytest

from syllabus.tracking import screenshots as S


def test_missing_chromium_names_the_package(monkeypatch):
    monkeypatch.setattr(S.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install -y --no-install-recommends chromium"):
        S.find_chromium()


def test_page_urls():
    assert S.prefect_flow_run_url("http://127.0.0.1:4200/", "abc") == "http://127.0.0.1:4200/runs/flow-run/abc"
    assert S.mlflow_run_url("http://127.0.0.1:5000", "3", "r1") == "http://127.0.0.1:5000/#/experiments/3/runs/r1"
