"""LoRA supervised fine-tuning (Hu et al., ICLR 2022; arXiv 2106.09685) of the target model.

The loss of an optimizer step is the mean NLL over every response token of the step's
samples (``sum NLL / number of response tokens``, prompt positions masked with -100),
accumulated exactly over micro-batches: each micro-batch contributes ``its NLL sum / the
step's token count``, so the gradient equals that of one big batch whatever the micro-batch
size. Per-token NLL comes from the shared :func:`syllabus.models.losses.token_nll`.
Lower loss is better.

The adapter (peft's ``adapter_config.json`` and ``adapter_model.safetensors`` plus a
``training.json`` manifest, :mod:`syllabus.models.adapters`) is committed to the store as one
deterministic tar under a key made of everything that changes it: base model fingerprint,
config, the templated training tokens and this module's version. A committed key is reused,
not retrained.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from syllabus.models.adapters import read_adapter_manifest, save_adapter
from syllabus.store import Store, content_hash
from syllabus.training.config import FinetuneConfig
from syllabus.training.data import IGNORE_INDEX, TrainExample, build_examples, collate

log = logging.getLogger(__name__)

VERSION = 1
ADAPTER_PREFIX = "adapters"


@dataclass
class FinetuneResult:
    adapter_url: str
    adapter_key: str
    train_loss: float  # mean response-token NLL of the last optimizer step
    train_loss_mean: float  # token-weighted mean over the whole run
    samples: int
    steps: int
    seconds: float
    cached: bool = False
    losses: list[float] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    compute_seconds: float | None = None  # what training took when it ran (a cached result: then, not now)

    def to_json(self) -> dict:
        return {
            "adapter": self.adapter_url,
            "train_loss": self.train_loss,
            "train_loss_mean": self.train_loss_mean,
            "samples": self.samples,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "cached": self.cached,
            "compute_seconds": round(self.seconds if self.compute_seconds is None else self.compute_seconds, 2),
            "losses": self.losses,
            **({"counts": self.counts} if self.counts else {}),
        }


def response_loss(model: Any, batch: dict, n_targets: int):
    """``(loss, nll_sum)``: the NLL summed over label positions, divided by ``n_targets``.

    Labels equal the input ids wherever they are not -100 (see ``data.build_examples``), so
    the per-token NLL of the inputs read at the label positions is the response NLL.
    """
    import torch

    from syllabus.models.losses import token_nll

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    nll = token_nll(out.logits, batch["input_ids"])
    mask = batch["labels"] != IGNORE_INDEX
    total = torch.where(mask, nll, torch.zeros_like(nll)).sum()
    return total / n_targets, total.detach()


def make_lora_model(model: Any, config: FinetuneConfig):
    """Wrap ``model`` with fresh LoRA adapters (seeded init; B = 0, so the output is unchanged)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    target = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, lora)


def _schedule(optimizer: Any, config: FinetuneConfig, total_steps: int):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup = math.ceil(config.warmup_ratio * total_steps)
    if config.lr_scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if config.lr_scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def training_order(n: int, config: FinetuneConfig) -> list[int]:
    """Sample indices in training order: a seeded shuffle per epoch, cut at ``epochs * n``."""
    rng = random.Random(config.seed)
    order: list[int] = []
    for _ in range(math.ceil(config.epochs)):
        perm = list(range(n))
        rng.shuffle(perm)
        order.extend(perm)
    return order[: max(1, round(config.epochs * n))] if n else []


def micro_batches(step_examples: Sequence[TrainExample], micro_batch_size: int, max_tokens: int | None) -> list[list[TrainExample]]:
    """Split a step into micro-batches of similar lengths, at most ``micro_batch_size``
    samples and ``max_tokens`` padded tokens each (a longer sample goes alone)."""
    ordered = sorted(step_examples, key=lambda e: len(e.input_ids))
    out: list[list[TrainExample]] = []
    current: list[TrainExample] = []
    for e in ordered:
        longest = len(e.input_ids)  # sorted ascending: the newcomer is the longest
        if current and (len(current) >= micro_batch_size or (max_tokens and (len(current) + 1) * longest > max_tokens)):
            out.append(current)
            current = []
        current.append(e)
    if current:
        out.append(current)
    return out


def accumulate_gradients(
    model: Any, step_examples: Sequence[TrainExample], micro_batch_size: int, pad_id: int, device: Any,
    on_micro_batch: Any = None, max_tokens: int | None = None,
) -> float:
    """Backpropagate one optimizer step's loss (mean NLL over all its response tokens) in
    micro-batches; returns the step's NLL sum. The gradient does not depend on how the step
    is split: each micro-batch's NLL sum is divided by the step's token count, and a sum does
    not care about grouping (similar lengths share a micro-batch to waste less padding)."""
    n_targets = sum(e.n_targets for e in step_examples)
    step_nll = 0.0
    for micro in micro_batches(step_examples, micro_batch_size, max_tokens):
        batch = {k: v.to(device) for k, v in collate(micro, pad_id).items()}
        loss, total = response_loss(model, batch, n_targets)
        loss.backward()
        step_nll += float(total)
        if on_micro_batch is not None:
            on_micro_batch(len(micro))
    return step_nll


