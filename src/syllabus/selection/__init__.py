"""Selection: decide which samples to fine-tune on, from cached scores, with no model.

- ``threshold``  quality threshold (3DS Stage 1)             :class:`ThresholdSelector`
- ``band``       per-metric percentile band, intersected     :class:`BandSelector`
- ``kcenter``    greedy K-Center, memory linear in n          :class:`KCenterSelector`
- ``quadrant``   DIQ difficulty x influence quadrants        :class:`QuadrantSelector`
- ``topk``       top-k by any column (IFD, LESS)              :class:`TopKSelector`
- ``random``, ``full``  the baselines                         :mod:`~syllabus.selection.baselines`

Methods are YAML recipes in ``syllabus/recipes`` (``recipes.py`` loads and runs them);
``scores.py`` joins score tables with the pool; ``report.py`` commits the selection, the
per-candidate "why" table and the report; ``plots.py`` draws the pictures; ``search.py`` is
the band-window search of 3DS Appendix H; ``syllabus select`` is :mod:`syllabus.cli.select`.
Submodules are imported on use so that ``import syllabus.selection`` stays light.
"""
