#!/usr/bin/env bash
# Reproduce docs/results.md's comparison on real medical data (MedQuAD + GenMedGPT-5k, SmolLM2-135M,
# CPU): cut the pool and the held-out answers, then run `syllabus compare` with
# experiments/medical/compare.yaml. Scores are cached in experiments/medical/out/store, so a
# rerun only fine-tunes and evaluates what changed; the report lands in experiments/medical/out/report.
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
.venv/bin/python experiments/medical/prepare.py
.venv/bin/syllabus compare experiments/medical/compare.yaml --json
