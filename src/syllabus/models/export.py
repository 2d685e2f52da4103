"""Write a model as a plain Hugging Face folder that trainers load (``syllabus model export``).

The shipped model is a Q4_1 GGUF; LLaMA-Factory and TRL want a folder with ``config.json``,
safetensors weights, a tokenizer and a generation config. transformers reads the GGUF (the
weights dequantized, the tokenizer rebuilt from the GGUF's vocabulary), and this module writes
what it read, with four things made explicit so the folder means the same to every reader:

- **The eos token.** Rule: a chat model's eos is the special token its chat template writes
  right after an assistant message's content (the end of a turn): generation must stop there,
  and trainers append the eos to every answer. For SmolLM2-Instruct that is ``<|im_end|>``.
  A tokenizer whose eos disagrees (a hand conversion of this GGUF gave ``<|im_start|>``) is
  corrected, with a warning; without a chat template, or when the template ends a turn with no
  special token, the tokenizer's own eos stays. ``config.json`` and ``generation_config.json``
  get the same token id.
- **Older readers.** transformers 5 writes ``tokenizer_class: TokenizersBackend``,
  ``rope_parameters`` and ``dtype``; transformers 4 (which LLaMA-Factory 0.9.5 and TRL 0.24
  run on) knows none of them and would fail on the first, and silently use the default rope
  base for the second. The folder also carries ``PreTrainedTokenizerFast`` (the same
  ``tokenizer.json``), ``rope_theta`` and ``torch_dtype``, and the chat template inside
  ``tokenizer_config.json`` as well as in ``chat_template.jinja``.
- **Length.** ``model_max_length`` is the model's context length, not transformers'
  "unlimited" 1e30.
- **Weights.** float32 by default: the dequantized GGUF values exactly, so a model trained
  from the folder starts from the numbers Syllabus scored with.

The folder is written to a temporary sibling and renamed into place, so a failed export leaves
no half-written model where a trainer would look.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from syllabus.models.ref import ModelRef, fingerprint, resolve

log = logging.getLogger(__name__)

# What an assistant message holds while the chat template is rendered to find the end of a turn.
_SENTINEL = "SYLLABUS-END-OF-TURN-PROBE"
_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EosChoice:
    token: str | None  # the eos the folder gets
    previous: str | None  # the tokenizer's eos before the rule
    reason: str

    @property
    def changed(self) -> bool:
        return self.token != self.previous


def special_tokens(tokenizer: Any) -> list[str]:
    """Every special token of ``tokenizer``: the named ones and added tokens marked special."""
    names = set(tokenizer.all_special_tokens)
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    names.update(t.content for t in decoder.values() if getattr(t, "special", False))
    return sorted(names)


def end_of_turn_token(tokenizer: Any) -> str | None:
    """The special token the tokenizer's chat template writes right after an assistant
    message's content, or None (no template, a template that fails on a plain user/assistant
    exchange, or no special token there)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as exc:  # a template may insist on other roles; then it cannot tell us
        log.warning("the chat template did not render a user/assistant exchange (%s); eos left as it is", exc)
        return None
    if _SENTINEL not in text:
        return None
    tail = text.rsplit(_SENTINEL, 1)[1]
    # The longest match wins: a template may end turns with "<|im_end|>" while "<|im" is also special.
    matches = [t for t in special_tokens(tokenizer) if t and tail.startswith(t)]
    return max(matches, key=len) if matches else None


def choose_eos(tokenizer: Any) -> EosChoice:
    """Apply the module's eos rule to ``tokenizer`` (see the module docstring); changes the
    tokenizer's eos (and a missing pad) in place and says what it did."""
    previous = tokenizer.eos_token
    token = end_of_turn_token(tokenizer)
    if token is None:
        reason = "kept the tokenizer's eos: the chat template names no end-of-turn token"
        choice = EosChoice(previous, previous, reason)
    elif token == previous:
        choice = EosChoice(token, previous, f"the chat template ends each assistant turn with {token}, the tokenizer's eos")
    else:
        reason = f"the chat template ends each assistant turn with {token}; the tokenizer's eos was {previous}"
        log.warning("eos corrected to %s: %s", token, reason)
        tokenizer.eos_token = token
        choice = EosChoice(token, previous, reason)
    if tokenizer.pad_token is None and choice.token is not None:
        tokenizer.pad_token = choice.token
    return choice


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a destination that would lose someone's files."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; name a folder for the model")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"--out {out} already holds files; pass --overwrite to replace the folder, or name an empty or new one"
        )


def _eos_ids(existing: Any, eos_id: int) -> int | list[int]:
    # A config may list several stop ids (Llama 3's <|end_of_text|> and <|eot_id|>): keep them, ours first.
    if isinstance(existing, (list, tuple)):
        return [eos_id] + [i for i in existing if i != eos_id]
    return eos_id


