"""Ingest throughput and memory: generated pools of 1,000,000 records, and one 200 MB line.

Each phase runs in its own process, so its peak resident memory (``ru_maxrss``) is its own.
Three inputs:

- ``clean``: distinct, well-formed Alpaca records. The baseline is ``pyarrow.json.read_json``
  of the same file (default options: threads on), the fastest reader at hand that keeps the
  records; issue 28 asks ingest for at least 0.2x its rate.
- ``mixed``: the same with about one record in a thousand broken or a duplicate, so the
  quarantine path runs too (``read_json`` refuses such a file; the baseline is bare
  ``json.loads`` of every line, keeping nothing).
- ``long line``: one 200 MB line; the baseline reads it whole, as a plain reader would; ingest
  skips it in bounded chunks and quarantines it.

Ingest also validates, hashes, deduplicates, and writes zstd Parquet shards and a manifest to a
local store. ``--per-record`` measures ingest with its vectorised path turned off.

    .venv/bin/python benchmarks/ingest.py                 # 1,000,000 records, a 200 MB line
    .venv/bin/python benchmarks/ingest.py --records 200000 --line-mb 0 --dir /tmp
    git archive COMMIT src | tar -x -C /tmp/old    # then, before and after under the same load:
    .venv/bin/python benchmarks/ingest.py --inputs clean --also-src /tmp/old/src
    .venv/bin/python benchmarks/ingest.py --inputs clean --also-env SYLLABUS_INGEST_WORKERS=0   # threads only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOPICS = ["hypertension", "asthma", "migraine", "anaemia", "gout", "eczema", "angina", "sepsis"]


def generate_pool(path: Path, records: int, defects: bool = True) -> int:
    """Distinct Alpaca records of realistic size; with ``defects``, about one in a thousand is
    broken or a duplicate, so the quarantine path runs too."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(records):
            if defects and i % 1000 == 999:
                fh.write('{"instruction": "broken record ' + str(i) + '", "output": \n')
                continue
            j = i - 1 if defects and i % 1000 == 500 else i  # an exact duplicate of the previous record
            topic = TOPICS[j % len(TOPICS)]  # of j, not i: with i's topic the "duplicate" was a new record
            rec = {
                "instruction": f"Patient {j} asks about {topic}: what should they know about treatment option {j % 97}?",
                "input": "" if j % 3 else f"Age {20 + j % 60}, history of {TOPICS[(j // 8) % len(TOPICS)]}.",
                "output": f"For {topic}, option {j % 97} is usually considered after assessment; "
                          f"discuss dose, side effects and follow-up (case {j}) with the treating clinician.",
            }
            fh.write(json.dumps(rec) + "\n")
    return path.stat().st_size


def generate_long_line(path: Path, megabytes: int) -> int:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"instruction": "before", "output": "a short record"}) + "\n")
        fh.write('{"instruction": "huge", "output": "')
        chunk = "y" * (1 << 20)
        for _ in range(megabytes):
            fh.write(chunk)
        fh.write('"}\n')
        fh.write(json.dumps({"instruction": "after", "output": "another short record"}) + "\n")
    return path.stat().st_size


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def phase(name: str, path: str, store: str) -> dict:
    """One measurement, in this (child) process."""
    if name == "read_json":
        import pyarrow.json

        imported = _rss_mb()
        start = time.perf_counter()
        table = pyarrow.json.read_json(path)
        seconds = time.perf_counter() - start
        return {"records": table.num_rows, "seconds": seconds, "peak_mb": _rss_mb(), "import_mb": imported, "rejected": 0}
    if name == "loads":
        imported = _rss_mb()
        start = time.perf_counter()
        n = bad = 0
        with open(path, "rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                n += 1
                try:
                    json.loads(line)
                except ValueError:
                    bad += 1
        seconds = time.perf_counter() - start
        return {"records": n, "seconds": seconds, "peak_mb": _rss_mb(), "import_mb": imported, "rejected": bad}
    from syllabus.pool import ingest as ingest_module
    from syllabus.pool.ingest import ingest_pool
    from syllabus.store import Store

    if name == "ingest-per-record":
        ingest_module.VECTORISED = False

    # A small ingest first (100 records: enough for the vectorised path, whose first pyarrow
    # conversion imports pandas, about 0.7 s), so the lazy imports (Parquet writer, codecs,
    # pandas) and allocator arenas are in the "after import" figure, not charged to the file
    # being measured.
    warm = Path(store + "-warm")
    warm.mkdir(parents=True, exist_ok=True)
    (warm / "warm.jsonl").write_text("".join(json.dumps({"instruction": f"warm {i}", "output": "up"}) + "\n" for i in range(100)))
    ingest_pool([str(warm / "warm.jsonl")], Store(str(warm / "store")), progress=False)
    imported = _rss_mb()
    start = time.perf_counter()
    result = ingest_pool([path], Store(store), progress=False)
    seconds = time.perf_counter() - start
    s = result.summary()
    # Ingest's worker processes (syllabus.pool.prepare_workers) have their own memory: the
    # largest one's peak, since they ran at the same time as this process and each other.
    workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"records": s["records_in"], "seconds": seconds, "peak_mb": _rss_mb(), "import_mb": imported,
            "rejected": s["records_rejected"] + s["duplicates"], "shards": s["shards"], "workers_mb": workers_mb}


