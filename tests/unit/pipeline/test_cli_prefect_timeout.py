"""The CLI gives Prefect's temporary server time to migrate a fresh database."""

import os

from syllabus import cli


def _version():
    try:
        cli.main(["--version"])
    except SystemExit:
        pass
    return os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]


def test_cli_raises_the_ephemeral_server_startup_timeout(monkeypatch):
    # set then delete, so that monkeypatch restores the variable's absence afterwards
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "0")
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    assert _version() == cli.EPHEMERAL_STARTUP_TIMEOUT_S
    assert int(cli.EPHEMERAL_STARTUP_TIMEOUT_S) > 20  # Prefect's own default


def test_a_users_setting_wins(monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "45")
    assert _version() == "45"
