"""Scorers: compute per-sample columns with the target model; never decide anything.

- ``quality``: 3DS Stage 1 rating (:mod:`syllabus.scoring.quality`)
- ``difficulty``: 3DS Stage 2 D1/D2/D3 and embedding (:mod:`syllabus.scoring.difficulty`)
- ``ifd``: Instruction-Following Difficulty (:mod:`syllabus.scoring.ifd`)

Shared machinery (config base, cache keys, per-shard commit) is in :mod:`syllabus.scoring.base`;
whole pools and the ``syllabus score`` command in :mod:`syllabus.scoring.pool` and
:mod:`syllabus.scoring.commands`; plain per-sample yardsticks in :mod:`syllabus.scoring.reference`.
"""
