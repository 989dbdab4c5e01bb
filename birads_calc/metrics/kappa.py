"""torchmetrics classes for QWK and MAQWK-M / MAQWK-B (paper §2.4); the logic lives in :mod:`.functional`.

The state of each metric is one int64 confusion matrix (rows = truth, columns = prediction) summed across
processes, so a DDP run gives exactly the single-process value, whatever the sharding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.plot import plot_single_or_multi_val

from birads_calc.metrics.functional import (
    Kind,
    _check_kind,
    _check_num_classes,
    _maqwk_compute,
    _maqwk_update,
    _qwk_compute,
    _qwk_update,
)


class _ConfusionMetric(Metric):
    """Shared state: one confusion matrix with sum reduction."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0
    confmat: Tensor

    def __init__(self, num_classes: int, validate_args: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = _check_num_classes(num_classes)
        self.validate_args = validate_args
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state("confmat", default=zeros, dist_reduce_fx="sum")

    @property
    def plot_name(self) -> str:
        """The y-axis label of :meth:`plot` (the paper's name of the metric)."""
        return "QWK"

    def plot(self, val: Tensor | Sequence[Tensor] | None = None, ax: Any = None) -> tuple[Any, Any]:
        """Plot one value or a series of values (e.g. one per epoch), as torchmetrics' own metrics do.

        Args:
            val: a result of :meth:`compute` (or ``forward``), or a sequence of them drawn as a curve over steps;
                default: :meth:`compute` now.
            ax: a matplotlib axis to draw into; default: a new figure.

        Returns:
            ``(figure, axes)``; the figure is ``None`` when ``ax`` was given. The axis spans the kappa range
            [-1, 1], with the better direction marked.

        Example:
            >>> metric = QuadraticWeightedKappa(num_classes=6)
            >>> metric.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 3]))
            >>> figure, axes = metric.plot()
        """
        val = self.compute() if val is None else val
        return plot_single_or_multi_val(
            val,
            ax=ax,
            higher_is_better=self.higher_is_better,
            name=self.plot_name,
            lower_bound=self.plot_lower_bound,
            upper_bound=self.plot_upper_bound,
            legend_name=self.plot_legend_name,
        )


class QuadraticWeightedKappa(_ConfusionMetric):
    """Quadratic weighted kappa (Eq. 5) accumulated over batches; see :func:`.functional.quadratic_weighted_kappa`.

    Args:
        num_classes: number of classes (6 or 4 for the BI-RADS scales).
        validate_args: check dtypes, index ranges and lengths on every update.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``dist_sync_fn``, ...).

    Example:
        >>> metric = QuadraticWeightedKappa(num_classes=6)
        >>> metric.update(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 2]))
        >>> metric.update(torch.tensor([3, 4, 5]), torch.tensor([3, 4, 5]))
        >>> round(float(metric.compute()), 4)  # Table 1, case 1, classifier 1
        0.9024
    """

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of predicted and true class indices."""
        self.confmat += _qwk_update(preds, target, self.num_classes, self.validate_args).to(self.confmat)

    def compute(self) -> Tensor:
        """QWK of everything seen so far (float64; ``nan`` with a warning when undefined)."""
        return _qwk_compute(self.confmat)


class MalignancyAdjustedQWK(_ConfusionMetric):
    """MAQWK-M or MAQWK-B (Eq. 6-7) accumulated over batches; see :func:`.functional.malignancy_adjusted_qwk`.

    Only the samples of ``kind`` enter the confusion matrix: malignant (1.0) for ``"malignant"``, benign (0.0)
    for ``"benign"``; unknown (0.5) samples are skipped.

    Args:
        num_classes: number of classes (6 or 4).
        kind: ``"malignant"`` (MAQWK-M, penalises predictions below the truth) or ``"benign"`` (MAQWK-B,
            penalises predictions above it).
        validate_args: check dtypes, ranges, malignancy codes and lengths on every update.
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = MalignancyAdjustedQWK(num_classes=6, kind="benign")
        >>> metric.update(torch.tensor([0, 1, 4, 3, 4, 5]), torch.tensor([0, 1, 2, 3, 4, 5]), torch.zeros(6))
        >>> float(metric.compute())  # Table 1, case 2, classifier 1: 53/65, printed as 0.8153 in the paper
        0.8153846153846154
    """

    def __init__(self, num_classes: int, kind: Kind, validate_args: bool = True, **kwargs) -> None:
        _check_kind(kind)
        super().__init__(num_classes, validate_args, **kwargs)
        self.kind = kind

    @property
    def plot_name(self) -> str:
        """``MAQWK-M`` or ``MAQWK-B``."""
        return f"MAQWK-{self.kind[0].upper()}"

    def update(self, preds: Tensor, target: Tensor, malignancy: Tensor) -> None:
        """Add a batch: predicted and true class indices and malignancy (1.0 / 0.0 / 0.5) per sample."""
        counts = _maqwk_update(preds, target, malignancy, self.num_classes, self.kind, self.validate_args)
        self.confmat += counts.to(self.confmat)

    def compute(self) -> Tensor:
        """MAQWK of everything seen so far (float64; ``nan`` with a warning when undefined)."""
        return _maqwk_compute(self.confmat, self.kind)
