"""Malignancy AUROC of the risk score as a torchmetrics class (beyond the paper, for the reports)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.classification import BinaryAUROC
from torchmetrics.utilities import dim_zero_cat

from birads_calc.metrics.functional import _auroc_compute, _auroc_update


class MalignancyAUROC(BinaryAUROC):
    """Exact AUROC of the risk score for biopsy malignancy over samples of known pathology (0.5 skipped).

    A :class:`torchmetrics.classification.BinaryAUROC` (``thresholds=None``: exact, states concatenated across
    processes) fed with ``update(risk, malignancy)``; see :func:`.functional.malignancy_auroc`.

    Example:
        >>> metric = MalignancyAUROC()
        >>> metric.update(torch.tensor([0.1, 0.9, 0.4]), torch.tensor([0.0, 1.0, 0.5]))
        >>> metric.compute()
        tensor(1., dtype=torch.float64)
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(thresholds=None, **kwargs)

    def update(self, risk: Tensor, malignancy: Tensor) -> None:  # type: ignore[override]
        """Add risk scores and malignancy codes (1.0 / 0.0 / 0.5); unknown samples are skipped."""
        risk, labels = _auroc_update(risk, malignancy)
        super().update(risk, labels)

    def compute(self) -> Tensor:
        """AUROC (float64; ``nan`` with a warning unless both pathologies were seen)."""
        if isinstance(self.preds, list) and not self.preds:  # nothing seen: undefined, like an empty test set
            return _auroc_compute(torch.zeros(0), torch.zeros(0, dtype=torch.long))
        return _auroc_compute(dim_zero_cat(self.preds), dim_zero_cat(self.target))
