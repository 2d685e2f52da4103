"""A LoRA adapter as an MLflow logged model, so a team can register, version and load it.

The model is a pyfunc whose artifacts are the adapter files exactly as fine-tuning committed
them (peft's ``adapter_config.json`` and ``adapter_model.safetensors`` plus ``training.json``)
and whose config names the base model and its fingerprint; the base weights are not copied
(they are the model ref's, hundreds of MB to GB). Loading resolves the base model the way
every Syllabus command does, refuses weights whose fingerprint differs from the ones the
adapter was trained on, and merges the adapter. ``predict`` takes instructions and returns
the greedy answers, so ``mlflow.pyfunc.load_model("models:/NAME/1").predict([...])`` checks
a registered adapter in one line.
"""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128


class LoraAdapterModel(mlflow.pyfunc.PythonModel):
    """Base model + LoRA adapter, merged at load; greedy answers to instructions."""

    def load_context(self, context: Any) -> None:
        from peft import PeftModel

        from syllabus.models import load_model

        config = context.model_config
        lm = load_model(config["base_model"], reuse=False)  # merging modifies the weights: a private copy
        want = config.get("model_fingerprint")
        if want and lm.fingerprint != want:
            raise ValueError(f"base model {config['base_model']!r} now has fingerprint {lm.fingerprint}, but the adapter "
                             f"was trained on {want}; point the model ref at the weights it was trained on")
        lm.model = PeftModel.from_pretrained(lm.model, context.artifacts["adapter"]).merge_and_unload().eval()
        self.lm = lm
        self.max_new_tokens = int(config.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))

    # No type hints on model_input: MLflow would infer a signature from them that has no
    # params, and max_new_tokens would be dropped at inference time.
    def predict(self, context: Any, model_input, params: dict[str, Any] | None = None) -> list[str]:
        from syllabus.models.chat import encode_prompt
        from syllabus.models.engines import TransformersEngine

        if hasattr(model_input, "iloc"):  # pyfunc hands a list of strings over as a one-column DataFrame
            model_input = model_input.iloc[:, 0].tolist()
        elif isinstance(model_input, str):
            model_input = [model_input]
        max_new = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        tokenizer = self.lm.tokenizer
        prompts = [encode_prompt(tokenizer, {"instruction": str(text)}).input_ids for text in model_input]
        answers = TransformersEngine.from_loaded(self.lm, progress=False).generate(prompts, max_new)
        return [tokenizer.decode(ids, skip_special_tokens=True) for ids in answers]


def _requirements() -> list[str]:
    """Pinned from this environment: inferring them would load the model in a subprocess."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("syllabus", "peft", "transformers", "torch", "safetensors"):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out


def log_adapter(adapter_url: str, name: str = "adapter", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Any:
    """Log the committed adapter at ``adapter_url`` as a logged model of the active run;
    returns MLflow's ``ModelInfo`` (``model_uri`` is what ``mlflow.register_model`` takes)."""
    import json

    from syllabus.models.adapters import adapter_bytes

    data = adapter_bytes(adapter_url)
    with tempfile.TemporaryDirectory() as tmp:
        adapter_dir = Path(tmp) / "adapter"
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(adapter_dir, filter="data")
        manifest = json.loads((adapter_dir / "training.json").read_text())
        if not manifest.get("base_model"):
            raise ValueError(f"adapter {adapter_url} does not name its base model in training.json; retrain it with "
                             "`syllabus finetune --model ...`")
        from mlflow.models import infer_signature

        # Instructions in, answers out; max_new_tokens can be changed per call.
        signature = infer_signature(["What are the symptoms of anaemia?"], ["Tiredness and pale skin."],
                                    params={"max_new_tokens": max_new_tokens})
        info = mlflow.pyfunc.log_model(
            name=name,
            # From code, not a pickle: loading runs syllabus's own module, never unpickles bytes.
            python_model=str(Path(__file__).with_name("adapter_pyfunc.py")),
            artifacts={"adapter": str(adapter_dir)},
            model_config={"base_model": manifest["base_model"], "model_fingerprint": manifest.get("model_fingerprint"),
                          "max_new_tokens": max_new_tokens},
            signature=signature,
            pip_requirements=_requirements(),
            metadata={"adapter_url": adapter_url, "base_model": manifest["base_model"],
                      "train_loss": manifest.get("train_loss"), "samples": manifest.get("samples")},
            params={"base_model": manifest["base_model"], "adapter_url": adapter_url},
            tags={"syllabus.kind": "lora_adapter"},
        )
    log.info("logged adapter %s as %s", adapter_url, info.model_uri)
    return info
