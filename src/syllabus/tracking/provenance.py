"""Provenance: a flow run executes the code of the commit it records (issue 30).

The deployments' pull step clones the branch into the worker's folder and runs the flow from
there, but ``syllabus``, ``syllabus_flows`` and ``syllabus_tasks`` are imported from the worker's
own environment. A worker installed from an older commit would run that older code under the
clone's commit. So every flow starts with :func:`check_code_provenance`: when the working folder
is a git checkout holding ``src/syllabus`` (the pull step's clone, or a developer's checkout), the
``.py`` files of each imported package are compared with the checkout's (``src/syllabus``,
``flows``, ``tasks``). Different code fails the run before any work, naming the package, where it
was imported from, the commit, the files that differ and the fix; ``SYLLABUS_ALLOW_CODE_MISMATCH=1``
logs that as a warning instead and the run's MLflow tags record it.

Whatever was found is tagged on the run's MLflow runs (through ``source_tags``):
``syllabus.code_hash`` (a hash of the imported packages' ``.py`` files: the code that ran) and,
when the code matches the checkout, ``mlflow.source.git.commit`` = the checkout's commit (and
``syllabus.code_uncommitted``: the checkout's .py and .yaml files with local edits, when it has any).
No Prefect import here: this runs inside flows but is plain file and git work.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Imported package -> its folder in a checkout (pyproject.toml's package-dir).
PACKAGES = {"syllabus": "src/syllabus", "syllabus_flows": "flows", "syllabus_tasks": "tasks"}
ALLOW_ENV = "SYLLABUS_ALLOW_CODE_MISMATCH"
COMMIT_TAG = "mlflow.source.git.commit"
CODE_HASH_TAG = "syllabus.code_hash"
MISMATCH_TAG = "syllabus.code_mismatch"
CLONE_COMMIT_TAG = "syllabus.clone_commit"
UNCOMMITTED_TAG = "syllabus.code_uncommitted"
_NAMED_FILES = 5  # files named in the message; the rest are counted


class CodeMismatchError(RuntimeError):
    """The imported Syllabus code is not the code of the checkout the run was started in."""


@dataclass(frozen=True)
class Provenance:
    """What a run executes: the imported code's hash and, when the run's folder is a checkout,
    that checkout, its commit, and (only with the escape hatch) how the code differs from it."""

    code_hash: str
    checkout: Path | None = None
    commit: str | None = None
    mismatch: str | None = None
    uncommitted: tuple[str, ...] = ()  # the checkout's .py and .yaml files that differ from its commit

    def tags(self) -> dict[str, str]:
        tags = {CODE_HASH_TAG: self.code_hash}
        if self.commit and not self.mismatch:
            tags[COMMIT_TAG] = self.commit  # the commit is the code only when they match
        if self.uncommitted:  # a developer's checkout with local edits: the commit alone is not the code
            tags[UNCOMMITTED_TAG] = ", ".join(self.uncommitted)[:5000]
        if self.mismatch:
            tags[MISMATCH_TAG] = self.mismatch[:5000]  # MLflow's limit on a tag value
            if self.commit:
                tags[CLONE_COMMIT_TAG] = self.commit
        return tags


_recorded: Provenance | None = None


def recorded_tags() -> dict[str, str]:
    """The MLflow tags of the last check in this process (empty before any)."""
    return _recorded.tags() if _recorded else {}


# The code and the shipped recipes (a method is its recipe): what a run executes.
CODE_SUFFIXES = (".py", ".yaml")


def file_digests(directory: Path) -> dict[str, str]:
    """Relative path (POSIX) -> SHA-256 of the bytes, for every ``.py`` and ``.yaml`` file under
    ``directory``."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts
            and p.is_file()}


def tree_hash(digests: dict[str, str]) -> str:
    """One hash over sorted relative paths and their contents."""
    h = hashlib.sha256()
    for path in sorted(digests):
        h.update(f"{path}\0{digests[path]}\n".encode())
    return h.hexdigest()


def imported_dirs() -> dict[str, Path | None]:
    """Where each package is imported from: the folder its ``__file__`` is in (``None`` when it
    cannot be imported). Already-imported modules answer for themselves; others are located
    without running them."""
    dirs: dict[str, Path | None] = {}
    for name in PACKAGES:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) if module else None
        if origin is None:
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec and spec.has_location else None
        dirs[name] = Path(origin).resolve().parent if origin else None
    return dirs


