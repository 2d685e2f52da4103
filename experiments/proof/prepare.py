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
from collections import Counter
from pathlib import Path

from syllabus.pool.defects import distractor_pairs, plant_defects, read_samples, _write_jsonl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _medical_prepare():
    spec = importlib.util.spec_from_file_location("medical_prepare", ROOT / "experiments" / "medical" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--medquad", type=int, default=1700)
    p.add_argument("--genmed", type=int, default=300)
    p.add_argument("--heldout", type=int, default=400)
    p.add_argument("--fraction", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args()
    medical = _medical_prepare()
    files = medical.prepare(args.medquad, args.genmed, args.heldout, args.seed, args.out, args.data)
    samples = read_samples(files["pool"])
    records, labels = plant_defects(samples, args.fraction, args.seed, distractors=distractor_pairs())
    _write_jsonl(args.out / "defects" / "defects.jsonl", records)
    _write_jsonl(args.out / "labels.jsonl", labels)
    print(json.dumps({**files, "defects": str(args.out / "defects" / "defects.jsonl"), "labels": str(args.out / "labels.jsonl"),
                      "counts": {**files["counts"], "clean": len(samples), "defects": len(records),
                                 "per_kind": dict(Counter(label["defect"] for label in labels))}}))


if __name__ == "__main__":
    main()
