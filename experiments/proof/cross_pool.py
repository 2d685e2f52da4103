"""What the planted defects cost each arm: the noisy pool's arm minus the clean pool's, paired
per evaluation item (both pools are evaluated on the same 300 held-out answers and MMLU items),
with 95% paired-bootstrap intervals; random is the per-item mean over its 3 seeds.

    .venv/bin/python experiments/proof/cross_pool.py    # after run.sh (both comparisons' reports)

Reads the two reports' comparison.json (their rows name each arm's evaluation in the store) and
writes experiments/proof/out/cross_pool.md and cross_pool.png (the differences with their
intervals). Evaluations are looked up in --store when the path a report recorded is not there (a
report written on another machine).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from syllabus.pipeline.compare import across_runs, plot_across_runs

HERE = Path(__file__).resolve().parent


def rows(report: Path, store: Path) -> list[dict]:
    if not report.is_file():
        raise SystemExit(f"{report}: no comparison report; run experiments/proof/run.sh (or its compare commands) first")
    data = json.loads(report.read_text())
    same = data.get("identical_selections") or {}  # 3ds-medium = 3ds: one result, reported once
    out = []
    for row in (r for r in data["results"] if r["method"] not in same):
        url = row.get("evaluation")
        if url and not os.path.exists(url) and "/evaluations/" in url:
            url = str(store / ("evaluations/" + url.split("/evaluations/", 1)[1]))
        out.append({**row, "evaluation": url})
    if not any(r["evaluation"] for r in out):
        raise SystemExit(f"{report}: its rows name no evaluations (a report from before they did); rerun its compare "
                         "command, which reads every arm back from the store in minutes")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clean", type=Path, default=HERE / "out/report-clean/comparison.json")
    ap.add_argument("--noisy", type=Path, default=HERE / "out/report-noisy/comparison.json")
    ap.add_argument("--store", type=Path, default=HERE / "store")
    ap.add_argument("--out", type=Path, default=HERE / "out/cross_pool.md")
    args = ap.parse_args()
    table = across_runs(rows(args.clean, args.store), rows(args.noisy, args.store))
    lines = ["| arm | metric | clean pool | noisy pool | noisy - clean [95% CI] | verdict (noisy against clean) |",
             "|---|---|---|---|---|---|"]
    for r in table:
        lo, hi = r["delta_ci"]
        lines.append(f"| {r['arm']} | {r['metric']} | {r['a']:.3f} | {r['b']:.3f} | {r['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                     f"| {r['verdict']} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    plot = args.out.with_suffix(".png")
    plot.write_bytes(plot_across_runs(table, ("clean", "noisy")))
    print(text + f"\nwritten to {args.out} and {plot}")


if __name__ == "__main__":
    main()
