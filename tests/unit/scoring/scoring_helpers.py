"""Samples and helpers shared by the scorer tests (importable from any of them:
``from scoring_helpers import SAMPLES``; test modules import nothing from each other)."""

from __future__ import annotations

import torch

from syllabus.models.loading import LoadedModel
from syllabus.models.losses import token_nll

SAMPLES = [
    {"sample_id": "a", "instruction": "What is anemia?", "input": "", "output": "A lack of healthy red blood cells.",
     "messages": None},
    {"sample_id": "b", "instruction": "List two symptoms of flu and explain each briefly.", "input": "Adult patient.",
     "output": "Fever: the body raises its temperature. Cough: irritation of the airways, often dry.",
     "messages": None},
    {"sample_id": "c", "instruction": "Define BMI.", "input": "",
     "output": "Body mass index: weight in kilograms divided by height in metres squared.", "messages": None},
]

# The gradient and influence tests' batch: the three above and a fourth with a one-word answer.
GRADIENT_SAMPLES = SAMPLES + [
    {"sample_id": "d", "instruction": "Is aspirin an NSAID?", "input": "", "output": "Yes.", "messages": None},
]


def loaded_tiny_model(model, tok) -> LoadedModel:
    """A model and tokenizer made in the test, wrapped as the loader returns them (CPU, fp32)."""
    return LoadedModel(ref=None, model=model, tokenizer=tok, fingerprint="sha256:tiny", device="cpu",
                       dtype=torch.float32)


def one_backward_per_sample(lora, seq: list[int], prompt_len: int) -> dict[str, torch.Tensor]:
    """The plain definition of a sample's LoRA gradients (``lora`` a LoraGradients): the sample
    alone, mean response NLL from full logits, .grad."""
    for p in lora.peft_model.parameters():
        p.grad = None
    ids = torch.tensor([seq])
    with torch.enable_grad():
        logits = lora.peft_model(input_ids=ids).logits
        nll = token_nll(logits, ids)[0, prompt_len:]
        nll.mean().backward()
    out = {}
    for m in lora.modules:
        out[f"{m.name}.lora_A"] = m.a.weight.grad.detach().clone().reshape(-1)
        out[f"{m.name}.lora_B"] = m.b.weight.grad.detach().clone().reshape(-1)
    for p in lora.peft_model.parameters():
        p.grad = None
    return out
