"""Load a model and tokenizer from a :class:`ModelRef`, once per process."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from syllabus.models.ref import ModelRef, default_device, fingerprint, resolve

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    ref: ModelRef
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerFast
    fingerprint: str
    device: str
    dtype: Any  # torch.dtype


_CACHE: dict[tuple, LoadedModel] = {}
_LOCK = threading.Lock()


def check_device(device: str) -> str:
    """``device`` when torch can compute on it here, else a ValueError saying why: checked
    before a model loads (or a pool is ingested), since ``model.to(device)`` would fail only
    after the weights were read."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"device {device!r} is not a torch device ({str(exc).splitlines()[0][:120]}); use cpu, cuda, cuda:N or mps"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} needs CUDA, which torch cannot use on this machine; use cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {device!r} does not exist: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif parsed.type == "meta":
        raise ValueError(f"device {device!r} holds no weights (a meta device cannot compute); use cpu, cuda or mps")
    elif parsed.type != "cpu":
        backend = getattr(torch.backends, parsed.type, None) or getattr(torch, parsed.type, None)
        available = getattr(backend, "is_available", None)
        if available is not None and not available():
            raise ValueError(f"device {device!r} is not available on this machine; use cpu or cuda")
    return device


def pick_dtype(device: str, dtype: str | None = None):
    import torch

    if dtype:
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):  # getattr(torch, "cuda") is a module, not a dtype
            raise ValueError(f"dtype {dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
        return value
    # fp32 on CPU (bf16 matmuls are slow there), bf16 on GPU.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_model(
    spec: str | ModelRef,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = "sdpa",
    reuse: bool = True,
) -> LoadedModel:
    """Load (or reuse from this process's cache) the model named by ``spec``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = spec if isinstance(spec, ModelRef) else resolve(spec)
    device = check_device(device or default_device())
    torch_dtype = pick_dtype(device, dtype)
    key = (ref, device, str(torch_dtype), trust_remote_code, attn_implementation)
    with _LOCK:
        if reuse and key in _CACHE:
            return _CACHE[key]
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if ref.kind == "gguf":
            kwargs["gguf_file"] = ref.gguf_file
        if ref.kind == "hub" and ref.revision:
            kwargs["revision"] = ref.revision
        log.info("loading model %s on %s (%s)", ref.spec, device, torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(ref.path, **kwargs)
        model_kwargs = dict(kwargs, dtype=torch_dtype)
        if attn_implementation:
            model_kwargs["attn_implementation"] = attn_implementation
        model = AutoModelForCausalLM.from_pretrained(ref.path, **model_kwargs)
        model.to(device).eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        loaded = LoadedModel(ref, model, tokenizer, fingerprint(ref), device, torch_dtype)
        if reuse:
            _CACHE[key] = loaded
        return loaded


def export_hf_dir(lm: LoadedModel, out_dir: str) -> str:
    """Write a loaded model as a plain Hugging Face directory (safetensors, config without
    the GGUF quantization entry, tokenizer with its chat template). vLLM 0.32 (CPU build,
    measured here) fails to read the SmolLM2 GGUF ("config file ... is not a valid JSON
    file") but serves the exported directory; the weights are the dequantized GGUF tensors,
    so its numbers match the transformers engine."""
    from pathlib import Path

    config = lm.model.config.to_dict()
    config.pop("quantization_config", None)
    model = type(lm.model)(type(lm.model.config).from_dict(config))
    model.load_state_dict(lm.model.state_dict())
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    lm.tokenizer.save_pretrained(out_dir)
    return out_dir


# ------------------------------------------------------------------ models given as URLs
_FETCH_LOCK = threading.Lock()
_SOURCE_FILE = ".syllabus-source.json"


def model_cache_dir() -> "Path":
    """Where models given as URLs are copied: $SYLLABUS_MODEL_CACHE, else ~/.cache/syllabus/models."""
    import os
    from pathlib import Path

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
    from pathlib import Path

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
