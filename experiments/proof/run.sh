#!/usr/bin/env bash
# The proof (issue 15): defect avoidance and the downstream comparison on a clean and a noisy
# pool built from the same 2,000 MedQuAD + GenMedGPT-5k samples, SmolLM2-135M on CPU.
# Every stage is cached in the store, so this is one command run as often as it takes: each
# invocation resumes where the last one stopped (a scored shard, a fine-tuned adapter and an
# evaluation are never computed twice).
#   STAGE=select experiments/proof/run.sh   # scores + defect avoidance only (no fine-tuning)
#   experiments/proof/run.sh                # everything
# The store lives outside the work tree (PROOF_STORE, default ~/.cache/syllabus/proof-store)
# so that a fresh checkout on the same machine keeps hours of scores.
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
PROOF_STORE="${PROOF_STORE:-$HOME/.cache/syllabus/proof-store}"
mkdir -p "$PROOF_STORE" experiments/proof/out
[ -e experiments/proof/out/store ] || ln -s "$PROOF_STORE" experiments/proof/out/store
.venv/bin/python experiments/proof/prepare.py
STAGE="${STAGE:-evaluate}"
# The noisy pool first: its scores cover every clean shard too.
.venv/bin/syllabus compare experiments/proof/compare_noisy.yaml --stop-after "$STAGE" --json
.venv/bin/syllabus compare experiments/proof/compare_clean.yaml --stop-after "$STAGE" --json
