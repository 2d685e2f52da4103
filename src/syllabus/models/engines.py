"""Inference engines behind one interface: greedy generation and per-token NLL of sequences.

- :class:`TransformersEngine` runs anywhere. Work is length-bucketed (items sorted by
  length, so a batch pads to similar lengths) and the batch size adapts: an out-of-memory
  error halves it and retries the same items, and the back-off is recorded in ``stats``.
  Scorers that need model internals (hidden states, last-layer attention) use
  :meth:`TransformersEngine.map_batches` with their own batch function.
- :class:`VLLMEngine` does generation and prompt log-probabilities with vLLM on a GPU. It
  cannot give attention probabilities or hidden states, so difficulty scoring stays on the
  transformers engine; vLLM serves generation (D2's own responses, paper-mode rating) and IFD.

Both take and return token ids, so templating (``syllabus.models.chat``) stays in one place.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def is_oom(exc: BaseException) -> bool:
    """CUDA out-of-memory, or the CPU allocator failing to allocate."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:  # pragma: no cover - torch always present in practice
        pass
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError)
    )


@dataclass
class EngineStats:
    batches: int = 0
    items: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0  # real + padding, i.e. what the model computed
    oom_backoffs: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def padding_share(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    def as_dict(self) -> dict:
        return {
            "batches": self.batches,
            "items": self.items,
            "real_tokens": self.real_tokens,
            "padded_tokens": self.padded_tokens,
            "padding_share": round(self.padding_share, 4),
            "oom_backoffs": list(self.oom_backoffs),
            "seconds": round(self.seconds, 3),
        }


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a generated turn: the tokenizer's EOS, the generation config's, and
    the template's end-of-turn token when it is a single token."""
    from syllabus.models.chat import end_of_turn_text

    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]))
    eot = end_of_turn_text(tokenizer)
    if eot:
        eot_ids = tokenizer(eot, add_special_tokens=False)["input_ids"]
        if len(eot_ids) == 1:
            ids.add(int(eot_ids[0]))
    return sorted(ids)


