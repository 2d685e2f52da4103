#!/usr/bin/env bash
# The proof (issue 15): defect avoidance and the downstream comparison on a clean and a noisy
# pool built from the same 1,000 MedQuAD + GenMedGPT-5k samples, SmolLM2-135M on CPU.
# Every stage is cached in the store, so this is one command run as often as it takes: each
# invocation resumes where the last one stopped (a scored shard, a fine-tuned adapter and an
# evaluation are never computed twice).
#   STAGE=select experiments/proof/run.sh   # scores + defect avoidance only (no fine-tuning)
#   experiments/proof/run.sh                # everything
# The store, experiments/proof/store, is committed: its per-shard scores, evaluations and
# adapter markers (store/.gitignore) carry the run from one machine to the next; commit it
# after a run (git add experiments/proof/store) and a fresh clone resumes from there.
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
.venv/bin/python experiments/proof/prepare.py
STAGE="${STAGE:-evaluate}"
NOISY=experiments/proof/compare_noisy.yaml
CLEAN=experiments/proof/compare_clean.yaml
# Scores and the defect-avoidance table of every method in the config: the noisy pool's scores
# cover every clean shard too.
.venv/bin/syllabus compare "$NOISY" --stop-after select --report-dir experiments/proof/out/report-defects --json
[ "$STAGE" = select ] && exit 0
# Downstream, the arms the issue names (3DS with its easy and hard windows, DIQ, IFD, random
# with 3 seeds, full) and 3ds-relevance, the recipe that keeps fewest defects; the other filter
# recipes are measured on defects only. The 100-sample arms of both pools first, then the two
# full arms (1,429 and 1,000 sample passes), so a run stopped part-way has the comparisons that
# say most.
ARMS="${ARMS:-3ds,3ds-relevance,diq,ifd,random}"
.venv/bin/syllabus compare "$NOISY" --methods "$ARMS" --stop-after evaluate
.venv/bin/syllabus compare "$CLEAN" --methods "$ARMS" --stop-after evaluate
.venv/bin/syllabus compare "$NOISY" --methods "$ARMS,full" --json
.venv/bin/syllabus compare "$CLEAN" --methods "$ARMS,full" --json
# What the planted defects cost each arm: noisy against clean, paired per evaluation item.
.venv/bin/python experiments/proof/cross_pool.py
