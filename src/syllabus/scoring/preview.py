"""What a scoring run will do and how long it will take, said before the work starts (issue 33).

For every scorer instance of the plan: how many samples are already in the store (found from
their cache keys alone, nothing loaded), how many are left, and the time they take at a
per-sample rate measured on this machine. The rate comes from

- the rate recorded by an earlier run of the same scorer, version, config and model on this
  machine and device (``rates.json`` in the user's cache folder, ``$SYLLABUS_RATES`` to move
  it; every scoring run that computed something updates it), else
- a calibration: the scorer runs on one sample (untimed: the first call pays one-off costs
  such as the rating prompt's shared prefix) and then, timed, on ``CALIBRATION_SAMPLES``
  samples spread over the first shard that needs scoring (their results are not kept), when
  at least ``CALIBRATE_FROM`` samples are left, so a run of a few samples is not made slower. A scorer that first builds shared inputs
  (the influence warm-up), or one whose class sets ``calibrate = False`` (a scorer with side
  effects), is not calibrated: its rate is printed after its first run.

A calibration measures a few samples in one small batch, so it over-states the cost of a
batched run (SmolLM2-135M's quality rating on a loaded 2-core machine: calibrated 3.74 s a
sample, the 48-sample run 1.69 s); the model load is outside it. Cached rates come from whole
runs, so the second run's estimate is the better one.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

CALIBRATION_SAMPLES = 4
CALIBRATE_FROM = 32


def rates_path() -> Path:
    if os.environ.get("SYLLABUS_RATES"):
        return Path(os.environ["SYLLABUS_RATES"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "syllabus" / "rates.json"


def rate_key(scorer: Any, model_fingerprint: str, device: str) -> str:
    """One rate per scorer, version, config, model, device and machine."""
    return content_hash({"scorer": scorer.name, "version": scorer.version, "config": scorer.config.key_dump(),
                         "model": model_fingerprint, "device": device, "machine": platform.node(),
                         "threads": os.environ.get("OMP_NUM_THREADS")}, length=20)


def _read_rates() -> dict[str, Any]:
    try:
        return json.loads(rates_path().read_text())
    except (OSError, ValueError):
        return {}


def cached_rate(key: str) -> float | None:
    entry = _read_rates().get(key)
    return float(entry["seconds_per_sample"]) if isinstance(entry, Mapping) and entry.get("seconds_per_sample") else None


def record_rate(key: str, seconds_per_sample: float | None, samples: int, scorer: str) -> None:
    """Remember the rate a run measured (best effort: a read-only home only loses the cache)."""
    if not seconds_per_sample or samples < 1:
        return
    rates = _read_rates()
    rates[key] = {"seconds_per_sample": seconds_per_sample, "samples": samples, "scorer": scorer,
                  "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = rates_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(rates, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:
        log.debug("could not record the scoring rate in %s: %s", path, exc)


def plan_preview(configs: Mapping[str, Mapping[str, Any]], manifest_url: str, lm: Any, store: Store,
                 limit: int | None = None, device: str = "cpu", calibrate: bool = True,
                 force: bool = False) -> Iterator[dict[str, Any]]:
    """Per scorer instance, as soon as it is known (a calibration takes a while): samples in the
    plan, cached, to score, the rate and its source, and the estimated seconds (None when no
    rate is known)."""
    from syllabus.pool.manifest import load_manifest, read_shard
    from syllabus.scoring.pool import _limit_shards, make_scorer

    planned = _limit_shards(load_manifest(manifest_url), limit)
    for instance, config in configs.items():
        scorer = make_scorer(instance, config, store, manifest_url)  # influence's key names its warm-up pool
        todo: list[tuple[dict, int | None]] = []
        total = cached = 0
        # One listing of the scorer's folder, not a read per shard (62,500 shards at 2M samples):
        # the markers count what is cached; the scoring itself still checks each object's bytes.
        keys = [(shard, take, scorer.key(lm.fingerprint, shard["content_hash"] if take is None
                                         else content_hash({"shard": shard["content_hash"], "rows": take})))
                for shard, take in planned]
        committed: set[str] = set()
        for folder in set() if force else {key.rsplit("/", 1)[0] for *_, key in keys}:
            committed |= store.marked(folder)
        for shard, take, key in keys:
            rows = shard["rows"] if take is None else take
            total += rows
            if key in committed:
                cached += rows
            else:
                todo.append((shard, take))
        left = total - cached
        key = rate_key(scorer, lm.fingerprint, device)
        rate, source = cached_rate(key), "measured by an earlier run on this machine"
        calibratable = not hasattr(scorer, "attach") and getattr(scorer, "calibrate", True)
        if rate is None and left and calibrate and left >= CALIBRATE_FROM and calibratable:
            shard, take = todo[0]
            table = read_shard(shard)
            rows = take or table.num_rows
            # One sample first, untimed: the first call pays one-off costs (the rating prompt's
            # shared prefix, kernels' first runs) that would dominate a few timed samples. Then
            # samples spread over the shard, not its first few only.
            scorer.score(table.slice(0, 1), lm)
            picked = sorted({round(i * (rows - 1) / max(CALIBRATION_SAMPLES - 1, 1)) for i in range(CALIBRATION_SAMPLES)})
            sample = table.take(picked)
            start = time.perf_counter()
            scorer.score(sample, lm)
            rate = (time.perf_counter() - start) / sample.num_rows
            source = f"calibrated on {sample.num_rows} samples"
        yield {"instance": instance, "samples": total, "cached": cached, "to_score": left,
               "seconds_per_sample": rate, "rate_source": source if rate else None,
               "seconds": rate * left if rate is not None else None, "rate_key": key, "calibratable": calibratable}


def plan_line(method: str, model: str, samples: int) -> str:
    return f"plan: score {samples:,} samples for {method} with {model}"


def scorer_line(p: Mapping[str, Any]) -> str:
    from syllabus.scoring.timing import format_duration

    head = f"  {p['instance']}: {p['to_score']:,} to score, {p['cached']:,} already in the store"
    if not p["to_score"]:
        return head
    if p["seconds"] is None:
        return f"{head}; no rate measured yet on this machine (printed when it finishes)"
    return f"{head}; about {format_duration(p['seconds'])} ({p['seconds_per_sample']:.2f} s a sample, {p['rate_source']})"


def total_line(preview: list[Mapping[str, Any]]) -> str | None:
    """The expected time of the scorers with a rate, naming those without; None when nothing is left."""
    from syllabus.scoring.timing import format_duration

    if not any(p["to_score"] for p in preview):
        return None
    unknown = [p["instance"] for p in preview if p["to_score"] and p["seconds"] is None]
    total = sum(p["seconds"] or 0.0 for p in preview if p["to_score"])
    rest = f", plus {', '.join(unknown)}" if unknown else ""
    return f"  expected: about {format_duration(total)}{rest} (loading the model not included)"


def say_plan(method: str, model: str, samples: int, say: Callable[[str], None],
             preview: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Say the plan before the work, as ``syllabus score`` and the score flow both do: the
    plan's line, each scorer's line as soon as its preview is known (a calibration takes a
    while), and the expected total. Returns the previews."""
    say(plan_line(method, model, samples))
    out = []
    for p in preview:
        out.append(p)
        say(scorer_line(p))
    total = total_line(out)
    if total:
        say(total)
    return out


