"""Ingest throughput and memory: a generated pool of 1,000,000 records, and one 200 MB line.

Each phase runs in its own process, so its peak resident memory (``ru_maxrss``) is its own.
The baseline is the least any JSONL reader does: ``json.loads`` on every line of the same file,
keeping nothing. Ingest also validates, hashes, deduplicates, and writes zstd Parquet shards
and a manifest to a local store. For the long line the baseline reads it whole, as a plain
reader would; ingest skips it in bounded chunks and quarantines it.

    .venv/bin/python benchmarks/ingest.py                 # 1,000,000 records, a 200 MB line
    .venv/bin/python benchmarks/ingest.py --records 100000 --line-mb 20
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


def generate_pool(path: Path, records: int) -> int:
    """Alpaca records of realistic size; about one in a thousand is broken or a duplicate,
    so the quarantine path runs too."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(records):
            topic = TOPICS[i % len(TOPICS)]
            if i % 1000 == 999:
                fh.write('{"instruction": "broken record ' + str(i) + '", "output": \n')
                continue
            j = i - 1 if i % 1000 == 500 else i  # an exact duplicate of the previous record
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
    from syllabus.pool.ingest import ingest_pool
    from syllabus.store import Store

    # A one-record ingest first, so the lazy imports (Parquet writer, codecs) and allocator
    # arenas are in the "after import" figure, not charged to the file being measured.
    warm = Path(store + "-warm")
    warm.mkdir(parents=True, exist_ok=True)
    (warm / "one.jsonl").write_text(json.dumps({"instruction": "warm", "output": "up"}) + "\n")
    ingest_pool([str(warm / "one.jsonl")], Store(str(warm / "store")), progress=False)
    imported = _rss_mb()
    start = time.perf_counter()
    result = ingest_pool([path], Store(store), progress=False)
    seconds = time.perf_counter() - start
    s = result.summary()
    return {"records": s["records_in"], "seconds": seconds, "peak_mb": _rss_mb(), "import_mb": imported,
            "rejected": s["records_rejected"] + s["duplicates"], "shards": s["shards"]}


def run_phase(name: str, path: Path, store: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", name, str(path), str(store)],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--line-mb", type=int, default=200)
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one, removed after)")
    ap.add_argument("--phase", nargs=3, metavar=("NAME", "PATH", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(*args.phase)))
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        pool, line = work / "pool.jsonl", work / "longline.jsonl"
        t = time.perf_counter()
        pool_bytes = generate_pool(pool, args.records)
        line_bytes = generate_long_line(line, args.line_mb)
        print(f"generated {args.records:,} records ({pool_bytes / 1e6:,.0f} MB) and a {args.line_mb} MB line "
              f"in {time.perf_counter() - t:.0f} s")
        rows = []
        for label, path in (("pool", pool), ("long line", line)):
            base = run_phase("loads", path, work / "unused")
            ing = run_phase("ingest", path, work / f"store-{label.replace(' ', '-')}")
            rows.append((label, base, ing))
        print()
        print(f"{'input':<10} {'reader':<16} {'records':>9} {'seconds':>8} {'records/s':>10} {'peak MB':>8} {'after import':>12}")
        for label, base, ing in rows:
            for name, r in (("json.loads", base), ("syllabus ingest", ing)):
                rps = r["records"] / r["seconds"] if r["seconds"] else float("inf")
                print(f"{label:<10} {name:<16} {r['records']:>9,} {r['seconds']:>8.1f} {rps:>10,.0f} {r['peak_mb']:>8,.0f} "
                      f"{r['peak_mb'] - r['import_mb']:>12,.0f}")
        for label, base, ing in rows:
            speed = (ing["records"] / ing["seconds"]) / (base["records"] / base["seconds"])
            print(f"{label}: ingest runs at {speed:.3f}x the records/s of bare json.loads; peak memory "
                  f"{ing['peak_mb'] - ing['import_mb']:,.0f} MB above imports against json.loads' "
                  f"{base['peak_mb'] - base['import_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
