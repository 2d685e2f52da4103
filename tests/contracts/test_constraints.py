"""constraints.txt, the environment tested together (issue 30), agrees with what asks for it:
every direct dependency that pyproject pins (extras included) and every data package the
Makefile installs is locked at the same version, the other direct dependencies at a version
their range allows, and every pip install of `make install` and of the Docker images is bound
by the file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
# Installed only in the GPU image, on top of the lock: vLLM brings its own CUDA stack.
UNLOCKED_EXTRAS = {"gpu"}


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert m, f"constraints.txt line {n} is not `name==version`: {line!r}; regenerate it with `make lock`"
        name = canonicalize_name(m[1])
        assert name not in pins, f"constraints.txt pins {m[1]} twice (line {n})"
        pins[name] = m[2]
    return pins


def _direct() -> list[tuple[str, Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        if extra not in UNLOCKED_EXTRAS:
            found += [(f"[{extra}]", Requirement(r)) for r in reqs]
    return found


def _makefile_var(name: str) -> str:
    m = re.search(rf"^{name}\s*:=\s*(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, f"Makefile defines no {name}"
    return m[1].strip()


def test_every_direct_dependency_is_locked_at_the_version_pyproject_asks_for():
    locked = _locked()
    wrong = []
    for where, req in _direct():
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            wrong.append(f"{req} ({where}) is not in constraints.txt")
            continue
        pins = [s.version for s in req.specifier if s.operator == "=="]
        if pins and Version(pins[0]) != Version(version):
            wrong.append(f"{req} ({where}) but constraints.txt has {req.name}=={version}")
        elif not req.specifier.contains(version, prereleases=True):
            wrong.append(f"{req} ({where}) does not allow the locked {req.name}=={version}")
    assert not wrong, "pyproject.toml and constraints.txt disagree; change both, or run `make lock`:\n" + "\n".join(wrong)


def test_the_data_packages_and_the_scheduler_safe_sqlalchemy_are_locked():
    locked = _locked()
    for spec in _makefile_var("DATA_PACKAGES").split():
        name, version = spec.split("==")
        assert locked.get(canonicalize_name(name)) == version, f"Makefile installs {spec}, constraints.txt has {locked.get(canonicalize_name(name))}"
    # SQLAlchemy 2.1 breaks Prefect 3.8.8's scheduler (tests/flows/test_scheduled_runs.py)
    assert Version(locked["sqlalchemy"]) < Version("2.1"), locked["sqlalchemy"]


def test_the_lock_has_no_build_labels_and_not_the_project_itself():
    locked = _locked()
    assert "syllabus" not in locked
    # torch==2.13.0 is met by the CPU build (2.13.0+cpu) here and in Dockerfile.cpu and by
    # the CUDA build in Dockerfile.gpu; a pinned +cpu label would refuse the latter
    assert not [f"{n}=={v}" for n, v in locked.items() if "+" in v]
    assert {"torch", "prefect", "pip", "setuptools"} <= set(locked)


def test_make_install_and_the_docker_images_install_under_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert _makefile_var("CONSTRAINTS") == "constraints.txt"
    pip = _makefile_var("PIP")
    assert re.search(r"pip install .*-c \$\(CONSTRAINTS\)", pip), pip
    stamp = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.M)
    assert stamp and "$(CONSTRAINTS)" in stamp[1].split(), "a changed constraints.txt must reinstall the venv"
    recipe = makefile[stamp.end():].split("\n\n", 1)[0]
    assert "$(PIP)" in recipe and "pip install" not in recipe, "every pip call of `make install` goes through $(PIP)"

    for dockerfile in sorted((ROOT / "docker").glob("Dockerfile*")):
        text = dockerfile.read_text().replace("\\\n", " ")
        assert re.search(r"^COPY .*constraints\.txt", text, re.M), f"{dockerfile.name} does not copy constraints.txt"
        calls = re.findall(r"pip install[^&\n]*", text)
        assert calls, dockerfile.name
        unbound = [c for c in calls if "-c constraints.txt" not in c]
        assert not unbound, f"{dockerfile.name} installs without the lock: {unbound}"