def stage_preview(configs: Mapping[str, Mapping[str, Any]], manifest_url: str, model: str, store_url: str | None,
                  device: str | None = None, calibrate: bool = False) -> list[dict[str, Any]]:
    """The preview for a scoring stage of a flow (``syllabus run``, ``compare``, the score
    deployment). Without ``calibrate``, from recorded rates only and without loading the model:
    what the flow's own process computes. With it, a scorer that has no recorded rate and enough
    samples left is calibrated as ``syllabus score`` does: the flow asks for that in a task
    (:func:`needs_calibration`), so the model loads where the scoring tasks run, once per
    process, and the batches reuse it. A rate is one of the machine that measured it
    (``rate_key`` names the machine and device); the stage's measured rates are recorded when it
    ends (:func:`record_stage_rates`)."""
    from syllabus.models.ref import default_device
    from syllabus.scoring.pool import LazyModel

    return list(plan_preview(configs, manifest_url, LazyModel(model), Store(store_url), device=device or default_device(),
                             calibrate=calibrate))


def needs_calibration(preview: list[Mapping[str, Any]]) -> bool:
    """Whether a scorer of the stage has no recorded rate and enough samples left to calibrate."""
    return any(p["seconds"] is None and p["to_score"] >= CALIBRATE_FROM and p.get("calibratable", True) for p in preview)


def record_stage_rates(preview: list[Mapping[str, Any]], manifests: Mapping[str, Mapping[str, Any]]) -> None:
    """Remember the rate each scorer instance measured in a stage that scored something (its
    manifest's timing), so the next run's preview has an estimate."""
    by_instance = {p["instance"]: p for p in preview}
    for name, m in manifests.items():
        timing = m.get("timing") or {}
        if name in by_instance and m.get("shards_scored") and not timing.get("from_cache"):
            record_rate(by_instance[name]["rate_key"], timing.get("seconds_per_sample"), timing.get("samples") or 0, name)
