"""Export throughput and memory: ``syllabus export`` of a selected subset to every format.

A generated pool (distinct Alpaca records of ``benchmarks/ingest.py``, with one record in ten a
multi-turn conversation with a system turn, newlines, quotes and non-ASCII text) is ingested
and fully selected (``method full``) with the library's own stages, once per ``--dir``; the
selected Parquet then goes through ``pipeline.stages.export_subset`` in each format.

Each export and the baseline run in their own process, so peak resident memory (``ru_maxrss``)
is each one's own. The baseline, measured in the same run, is a plain
``pyarrow.parquet.write_table`` (zstd) of the same selected rows, read from the same Parquet,
vector columns dropped (as ``benchmarks/scale.py`` measures it).

ratio = baseline seconds / export seconds (1.0: as fast as the baseline; 0.2: five times slower).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/export.py --rows 500000 --dir /tmp/export-500k
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

FORMATS = ("jsonl", "alpaca", "sharegpt", "hf")


def generate(path: Path, rows: int) -> None:
    """``rows`` distinct records: nine in ten Alpaca (benchmarks/ingest.py's), one in ten a
    ShareGPT conversation of three exchanges after a system turn."""
    from ingest import generate_pool

    n_conv = rows // 10
    generate_pool(path, rows - n_conv, defects=False)
    with open(path, "a", encoding="utf-8") as fh:
        for i in range(n_conv):
            turns = [{"from": "system", "value": f"You are a careful clinician (ward {i % 13})."}]
            for j in range(3):
                turns.append({"from": "human", "value": f"Case {i}, question {j}:\n\"Is a fever of 38.{j} °C a concern?\""})
                turns.append({"from": "gpt", "value": f"For case {i}: it depends — rest, fluids\tand review in {j + 1} days."})
            fh.write(json.dumps({"id": f"conv-{i}", "conversations": turns}, ensure_ascii=False) + "\n")


def setup(work: Path, rows: int) -> str:
    """The selected Parquet URL of a full selection of a generated pool of ``rows`` records."""
    done = work / "selected.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info["rows"] == rows:
            return info["selected"]
    from syllabus.pipeline.config import SelectConfig
    from syllabus.pipeline.stages import select
    from syllabus.pool.ingest import ingest_pool
    from syllabus.store import Store

    pool_file = work / f"pool-{rows}.jsonl"
    t0 = time.perf_counter()
    generate(pool_file, rows)
    summary = ingest_pool([str(pool_file)], Store(str(work / "store")), shard_size=5000, progress=False).summary()
    report = select(SelectConfig(method="full", pool=summary["manifest"], plots=False), str(work / "store")).checked()
    selected = report["outputs"]["selected"]
    done.write_text(json.dumps({"rows": rows, "selected": selected}))
    print(f"setup: {summary['records_ok']:,} records ingested and selected in {time.perf_counter() - t0:.1f}s", flush=True)
    return selected


def child(job: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet  # noqa: F401  (imports every job needs, before the clock starts)

    import syllabus.pipeline.stages  # noqa: F401
    import syllabus.selection.export  # noqa: F401

    start = time.perf_counter()
    if job["kind"] == "export":
        from syllabus.pipeline.stages import export_subset

        summary = export_subset({"outputs": {"selected": job["selected"]}}, job["format"], job["out"])
        out = {"samples": summary["samples"], "bytes": sum(_size(Path(f)) for f in summary["files"][:1])}
    else:
        import pyarrow.parquet as pq

        from syllabus.selection.scores import read_url_bytes
        from syllabus.selection.vectors import is_vector_type
        from syllabus.store.store import read_parquet_bytes

        table = read_parquet_bytes(read_url_bytes(job["selected"]))
        table = table.drop_columns([f.name for f in table.schema if is_vector_type(f.type)])
        Path(job["out"]).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, Path(job["out"]) / "selected.parquet", compression="zstd")
        out = {"samples": table.num_rows, "bytes": (Path(job["out"]) / "selected.parquet").stat().st_size}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    return {"seconds": seconds, "peak_gb": peak, **out}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def run(job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{job['kind']} {job.get('format', '')} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=500_000, help="selected rows exported")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: /tmp/syllabus-export-ROWS)")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    work = (args.dir or Path(f"/tmp/syllabus-export-{args.rows}")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    selected = setup(work, args.rows)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.rows:,} selected rows: {selected}", flush=True)
    base = run({"kind": "baseline", "selected": selected, "out": str(work / "baseline")})
    print(f"{'stage':24s} {'seconds':>8s} {'peak GB':>8s} {'MB out':>8s} {'base s':>7s} {'base GB':>8s} {'ratio':>6s}")
    print(f"{'parquet write (baseline)':24s} {base['seconds']:8.2f} {base['peak_gb']:8.2f} {base['bytes'] / 1e6:8.1f}")
    results = {"rows": args.rows, "baseline": base, "exports": {}}
    for fmt in [f for f in args.formats.split(",") if f]:
        res = run({"kind": "export", "selected": selected, "format": fmt, "out": str(work / "exports" / fmt)})
        results["exports"][fmt] = res
        print(f"{'export ' + fmt:24s} {res['seconds']:8.2f} {res['peak_gb']:8.2f} {res['bytes'] / 1e6:8.1f} "
              f"{base['seconds']:7.2f} {base['peak_gb']:8.2f} {base['seconds'] / res['seconds']:6.3f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
