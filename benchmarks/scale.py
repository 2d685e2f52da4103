"""Scale: a generated pool of N samples through ingest, scoring, selection and export, measured.

Only the model is replaced: the scorers are the benchmark-only synthetic ones
(``benchmarks/synthetic_scorers.py``, registered as an out-of-tree scorer is, named
``synthetic_*`` in every column, key, manifest and line printed here). Everything else is the
library's own path, called in process through its entry points: ``pipeline.stages.ingest``,
the shard loop ``scoring.pool.score_shards`` (keys, leases, commit markers)
and its fan-in ``write_score_manifest``, ``pipeline.stages.select`` (recipes, the why-table,
plots, the report), ``pipeline.stages.export_subset``.

Each stage and each baseline runs in its own process, so its peak resident memory
(``ru_maxrss``) is its own; a watchdog kills a process whose RSS passes ``--rss-cap-gb`` (the
machine is shared) and the row says so. Per stage: seconds, peak RSS, objects written to the
store (and export folder), and a ratio against a baseline measured in the same run:

- ingest: ``pyarrow.json.read_json`` of the same file;
- score (synthetic): the same synthetic scorer over the same shards with a plain
  ``pyarrow.parquet.write_table`` per shard (no keys, leases, markers, manifest): the ratio is
  the machinery's overhead around a scorer;
- select: reading the method's score tables (every shard, every column) and sorting the rows
  by the column the method ranks on;
- export: a plain ``pyarrow.parquet.write_table`` of the same selected rows.

ratio = baseline seconds / stage seconds (1.0: as fast as the baseline; 0.2: five times slower).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --n 100000 --dir /tmp/scale-100k

``--real`` runs the same stages through the deployed machinery instead (``benchmarks/scale_real.py``):
a ``prefect server``, a moto S3 server and an ``mlflow server``, each on a free port of 127.0.0.1
and stopped at the end; ingest as the pipeline's ``ingest`` task into a local folder and into
S3, the ``score`` flow per synthetic scorer, and per method the ``pipeline`` flow with
``stop_after="select"`` (what ``syllabus run --stop-after select`` runs), its why-table and subset
read back from the MLflow server. Two more columns: the Prefect task runs a stage created and the
latency of the flow-run page's API requests while it ran.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --real --n 100000 --stop-after select --embedding-dim 576

``--real --compare`` runs the ``compare`` flow with stop_after="select" and every arm after the
score stages (``scale_real.compare_stage``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

EXPORT_FORMATS = ("jsonl", "alpaca", "sharegpt", "hf")


class SyntheticModel:
    """Stands in for the model where only its fingerprint is read (cache keys)."""

    fingerprint = "synthetic:no-model"
    load_seconds = 0.0


# ------------------------------------------------------------------------------ recipes
def recipes(emb_column: str) -> dict[str, dict[str, Any]]:
    """The shipped methods' selector chains (3ds, diq, less, ifd, random) over the synthetic
    columns; each with the scorer instances whose manifests it reads and its sort column."""
    return {
        "3ds": {
            "recipe": {
                "name": "synthetic-3ds", "description": "3DS selectors over synthetic scores",
                "scorers": [{"name": "synthetic_quality", "config": {}}, {"name": "synthetic_difficulty", "config": {}}],
                "selectors": [
                    {"name": "threshold", "config": {"column": "synthetic_quality_score", "min_value": 90}},
                    {"name": "band", "config": {"metrics": ["synthetic_difficulty_d1", "synthetic_difficulty_d2",
                                                             "synthetic_difficulty_d3"], "low": 25, "high": 75}},
                    {"name": "kcenter", "config": {"column": emb_column}},
                ],
                "seed": 0,
            },
            "scorers": ["synthetic_quality", "synthetic_difficulty"], "sort": "synthetic_quality_score",
        },
        "diq": {
            "recipe": {
                "name": "synthetic-diq", "description": "DIQ quadrants over synthetic scores",
                "scorers": [{"name": "synthetic_diq_difficulty", "config": {}},
                            {"name": "synthetic_influence", "config": {}}],
                "selectors": [{"name": "quadrant", "config": {"difficulty_column": "synthetic_diq_difficulty_score",
                                                              "influence_column": "synthetic_influence_dot",
                                                              "tau_d": 50}}],
                "budget": {"ratio": 0.1}, "seed": 0,
            },
            "scorers": ["synthetic_diq_difficulty", "synthetic_influence"], "sort": "synthetic_influence_dot",
        },
        "less": {
            "recipe": {
                "name": "synthetic-less", "description": "LESS top-k over synthetic max-cosine influence",
                "scorers": [{"name": "synthetic_influence", "config": {}}],
                "selectors": [{"name": "topk", "config": {"column": "synthetic_influence_less", "descending": True}}],
                "budget": {"ratio": 0.05}, "seed": 0,
            },
            "scorers": ["synthetic_influence"], "sort": "synthetic_influence_less",
        },
        "ifd": {
            "recipe": {
                "name": "synthetic-ifd", "description": "IFD top-k over synthetic scores",
                "scorers": [{"name": "synthetic_ifd", "config": {}}],
                "selectors": [{"name": "topk", "config": {"column": "synthetic_ifd_score", "descending": True,
                                                          "drop_above": 1.0}}],
                "budget": {"ratio": 0.1}, "seed": 0,
            },
            "scorers": ["synthetic_ifd"], "sort": "synthetic_ifd_score",
        },
        "random": {
            "recipe": {
                "name": "synthetic-random", "description": "seeded random sample (no scores)",
                "scorers": [], "selectors": [{"name": "random", "config": {}}], "seed": 0,
            },
            "scorers": [], "sort": "sample_id",
        },
    }


def scorer_configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "synthetic_quality": {},
        "synthetic_difficulty": {"embedding_dim": args.embedding_dim},
        "synthetic_ifd": {},
        "synthetic_diq_difficulty": {},
        "synthetic_influence": {"dim": args.feature_dim},
    }


# ------------------------------------------------------------------------------ child jobs
def _vector_columns(schema: Any) -> list[str]:
    import pyarrow as pa

    return [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
            or pa.types.is_large_list(f.type)]


def _local(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def _read_bytes(url: str) -> bytes:
    if "://" not in url or url.startswith("file://"):
        return Path(_local(url)).read_bytes()
    from syllabus.selection.scores import read_url_bytes  # s3://: through the store, as the selection reads it

    return read_url_bytes(url)


def _read_parquet(url: str) -> Any:
    import pyarrow.parquet as pq

    if "://" not in url or url.startswith("file://"):
        return pq.read_table(_local(url))
    from syllabus.store.store import read_parquet_bytes

    return read_parquet_bytes(_read_bytes(url))


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One stage or baseline, in this (child) process; returns what it measured besides time."""
    import synthetic_scorers

    synthetic_scorers.register()
    kind = job["kind"]
    if kind.startswith("real-"):
        from scale_real import run_real_job

        return run_real_job(job)
    if kind == "ingest":
        from syllabus.pipeline.config import IngestConfig
        from syllabus.pipeline.stages import ingest

        summary = ingest(IngestConfig(inputs=[job["pool_file"]], shard_size=job["shard_size"]), job["store"])
        return {"manifest": summary["manifest"], "records_ok": summary["records_ok"], "shards": summary["shards"],
                "records_rejected": summary["records_rejected"], "duplicates": summary["duplicates"]}
    if kind == "ingest-baseline":
        import pyarrow.json as pj

        table = pj.read_json(job["pool_file"])
        return {"rows": table.num_rows}
    if kind == "score":
        from syllabus.pipeline.stages import pool_shards
        from syllabus.scoring.pool import score_shards, write_score_manifest
        from syllabus.store import Store

        store = Store(job["store"])
        lm = SyntheticModel()
        entries = score_shards(pool_shards(job["manifest"]), job["scorer"], job["config"], lm, store, job["manifest"],
                               raise_errors=True)["entries"]
        out = write_score_manifest(job["scorer"], job["config"], lm.fingerprint, job["manifest"], entries, [], store)
        return {"score_manifest": out["url"], "samples": out["samples"], "shards": len(entries),
                "shards_scored": out["shards_scored"]}
    if kind == "score-baseline":
        import pyarrow.parquet as pq

        from syllabus.pipeline.stages import pool_shards
        from syllabus.pool.manifest import read_shard
        from syllabus.scoring.pool import make_scorer

        scorer = make_scorer(job["scorer"], job["config"])
        out = Path(job["scratch"])
        out.mkdir(parents=True, exist_ok=True)
        rows = 0
        for i, shard in enumerate(pool_shards(job["manifest"])):
            table = scorer.score(read_shard(shard), SyntheticModel())
            path = out / f"{i:05d}.parquet"
            pq.write_table(table, path, compression="zstd")
            path.unlink()  # written in full; dropped so that the baseline needs one shard's disk, not the pool's
            rows += table.num_rows
        return {"rows": rows}
    if kind == "select":
        from syllabus.pipeline.config import SelectConfig
        from syllabus.pipeline.stages import select

        config = SelectConfig(method=job["recipe"], scores=job["score_manifests"], budget=job.get("budget"),
                              pool=job["manifest"])
        report = select(config, job["store"]).checked()
        return {"selected": report["outputs"]["selected"], "report": report["outputs"]["report"],
                "n_selected": report["n_selected"], "n_candidates": report["n_candidates"],
                "counts": report["counts"], "stage_seconds": [s["seconds"] for s in report["stages"]]}
    if kind == "select-baseline":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # one table per score manifest (the pool's for random, which reads no scores)
        groups = [[s["url"] for s in json.loads(_read_bytes(m))["shards"]] for m in job["score_manifests"] or [job["manifest"]]]
        rows = 0
        for urls in groups:
            parts = []
            for url in urls:
                # every column is read, as the selection reads it; vectors are then dropped so
                # that the baseline holds one shard's at a time
                part = _read_parquet(url)
                parts.append(part.drop_columns(_vector_columns(part.schema)))
            table = pa.concat_tables(parts)
            rows = max(rows, table.num_rows)
            if job["sort"] in table.column_names:
                table.sort_by([(job["sort"], "descending")])
        return {"rows": rows}
    if kind == "export":
        from syllabus.pipeline.stages import export_subset

        summary = export_subset({"outputs": {"selected": job["selected"]}}, job["format"], job["out"])
        return {"samples": summary["samples"], "files": summary["files"]}
    if kind == "export-baseline":
        import pyarrow.parquet as pq

        from syllabus.selection.scores import read_url_bytes
        from syllabus.store.store import read_parquet_bytes

        table = read_parquet_bytes(read_url_bytes(job["selected"]))
        table = table.drop_columns(_vector_columns(table.schema))
        Path(job["scratch"]).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, Path(job["scratch"]) / "selected.parquet", compression="zstd")
        return {"rows": table.num_rows}
    raise ValueError(f"unknown job kind {kind!r}")


