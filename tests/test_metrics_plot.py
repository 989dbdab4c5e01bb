"""``plot()`` on every metric class, as torchmetrics' own metrics have it, checked against torchmetrics' CohenKappa."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torchmetrics import CohenKappa

from birads_calc.metrics import MalignancyAdjustedQWK, MalignancyAUROC, QuadraticWeightedKappa

PRED = torch.tensor([0, 1, 2, 3, 4, 5, 1, 2, 3, 5, 0, 4])
TRUE = torch.tensor([0, 1, 3, 3, 4, 4, 2, 2, 2, 5, 1, 5])
MALIGNANCY = torch.tensor([0.0, 0, 1, 1, 1, 0, 0, 0.5, 0, 1, 0, 1])


def plotted(axes: Axes) -> np.ndarray:
    return np.concatenate([line.get_ydata() for line in axes.lines])


def test_qwk_plot_draws_the_value_torchmetrics_cohen_kappa_draws():
    ours, theirs = QuadraticWeightedKappa(6), CohenKappa(task="multiclass", num_classes=6, weights="quadratic")
    ours.update(PRED, TRUE)
    theirs.update(PRED, TRUE)
    figure, axes = ours.plot()
    _, their_axes = theirs.plot()
    assert isinstance(figure, Figure) and isinstance(axes, Axes)
    assert plotted(axes) == pytest.approx(plotted(their_axes), abs=1e-6)  # torchmetrics computes in float32
    assert plotted(axes) == pytest.approx([float(ours.compute())])
    assert axes.get_ylabel() == "QWK"
    low, high = axes.get_ylim()
    assert low <= -1 and high >= 1  # the whole kappa range: a negative kappa stays on the chart


def test_a_series_of_values_is_a_curve_over_steps():
    metric = QuadraticWeightedKappa(6)
    values = []
    for start in range(0, 12, 4):
        metric.update(PRED[start : start + 4], TRUE[start : start + 4])
        values.append(metric.compute())
    _, axes = metric.plot(values)
    assert plotted(axes) == pytest.approx([float(v) for v in values])
    assert axes.get_xlabel() == "Step"


@pytest.mark.parametrize(("kind", "label"), [("malignant", "MAQWK-M"), ("benign", "MAQWK-B")])
def test_maqwk_plot_into_a_given_axis(kind, label):
    import matplotlib.pyplot as plt

    metric = MalignancyAdjustedQWK(6, kind)
    metric.update(PRED, TRUE, MALIGNANCY)
    _, given = plt.subplots()
    figure, axes = metric.plot(ax=given)
    assert figure is None and axes is given  # as torchmetrics: no new figure when an axis is given
    assert plotted(axes) == pytest.approx([float(metric.compute())]) and axes.get_ylabel() == label


def test_auroc_plot_is_torchmetrics_own():
    metric = MalignancyAUROC()
    metric.update(PRED.float() / 5, MALIGNANCY)
    figure, axes = metric.plot()
    assert isinstance(figure, Figure) and plotted(axes) == pytest.approx([float(metric.compute())])