# Called after every optimiser step with (samples done, samples in all, last step's loss).
ProgressCallback = Callable[[int, int, float], None]


def train_lora(
    model: Any, tokenizer: Any, examples: Sequence[TrainExample], config: FinetuneConfig, progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> tuple[Any, dict]:
    """Train LoRA adapters on ``examples``; returns ``(peft_model, stats)``.

    ``progress`` shows a terminal bar; whatever it says, every tenth of the way is also logged
    (so a flow's log shows how far a long fine-tune is), and ``on_progress`` is called after
    every step."""
    import torch

    if not examples:
        raise ValueError("no training examples: every sample was too long or had an empty response")
    torch.manual_seed(config.seed)
    peft_model = make_lora_model(model, config)
    device = next(peft_model.parameters()).device
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    order = training_order(len(examples), config)
    steps = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    scheduler = _schedule(optimizer, config, len(steps))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    peft_model.train()
    losses: list[float] = []
    nll_sum, token_sum = 0.0, 0
    bar = tqdm(total=len(order), desc="finetune", unit="sample", disable=not progress)
    started, done, next_log = time.perf_counter(), 0, 0.1
    for step_indices in steps:
        step_examples = [examples[i] for i in step_indices]
        n_targets = sum(e.n_targets for e in step_examples)
        optimizer.zero_grad(set_to_none=True)
        step_nll = accumulate_gradients(peft_model, step_examples, config.micro_batch_size, pad_id, device,
                                        on_micro_batch=bar.update, max_tokens=config.max_micro_batch_tokens)
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(step_nll / n_targets)
        nll_sum += step_nll
        token_sum += n_targets
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        done += len(step_indices)
        if on_progress is not None:
            on_progress(done, len(order), losses[-1])
        if done >= next_log * len(order):
            elapsed = time.perf_counter() - started
            log.info("finetune: %d/%d samples seen (%d%%), step %d/%d, loss %.4f, %.0f s elapsed, about %.0f s left",
                     done, len(order), 100 * done // len(order), len(losses), len(steps), losses[-1], elapsed,
                     elapsed * (len(order) - done) / done)
            next_log = math.floor(10 * done / len(order) + 1) / 10
    bar.close()
    peft_model.eval()
    return peft_model, {
        "losses": losses,
        "train_loss": losses[-1],
        "train_loss_mean": nll_sum / token_sum,
        "steps": len(steps),
        "samples_seen": len(order),
        "tokens": token_sum,
    }


# ------------------------------------------------------------------ store
def adapter_key(fingerprint: str, config: FinetuneConfig, examples: Sequence[TrainExample]) -> str:
    data_hash = content_hash([[e.input_ids, e.labels] for e in examples], 20)
    digest = content_hash({"v": VERSION, "model": fingerprint, "config": config.model_dump(mode="json"), "data": data_hash}, 20)
    return f"{ADAPTER_PREFIX}/{digest}/adapter.tar"


def finetune(
    model: Any,
    tokenizer: Any,
    samples: Sequence[Any],
    config: FinetuneConfig,
    store: Store,
    model_fingerprint: str,
    base_model: str = "",
    force: bool = False,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> FinetuneResult:
    """Template ``samples``, train LoRA on ``model`` (modified in place) and commit the adapter."""
    start = time.perf_counter()
    examples, counts = build_examples(tokenizer, samples, config.cutoff)
    key = adapter_key(model_fingerprint, config, examples)
    if not force and store.is_committed(key):
        manifest = read_adapter_manifest(store.url(key))
        log.info("adapter %s already committed; reusing it (pass force to retrain)", store.url(key))
        return FinetuneResult(store.url(key), key, manifest["train_loss"], manifest["train_loss_mean"],
                              manifest["samples"], manifest["steps"], time.perf_counter() - start, True,
                              manifest["losses"], manifest.get("counts", {}), manifest.get("seconds"))
    peft_model, stats = train_lora(model, tokenizer, examples, config, progress=progress, on_progress=on_progress)
    seconds = time.perf_counter() - start
    manifest = {
        "base_model": base_model,
        "model_fingerprint": model_fingerprint,
        "config": config.model_dump(mode="json"),
        "samples": len(examples),
        "sample_ids": [e.sample_id for e in examples],
        "counts": counts,
        "seconds": round(seconds, 2),
        "version": VERSION,
        **stats,
    }
    save_adapter(peft_model, store, key, manifest)
    return FinetuneResult(store.url(key), key, stats["train_loss"], stats["train_loss_mean"], len(examples),
                          stats["steps"], seconds, False, stats["losses"], counts)