def child_main(spec: str) -> None:
    job = json.loads(spec)
    # Imports every job needs are made before the clock starts; a stage's own lazy imports
    # (datasets for hf export) count.
    import pandas  # noqa: F401
    import pyarrow.json  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import syllabus.pipeline.stages  # noqa: F401
    import syllabus.scoring.pool  # noqa: F401
    import syllabus.selection.recipes  # noqa: F401
    import syllabus.selection.scores  # noqa: F401

    start = time.perf_counter()
    out = run_job(job)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    print("RESULT " + json.dumps({"seconds": seconds, "peak_gb": peak, **out}), flush=True)


# ------------------------------------------------------------------------------ parent
def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return 0.0


def run_child(job: dict[str, Any], cap_gb: float, log_path: Path) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    with open(log_path, "a") as log:
        log.write(f"--- {job['kind']} {job.get('label', '')}\n")
        log.flush()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
                                stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        killed: list[float] = []

        def watch() -> None:
            while proc.poll() is None:
                rss = _rss_gb(proc.pid)
                if rss > cap_gb:
                    killed.append(rss)
                    proc.kill()
                    return
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        stdout, _ = proc.communicate()
        watcher.join()
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    why = f"killed at {killed[0]:.1f} GB RSS (cap {cap_gb} GB)" if killed else f"exit code {proc.returncode}"
    return {"error": f"{job['kind']} failed: {why}; see {log_path}"}


