"""Run benchmarks on a model (optionally with a LoRA adapter) and commit the per-item results.

The per-item results go to the store as one Parquet table (``benchmark``, ``method``,
``item_id``, ``subject``, ``correct``, scores ...) under a key made of the model fingerprint,
the adapter checksum, the evaluation config and the benchmark items, with the metrics in
its marker and in a committed ``metrics.json`` beside it. A committed key is reused.

Metric names are flat (``<bench>/<method>/accuracy``, ``<bench>/<method>/<subject>/accuracy``,
``<bench>/open_qa/ref_nll`` ...) so they go into MLflow unchanged.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Literal, Mapping, Sequence

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syllabus.evaluation import metrics as M
from syllabus.evaluation.benchmarks import Benchmark, FieldMap, load_benchmark
from syllabus.evaluation.multiple_choice import MCConfig, score_cloze, score_letter
from syllabus.evaluation.openqa import generate_answers, reference_nll, score_generations, summarise_nll
from syllabus.store import Store, content_hash

log = logging.getLogger(__name__)

VERSION = 1
EVAL_PREFIX = "evaluations"


class EvalConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mc_methods: tuple[Literal["cloze", "letter"], ...] = Field(
        ("cloze",), description="multiple-choice scoring: cloze (option likelihood) and/or letter (the answer's letter)")
    mc: MCConfig = Field(MCConfig(), description="multiple-choice settings")
    generate: bool = Field(True, description="open QA: also generate greedy answers for BLEU/ROUGE (reference NLL is "
                           "always computed)")
    max_new_tokens: int = Field(256, ge=1, description="open QA: answer length when generating")
    cutoff: int = Field(1024, ge=8, description="max tokens per sequence")
    batch_size: int = Field(8, ge=1, description="sequences per forward pass")
    limit: int | None = Field(None, ge=1, description="items per benchmark: a seeded random subset; empty for all")
    seed: int = Field(0, description="seed for the item subset and the bootstrap")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples for the 95% intervals")
    # A method must not be scored on the items it was selected for. ``exclude_ids``
    # ({benchmark name: item ids}, e.g. a score manifest's ``validation_ids`` from the influence
    # scorer that ran) leaves out exactly those items of the benchmarks so named; when it is
    # not given, the items the default influence validation set holds out are left out
    # (``evaluation.heldout.default_held_out_ids``), unless ``exclude_validation`` is false.
    exclude_validation: bool = Field(True, description="leave out benchmark items held out for influence validation")
    exclude_ids: dict[str, tuple[str, ...]] | None = Field(
        None, description="{benchmark: item ids} to leave out (the pipeline fills it from its influence scorers); "
        "empty: the default validation set")

    @field_validator("exclude_ids")
    @classmethod
    def _sorted_ids(cls, value: dict[str, tuple[str, ...]] | None) -> dict[str, tuple[str, ...]] | None:
        # One spelling per set of ids, so the evaluation key does not depend on their order.
        return None if value is None else {name: tuple(sorted(set(ids))) for name, ids in sorted(value.items())}

    @model_validator(mode="after")
    def _exclusion_is_on(self) -> "EvalConfig":
        if self.exclude_ids is not None and not self.exclude_validation:
            raise ValueError("exclude_ids was given with exclude_validation false; drop exclude_ids to evaluate on "
                             "every item, or drop exclude_validation to leave those items out")
        return self

    def held_out(self, bench_names: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """``{benchmark name: item ids}`` to leave out of the benchmarks ``bench_names``."""
        if not self.exclude_validation:
            return {}
        if self.exclude_ids is not None:
            return self.exclude_ids
        from syllabus.evaluation.heldout import DEFAULT_BENCHMARK, default_held_out_ids

        if DEFAULT_BENCHMARK not in bench_names:  # the default set is drawn from it alone: nothing to load
            return {}
        return {name: tuple(ids) for name, ids in default_held_out_ids().items()}

    def key_dump(self) -> dict:
        """The config as the evaluation key spells it: without ``exclude_ids`` when none are
        given, so evaluations committed before the field existed keep their keys, and likewise
        when they are exactly the default validation set, which leaves out the same items as
        giving none: an adapter evaluated in a run with an influence scorer on the default
        validation set (DIQ, LESS) and in a run without one is evaluated once."""
        default = self.exclude_ids is None or self.exclude_ids == _default_exclusion()
        return self.model_dump(mode="json", exclude={"exclude_ids"} if default else None)


def _default_exclusion() -> dict[str, tuple[str, ...]]:
    """The default validation set as ``exclude_ids`` spells it (sorted ids)."""
    from syllabus.evaluation.heldout import default_held_out_ids

    return {name: tuple(sorted(set(ids))) for name, ids in sorted(default_held_out_ids().items())}


@dataclass
class EvalResult:
    results_url: str
    metrics: dict
    rows: int
    seconds: float
    cached: bool = False

    def to_json(self) -> dict:
        # NaN is not JSON: an undefined metric (no items) is null.
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in self.metrics.items()}
        return {"results": self.results_url, "metrics": clean, "rows": self.rows,
                "seconds": round(self.seconds, 2), "cached": self.cached}


def _accuracy_metrics(prefix: str, rows: Sequence[dict], key: str, config: EvalConfig, suffix: str = "accuracy") -> dict:
    summary = M.accuracy_summary([bool(r[key]) for r in rows], [r["subject"] for r in rows],
                                 n_resamples=config.bootstrap, seed=config.seed)
    out = {f"{prefix}/{suffix}": summary["accuracy"], f"{prefix}/{suffix}_ci_low": summary["ci_low"],
           f"{prefix}/{suffix}_ci_high": summary["ci_high"]}
    if suffix == "accuracy":
        out[f"{prefix}/n"] = summary["n"]
        if len(summary["per_subject"]) > 1:
            for subject, s in summary["per_subject"].items():
                out[f"{prefix}/{subject}/accuracy"] = s["accuracy"]
                out[f"{prefix}/{subject}/n"] = s["n"]
    return out


def without_items(bench: Benchmark, item_ids: Collection[str]) -> Benchmark:
    """``bench`` less the items whose id is in ``item_ids`` (held out for influence scoring)."""
    held = set(item_ids)
    kept = [it for it in bench.items if it.item_id not in held]
    if len(kept) < len(bench.items):
        log.info("%s: leaving out %d items held out as the influence validation set", bench.name, len(bench.items) - len(kept))
    if not kept:
        log.warning("%s: every item is held out as the influence validation set, so nothing is left to evaluate; "
                    "validate on another benchmark or evaluate on one that was not held out", bench.name)
    return Benchmark(bench.name, bench.kind, kept)


def evaluate_benchmarks(engine: Any, benchmarks: Sequence[Benchmark], config: EvalConfig) -> tuple[list[dict], dict]:
    """Score every benchmark with ``engine``; returns (per-item rows, flat metrics)."""
    rows: list[dict] = []
    metrics: dict = {}
    held_out = config.held_out([b.name for b in benchmarks])
    for bench in benchmarks:
        if bench.name in held_out:
            bench = without_items(bench, held_out[bench.name])
        bench = bench.limit(config.limit, seed=config.seed)
        start = time.perf_counter()
        if bench.kind == "mc":
            for method in config.mc_methods:
                t0 = time.perf_counter()
                scored = (score_cloze if method == "cloze" else score_letter)(engine, bench.items, config.mc)
                prefix = f"{bench.name}/{method}"
                metrics.update(_accuracy_metrics(prefix, scored, "correct", config))
                if method == "cloze":
                    for norm in ("char", "token", "none"):
                        metrics.update(_accuracy_metrics(prefix, scored, f"correct_{norm}", config, f"accuracy_{norm}"))
                else:
                    metrics.update(_accuracy_metrics(prefix, scored, "exact_match", config, "exact_match"))
                metrics[f"{prefix}/seconds"] = round(time.perf_counter() - t0, 2)
                rows.extend(dict(r, benchmark=bench.name) for r in scored)
                log.info("%s: accuracy %.4f on %d items in %.1f s", prefix, metrics[f"{prefix}/accuracy"],
                         len(scored), metrics[f"{prefix}/seconds"])
        else:
            prefix = f"{bench.name}/open_qa"
            nll_rows = reference_nll(engine, bench.items, cutoff=config.cutoff)
            metrics.update({f"{prefix}/{k}": v for k, v in summarise_nll(nll_rows).items()})
            if config.generate:
                t0 = time.perf_counter()
                answers = generate_answers(engine, [it.question for it in bench.items], config.max_new_tokens, config.cutoff)
                per_item, summary = score_generations(answers, [it.reference for it in bench.items])
                metrics.update({f"{prefix}/{k}": v for k, v in summary.items() if k != "lang"})
                metrics[f"{prefix}/generate_seconds"] = round(time.perf_counter() - t0, 2)
                for r, answer, scores in zip(nll_rows, answers, per_item):
                    r.update(prediction=answer, **scores)
            metrics[f"{prefix}/seconds"] = round(time.perf_counter() - start, 2)
            rows.extend(dict(r, benchmark=bench.name, method="open_qa", question=it.question, reference=it.reference)
                        for r, it in zip(nll_rows, bench.items))
            log.info("%s: reference NLL %.4f on %d items", prefix, metrics[f"{prefix}/ref_nll"], len(nll_rows))
    return rows, metrics


def rows_to_table(rows: Sequence[dict]) -> pa.Table:
    """Rows with different keys (MC and open QA) as one table; absent values are null."""
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    first = ["benchmark", "method", "item_id", "subject"]
    keys = [k for k in first if k in keys] + [k for k in keys if k not in first]
    return pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])


def load_eval_model(model_spec: str, adapter_url: str | None = None, device: str | None = None):
    """The model to evaluate: the base from ``load_model``, or a private copy with the
    adapter merged in (a cached base model must not be modified)."""
    from syllabus.models import load_model
    from syllabus.models.adapters import load_adapter

    if not adapter_url:
        return load_model(model_spec, device=device)
    lm = load_model(model_spec, device=device, reuse=False)
    lm.model = load_adapter(lm.model, adapter_url, merge=True).eval()
    return lm


def adapter_checksum(adapter_url: str | None) -> str | None:
    if not adapter_url:
        return None
    from syllabus.inputs import refuse_special_file

    refuse_special_file(adapter_url, "adapter")  # before the model loads (load_adapter reads it after)
    store, key = Store.open_url(adapter_url)
    marker = store.marker(key)
    if marker is None:
        raise FileNotFoundError(f"adapter {adapter_url} has no commit marker; run `syllabus finetune` to make it")
    return marker["sha256"]


def run_evaluation(
    model_spec: Any,
    bench_specs: Sequence[str | Benchmark],
    store: Store,
    adapter_url: str | None = None,
    config: EvalConfig | None = None,
    fields: FieldMap | None = None,
    force: bool = False,
    device: str | None = None,
    progress: bool = True,
    on_progress: Callable[[int, int, str], None] | None = None,
    exclude_ids: Mapping[str, Sequence[str]] | None = None,
) -> EvalResult:
    """Evaluate ``model_spec`` (a model string, or an already loaded ``LoadedModel``, plus an
    optional adapter) on the benchmarks and commit the results. ``on_progress(items done,
    items, what)`` is called after every batch of each pass. ``exclude_ids`` ({benchmark
    name: item ids}, the influence scorer's ``held_out_ids()``) replaces ``config.exclude_ids``:
    exactly those items are left out (see :class:`EvalConfig`)."""
    from syllabus.models.engines import TransformersEngine
    from syllabus.models.ref import fingerprint, resolve

    config = config or EvalConfig()
    if exclude_ids is not None:
        config = EvalConfig.model_validate({**config.model_dump(), "exclude_ids": dict(exclude_ids)})
    start = time.perf_counter()
    benches = [b if isinstance(b, Benchmark) else load_benchmark(b, fields) for b in bench_specs]
    key_parts = {
        "v": VERSION,
        "model": model_spec.fingerprint if hasattr(model_spec, "fingerprint") else fingerprint(resolve(model_spec)),
        "adapter": adapter_checksum(adapter_url),
        "config": config.key_dump(),
        "benchmarks": [[b.name, b.kind, content_hash([list(map(str, vars(i).values())) for i in b.items], 20)] for b in benches],
    }
    digest = content_hash(key_parts, 20)
    key = f"{EVAL_PREFIX}/{digest}/results.parquet"
    metrics_key = f"{EVAL_PREFIX}/{digest}/metrics.json"
    if not force and store.is_committed(key) and store.is_committed(metrics_key):
        log.info("evaluation %s already committed; reusing it", store.url(key))
        metrics = json.loads(store.read_committed(metrics_key))
        return EvalResult(store.url(key), metrics, store.marker(key)["rows"], time.perf_counter() - start, True)
    if hasattr(model_spec, "model"):
        lm = model_spec
        if adapter_url:
            from syllabus.models.adapters import load_adapter

            lm.model = load_adapter(lm.model, adapter_url, merge=True).eval()
    else:
        lm = load_eval_model(model_spec, adapter_url, device=device)
    engine = TransformersEngine.from_loaded(lm, batch_size=config.batch_size, progress=progress)
    engine.on_progress = on_progress
    rows, metrics = evaluate_benchmarks(engine, benches, config)
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    table = rows_to_table(rows)
    store.commit_table(key, table, {"kind": "evaluation", "model": str(getattr(getattr(model_spec, "ref", None), "spec", model_spec)), "adapter": adapter_url, **key_parts})
    store.commit(metrics_key, json.dumps(metrics, indent=2, sort_keys=True).encode("utf-8"), {"kind": "evaluation_metrics"})
    return EvalResult(store.url(key), metrics, table.num_rows, time.perf_counter() - start)


# ------------------------------------------------------------------ judges
def open_results(url: str, what: str) -> tuple[Store, str]:
    """(store, key) of the committed evaluation results at ``url``, checked without reading
    them: a local FIFO or device is refused unopened, and a URL with no committed results is
    named with where such a URL comes from."""
    from syllabus.inputs import refuse_special_file

    refuse_special_file(url, what)
    store, key = Store.open_url(url)
    if store.marker(key) is None:
        raise FileNotFoundError(
            f"{what} {url}: no committed evaluation results there; pass the results URL that `syllabus evaluate` "
            "printed (evals/<digest>/results.parquet in its store)")
    return store, key


def judge_results(
    store: Store,
    results_url: str,
    judge: Any,
    judge_name: str,
    rubric: bool = True,
    compare_url: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Judge the open-QA answers of a committed evaluation: the clinical rubric on its answers,
    and/or the pairwise win rate of its answers against those of ``compare_url`` (another
    evaluation's results on the same items). Per-item judgements are committed beside the
    results; returns flat metrics (``<bench>/judge/rubric_mean``, ``<bench>/judge/win_rate`` ...)."""
    from syllabus.evaluation.judges import clinical_rubric, pairwise_win_rate

    res_store, res_key = open_results(results_url, "evaluation results")
    mine = [r for r in res_store.read_table(res_key).to_pylist() if r.get("method") == "open_qa" and r.get("prediction") is not None]
    if not mine:
        raise ValueError(f"{results_url} has no generated open-QA answers to judge; evaluate an open-QA benchmark without --no-generate")
    other: dict = {}
    if compare_url:
        o_store, o_key = open_results(compare_url, "evaluation to compare with")
        other = {(r["benchmark"], r["item_id"]): r for r in o_store.read_table(o_key).to_pylist()
                 if r.get("method") == "open_qa" and r.get("prediction") is not None}
    metrics: dict = {}
    judged_rows: list[dict] = []
    for bench in sorted({r["benchmark"] for r in mine}):
        rows = [r for r in mine if r["benchmark"] == bench]
        per_item = [{"benchmark": bench, "item_id": r["item_id"]} for r in rows]
        if rubric:
            rub_rows, summary = clinical_rubric(judge, [r["question"] for r in rows], [r["prediction"] for r in rows], progress)
            metrics.update({f"{bench}/judge/{k}": v for k, v in summary.items()})
            for p, rr in zip(per_item, rub_rows):
                p.update(rr)
        if compare_url:
            pairs = [(k, r) for k, r in enumerate(rows) if (bench, r["item_id"]) in other]
            if not pairs:
                raise ValueError(f"{compare_url} shares no open-QA items of {bench} with {results_url}; compare runs on the same benchmark")
            pw_rows, summary = pairwise_win_rate(
                judge, [r["question"] for _, r in pairs], [r["prediction"] for _, r in pairs],
                [other[(bench, r["item_id"])]["prediction"] for _, r in pairs], seed=seed, progress=progress)
            metrics.update({f"{bench}/judge/{k}": v for k, v in summary.items()})
            for (k, _), pw in zip(pairs, pw_rows):
                per_item[k].update({f"pairwise_{n}": v for n, v in pw.items()})
        judged_rows.extend(per_item)
    folder = res_key.rsplit("/", 1)[0] + "/" if "/" in res_key else ""
    key = f"{folder}judge-{content_hash([judge_name, rubric, compare_url, seed], 16)}.parquet"
    res_store.commit_table(key, rows_to_table(judged_rows), {"kind": "judgements", "judge": judge_name, "compare": compare_url})
    metrics["judge/results"] = res_store.url(key)
    return metrics
