"""LESS's LoRA warm-up (Xia et al., ICML 2024; arXiv 2402.04333): checkpoints whose adapters and
Adam moments the influence scorer takes gradients at.

LoRA is trained on a seeded ``fraction`` of the pool for ``epochs`` epochs by the training
module's loop (:func:`syllabus.training.lora.train_steps`: AdamW, the schedule, exact
gradient accumulation over micro-batches, response-only loss); the steps of an epoch never
run into the next one, and the adapters and Adam moments at the end of every epoch are the
checkpoints, with the mean learning rate of that epoch as their weight ``eta_c``.
Checkpoints are committed to the store under a key of everything that changes them and
reused from there.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from syllabus.scoring.base import ScorerConfig
from syllabus.scoring.lora_gradients import LoraGradients, LoraSettings
from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

WARMUP_VERSION = 1


class WarmupSettings(ScorerConfig):
    """LESS's warm-up (paper: 5% of the data, 4 epochs, lr 2e-5, linear decay, warmup 3%)."""

    fraction: float = Field(0.05, gt=0, le=1)
    epochs: int = Field(4, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "linear"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    batch_size: int = Field(32, ge=1)
    micro_batch_size: int = Field(4, ge=1)
    max_grad_norm: float | None = 1.0
    cutoff: int = 1024
    seed: int = 0


@dataclass
class Checkpoint:
    epoch: int
    weights: dict | None  # canonical LoRA name -> tensor; None = fresh init
    moments: dict | None  # canonical name -> (exp_avg, exp_avg_sq)
    lr: float
    url: str | None = None


def in_fraction(sample_id: str, fraction: float, seed: int) -> bool:
    """A seeded, order-free coin per sample: the warm-up subset can be picked shard by shard."""
    h = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def warmup_samples(pool_manifest_url: str, fraction: float, seed: int) -> list[dict]:
    from syllabus.pool.manifest import load_manifest, read_shard

    out = []
    for shard in load_manifest(pool_manifest_url)["shards"]:
        for row in read_shard(shard).to_pylist():
            if in_fraction(str(row["sample_id"]), fraction, seed):
                out.append(row)
    return out


def checkpoint_bytes(ck: Checkpoint) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"epoch": ck.epoch, "weights": ck.weights, "moments": ck.moments, "lr": ck.lr}, buf)
    return buf.getvalue()


def read_checkpoint(url: str) -> dict:
    """A committed warm-up checkpoint: ``{"epoch", "weights", "moments", "lr"}``."""
    import torch

    store, key = Store.open_url(url)
    return torch.load(io.BytesIO(store.read_committed(key)), weights_only=True)


def warmup_checkpoints(lm: Any, samples: list[dict], lora: LoraSettings, warm: WarmupSettings,
                       store: Store | None = None, progress: bool = True, fmt: str = "chat") -> list[Checkpoint]:
    """Train LoRA on ``samples`` and return a checkpoint (adapters, Adam moments, mean lr of
    the epoch) at the end of every epoch. Committed to ``store`` under a key of everything
    that changes them, and reused from there. ``fmt`` is the format ``T`` is written in
    (:mod:`syllabus.models.formats`: the gradients' own, so the warm-up trains on what the
    features are taken on); LoRA dropout (``lora.dropout``) acts during the warm-up only."""
    import torch
    from tqdm.auto import tqdm

    from syllabus.training.config import FinetuneConfig
    from syllabus.training.data import build_examples, pad_token_id
    from syllabus.models.formats import pair_encoder
    from syllabus.training.lora import StepResult, train_steps, training_order

    tok = lm.tokenizer
    examples, counts = build_examples(tok, samples, warm.cutoff, encode=pair_encoder(fmt))
    if not examples:
        raise ValueError(f"the warm-up has no usable samples ({len(samples)} picked, {counts}); raise warmup.fraction")
    # The format changes the examples, so "data" carries it; it is named as well, for a reader.
    parts = {"v": WARMUP_VERSION, "model": lm.fingerprint, "lora": lora.key_dump(), "warmup": warm.key_dump(),
             "data": content_hash([[e.input_ids, e.labels] for e in examples], 20)}
    if fmt != "chat":
        parts["format"] = fmt
    digest = content_hash(parts, 24)
    keys = [f"influence/warmup/v{WARMUP_VERSION}/{digest}/checkpoint-{e + 1}.pt" for e in range(warm.epochs)]
    if store is not None and all(store.is_committed(k) for k in keys):
        log.info("warm-up: reusing %d committed checkpoints under %s", len(keys), store.url(keys[0]).rsplit("/", 1)[0])
        return [Checkpoint(d["epoch"], d["weights"], d["moments"], d["lr"], store.url(k))
                for k, d in ((k, read_checkpoint(store.url(k))) for k in keys)]
    # No micro-batch token cap: the warm-up's micro-batches are micro_batch_size samples, as
    # its committed checkpoints were trained.
    ft = FinetuneConfig(lora_rank=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=tuple(lora.target_modules), learning_rate=warm.learning_rate,
                        lr_scheduler=warm.lr_scheduler, warmup_ratio=warm.warmup_ratio, epochs=warm.epochs,
                        cutoff=warm.cutoff, batch_size=warm.batch_size, micro_batch_size=warm.micro_batch_size,
                        max_micro_batch_tokens=None, max_grad_norm=warm.max_grad_norm, seed=warm.seed)
    n = len(examples)
    order = training_order(n, ft)
    per_epoch = -(-n // warm.batch_size)
    steps = [[examples[i] for i in order[epoch * n : (epoch + 1) * n][s0 : s0 + warm.batch_size]]
             for epoch in range(warm.epochs) for s0 in range(0, n, warm.batch_size)]
    out: list[Checkpoint] = []
    lrs: list[float] = []
    torch.manual_seed(warm.seed)
    with LoraGradients(lm.model, lora) as wrapped:
        params = {f"{m.name}.lora_A": m.a.weight for m in wrapped.modules}
        params.update({f"{m.name}.lora_B": m.b.weight for m in wrapped.modules})
        bar = tqdm(total=len(order), desc="warm-up", unit="sample", disable=not progress)

        def end_of_epoch(step: StepResult, optimizer: Any) -> None:
            lrs.append(step.lr)
            if (step.index + 1) % per_epoch:
                return
            moments = {name: (optimizer.state[p]["exp_avg"].detach().cpu().clone(),
                              optimizer.state[p]["exp_avg_sq"].detach().cpu().clone()) for name, p in params.items()}
            ck = Checkpoint(len(out) + 1, wrapped.state(), moments, float(np.mean(lrs)))
            lrs.clear()
            if store is not None:
                key = keys[ck.epoch - 1]
                store.commit(key, checkpoint_bytes(ck), {"kind": "warmup_checkpoint", "epoch": ck.epoch,
                                                         "lr": ck.lr, "samples": n})
                ck.url = store.url(key)
            out.append(ck)

        # Train mode, so LoRA dropout acts as in the authors' Trainer; gradients are taken in
        # eval mode afterwards (LoraGradients).
        wrapped.peft_model.train()
        try:
            train_steps(wrapped.peft_model, list(params.values()), steps, ft, pad_token_id(tok),
                        on_micro_batch=bar.update, on_step=end_of_epoch)
        finally:
            wrapped.peft_model.eval()
        bar.close()
    log.info("warm-up: %d samples, %d epochs, mean lr per epoch %s", n, warm.epochs, [f"{c.lr:.2e}" for c in out])
    return out
