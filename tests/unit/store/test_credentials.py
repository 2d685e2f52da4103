"""Credentials typed into a URL: moved out of it (s3) or refused (anything else), and
redacted from any text that could still hold one."""

from __future__ import annotations

import pytest

from syllabus.store.credentials import CredentialsInURLError, adopt_credentials, redact, split_credentials

SECRET = "wJalrXUtn/FEMI+K7MDENG"


def test_redact_hides_userinfo_everywhere_in_text():
    text = f"error: could not open s3://AKIAEXAMPLE:{SECRET}@bucket/prefix/pool.jsonl; also https://u:p@mlflow:5000/x"
    out = redact(text)
    assert SECRET not in out and "AKIAEXAMPLE" not in out and ":p@" not in out
    assert "s3://***@bucket/prefix/pool.jsonl" in out and "https://***@mlflow:5000/x" in out
    # an '@' in a path is not user-info
    assert redact("s3://bucket/people/a@b.jsonl") == "s3://bucket/people/a@b.jsonl"


def test_split_moves_s3_credentials_out_of_the_url(monkeypatch):
    clean, options = split_credentials(f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix")
    assert clean == "s3://bucket/prefix" and options == {"key": "AKIAEXAMPLE", "secret": SECRET}
    assert split_credentials("s3://bucket/prefix") == ("s3://bucket/prefix", {})

    monkeypatch.setenv("AWS_SESSION_TOKEN", "old-token")
    assert adopt_credentials(f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix") == "s3://bucket/prefix"
    import os

    assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE" and os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert "AWS_SESSION_TOKEN" not in os.environ


@pytest.mark.parametrize("url", ["https://user:pw-123@mlflow.example/", "gs://user:pw-123@bucket/x", "s3://justakey@bucket/x"])
def test_other_credentials_are_refused_with_the_way_to_pass_them(url):
    with pytest.raises(CredentialsInURLError) as exc:
        split_credentials(url)
    message = str(exc.value)
    assert "pw-123" not in message and "justakey" not in message
    assert "pass the credentials in" in message


def test_store_url_never_carries_the_secret(tmp_path, monkeypatch):
    from syllabus.store import Store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "before")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "before")
    store = Store(f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix")
    assert store.url("pools/x.json") == "s3://bucket/prefix/pools/x.json"
    assert SECRET not in repr(store) and store.root == "bucket/prefix"


def test_cli_moves_credentials_before_the_command_sees_them(monkeypatch, capsys, tmp_path):
    """The CLI's error line is the one place a raw argument could reach stderr."""
    from syllabus.cli import main

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "before")
    code = main(["select", "--method", "random", "--budget", "1", "--store", f"gs://user:{SECRET}@bucket/x"])
    err = capsys.readouterr().err
    assert code == 2 and SECRET not in err and "gs://***@bucket/x" in err
