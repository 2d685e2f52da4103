"""Training data: template samples (read by :func:`syllabus.pool.samples.load_samples`) and
mask the prompt.

Every sample becomes ``T = P + y + E`` through the shared chat templating
(:func:`syllabus.models.chat.encode_pair`). Labels are the token ids on response positions
(``prompt_len`` on) and ``-100`` on prompt positions, so the loss is the mean NLL of the
response tokens only: the prompt is context, never a target.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from syllabus.models.chat import encode_pair

__all__ = ["IGNORE_INDEX", "TrainExample", "build_examples", "collate", "pad_token_id"]

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainExample:
    sample_id: str
    input_ids: list[int]
    labels: list[int]

    @property
    def n_targets(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def build_examples(tokenizer: Any, samples: Iterable[Any], cutoff: int,
                   encode: Callable[..., Any] = encode_pair) -> tuple[list[TrainExample], dict]:
    """Template and mask every sample; ``too_long`` prompts and empty responses are skipped.
    ``encode`` writes ``T`` (another format of :mod:`syllabus.models.formats`, for the LESS
    warm-up in the authors' Tulu format)."""
    examples: list[TrainExample] = []
    counts = {"too_long": 0, "truncated": 0, "empty_response": 0}
    for i, sample in enumerate(samples):
        enc = encode(tokenizer, sample, cutoff=cutoff)
        if enc.status != "ok":
            counts["too_long"] += 1
            continue
        labels = [IGNORE_INDEX] * enc.prompt_len + list(enc.input_ids[enc.prompt_len :])
        if all(t == IGNORE_INDEX for t in labels):
            counts["empty_response"] += 1
            continue
        counts["truncated"] += int(enc.truncated)
        sid = sample.get("sample_id") if isinstance(sample, dict) else None
        examples.append(TrainExample(str(sid if sid is not None else i), list(enc.input_ids), labels))
    if any(counts.values()):
        log.info("training examples: %d kept; %s", len(examples), counts)
    return examples, counts


def pad_token_id(tokenizer: Any) -> int:
    """The id padding is written with: the tokenizer's pad token, else its end-of-sequence token
    (padded positions are masked out of attention and loss, so which id does not matter)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def collate(examples: Sequence[TrainExample], pad_token_id: int):
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
