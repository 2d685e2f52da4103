"""Evaluation of a model (plus LoRA adapter) on medical benchmarks.

- ``benchmarks``: items and loaders (built-in MMLU medical subsets, any JSONL/CSV/Parquet file);
- ``multiple_choice``: cloze and letter scoring;
- ``openqa``: reference NLL and BLEU/ROUGE of generated answers;
- ``metrics``: accuracy with bootstrap intervals, BLEU-1/4, ROUGE (character level for Chinese);
- ``judges``: local or OpenAI-compatible judges, pairwise win rate, clinical rubric;
- ``decontamination``: exact and near-duplicate benchmark questions in a training pool;
- ``heldout``: the validation items influence scoring holds out, which evaluation leaves out;
- ``runner``: run benchmarks, commit per-item results; ``syllabus evaluate`` is :mod:`syllabus.cli.evaluate`.
"""