def run_phase(name: str, path: Path, store: Path, src: str | None = None, extra_env: dict | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    if src:  # another syllabus source tree (an older commit's src/), ahead of the installed one
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run([sys.executable, __file__, "--phase", name, str(path), str(store)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--line-mb", type=int, default=200, help="the long line's size (0: leave it out)")
    ap.add_argument("--per-record", action="store_true", help="also measure ingest with the vectorised path off")
    ap.add_argument("--also-src", default=None, metavar="DIR",
                    help="also measure the ingest of another syllabus source tree under the same load, e.g. an older "
                         "commit's: git archive COMMIT src | tar -x -C /tmp/old, then --also-src /tmp/old/src")
    ap.add_argument("--also-env", action="append", default=[], metavar="NAME=VALUE",
                    help="also measure this source's ingest with an environment variable set, e.g. "
                         "SYLLABUS_INGEST_WORKERS=0 (blocks prepared by threads, not worker processes); repeatable")
    ap.add_argument("--inputs", default="clean,mixed,long line", help="which inputs to measure (comma-separated)")
    ap.add_argument("--baseline-runs", type=int, default=3, help="runs of the baseline; the fastest counts")
    ap.add_argument("--ingest-runs", type=int, default=1, help="runs of each ingest, taking turns; the fastest counts")
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed after)")
    ap.add_argument("--phase", nargs=3, metavar=("NAME", "PATH", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(*args.phase)))
        return

    wanted = {w.strip() for w in args.inputs.split(",")}
    if not args.line_mb:
        wanted.discard("long line")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        inputs = []
        if "clean" in wanted:
            path = work / "clean.jsonl"
            inputs.append(("clean", path, generate_pool(path, args.records, defects=False), "read_json"))
        if "mixed" in wanted:
            path = work / "mixed.jsonl"
            inputs.append(("mixed", path, generate_pool(path, args.records), "loads"))
        if "long line" in wanted:
            path = work / "longline.jsonl"
            inputs.append(("long line", path, generate_long_line(path, args.line_mb), "loads"))
        print(f"generated {', '.join(f'{label} ({size / 1e6:,.0f} MB)' for label, _, size, _ in inputs)} "
              f"in {time.perf_counter() - t:.0f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        rows = []
        for label, path, _, baseline in inputs:
            # The baseline takes a second or two, so other jobs' load moves it most: its best of
            # --baseline-runs runs (the harsher ratio for ingest).
            base = min((run_phase(baseline, path, work / "unused") for _ in range(args.baseline_runs)),
                       key=lambda r: r["seconds"])
            slug = label.replace(" ", "-")
            runs = [("syllabus ingest", "ingest", f"store-{slug}", None, None)]
            if args.also_src:
                runs.append(("  --also-src", "ingest", f"store-also-{slug}", args.also_src, None))
            for n, setting in enumerate(args.also_env):
                name, _, value = setting.partition("=")
                runs.append((f"  {setting}", "ingest", f"store-env{n}-{slug}", None, {name: value}))
            if args.per_record:
                runs.append(("  per-record", "ingest-per-record", f"store-pr-{slug}", None, None))
            # With --ingest-runs N, the configurations take turns N times (so each sees much the
            # same load) and each counts its fastest run; every run's seconds are printed.
            results: dict[str, list[dict]] = {name: [] for name, *_ in runs}
            for i in range(args.ingest_runs):
                for name, phase_name, store_name, src, extra_env in runs:
                    results[name].append(run_phase(phase_name, path, work / f"{store_name}-{i}", src, extra_env))
            measured = []
            for name, *_ in runs:
                best = min(results[name], key=lambda r: r["seconds"])
                best["all_seconds"] = [round(r["seconds"], 1) for r in results[name]]
                measured.append((name, best))
            rows.append((label, baseline, base, measured))
        print(f"load average after: {os.getloadavg()[0]:.1f}" + (f"; --also-src {args.also_src}" if args.also_src else ""))
        print()
        print(f"{'input':<10} {'reader':<16} {'records':>9} {'seconds':>8} {'records/s':>10} {'peak MB':>8} {'after import':>12}")
        for label, baseline, base, measured in rows:
            for name, r in ((baseline, base), *measured):
                rps = r["records"] / r["seconds"] if r["seconds"] else float("inf")
                print(f"{label:<10} {name:<16} {r['records']:>9,} {r['seconds']:>8.1f} {rps:>10,.0f} {r['peak_mb']:>8,.0f} "
                      f"{r['peak_mb'] - r['import_mb']:>12,.0f}")
        for label, baseline, base, measured in rows:
            for name, ing in measured:
                speed = (ing["records"] / ing["seconds"]) / (base["records"] / base["seconds"])
                runs_note = f" (fastest of {ing['all_seconds']} s)" if len(ing["all_seconds"]) > 1 else ""
                workers = f" (and {ing['workers_mb']:,.0f} MB at most in each worker process)" if ing.get("workers_mb") else ""
                print(f"{label}: {name.strip()} runs at {speed:.3f}x the records/s of {baseline}{runs_note}; peak memory "
                      f"{ing['peak_mb'] - ing['import_mb']:,.0f} MB above imports{workers} against {baseline}' "
                      f"{base['peak_mb'] - base['import_mb']:,.0f} MB")

if __name__ == "__main__":
    main()
