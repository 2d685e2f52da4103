"""LoRA supervised fine-tuning (Hu et al., ICLR 2022; arXiv 2106.09685) of the target model.

The loss of an optimizer step is the mean NLL over every response token of the step's
samples (``sum NLL / number of response tokens``, prompt positions masked with -100),
accumulated exactly over micro-batches: each micro-batch contributes ``its NLL sum / the
step's token count``, so the gradient equals that of one big batch whatever the micro-batch
size. Per-token NLL comes from the shared :func:`syllabus.models.losses.token_nll`.
Lower loss is better.

The optimizer loop (:func:`train_steps`: AdamW, the learning-rate schedule, exact gradient
accumulation, clipping) is the one both fine-tuning and LESS's warm-up
(:mod:`syllabus.scoring.warmup`) drive.

The adapter (peft's ``adapter_config.json`` and ``adapter_model.safetensors`` plus a
``training.json`` manifest, :mod:`syllabus.models.adapters`) is committed to the store as one
deterministic tar under a key made of everything that changes it: base model fingerprint,
config, the templated training tokens and this module's version. A committed key is reused,
not retrained.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from tqdm.auto import tqdm

from syllabus.models.adapters import read_adapter_manifest, save_adapter
from syllabus.store import Store, content_hash
from syllabus.training.config import FinetuneConfig
from syllabus.training.data import IGNORE_INDEX, TrainExample, build_examples, collate, pad_token_id

log = logging.getLogger(__name__)

VERSION = 1
ADAPTER_PREFIX = "adapters"
SAVE_EVERY_S = 300.0  # how often a fine-tune saves the state it resumes from


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
    pruned: bool = False  # committed, but its weights were removed from the store (only its marker kept)

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
            **({"pruned": True} if self.pruned else {}),
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


def lr_schedule(optimizer: Any, config: FinetuneConfig, total_steps: int):
    """The learning-rate schedule of ``config`` (linear warm-up over ``warmup_ratio`` of the
    steps, then cosine, linear or constant) for ``total_steps`` optimizer steps."""
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


@dataclass(frozen=True)
class StepResult:
    """One optimizer step of :func:`train_steps`."""

    index: int  # 0-based
    lr: float  # the learning rate the step used
    nll_sum: float  # response-token NLL summed over the step's samples
    n_targets: int  # response tokens in the step
    samples: int

    @property
    def loss(self) -> float:
        return self.nll_sum / self.n_targets


def train_steps(
    model: Any, params: Sequence[Any], steps: Sequence[Sequence[TrainExample]], config: FinetuneConfig, pad_id: int,
    on_micro_batch: Callable[[int], Any] | None = None, on_step: Callable[[StepResult, Any], None] | None = None,
    resume: Mapping[str, Any] | None = None, save_state: Callable[[dict], None] | None = None,
    save_every: float = SAVE_EVERY_S,
) -> list[StepResult]:
    """The LoRA training loop that fine-tuning and the LESS warm-up both drive.

    AdamW on ``params`` (``config``'s learning rate and weight decay) under ``config``'s
    schedule over ``len(steps)`` optimizer steps; every step accumulates its loss exactly over
    micro-batches (:func:`accumulate_gradients`, ``micro_batch_size`` and
    ``max_micro_batch_tokens``) and clips the gradient norm to ``max_grad_norm``. ``model``
    keeps the train/eval mode its caller set. ``on_step(result, optimizer)`` is called after
    every step (the optimizer holds the Adam moments a checkpoint keeps).

    ``save_state(state)`` is called after a step once ``save_every`` seconds have passed since
    the last save (not after the last step) with everything the rest of the run depends on:
    the parameters, the optimizer and schedule states, torch's random state (LoRA dropout) and
    the steps so far. Passed back as ``resume``, such a state continues the run where it
    stopped, and the result is the one an uninterrupted run gives, bit for bit."""
    import torch

    params = list(params)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = lr_schedule(optimizer, config, len(steps))
    results: list[StepResult] = []
    if resume is not None:
        if resume["total_steps"] != len(steps) or len(resume["params"]) != len(params):
            raise ValueError(f"a saved training state of {resume['total_steps']} steps cannot resume a run of {len(steps)}")
        with torch.no_grad():
            for p, saved in zip(params, resume["params"]):
                p.copy_(saved)
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"])
        results = [StepResult(**r) for r in resume["results"]]
    last_save = time.perf_counter()
    for index in range(len(results), len(steps)):
        step = steps[index]
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        nll = accumulate_gradients(model, step, config.micro_batch_size, pad_id, device,
                                   on_micro_batch=on_micro_batch, max_tokens=config.max_micro_batch_tokens)
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        results.append(StepResult(index, lr, nll, sum(e.n_targets for e in step), len(step)))
        if save_state is not None and index + 1 < len(steps) and time.perf_counter() - last_save >= save_every:
            save_state({"total_steps": len(steps), "params": [p.detach().clone() for p in params],
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": torch.get_rng_state(), "results": [dataclasses.asdict(r) for r in results]})
            last_save = time.perf_counter()
        if on_step is not None:
            on_step(results[-1], optimizer)
    return results


# Called after every optimiser step with (samples done, samples in all, last step's loss).
ProgressCallback = Callable[[int, int, float], None]


def train_lora(
    model: Any, tokenizer: Any, examples: Sequence[TrainExample], config: FinetuneConfig, progress: bool = True,
    on_progress: ProgressCallback | None = None, resume: Mapping[str, Any] | None = None,
    save_state: Callable[[dict], None] | None = None, save_every: float = SAVE_EVERY_S,
) -> tuple[Any, dict]:
    """Train LoRA adapters on ``examples``; returns ``(peft_model, stats)``.

    ``progress`` shows a terminal bar; whatever it says, every tenth of the way is also logged
    (so a flow's log shows how far a long fine-tune is), and ``on_progress`` is called after
    every step. ``resume``, ``save_state`` and ``save_every``: see :func:`train_steps`."""
    import torch

    if not examples:
        raise ValueError("no training examples: every sample was too long or had an empty response")
    torch.manual_seed(config.seed)
    peft_model = make_lora_model(model, config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    order = training_order(len(examples), config)
    # Steps run across epoch boundaries: a fractional epoch count ends mid-epoch.
    steps = [[examples[i] for i in order[s : s + config.batch_size]] for s in range(0, len(order), config.batch_size)]

    peft_model.train()
    def next_tenth(seen: int) -> float:
        return math.floor(10 * seen / len(order) + 1) / 10

    done = sum(r["samples"] for r in resume["results"]) if resume else 0
    bar = tqdm(total=len(order), initial=done, desc="finetune", unit="sample", disable=not progress)
    started, next_log, start_done = time.perf_counter(), next_tenth(done), done

    def report(step: StepResult, _optimizer: Any) -> None:
        nonlocal done, next_log
        bar.set_postfix(loss=f"{step.loss:.4f}", lr=f"{step.lr:.2e}")
        done += step.samples
        if on_progress is not None:
            on_progress(done, len(order), step.loss)
        if done >= next_log * len(order):
            elapsed = time.perf_counter() - started
            log.info("finetune: %d/%d samples seen (%d%%), step %d/%d, loss %.4f, %.0f s elapsed, about %.0f s left",
                     done, len(order), 100 * done // len(order), step.index + 1, len(steps), step.loss, elapsed,
                     elapsed * (len(order) - done) / max(1, done - start_done))
            next_log = next_tenth(done)

    results = train_steps(peft_model, params, steps, config, pad_token_id(tokenizer), on_micro_batch=bar.update,
                          on_step=report, resume=resume, save_state=save_state, save_every=save_every)
    bar.close()
    peft_model.eval()
    losses = [r.loss for r in results]
    token_sum = sum(r.n_targets for r in results)
    return peft_model, {
        "losses": losses,
        "train_loss": losses[-1],
        "train_loss_mean": sum(r.nll_sum for r in results) / token_sum,
        "steps": len(steps),
        "samples_seen": len(order),
        "tokens": token_sum,
        **({"resumed_at_step": len(resume["results"])} if resume else {}),
    }


# ------------------------------------------------------------------ store
def adapter_key(fingerprint: str, config: FinetuneConfig, examples: Sequence[TrainExample]) -> str:
    data_hash = content_hash([[e.input_ids, e.labels] for e in examples], 20)
    digest = content_hash({"v": VERSION, "model": fingerprint, "config": config.model_dump(mode="json"), "data": data_hash}, 20)
    return f"{ADAPTER_PREFIX}/{digest}/adapter.tar"


def resume_key(key: str) -> str:
    """Where a fine-tune in progress keeps its training state: next to its adapter's key."""
    return key.rsplit("/", 1)[0] + "/resume.pt"


def _read_resume_state(store: Store, key: str) -> dict | None:
    import torch

    if not store.exists(key):
        return None
    try:
        return torch.load(io.BytesIO(store.read_bytes(key)), weights_only=True)
    except Exception as exc:  # a state cut short by a crash while writing: start over
        log.warning("ignoring the unreadable training state %s (%s); training from the start", store.url(key), exc)
        return None


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
    save_every: float = SAVE_EVERY_S,
) -> FinetuneResult:
    """Template ``samples``, train LoRA on ``model`` (modified in place) and commit the adapter.

    Every ``save_every`` seconds the training state goes to the store next to the adapter's
    key (:func:`resume_key`), so a fine-tune that stops (a killed worker, the end of a
    session) continues from there when it is run again with the same model, config and data,
    and ends with the adapter an uninterrupted run gives; the state is removed once the
    adapter is committed. ``force`` retrains from the start."""
    start = time.perf_counter()
    examples, counts = build_examples(tokenizer, samples, config.cutoff)
    key = adapter_key(model_fingerprint, config, examples)
    marker = None if force else store.marker(key)
    # Pruned: its marker (checksum and training record) kept without its bytes, as in a store
    # carried without adapters. A pruned adapter's evaluations, keyed by that checksum, are still
    # found; anything that needs its weights says so (models.adapters).
    pruned = marker is not None and "training" in marker and not store.exists(key)
    if pruned or (marker is not None and store.is_committed(key)):
        # The marker's training record is the tar's training.json; markers from before it was
        # added have none, and the tar is read for it.
        manifest = marker.get("training") or read_adapter_manifest(store.url(key))
        log.info("adapter %s already committed%s; reusing it (pass force to retrain)", store.url(key),
                 " and pruned (its weights are not in the store)" if pruned else "")
        return FinetuneResult(store.url(key), key, manifest["train_loss"], manifest["train_loss_mean"],
                              manifest["samples"], manifest["steps"], time.perf_counter() - start, True,
                              manifest["losses"], manifest.get("counts", {}), manifest.get("seconds"), pruned)
    state_key = resume_key(key)
    state = None if force else _read_resume_state(store, state_key)
    earlier = (state or {}).get("seconds", 0.0)  # what the stopped runs trained for
    if state is not None:
        log.info("fine-tune: resuming at step %d of %d from %s", len(state["results"]), state["total_steps"],
                 store.url(state_key))

    def save_state(st: dict) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save({**st, "seconds": earlier + time.perf_counter() - start}, buffer)
        store.write_bytes(state_key, buffer.getvalue())

    peft_model, stats = train_lora(model, tokenizer, examples, config, progress=progress, on_progress=on_progress,
                                   resume=state, save_state=save_state, save_every=save_every)
    seconds = earlier + time.perf_counter() - start
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
    store.delete(state_key)
    return FinetuneResult(store.url(key), key, stats["train_loss"], stats["train_loss_mean"], len(examples),
                          stats["steps"], seconds, False, stats["losses"], counts)
