"""Where a scoring run's time goes: per-stage seconds, throughput and padding.

A scorer times each stage it runs (``rating``, ``generation``, ``forward``) with a
:class:`StageClock`; the stages land in its ``last_stats``, hence in every shard marker.
:func:`pool_stages` sums them over the shards of a score manifest (a scorer that does not time
its stages gets one stage from its engine's counters, or its shard seconds), and
:func:`estimate_line` turns the rate into what a bigger pool will cost.

Per stage: ``seconds``, ``samples``, ``tokens`` (real tokens the model read or wrote),
``computed_tokens`` (the positions the batches computed, padding included), ``samples_per_second``,
``tokens_per_second`` and ``padding_share = 1 - tokens / computed_tokens``. Generation also
gives ``generated_tokens`` and their rate; its ``computed_tokens`` count each batch at its
longest prompt plus the full new-token budget, so its padding share is an upper bound when
every row of a batch stops early. ``other`` is the rest of the shard time (tokenizing,
filters, bookkeeping), so the stages add up to the shards' seconds; a model loaded lazily
inside a shard is counted apart (``model_load_seconds``), as it is paid once per run.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

_SUMMED = ("seconds", "samples", "tokens", "computed_tokens", "generated_tokens")


@dataclass
class StageRecord:
    seconds: float = 0.0
    samples: int = 0
    tokens: int | None = None
    computed_tokens: int | None = None
    generated_tokens: int | None = None


def _counters(engine: Any) -> tuple[int, int]:
    stats = getattr(engine, "stats", None)
    return int(getattr(stats, "real_tokens", 0) or 0), int(getattr(stats, "padded_tokens", 0) or 0)


class StageClock:
    """Per-stage timing inside one ``Scorer.score`` call."""

    def __init__(self) -> None:
        self.records: dict[str, StageRecord] = {}

    @contextmanager
    def stage(self, name: str, engine: Any = None, samples: int = 0) -> Iterator[StageRecord]:
        """Time the block as stage ``name`` over ``samples`` samples. Token counts come from
        ``engine``'s counters unless the block sets ``tokens`` on the yielded record."""
        record = StageRecord(samples=samples)
        real0, padded0 = _counters(engine)
        start = time.perf_counter()
        yield record
        record.seconds = time.perf_counter() - start
        real1, padded1 = _counters(engine)
        if record.tokens is None and real1 > real0:
            record.tokens = real1 - real0
        if record.computed_tokens is None and padded1 > padded0:
            record.computed_tokens = padded1 - padded0
        self.add(name, record)

    def add(self, name: str, record: StageRecord) -> None:
        into = self.records.setdefault(name, StageRecord())
        for field in _SUMMED:
            value = getattr(record, field)
            if value is not None:
                setattr(into, field, (getattr(into, field) or 0) + value)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: summary(rec) for name, rec in self.records.items()}


def summary(rec: StageRecord) -> dict[str, Any]:
    """The record's totals and rates, rounded for a manifest."""
    out: dict[str, Any] = {"seconds": round(rec.seconds, 3), "samples": rec.samples}
    per_second = (lambda x: round(x / rec.seconds, 3) if x is not None and rec.seconds > 0 else None)
    out["samples_per_second"] = per_second(rec.samples)
    out["tokens"] = rec.tokens
    out["tokens_per_second"] = per_second(rec.tokens)
    out["computed_tokens"] = rec.computed_tokens
    out["padding_share"] = (round(max(0.0, 1.0 - rec.tokens / rec.computed_tokens), 4)
                            if rec.tokens is not None and rec.computed_tokens else None)
    if rec.generated_tokens is not None:
        out["generated_tokens"] = rec.generated_tokens
        out["generated_tokens_per_second"] = per_second(rec.generated_tokens)
    return out


def _record(stage: Mapping[str, Any]) -> StageRecord:
    return StageRecord(**{f: stage.get(f) for f in _SUMMED if stage.get(f) is not None})


