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
NOISY=experiments/proof/compare_noisy.yaml
CLEAN=experiments/proof/compare_clean.yaml
if [ "$STAGE" = evaluate ]; then
  # The 200-sample arms of both pools before the two full arms (2,857 and 2,000 sample passes,
  # more than all the others together), so a run stopped part-way has the comparisons that say
  # most. The noisy pool first: its scores cover every clean shard too.
  SUBSETS=$(.venv/bin/python -c 'import sys, yaml; print(",".join(m for m in yaml.safe_load(open(sys.argv[1]))["methods"] if m != "full"))' "$NOISY")
  .venv/bin/syllabus compare "$NOISY" --methods "$SUBSETS" --stop-after evaluate
  .venv/bin/syllabus compare "$CLEAN" --methods "$SUBSETS" --stop-after evaluate
fi
# Every arm (the ones above are read back from the store): the reports.
.venv/bin/syllabus compare "$NOISY" --stop-after "$STAGE" --json
.venv/bin/syllabus compare "$CLEAN" --stop-after "$STAGE" --json
