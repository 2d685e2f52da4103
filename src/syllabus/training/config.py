"""Fine-tuning configuration: the 3DS paper's LoRA defaults, every one overridable."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FinetuneConfig(BaseModel):
    """LoRA supervised fine-tuning settings.

    Defaults follow the 3DS paper (arXiv 2410.10901, section 4.1): LoRA rank 8 on all linear
    layers, learning rate 5e-5, cosine schedule with warmup ratio 0.1, one epoch, cutoff 1024
    tokens, batch 64. The effective batch is reached by gradient accumulation over
    micro-batches of ``micro_batch_size`` samples, so memory does not depend on it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    lora_rank: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha (the update is scaled by alpha / rank)")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA path")
    # "all-linear": every nn.Linear of the transformer blocks (peft excludes the output head).
    target_modules: str | tuple[str, ...] = Field(
        "all-linear", description="modules that get LoRA adapters: all-linear, or a list of module names")
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate (AdamW)")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate schedule after the warmup")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="share of the steps spent warming the learning rate up")
    epochs: float = Field(1.0, gt=0, description="passes over the selected samples (fractions allowed)")
    cutoff: int = Field(1024, ge=8, description="max tokens per sample; longer samples are truncated")
    batch_size: int = Field(64, ge=1, description="effective batch: samples per optimizer step")
    micro_batch_size: int = Field(4, ge=1, description="samples per forward pass (gradient accumulation makes up the batch)")
    # A micro-batch also stops at this many padded tokens: on CPU the attention of one
    # 1024-token sequence already costs more memory than four short ones.
    max_micro_batch_tokens: int | None = Field(2048, ge=1, description="a micro-batch also stops at this many padded tokens")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping norm; empty for none")
    seed: int = Field(0, description="seed for the adapter initialisation and the sample order")
    dtype: str | None = Field(None, description="float32 / bfloat16 / float16; empty: bf16 on GPU, fp32 on CPU")

    @property
    def gradient_accumulation_steps(self) -> int:
        return -(-self.batch_size // self.micro_batch_size)
