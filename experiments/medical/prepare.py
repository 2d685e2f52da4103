"""Cut the experiment's pool and held-out sets from the shared medical data, deterministically.

    python experiments/medical/prepare.py [--medquad N] [--genmed N] [--heldout N] [--seed S] [--out DIR]

Writes ``DIR/pool/medquad.jsonl`` and ``DIR/pool/genmedgpt.jsonl`` (a seeded sample of each
source), and ``DIR/heldout/medical_heldout.jsonl``: question/answer pairs from the same sources
that are not in the pool (no shared question text), whose reference-answer NLL the comparison
evaluates. Rerunning with the same arguments writes byte-identical files, so the pool's shards
keep their hashes and cached scores are reused.

Data: MedQuAD (Ben Abacha and Demner-Fushman, BMC Bioinformatics 2019, CC BY 4.0) and
GenMedGPT-5k (ChatDoctor, Li et al. 2023), read from ``../shared/data`` by default.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data"


def _read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _qa(record: dict) -> tuple[str, str]:
    """(question, answer) of a MedQuAD or GenMedGPT record, whitespace-normalised for matching."""
    if "question" in record:
        return " ".join(record["question"].split()), " ".join(record["answer"].split())
    return " ".join(record["input"].split()), " ".join(record["output"].split())


def _sample(records: list[dict], n: int, rng: random.Random, taken: set[str]) -> tuple[list[dict], list[dict]]:
    """``n`` records with a non-empty, not yet seen question and answer; and the rest, shuffled."""
    order = list(range(len(records)))
    rng.shuffle(order)
    chosen, rest = [], []
    for i in order:
        q, a = _qa(records[i])
        if not q or not a or q in taken:
            continue
        taken.add(q)
        (chosen if len(chosen) < n else rest).append(records[i])
    return chosen, rest


def _write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records), encoding="utf-8")
    return path


def prepare(medquad: int, genmed: int, heldout: int, seed: int, out: Path, data: Path = DATA) -> dict:
    rng = random.Random(seed)
    taken: set[str] = set()
    mq_pool, mq_rest = _sample(_read(data / "medquad.jsonl.gz"), medquad, rng, taken)
    gm_pool, gm_rest = _sample(_read(data / "genmedgpt5k.jsonl.gz"), genmed, rng, taken)
    # Held-out answers in the pool's proportions, none sharing a question with the pool.
    n_mq = round(heldout * medquad / max(medquad + genmed, 1))
    held = [{"id": f"heldout-mq-{i}", "question": _qa(r)[0], "answer": r["answer"]} for i, r in enumerate(mq_rest[:n_mq])]
    held += [{"id": f"heldout-gm-{i}", "question": _qa(r)[0], "answer": r["output"]} for i, r in enumerate(gm_rest[:heldout - n_mq])]
    files = {
        "pool": [str(_write(out / "pool" / "medquad.jsonl", mq_pool)), str(_write(out / "pool" / "genmedgpt.jsonl", gm_pool))],
        "heldout": str(_write(out / "heldout" / "medical_heldout.jsonl", held)),
    }
    return {**files, "counts": {"medquad": len(mq_pool), "genmedgpt": len(gm_pool), "heldout": len(held)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--medquad", type=int, default=500)
    p.add_argument("--genmed", type=int, default=100)
    p.add_argument("--heldout", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--data", type=Path, default=DATA)
    args = p.parse_args()
    print(json.dumps(prepare(args.medquad, args.genmed, args.heldout, args.seed, args.out, args.data)))


if __name__ == "__main__":
    main()