class TransformersEngine:
    """Batched, length-bucketed, OOM-adaptive inference on a Hugging Face causal LM."""

    name = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 16,
        max_batch_tokens: int | None = 16384,
        generate_batch_size: int | None = None,
        bucket: bool = True,
        progress: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.bucket = bucket
        self.progress = progress
        self.on_progress: Callable[[int, int, str], None] | None = None  # (items done, items, what) after each batch
        self._bar: Any = None
        self.stats = EngineStats()
        # Decoding is bound by reading the weights once per step, so generation gains from
        # larger batches than full-sequence forwards, which are compute-bound already.
        self.batch_sizes: dict[str, int] = {"forward": batch_size, "generate": generate_batch_size or batch_size}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def from_loaded(cls, lm: Any, **kwargs: Any) -> "TransformersEngine":
        return cls(lm.model, lm.tokenizer, **kwargs)

    @property
    def device(self):
        return next(self.model.parameters()).device

    # -- batching ---------------------------------------------------------------------------
    def map_batches(
        self,
        lengths: Sequence[int],
        fn: Callable[[list[int]], list[Any]],
        desc: str = "batches",
        purpose: str = "forward",
    ) -> list[Any]:
        """Call ``fn(indices)`` on batches of item indices and return per-item results in the
        original order. Batches hold items of similar length (when bucketing) and at most
        ``batch_size`` items and ``max_batch_tokens`` padded tokens; an OOM halves the batch
        size of this ``purpose`` ("forward", "generate") for the rest of the run and retries."""
        from tqdm.auto import tqdm

        limit = self.batch_sizes.get(purpose, self.batch_size)

        n = len(lengths)
        order = sorted(range(n), key=lambda i: -lengths[i]) if self.bucket else list(range(n))
        results: list[Any] = [None] * n
        pos = 0
        start = time.perf_counter()
        bar = tqdm(total=n, desc=desc, disable=not self.progress or n == 0, leave=False)
        self._bar = bar  # generation moves its postfix token by token (``_TokenSteps``)
        while pos < n:
            size = 1
            longest = lengths[order[pos]]
            while pos + size < n and size < limit:
                longest_next = max(longest, lengths[order[pos + size]])
                if self.max_batch_tokens and (size + 1) * longest_next > self.max_batch_tokens:
                    break
                longest = longest_next
                size += 1
            idx = order[pos : pos + size]
            try:
                out = fn(idx)
            except Exception as exc:
                if not is_oom(exc) or size == 1:
                    raise
                self._clear_cache()
                new = max(1, size // 2)
                log.warning("out of memory on a %s batch of %d items (longest %d tokens); batch size %d -> %d",
                            purpose, size, longest, limit, new)
                self.stats.oom_backoffs.append({"purpose": purpose, "from": size, "to": new, "longest": int(longest)})
                limit = self.batch_sizes[purpose] = new
                continue
            if len(out) != len(idx):
                raise RuntimeError(f"batch function returned {len(out)} results for {len(idx)} items")
            for i, r in zip(idx, out):
                results[i] = r
            self.stats.batches += 1
            self.stats.items += size
            self.stats.real_tokens += int(sum(lengths[i] for i in idx))
            self.stats.padded_tokens += int(max(lengths[i] for i in idx) * size)
            pos += size
            bar.update(size)
            if self.on_progress is not None:  # e.g. a Prefect progress artifact, set by the caller
                self.on_progress(pos, n, desc)
        bar.close()
        self.stats.seconds += time.perf_counter() - start
        return results

    def _clear_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def pad(self, seqs: Sequence[Sequence[int]], left: bool = False):
        """``input_ids`` and ``attention_mask`` tensors, padded right (forward passes) or
        left (generation)."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, s in enumerate(seqs):
            if left:
                ids[b, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
                mask[b, width - len(s) :] = 1
            else:
                ids[b, : len(s)] = torch.tensor(list(s), dtype=torch.long)
                mask[b, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- the engine interface ---------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation ids of each prompt, cut before the first end-of-turn id."""
        import torch

        stop = eos_ids(self.model, self.tokenizer)

        def run(idx: list[int]) -> list[list[int]]:
            ids, mask = self.pad([prompts[i] for i in idx], left=True)
            # On CPU a batch's generation takes minutes: the bar says which token it is at.
            steps = _TokenSteps(self._bar, max_new_tokens) if self.progress and ids.device.type == "cpu" else None
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=self.pad_id,
                    eos_token_id=stop,
                    streamer=steps,
                )
            new = out[:, ids.shape[1] :].tolist()
            result = []
            for row in new:
                cut = next((k for k, t in enumerate(row) if t in stop), len(row))
                result.append(row[:cut])
            return result

        return self.map_batches([len(p) + max_new_tokens for p in prompts], run, desc="generate", purpose="generate")

    def token_nll(self, seqs: Sequence[Sequence[int]], wanted: Sequence[Sequence[int]] | None = None) -> list[np.ndarray]:
        """Per-token NLL of every sequence (``nan`` at position 0 and outside ``wanted``)."""
        import torch

        from syllabus.models.losses import token_nll_from_hidden

        body, head = decoder_and_head(self.model)

        def run(idx: list[int]) -> list[np.ndarray]:
            ids, mask = self.pad([seqs[i] for i in idx])
            want = mask.bool()
            if wanted is not None:
                want = torch.zeros_like(want)
                for b, i in enumerate(idx):
                    want[b, list(wanted[i])] = True
            with torch.inference_mode():
                hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
                nll = token_nll_from_hidden(hidden, head, ids, want)
            return [nll[b, : len(seqs[i])].cpu().numpy() for b, i in enumerate(idx)]

        return self.map_batches([len(s) for s in seqs], run, desc="nll")


