"""Models given as URLs (``s3://bucket/models/name``): copied once per machine into a local
cache, then read like any local model. Below :mod:`syllabus.models.ref`, which sends a URL here,
and free of :mod:`syllabus.models.loading` (which imports ``ref``)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_FETCH_LOCK = threading.Lock()
_SOURCE_FILE = ".syllabus-source.json"


def model_cache_dir() -> Path:
    """Where models given as URLs are copied: $SYLLABUS_MODEL_CACHE, else ~/.cache/syllabus/models."""
    import os

    return Path(os.environ.get("SYLLABUS_MODEL_CACHE") or Path.home() / ".cache" / "syllabus" / "models").expanduser()


def fetch_model_url(url: str) -> str:
    """A local copy of the model at ``url`` (``s3://bucket/models/name``: a Hugging Face model
    folder, or a ``.gguf`` file), made once per machine and refreshed when the objects there
    change (their names, sizes and ETags are kept beside the copy). Returns the local folder or
    .gguf path, which :func:`resolve` then reads like any local model (its fingerprint hashes
    the same bytes on every machine, so cache keys agree)."""
    import hashlib
    import json
    import shutil
    import tempfile

    import fsspec

    from syllabus.store.credentials import adopt_credentials, redact

    clean = adopt_credentials(url).rstrip("/")
    try:
        fs, root = fsspec.core.url_to_fs(clean)
        listing = fs.find(root, detail=True) if fs.isdir(root) else {root: fs.info(root)}
    except Exception as exc:  # unknown protocol, refused credentials, no endpoint
        raise FileNotFoundError(f"model {redact(url)} cannot be read ({type(exc).__name__}: {exc}); check the URL, "
                                "AWS_ENDPOINT_URL and the credentials") from exc
    listing = {k: v for k, v in listing.items() if v.get("type", "file") == "file"}
    if not listing:
        raise FileNotFoundError(f"model {redact(url)} names no object; give the URL of a Hugging Face model folder "
                                "(with config.json) or of a .gguf file")
    source = {"url": clean, "files": {str(k)[len(root):].lstrip("/") or Path(root).name:
                                      [v.get("size"), str(v.get("ETag") or v.get("etag") or v.get("mtime") or "")]
                                      for k, v in sorted(listing.items())}}
    name = Path(root).name or "model"
    target = model_cache_dir() / f"{hashlib.sha256(clean.encode()).hexdigest()[:16]}-{name}"
    with _FETCH_LOCK:
        marker = target / _SOURCE_FILE
        if not (marker.exists() and json.loads(marker.read_text()) == source):
            log.info("copying model %s to %s (%d files)", redact(clean), target, len(listing))
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                for rel in source["files"]:
                    remote = f"{root}/{rel}" if fs.isdir(root) else root
                    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    fs.get(remote, str(staging / rel))
                (staging / _SOURCE_FILE).write_text(json.dumps(source))
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)  # the copy appears whole or not at all
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    single = [f for f in source["files"] if f.endswith(".gguf")]
    if not (target / "config.json").exists() and len(source["files"]) == 1 and single:
        return str(target / single[0])
    return str(target)
