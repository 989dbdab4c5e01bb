"""Reporting: what a run hands to people, from predictions that already exist.

Stage: owns ``predictions.csv`` / ``breasts.csv`` / ``metrics.json`` / ``report.md`` (``reports``), the per-image
overlays (``overlays``), the calibration table against the BI-RADS malignancy ranges (``calibration``) and the
Table 3 / Fig. 3 comparison of finished runs (``compare``, the ``birads-calc compare`` tool, with
``comparable_runs``, ``paired_statistics``, ``multiplicity``, ``compare_charts`` and the ``simulation`` that checks
its error rates). It may import the
foundations, ``data`` and ``metrics``; it never builds a model or a trainer (that is ``training`` and ``cli``).
Submodules are imported where used, so ``compare`` does not pay for the report writers.
"""
