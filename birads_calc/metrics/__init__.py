"""Evaluation metrics (paper §2.4): QWK, MAQWK-M, MAQWK-B, plus malignancy AUROC and patient-level bootstrap CIs.

Classes (torchmetrics, DDP-synced confusion-matrix states) live here; the functions in
:mod:`birads_calc.metrics.functional`. Rows = truth, columns = prediction throughout; see ``docs/metrics.md``.
"""

from birads_calc.metrics.auroc import MalignancyAUROC
from birads_calc.metrics.bootstrap import BootstrapCI, bootstrap_ci, metric_on_resamples
from birads_calc.metrics.functional import UndefinedMetricWarning
from birads_calc.metrics.kappa import MalignancyAdjustedQWK, QuadraticWeightedKappa

__all__ = [
    "BootstrapCI",
    "MalignancyAUROC",
    "MalignancyAdjustedQWK",
    "QuadraticWeightedKappa",
    "UndefinedMetricWarning",
    "bootstrap_ci",
    "metric_on_resamples",
]
