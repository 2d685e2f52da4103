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