class _TokenSteps:
    """A ``generate`` streamer that only counts decoding steps and shows them on the sample
    bar ("token 12/64 of this batch"), so a long generation batch visibly moves."""

    def __init__(self, bar: Any, max_new_tokens: int):
        self.bar, self.max_new_tokens, self.step = bar, max_new_tokens, -1  # the first put is the prompt

    def put(self, value: Any) -> None:
        self.step += 1
        if self.step and self.bar is not None and not getattr(self.bar, "disable", True):
            self.bar.set_postfix_str(f"token {self.step}/{self.max_new_tokens} of this batch", refresh=True)

    def end(self) -> None:
        if self.bar is not None and not getattr(self.bar, "disable", True):
            self.bar.set_postfix_str("", refresh=False)


def decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body (returns ``last_hidden_state`` after the final norm) and the
    output head of a causal LM, so losses can skip the full-vocabulary logits."""
    body = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    head = model.get_output_embeddings()
    if body is None or head is None:
        raise TypeError(f"model {type(model).__name__} exposes no decoder body and output head")
    return body, head


class VLLMEngine:
    """Generation and prompt log-probabilities through vLLM (GPU). Same interface as
    :class:`TransformersEngine` for ``generate`` and ``token_nll``."""

    name = "vllm"

    def __init__(self, model: str, tokenizer: str | None = None, dtype: str = "auto",
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.85, **kwargs: Any):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError("the vllm engine needs the vllm package; install it with `pip install vllm` "
                              "on a GPU machine, or use --engine transformers") from exc
        self.llm = LLM(model=model, tokenizer=tokenizer or model, dtype=dtype, max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, **kwargs)
        self.stats = EngineStats()

    @staticmethod
    def _prompts(seqs: Sequence[Sequence[int]]) -> list[dict]:
        return [{"prompt_token_ids": list(s)} for s in seqs]

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        start = time.perf_counter()
        outs = self.llm.generate(self._prompts(prompts), params, use_tqdm=False)
        self.stats.seconds += time.perf_counter() - start
        # vLLM stops at EOS and leaves it out of token_ids unless asked to keep it.
        return [list(o.outputs[0].token_ids) for o in outs]

    def token_nll(self, seqs: Sequence[Sequence[int]], wanted: Sequence[Sequence[int]] | None = None) -> list[np.ndarray]:
        from vllm import SamplingParams

        # prompt_logprobs=0 returns the log-probability of each actual prompt token.
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        start = time.perf_counter()
        outs = self.llm.generate(self._prompts(seqs), params, use_tqdm=False)
        self.stats.seconds += time.perf_counter() - start
        result = []
        for k, (seq, out) in enumerate(zip(seqs, outs)):
            nll = np.full(len(seq), math.nan, dtype=np.float32)
            for t in range(1, len(seq)):
                entry = out.prompt_logprobs[t]
                if entry is not None and seq[t] in entry:
                    nll[t] = -float(entry[seq[t]].logprob)
            if wanted is not None:
                keep = np.zeros(len(seq), dtype=bool)
                keep[list(wanted[k])] = True
                nll[~keep] = math.nan
            result.append(nll)
        return result


def make_engine(kind: str, lm: Any, **kwargs: Any):
    """``transformers`` (default, any device) or ``vllm`` (GPU, generation and NLL only)."""
    if kind == "transformers":
        return TransformersEngine.from_loaded(lm, **kwargs)
    if kind == "vllm":
        ref = lm.ref
        if ref.kind == "gguf":
            raise ValueError(
                f"the vllm engine cannot read the GGUF model {ref.spec!r} (vLLM 0.32 fails on its config); export it "
                f"with `syllabus model export {ref.spec} --out DIR` and pass DIR as the model"
            )
        return VLLMEngine(ref.path, revision=ref.revision, **kwargs) if ref.revision else VLLMEngine(ref.path, **kwargs)
    raise ValueError(f"engine {kind!r} is unknown; use 'transformers' or 'vllm'")
