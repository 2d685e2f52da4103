"""LoRA adapters as store objects: peft's ``adapter_config.json`` and
``adapter_model.safetensors`` plus a ``training.json`` manifest, committed as one
byte-for-byte reproducible tar; read back onto a base model (optionally merged).

Fine-tuning writes them (:mod:`syllabus.training.lora`) and evaluation applies them
(:mod:`syllabus.evaluation.runner`); the format lives here, below both, so neither imports
the other for it.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from syllabus.store import Store


def _tar_dir(directory: Path) -> bytes:
    """A byte-for-byte reproducible tar of ``directory`` (sorted names, zeroed times and owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            data = path.read_bytes()
            info = tarfile.TarInfo(str(path.relative_to(directory)))
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def save_adapter(peft_model: Any, store: Store, key: str, manifest: dict) -> dict:
    """Commit the adapter files and ``manifest`` as one tar at ``key``; returns the marker."""
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)
        Path(tmp, "training.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        data = _tar_dir(Path(tmp))
    # The marker carries the training record too, so a store that keeps markers but drops the
    # weights (a pruned adapter) still knows what was trained and how it went.
    return store.commit(key, data, {"kind": "lora_adapter", "base_model": manifest.get("base_model"),
                                    "train_loss": manifest.get("train_loss"), "samples": manifest.get("samples"),
                                    "training": manifest})


class AdapterPrunedError(FileNotFoundError):
    """The adapter's marker is in the store but its weights are not."""


def adapter_bytes(url: str) -> bytes:
    """The committed adapter tar at ``url`` (checksum verified), or an error that says what is
    missing and how to get it back. A local FIFO or device is refused unopened."""
    from syllabus.inputs import refuse_special_file

    refuse_special_file(url, "adapter")
    store, key = Store.open_url(url)
    marker = store.marker(key)
    if marker is None:
        raise FileNotFoundError(f"adapter {url} has no commit marker; it was never finished (rerun `syllabus finetune`)")
    if not store.exists(key):
        raise AdapterPrunedError(
            f"adapter {url} is pruned: its marker and training record are in the store but its weights are not "
            f"(a store carried without adapters); retrain it with `syllabus finetune --force` on the same selection "
            f"and settings, or copy the adapter into the store")
    return store.read_committed(key, marker=marker)


def read_adapter_manifest(url: str) -> dict:
    with tarfile.open(fileobj=io.BytesIO(adapter_bytes(url))) as tar:
        return json.loads(tar.extractfile("training.json").read())


def load_adapter(model: Any, url: str, merge: bool = True) -> Any:
    """Apply the committed adapter at ``url`` to ``model`` (checksum verified).

    With ``merge`` the LoRA deltas are folded into the weights (plain model, full-speed
    inference). ``model`` is modified in place: pass a private copy, not a cached one.
    """
    from peft import PeftModel

    data = adapter_bytes(url)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        peft_model = PeftModel.from_pretrained(model, tmp)
        peft_model.eval()
        return peft_model.merge_and_unload() if merge else peft_model
