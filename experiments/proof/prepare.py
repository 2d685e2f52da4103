"""Cut the proof experiment's clean pool and held-out answers, and plant its defects.

    .venv/bin/python experiments/proof/prepare.py [--medquad N] [--genmed N] [--heldout N] [--fraction F] [--seed S]

Writes, under ``experiments/proof/out/`` (deterministic: a rerun writes byte-identical files,
so every shard keeps its hash and its cached scores):

- ``pool/medquad.jsonl``, ``pool/genmedgpt.jsonl``: the clean pool (seeded samples of
  MedQuAD and GenMedGPT-5k, as ``experiments/medical/prepare.py`` cuts them);
- ``defects/defects.jsonl``: the planted defects (``syllabus plant-defects``), a file of their
  own that the noisy pool ingests next to the untouched clean files;
- ``labels.jsonl``: sample id -> defect kind, never ingested;
- ``injection/injection.jsonl``: 61 more defects of the ``injection`` kind (text addressed to
  the rater added to an intact sample; issue 29), planted with seed + 1 in a file of their own,
  and ``labels-injection.jsonl``, the labels of both defect files: the noisy pool and its
  scores stay as they were, and ``compare_injection.yaml`` reads the three files;
- ``heldout/medical_heldout.jsonl``: question/answer pairs of the same sources that share no
  question with the pool, for the held-out reference NLL.

``compare_clean.yaml`` reads the clean files; ``compare_noisy.yaml`` the clean files and the
defects; ``compare_injection.yaml`` those and the injection file; all share one store, so each
shard is scored once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _medical_prepare():
    spec = importlib.util.spec_from_file_location("medical_prepare", ROOT / "experiments" / "medical" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--medquad", type=int, default=850)
    p.add_argument("--genmed", type=int, default=150)
    p.add_argument("--heldout", type=int, default=400)
    p.add_argument("--fraction", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args()
    medical = _medical_prepare()
    files = medical.prepare(args.medquad, args.genmed, args.heldout, args.seed, args.out, args.data)
    defects, labels = args.out / "defects" / "defects.jsonl", args.out / "labels.jsonl"
    planted = _plant(files["pool"], defects, labels, ["--fraction", str(args.fraction), "--seed", str(args.seed)])
    # The injection kind in a file of its own, as many as each other kind (61 of 1,061).
    injection, injection_labels = args.out / "injection" / "injection.jsonl", args.out / "injection" / "labels.jsonl"
    n = round(planted["defects"] / len(planted["per_kind"]))
    injected = _plant(files["pool"], injection, injection_labels,
                      ["--kinds", "injection", "--fraction", str(n / (planted["clean"] + n)), "--seed", str(args.seed + 1)])
    # Labels only for what the pool holds: ingest drops a twin whose injection is invisible
    # characters alone, as a duplicate of its base (the dedup key removes them), and a labels
    # file naming ids outside the pool is an error.
    pooled = _pooled_ids([*files["pool"], str(defects), str(injection)])
    lines = (labels.read_bytes() + injection_labels.read_bytes()).decode().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line)["sample_id"] in pooled]
    all_labels = args.out / "labels-injection.jsonl"
    all_labels.write_text("".join(kept))
    injected["dropped_by_ingest"] = len(lines) - len(kept)
    print(json.dumps({**files, "defects": str(defects), "labels": str(labels), "planted": planted,
                      "injection": str(injection), "labels_injection": str(all_labels), "injected": injected}))


def _pooled_ids(files: list[str]) -> set[str]:
    """The sample ids a pool of these files holds (ingested into a throwaway store)."""
    import tempfile

    import pyarrow.parquet as pq

    syllabus = str(Path(sys.executable).with_name("syllabus"))
    with tempfile.TemporaryDirectory() as store:
        subprocess.run([syllabus, "ingest", *files, "--store", store, "--json"], check=True, capture_output=True)
        return {i for shard in Path(store).glob("shards/*.parquet")
                for i in pq.read_table(shard, columns=["sample_id"]).column("sample_id").to_pylist()}


def _plant(pool: list[str], out: Path, labels: Path, options: list[str]) -> dict:
    syllabus = str(Path(sys.executable).with_name("syllabus"))
    run = subprocess.run([syllabus, "plant-defects", *pool, "--out", str(out), "--labels", str(labels), *options, "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(run.stdout.splitlines()[-1])


if __name__ == "__main__":
    main()
