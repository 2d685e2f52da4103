"""Cut the proof experiment's clean pool and held-out answers, and plant its defects.

    .venv/bin/python experiments/proof/prepare.py [--medquad N] [--genmed N] [--heldout N] [--fraction F] [--seed S]

Writes, under ``experiments/proof/out/`` (deterministic: a rerun writes byte-identical files,
so every shard keeps its hash and its cached scores):

- ``pool/medquad.jsonl``, ``pool/genmedgpt.jsonl``: the clean pool (seeded samples of
  MedQuAD and GenMedGPT-5k, as ``experiments/medical/prepare.py`` cuts them);
- ``defects/defects.jsonl``: the planted defects (``syllabus plant-defects``), a file of their
  own that the noisy pool ingests next to the untouched clean files;
- ``labels.jsonl``: sample id -> defect kind, never ingested;
- ``heldout/medical_heldout.jsonl``: question/answer pairs of the same sources that share no
  question with the pool, for the held-out reference NLL.

``compare_clean.yaml`` reads the clean files; ``compare_noisy.yaml`` the clean files and the
defects; both share one store, so the clean shards are scored once.
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
    planted = subprocess.run([str(Path(sys.executable).with_name("syllabus")), "plant-defects", *files["pool"], "--out", str(defects),
                              "--labels", str(labels), "--fraction", str(args.fraction), "--seed", str(args.seed), "--json"],
                             check=True, capture_output=True, text=True).stdout.splitlines()[-1]
    print(json.dumps({**files, "defects": str(defects), "labels": str(labels), "planted": json.loads(planted)}))


if __name__ == "__main__":
    main()
