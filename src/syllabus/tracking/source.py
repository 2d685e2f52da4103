"""The source commit of the Syllabus code a run used, for its ``mlflow.source.git.commit`` tag.

MLflow sets that tag itself only when the entry-point script lies in a git checkout; flows
started by a Prefect worker or the ``syllabus`` console script do not, so it is looked up
here: ``$SYLLABUS_SOURCE_COMMIT`` (set it in images built without ``.git``), else the
checkout the package is imported from.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

COMMIT_ENV = "SYLLABUS_SOURCE_COMMIT"


@functools.lru_cache(maxsize=1)
def _git(*args: str) -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None  # no git on this machine
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def source_tags() -> dict[str, str]:
    """``mlflow.source.git.commit`` (and the repository URL when the checkout has an origin);
    empty when neither the environment nor a checkout says which commit this is."""
    # A wheel installed into a venv inside some other repository is not that repository's code:
    # the checkout counts only when it tracks this very file.
    tracked = _git("ls-files", "--full-name", "--error-unmatch", Path(__file__).name)
    commit = os.environ.get(COMMIT_ENV) or (_git("rev-parse", "HEAD") if tracked else None)
    if not commit:
        return {}
    tags = {"mlflow.source.git.commit": commit}
    origin = None if os.environ.get(COMMIT_ENV) else _git("config", "--get", "remote.origin.url")
    if origin:
        tags["mlflow.source.git.repoURL"] = origin
    return tags