def shard_stages(stats: Mapping[str, Any] | None, rows: int, seconds: float | None) -> dict[str, StageRecord]:
    """One shard's stages from its marker: the scorer's own, else one ``forward`` stage from its
    engine's counters, else one ``scoring`` stage; plus ``other`` for the unaccounted rest."""
    stats = stats or {}
    if stats.get("stages"):
        stages = {name: _record(st) for name, st in stats["stages"].items()}
    elif isinstance(stats.get("engine"), Mapping) and stats["engine"].get("seconds"):
        eng = stats["engine"]
        stages = {"forward": StageRecord(seconds=float(eng["seconds"]), samples=rows,
                                         tokens=eng.get("real_tokens") or None,
                                         computed_tokens=eng.get("padded_tokens") or None)}
    else:
        stages = {"scoring": StageRecord(seconds=float(seconds or 0.0), samples=rows)}
    rest = float(seconds or 0.0) - sum(r.seconds for r in stages.values())
    if rest > 0:
        stages["other"] = StageRecord(seconds=rest, samples=rows)
    return stages


def pool_stages(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-stage totals over the shard entries of a score manifest. Shards scored in this run
    count; when every shard came from the cache, the figures recorded when they were scored
    are used instead (``from_cache: true``)."""
    entries = list(entries)
    scored = [e for e in entries if not e.get("skipped")]
    from_cache = not scored and bool(entries)
    clock = StageClock()
    model_load = 0.0
    for e in scored or entries:
        seconds = e.get("compute_seconds", e.get("seconds")) if e.get("skipped") else e.get("seconds")
        load = float(e.get("model_load_seconds") or 0.0)
        model_load += load
        for name, rec in shard_stages(e.get("stats"), int(e.get("rows") or 0), (seconds or 0.0) - load).items():
            clock.add(name, rec)
    stages = clock.as_dict()
    samples = sum(int(e.get("rows") or 0) for e in (scored or entries))
    seconds = sum(rec.seconds for rec in clock.records.values())
    return {
        "stages": stages,
        "samples": samples,
        "seconds": round(seconds, 3),
        "seconds_per_sample": round(seconds / samples, 5) if samples else None,
        "model_load_seconds": round(model_load, 3),  # inside the first shard scored, kept out of the stages
        "from_cache": from_cache,
    }


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes:02d} min"
    return f"{seconds / 86400:.1f} days"


def estimate_line(seconds_per_sample: float, samples: int) -> str:
    """``at this rate, N samples take about T`` (linear in the pool size: the per-sample cost
    measured, fixed costs such as loading the model left out)."""
    return f"at this rate, {samples:,} samples take about {format_duration(seconds_per_sample * samples)}"


def stage_metrics(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``<stage>/<figure>`` numbers for MLflow."""
    out: dict[str, float] = {}
    for name, st in stages.items():
        for field in ("seconds", "samples_per_second", "tokens_per_second", "padding_share",
                      "generated_tokens_per_second"):
            value = st.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{name}/{field}"] = float(value)
    return out


def stage_lines(name: str, summary_: Mapping[str, Any]) -> list[str]:
    """Human-readable lines, one per stage, for a scorer's pool summary."""
    lines = []
    total = summary_.get("seconds") or 0.0
    for stage, st in summary_.get("stages", {}).items():
        share = f" ({st['seconds'] / total:.0%})" if total else ""
        parts = [f"{st['seconds']:.1f} s{share}"]
        if st.get("samples_per_second") is not None and stage != "other":
            parts.append(f"{st['samples_per_second']:g} samples/s")
        if st.get("tokens_per_second") is not None:
            parts.append(f"{st['tokens_per_second']:g} tokens/s")
        if st.get("generated_tokens_per_second") is not None:
            parts.append(f"{st['generated_tokens_per_second']:g} new tokens/s")
        if st.get("padding_share") is not None:
            parts.append(f"padding {st['padding_share']:.0%}")
        lines.append(f"  {name} {stage}: " + ", ".join(parts))
    if summary_.get("model_load_seconds"):
        lines.append(f"  {name} model load: {summary_['model_load_seconds']:.1f} s (once per run, not per sample)")
    return lines
