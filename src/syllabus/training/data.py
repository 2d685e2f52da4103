"""Training data: read a selection (or any pool file), template it, mask the prompt.

Every sample becomes ``T = P + y + E`` through the shared chat templating
(:func:`syllabus.models.chat.encode_pair`). Labels are the token ids on response positions
(``prompt_len`` on) and ``-100`` on prompt positions, so the loss is the mean NLL of the
response tokens only: the prompt is context, never a target.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pyarrow as pa

from syllabus.models.chat import encode_pair

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


def load_samples(paths: Sequence[str] | str, fields: Any = None) -> tuple[list[dict], dict]:
    """Canonical samples (instruction, input, output, messages, sample_id) from selection
    Parquet files or any pool file the pool readers accept (question/answer fields included).

    Returns ``(samples, counts)``; rejected records are logged with their reason and counted.
    """
    from syllabus.pool.canonical import FieldMap, RecordRejected, normalise
    from syllabus.pool.readers import expand, read

    fields = fields or FieldMap()
    paths = [paths] if isinstance(paths, str) else list(paths)
    samples: list[dict] = []
    rejected = 0
    for url, kind, _ in expand(paths):
        for record in read(url, kind):
            if record.error is not None:
                rejected += 1
                log.warning("%s: %s; skipped", record.location, record.error[1])
                continue
            try:
                sample = normalise(record.value, source=url, fields=fields, max_chars=10**9)
            except RecordRejected as exc:
                rejected += 1
                log.warning("%s: %s; skipped", record.location, exc.reason)
                continue
            samples.append(sample.row())
    return samples, {"read": len(samples) + rejected, "rejected": rejected}


def samples_from_table(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def build_examples(tokenizer: Any, samples: Iterable[Any], cutoff: int) -> tuple[list[TrainExample], dict]:
    """Template and mask every sample; ``too_long`` prompts and empty responses are skipped."""
    examples: list[TrainExample] = []
    counts = {"too_long": 0, "truncated": 0, "empty_response": 0}
    for i, sample in enumerate(samples):
        enc = encode_pair(tokenizer, sample, cutoff=cutoff)
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