def _patch_json(path: Path, changes: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
    data = json.loads(path.read_text())
    for key in drop:
        data.pop(key, None)
    data.update(changes)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_hf_dir(model: Any, tokenizer: Any, out_dir: str | Path, dtype: str = "float32") -> EosChoice:
    """Write ``model`` and ``tokenizer`` into ``out_dir`` as a Hugging Face folder that
    transformers 4 and 5 load (see the module docstring); returns the eos decision."""
    import torch
    from transformers import GenerationConfig

    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one an exported model can have; use {', '.join(_DTYPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(model.config, "quantization_config", None) is not None:
        # A quantized load would be written back quantized; rebuild it plain.
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        plain = type(model)(type(model.config).from_dict(config))
        plain.load_state_dict(model.state_dict())
        model = plain
    model = model.to(getattr(torch, dtype))
    eos = choose_eos(tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids(eos.token) if eos.token is not None else None
    pad_id = tokenizer.pad_token_id
    if eos_id is not None:
        model.config.eos_token_id = _eos_ids(model.config.eos_token_id, eos_id)
    if pad_id is not None:
        model.config.pad_token_id = pad_id
    old = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=_eos_ids(old.eos_token_id, eos_id) if eos_id is not None else old.eos_token_id,
        pad_token_id=pad_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    config_changes: dict[str, Any] = {"torch_dtype": dtype}
    rope = json.loads((out / "config.json").read_text()).get("rope_parameters") or {}
    if "rope_theta" in rope:
        config_changes["rope_theta"] = rope["rope_theta"]
    _patch_json(out / "config.json", config_changes)

    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    tok_changes: dict[str, Any] = {}
    if tok_config.get("tokenizer_class") in (None, "TokenizersBackend"):
        tok_changes["tokenizer_class"] = "PreTrainedTokenizerFast"
    context = getattr(model.config, "max_position_embeddings", None)
    if context and (tok_config.get("model_max_length") or 0) > context:
        tok_changes["model_max_length"] = context
    if tokenizer.chat_template:
        tok_changes["chat_template"] = tokenizer.chat_template
    # transformers 4's PreTrainedTokenizerFast would also return token_type_ids, which a Llama's
    # generate() rejects; name the inputs this tokenizer actually gives.
    tok_changes["model_input_names"] = list(tokenizer.model_input_names)
    _patch_json(out / "tokenizer_config.json", tok_changes, drop=("is_local", "local_files_only"))
    return eos


@dataclass(frozen=True)
class ExportResult:
    out: str
    source: str
    fingerprint: str
    dtype: str
    eos_token: str | None
    eos_reason: str
    eos_changed: bool
    files: list[str]
    seconds: float


def export_model(spec: str | ModelRef, out: str | Path, overwrite: bool = False, dtype: str = "float32") -> ExportResult:
    """Load the model named by ``spec`` on the CPU and write it to ``out`` as a Hugging Face
    folder (through a temporary sibling renamed into place)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    if dtype not in _DTYPES:
        raise ValueError(f"--dtype {dtype!r} is not one an exported model can have; use {', '.join(_DTYPES)}")
    ref = spec if isinstance(spec, ModelRef) else resolve(spec)
    out = Path(out).expanduser().resolve()
    check_out_dir(out, overwrite)
    kwargs: dict[str, Any] = {}
    if ref.kind == "gguf":
        kwargs["gguf_file"] = ref.gguf_file
    if ref.kind == "hub" and ref.revision:
        kwargs["revision"] = ref.revision
    log.info("reading %s for export", ref.spec)
    tokenizer = AutoTokenizer.from_pretrained(ref.path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype="float32", **kwargs)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        eos = write_hf_dir(model, tokenizer, tmp, dtype)
        result = ExportResult(
            out=str(out), source=ref.spec, fingerprint=fingerprint(ref), dtype=dtype,
            eos_token=eos.token, eos_reason=eos.reason, eos_changed=eos.changed,
            files=sorted(p.name for p in tmp.iterdir()) + ["syllabus-export.json"],
            seconds=0.0,
        )
        (tmp / "syllabus-export.json").write_text(json.dumps(
            {k: v for k, v in asdict(result).items() if k not in ("out", "files", "seconds")}, indent=2) + "\n")
        # transformers writes the weights through a private temporary file (mode 0600); a trainer
        # running as another user (a container) must be able to read them, as the umask allows.
        umask = os.umask(0)
        os.umask(umask)
        for path in tmp.iterdir():
            path.chmod(0o666 & ~umask)
        check_out_dir(out, overwrite)  # again: something may have appeared while we wrote
        if out.exists():
            old = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:8]}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    log.info("exported %s to %s in %.1f s", ref.spec, out, seconds)
    return ExportResult(**{**asdict(result), "seconds": seconds})
