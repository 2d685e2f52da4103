"""Scorers: compute per-sample columns, with the target model except for ``relevance`` and ``injection``; never decide anything.

- ``quality``: 3DS Stage 1 rating (:mod:`syllabus.scoring.quality`)
- ``difficulty``: 3DS Stage 2 D1/D2/D3 and embedding (:mod:`syllabus.scoring.difficulty`)
- ``ifd``: Instruction-Following Difficulty (:mod:`syllabus.scoring.ifd`)
- ``diq_difficulty``: DIQ's judge-rated difficulty (:mod:`syllabus.scoring.diq_difficulty`)
- ``gradients``: projected per-sample LoRA gradient features (:mod:`syllabus.scoring.gradients`;
  its parts in :mod:`~syllabus.scoring.lora_gradients` and :mod:`~syllabus.scoring.projection`)
- ``influence``: DIQ's dot product and LESS's cosine influence on a validation set
  (:mod:`syllabus.scoring.influence`; validation gradients in :mod:`~syllabus.scoring.validation`,
  LESS's warm-up in :mod:`~syllabus.scoring.warmup`)
- ``relevance``: question/answer relevance by a sentence embedder, not the target model
  (:mod:`syllabus.scoring.relevance`)
- ``injection``: rule-based flags for text addressed to a rater, no model
  (:mod:`syllabus.scoring.injection`)

Shared machinery (config base, cache keys, per-shard commit) is in :mod:`syllabus.scoring.base`;
whole pools in :mod:`syllabus.scoring.pool`, and a ``syllabus score`` run (plan, scorers,
combined table) in :func:`syllabus.pipeline.stages.score`; plain per-sample yardsticks in
:mod:`syllabus.scoring.reference`; per-stage timing of a scored pool in :mod:`syllabus.scoring.timing`.
"""