def _git(where: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None  # no git on this machine
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def find_checkout(cwd: Path) -> Path | None:
    """The git checkout holding ``cwd`` when it is a Syllabus checkout (has ``src/syllabus``)."""
    top = _git(cwd, "rev-parse", "--show-toplevel")
    if top is None:
        log.debug("code provenance: %s is not in a git checkout; nothing to compare the imported code with", cwd)
        return None
    if not (Path(top) / PACKAGES["syllabus"] / "__init__.py").is_file():
        log.debug("code provenance: the checkout %s holds no src/syllabus; nothing to compare the imported code with", top)
        return None
    return Path(top).resolve()


def uncommitted_files(checkout: Path) -> tuple[str, ...]:
    """The package folders' .py and .yaml files whose content is not the commit's (edited, added, deleted)."""
    changed = _git(checkout, "diff", "--name-only", "--no-renames", "HEAD", "--", *PACKAGES.values()) or ""
    added = _git(checkout, "ls-files", "--others", "--exclude-standard", "--", *PACKAGES.values()) or ""
    return tuple(sorted({p for p in (changed + "\n" + added).splitlines() if p.endswith(CODE_SUFFIXES)}))


def _differing(imported: dict[str, str], checkout: dict[str, str]) -> list[str]:
    return sorted(p for p in imported.keys() | checkout.keys() if imported.get(p) != checkout.get(p))


def _mismatch_message(checkout: Path, commit: str | None, differences: dict[str, tuple[Path | None, list[str], int]]) -> str:
    parts = []
    for name, (where, files, total) in differences.items():
        named = ", ".join(files[:_NAMED_FILES]) + (f" and {len(files) - _NAMED_FILES} more" if len(files) > _NAMED_FILES else "")
        source = f"imported from {where}" if where else "not importable"
        parts.append(f"package {name} ({source}) differs from {PACKAGES[name]}/ in the checkout in "
                     f"{len(files)} of {total} .py and .yaml files ({named})")
    at = f"commit {commit[:12]}" if commit else "an unknown commit"
    return (f"The code this run would execute is not the code of {checkout} ({at}), the checkout the run started in: "
            f"{'; '.join(parts)}. Install the clone into the worker's environment: `pip install -e {checkout}`, "
            f"or start the worker from an environment built from {at} "
            f"({ALLOW_ENV}=1 runs it anyway, tagged {MISMATCH_TAG}).")


def check_code_provenance(cwd: Path | str | None = None, imported: dict[str, Path | None] | None = None) -> Provenance:
    """Compare the imported packages (``imported``: package -> folder; default where this process
    imports them from) with the checkout ``cwd`` (default: the working folder) is in; raise
    :class:`CodeMismatchError` when they differ (a warning with ``SYLLABUS_ALLOW_CODE_MISMATCH=1``).
    Records the result for the run's MLflow tags and returns it."""
    global _recorded
    _recorded = None
    here = Path(cwd) if cwd is not None else Path.cwd()
    imported = imported if imported is not None else imported_dirs()
    digests = {name: file_digests(d) if d else {} for name, d in imported.items()}
    code_hash = tree_hash({f"{name}/{path}": digest for name, files in digests.items() for path, digest in files.items()})
    checkout = find_checkout(here)
    if checkout is None:
        _recorded = Provenance(code_hash)
        return _recorded
    commit = _git(checkout, "rev-parse", "HEAD")
    differences = {}
    for name, folder in PACKAGES.items():
        theirs = file_digests(checkout / folder)
        files = _differing(digests[name], theirs)
        if files:
            differences[name] = (imported[name], files, len(digests[name].keys() | theirs.keys()))
    if not differences:
        log.debug("code provenance: the imported code is %s at commit %s (code hash %s)", checkout, commit, code_hash[:12])
        _recorded = Provenance(code_hash, checkout, commit, uncommitted=uncommitted_files(checkout))
        return _recorded
    message = _mismatch_message(checkout, commit, differences)
    if os.environ.get(ALLOW_ENV, "").strip().lower() not in ("1", "true", "yes"):
        raise CodeMismatchError(message)
    log.warning("%s", message)
    _recorded = Provenance(code_hash, checkout, commit, message, uncommitted_files(checkout))
    return _recorded