def count_files(*roots: Path) -> int:
    return sum(len(files) for root in roots if root.exists() for _, _, files in os.walk(root))


class Table:
    def __init__(self, n: int, path: Path, real: bool = False):
        self.rows: list[dict[str, Any]] = []
        self.n, self.path, self.real = n, path, real
        print(f"scale benchmark, N = {n:,}, scorers: synthetic (no model)"
              + (", real Prefect server, moto S3 and MLflow server" if real else ""))
        extra = f" {'task runs':>9s} {'API median/max s':>16s}" if real else ""
        print(f"{'stage':34s} {'seconds':>9s} {'peak GB':>8s} {'objects':>8s} {'baseline s':>10s} {'ratio':>7s}{extra}  note")

    def add(self, stage: str, res: dict[str, Any], objects: int, base: dict[str, Any] | None, note: str = "",
            task_runs: int | None = None, api: tuple[float, float] | None = None) -> None:
        row = {"stage": stage, "n": self.n, "seconds": res.get("seconds"), "peak_gb": res.get("peak_gb"),
               "objects": objects, "baseline_seconds": base.get("seconds") if base else None,
               "baseline_peak_gb": base.get("peak_gb") if base else None, "error": res.get("error"),
               "note": note, "detail": res}
        if self.real:
            row["task_runs"], row["api_median_max_s"] = task_runs, api
        extra = ""
        if self.real:
            t = f"{task_runs:d}" if task_runs is not None else "-"
            a = f"{api[0]:.3f}/{api[1]:.3f}" if api else "-"
            extra = f" {t:>9s} {a:>16s}"
        if row["seconds"] and row["baseline_seconds"]:
            row["ratio"] = row["baseline_seconds"] / row["seconds"]
        self.rows.append(row)
        if res.get("error"):
            print(f"{stage:34s} {'-':>9s} {'-':>8s} {objects:>8d} {'-':>10s} {'-':>7s}{extra}  {res['error']}", flush=True)
        else:
            b = f"{row['baseline_seconds']:.2f}" if row["baseline_seconds"] else "-"
            r = f"{row['ratio']:.3f}" if row.get("ratio") else "-"
            print(f"{stage:34s} {row['seconds']:9.2f} {row['peak_gb']:8.2f} {objects:8d} {b:>10s} {r:>7s}{extra}  {note}",
                  flush=True)
        self.path.write_text(json.dumps(self.rows, indent=1, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=0, help="pool size (distinct generated Alpaca records)")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: /tmp/syllabus-scale-N)")
    ap.add_argument("--shard-size", type=int, default=5000, help="samples per pool shard")
    ap.add_argument("--embedding-dim", type=int, default=4096, help="synthetic difficulty embedding (576, 4096)")
    ap.add_argument("--feature-dim", type=int, default=8192, help="synthetic influence projection dimension")
    ap.add_argument("--kcenter-budget", type=int, default=5000, help="3DS K-Center budget")
    ap.add_argument("--export-rows", type=int, default=500_000, help="random selection exported (at most N/2)")
    ap.add_argument("--methods", default="random,ifd,less,diq,3ds",
                    help="in this order; export runs after random's selection (3DS's K-Center, the slowest, last)")
    ap.add_argument("--formats", default=",".join(EXPORT_FORMATS))
    ap.add_argument("--rss-cap-gb", type=float, default=12.0, help="kill a stage whose RSS passes this")
    ap.add_argument("--stop-after", choices=["ingest", "score", "select", "export"], default=None,
                    help="last stage (default: export; with --real: select, its last stage)")
    ap.add_argument("--score-baselines", default=None, help="comma-separated scorers whose score stage gets its "
                    "baseline (default: all); the baseline repeats the synthetic computation")
    ap.add_argument("--reuse", action="store_true", help="keep the ingest and score rows of the last run in --dir "
                    "(results.json) and run only the stages after them")
    ap.add_argument("--real", action="store_true", help="through a real Prefect server, moto S3 and an MLflow server "
                    "(the ingest task, the score flow, the pipeline flow with stop_after=select)")
    ap.add_argument("--compare", nargs="?", const="only", choices=["only", "after-selects"], default=None,
                    help="with --real: after the score stages, the compare flow with stop_after=select and every arm "
                    "(3DS and its easy/medium/hard windows, DIQ, IFD, LESS, random over 3 seeds, full) at one budget "
                    "(--kcenter-budget); 'only' (the default) skips the per-method pipeline flows, 'after-selects' "
                    "runs them first")
    ap.add_argument("--real-store", choices=["s3", "local"], default="s3",
                    help="with --real: the store the flows score and select in (ingest is measured into both)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return 0
    if args.n < 1:
        ap.error("--n N (the pool size, at least 1) is required")
    if args.compare and not args.real:
        ap.error("--compare runs the compare flow on the real servers: add --real")
    if args.real:
        if args.stop_after == "export":
            ap.error("--real stops after select (the pipeline flow's stop_after); export is measured without --real")
        from scale_real import main_real

        return main_real(args)
    args.stop_after = args.stop_after or "export"
    from ingest import generate_pool  # benchmarks/ingest.py: the same generated Alpaca records

    work = (args.dir or Path(f"/tmp/syllabus-scale-{args.n}")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    store, exports, scratch = work / "store", work / "exports", work / "baseline"
    log_path = work / "stages.log"
    table = Table(args.n, work / "results.json")
    cap = args.rss_cap_gb

    pool_file = work / f"pool-{args.n}.jsonl"
    if not pool_file.exists():
        t0 = time.perf_counter()
        size = generate_pool(pool_file, args.n, defects=False)
        print(f"generated {pool_file} ({size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s", flush=True)

    def stage(label: str, job: dict[str, Any], base_job: dict[str, Any] | None, note: str = "") -> dict[str, Any]:
        before = count_files(store, exports)
        res = run_child({**job, "label": label}, cap, log_path)
        objects = count_files(store, exports) - before
        base = run_child({**base_job, "label": label + " baseline"}, cap, log_path) if base_job and not res.get("error") else None
        table.add(label, res, objects, base, note)
        return res

    previous = {r["stage"]: r for r in json.loads(table.path.read_text())} if args.reuse else {}

    def stage_or_reuse(label: str, job: dict[str, Any], base_job: dict[str, Any] | None, note: str = "") -> dict:
        if label in previous and not previous[label].get("error"):
            table.rows.append(previous[label])
            print(f"{label:34s} (reused from the last run: {previous[label]['seconds']:.2f}s)", flush=True)
            return previous[label]["detail"]
        return stage(label, job, base_job, note)

    common = {"store": str(store), "shard_size": args.shard_size, "pool_file": str(pool_file)}
    ing = stage_or_reuse("ingest", {"kind": "ingest", **common}, {"kind": "ingest-baseline", **common})
    if ing.get("error"):
        return 1
    manifest = ing["manifest"]
    if args.stop_after == "ingest":
        return 0

    configs = scorer_configs(args)
    methods = [m for m in args.methods.split(",") if m]
    wanted = sorted({s for m in methods for s in recipes("")[m]["scorers"]})
    score_manifests: dict[str, str] = {}
    for name in wanted:
        job = {"kind": "score", "store": str(store), "manifest": manifest, "scorer": name, "config": configs[name]}
        base = {**job, "kind": "score-baseline", "scratch": str(scratch / name)}
        if args.score_baselines is not None and name not in args.score_baselines.split(","):
            base = None  # its baseline is the synthetic computation again: skipped when told, to save time
        res = stage_or_reuse(f"score {name}", job, base, note=json.dumps(configs[name]) if configs[name] else "")
        if res.get("error"):
            return 1
        score_manifests[name] = res["score_manifest"]
    if args.stop_after == "score":
        return 0

    (work / "recipes").mkdir(exist_ok=True)
    import yaml

    def export_all(selected: str) -> None:
        """The random selection (``--export-rows``) to every ``syllabus export`` format."""
        base_job = {"kind": "export-baseline", "selected": selected, "scratch": str(scratch / "export")}
        base = run_child({**base_job, "label": "export baseline"}, cap, log_path)
        for fmt in [f for f in args.formats.split(",") if f]:
            before = count_files(store, exports)
            res = run_child({"kind": "export", "selected": selected, "format": fmt, "out": str(exports / fmt),
                             "label": fmt}, cap, log_path)
            table.add(f"export {fmt} ({res.get('samples', '?')} rows)", res, count_files(store, exports) - before, base)

    selections: dict[str, str] = {}
    for method in methods:
        spec = recipes("synthetic_difficulty_embedding")[method]
        path = work / "recipes" / f"synthetic-{method}.yaml"
        path.write_text(yaml.safe_dump(spec["recipe"], sort_keys=False))
        budget = None
        if method == "3ds":
            budget = {"count": args.kcenter_budget}
        elif method == "random":
            budget = {"count": min(args.export_rows, args.n // 2)}
        job = {"kind": "select", "store": str(store), "manifest": manifest, "recipe": str(path),
               "score_manifests": [score_manifests[s] for s in spec["scorers"]], "budget": budget}
        base = {**job, "kind": "select-baseline", "sort": spec["sort"]}
        res = stage(f"select {method} (synthetic)", job, base)
        if not res.get("error"):
            selections[method] = res["selected"]
            print(f"    {method}: {res['n_selected']:,} of {res['n_candidates']:,}; stages "
                  + ", ".join(f"{c['stage']} {c['n']:,}" for c in res["counts"]), flush=True)
            if method == "random" and args.stop_after == "export":
                export_all(res["selected"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
