"""QWK, MAQWK-M, MAQWK-B and the malignancy AUROC against the paper's Table 1, scikit-learn, torchmetrics and an
independent loop implementation of Eq. 6-7."""

from __future__ import annotations

import doctest
import itertools
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torchmetrics import CohenKappa

import birads_calc.metrics.auroc
import birads_calc.metrics.bootstrap
import birads_calc.metrics.functional
import birads_calc.metrics.kappa
from birads_calc.metrics import MalignancyAdjustedQWK, MalignancyAUROC, QuadraticWeightedKappa, UndefinedMetricWarning
from birads_calc.metrics.functional import (
    confusion_matrix,
    malignancy_adjusted_qwk,
    malignancy_auroc,
    quadratic_weighted_kappa,
)

# Table 1: six samples 2, 3, 4A, 4B, 4C, 5 (class 0..5), all right except 4A (class 2).
TRUTH = torch.arange(6)
UNDER = torch.tensor([0, 1, 0, 3, 4, 5])  # 4A -> 2
OVER = torch.tensor([0, 1, 4, 3, 4, 5])  # 4A -> 4C
MALIGNANT, BENIGN = torch.ones(6), torch.zeros(6)

# Exact values worked by hand (rows = truth; E = outer(row sums, column sums) / n; all row sums are 1, n = 6):
# QWK, 4A->2: sum(W*O) = 4; column sums (2,1,0,1,1,1) give sum(W*E) = 246/6, so 1 - 24/246 = 37/41 = 0.90244.
# QWK, 4A->4C: sum(W*E) = 222/6, 1 - 24/222 = 33/37 = 0.89189.
# MAQWK-M, 4A->2: lower triangle only, sum(W*E) = 146/6, 1 - 24/146 = 61/73 = 0.83562; 4A->4C has no under-call: 1.
# MAQWK-B, 4A->4C: upper triangle only, sum(W*E) = 130/6, 1 - 24/130 = 53/65 = 0.81538; 4A->2 has no over-call: 1.
# The paper prints 0.9024, 0.8919, 0.8356, 0.8153 (the last one truncated rather than rounded).
TABLE_1 = [
    # preds, malignancy, kind, QWK (exact, printed), MAQWK (exact, printed)
    (UNDER, MALIGNANT, "malignant", (37 / 41, 0.9024), (61 / 73, 0.8356)),
    (OVER, MALIGNANT, "malignant", (33 / 37, 0.8919), (1.0, 1.0)),
    (OVER, BENIGN, "benign", (33 / 37, 0.8919), (53 / 65, 0.8153)),
    (UNDER, BENIGN, "benign", (37 / 41, 0.9024), (1.0, 1.0)),
]


def maqwk_loops(preds, target, malignancy, num_classes: int, kind: str) -> float:
    """Eq. 6-7 written out with plain loops: subset, O, E, triangular W, kappa (the reference for the tests)."""
    keep = 1.0 if kind == "malignant" else 0.0
    pairs = [(int(t), int(p)) for p, t, m in zip(preds, target, malignancy, strict=True) if float(m) == keep]
    n = len(pairs)
    observed = [[0.0] * num_classes for _ in range(num_classes)]
    for t, p in pairs:
        observed[t][p] += 1
    rows = [sum(observed[i]) for i in range(num_classes)]
    cols = [sum(observed[i][j] for i in range(num_classes)) for j in range(num_classes)]
    num = den = 0.0
    for i in range(num_classes):
        for j in range(num_classes):
            penalised = j < i if kind == "malignant" else j > i  # i = truth, j = prediction
            weight = (i - j) ** 2 if penalised else 0.0
            num += weight * observed[i][j]
            den += weight * rows[i] * cols[j] / n if n else 0.0
    return 1 - num / den if den else float("nan")


def random_case(generator: torch.Generator, num_classes: int, size: int):
    """Predictions near the truth (realistic kappas), a mix of malignant, benign and unknown samples."""
    target = torch.randint(num_classes, (size,), generator=generator)
    noise = torch.randint(-2, 3, (size,), generator=generator) * (torch.rand(size, generator=generator) < 0.5)
    preds = (target + noise).clamp(0, num_classes - 1)
    malignancy = torch.tensor([0.0, 0.5, 1.0])[torch.randint(3, (size,), generator=generator)]
    return preds, target, malignancy


def batches(generator: torch.Generator, num_classes: int):
    """3-5 batches of random sizes (one may be empty)."""
    sizes = torch.randint(0, 40, (int(torch.randint(3, 6, (1,), generator=generator)),), generator=generator)
    return [random_case(generator, num_classes, int(s)) for s in sizes]


@pytest.mark.parametrize(("preds", "malignancy", "kind", "qwk", "maqwk"), TABLE_1)
def test_table_1_functional(preds, malignancy, kind, qwk, maqwk):
    qwk_value = float(quadratic_weighted_kappa(preds, TRUTH, 6))
    maqwk_value = float(malignancy_adjusted_qwk(preds, TRUTH, malignancy, 6, kind))
    assert qwk_value == pytest.approx(qwk[0], abs=1e-12)
    assert maqwk_value == pytest.approx(maqwk[0], abs=1e-12)
    # the paper's 4 printed decimals
    assert abs(qwk_value - qwk[1]) < 1e-4
    assert abs(maqwk_value - maqwk[1]) < 1e-4


@pytest.mark.parametrize(("preds", "malignancy", "kind", "qwk", "maqwk"), TABLE_1)
def test_table_1_classes_over_batches(preds, malignancy, kind, qwk, maqwk):
    qwk_metric, maqwk_metric = QuadraticWeightedKappa(6), MalignancyAdjustedQWK(6, kind)
    for part in (slice(0, 2), slice(2, 3), slice(3, 6)):
        qwk_metric.update(preds[part], TRUTH[part])
        maqwk_metric.update(preds[part], TRUTH[part], malignancy[part])
    assert abs(float(qwk_metric.compute()) - qwk[1]) < 1e-4
    assert abs(float(maqwk_metric.compute()) - maqwk[1]) < 1e-4
    assert float(maqwk_metric.compute()) == pytest.approx(maqwk[0], abs=1e-12)


def test_table_1_ranks_classifier_2_above_classifier_1():
    """The point of MAQWK: the clinically safer classifier 2 wins on it although QWK barely separates them."""
    assert malignancy_adjusted_qwk(OVER, TRUTH, MALIGNANT, 6, "malignant") > malignancy_adjusted_qwk(
        UNDER, TRUTH, MALIGNANT, 6, "malignant"
    )
    assert malignancy_adjusted_qwk(UNDER, TRUTH, BENIGN, 6, "benign") > malignancy_adjusted_qwk(
        OVER, TRUTH, BENIGN, 6, "benign"
    )


@pytest.mark.parametrize("num_classes", [4, 6])
def test_qwk_matches_sklearn_and_torchmetrics_over_batches(num_classes):
    generator = torch.Generator().manual_seed(num_classes)
    for _ in range(25):
        parts = batches(generator, num_classes)
        ours, theirs = (
            QuadraticWeightedKappa(num_classes),
            CohenKappa("multiclass", num_classes=num_classes, weights="quadratic"),
        )
        for preds, target, _ in parts:
            ours.update(preds, target)
            if preds.numel():
                theirs.update(preds, target)
        preds = torch.cat([p for p, _, _ in parts])
        target = torch.cat([t for _, t, _ in parts])
        if len(set(preds.tolist()) | set(target.tolist())) < 2:
            continue  # undefined; covered by the dedicated test
        expected = cohen_kappa_score(target.numpy(), preds.numpy(), weights="quadratic")
        assert float(ours.compute()) == pytest.approx(expected, abs=1e-12)
        assert float(quadratic_weighted_kappa(preds, target, num_classes)) == pytest.approx(expected, abs=1e-12)
        assert float(theirs.compute()) == pytest.approx(expected, abs=1e-5)  # torchmetrics computes in float32


@pytest.mark.parametrize(("num_classes", "kind"), list(itertools.product([4, 6], ["malignant", "benign"])))
def test_maqwk_matches_loop_implementation_over_batches(num_classes, kind):
    generator = torch.Generator().manual_seed(10 * num_classes + len(kind))
    checked = 0
    for _ in range(25):
        parts = batches(generator, num_classes)
        metric = MalignancyAdjustedQWK(num_classes, kind)
        for preds, target, malignancy in parts:
            metric.update(preds, target, malignancy)
        preds, target, malignancy = (torch.cat(x) for x in zip(*parts, strict=True))
        expected = maqwk_loops(preds, target, malignancy, num_classes, kind)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            got = [
                float(metric.compute()),
                float(malignancy_adjusted_qwk(preds, target, malignancy, num_classes, kind)),
            ]
        for value in got:
            assert value == pytest.approx(expected, abs=1e-12, nan_ok=True)
        checked += not np.isnan(expected)
    assert checked >= 20  # the random cases mostly define the metric


def test_unknown_samples_count_for_qwk_and_neither_maqwk():
    generator = torch.Generator().manual_seed(3)
    preds, target, malignancy = random_case(generator, 6, 300)
    unknown = malignancy == 0.5
    shifted = preds.clone()
    shifted[unknown] = (target[unknown] + 3) % 6  # only the unknown samples change
    assert quadratic_weighted_kappa(shifted, target, 6) != quadratic_weighted_kappa(preds, target, 6)
    for kind in ("malignant", "benign"):
        before = malignancy_adjusted_qwk(preds, target, malignancy, 6, kind)
        assert malignancy_adjusted_qwk(shifted, target, malignancy, 6, kind) == before
        code = 1.0 if kind == "malignant" else 0.0
        subset = malignancy == code
        # same as feeding the subset alone: other-pathology samples do not enter O or E
        assert malignancy_adjusted_qwk(preds[subset], target[subset], malignancy[subset], 6, kind) == before


def test_qwk_undefined_follows_sklearn():
    """A single class among truth and prediction: sklearn 1.9 returns nan with a warning; so do we."""
    one = torch.tensor([2, 2, 2])
    with pytest.warns(Warning):
        assert np.isnan(cohen_kappa_score(one.numpy(), one.numpy(), weights="quadratic"))
    with pytest.warns(UndefinedMetricWarning, match="QWK is undefined"):
        assert torch.isnan(quadratic_weighted_kappa(one, one, 6))
    with pytest.warns(UndefinedMetricWarning), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The ``compute`` method")  # torchmetrics' own "compute before update"
        assert torch.isnan(QuadraticWeightedKappa(6).compute())  # nothing seen
    # truth in one class but some prediction elsewhere: defined (0), as in sklearn
    preds = torch.tensor([2, 2, 3])
    assert float(quadratic_weighted_kappa(preds, one, 6)) == cohen_kappa_score(
        one.numpy(), preds.numpy(), weights="quadratic"
    )


def test_maqwk_undefined_cases():
    target = torch.tensor([5, 5, 5])
    with pytest.warns(UndefinedMetricWarning, match="MAQWK-M"):
        # every malignant lesion in the top class and predicted there: no under-call possible by chance either
        assert torch.isnan(malignancy_adjusted_qwk(target, target, torch.ones(3), 6, "malignant"))
    with pytest.warns(UndefinedMetricWarning, match="MAQWK-B"):
        assert torch.isnan(malignancy_adjusted_qwk(target, target, torch.ones(3), 6, "benign"))  # no benign sample
    # a single under-called top-class lesion among correct ones is defined: O = E on that cell gives kappa 0
    preds = torch.tensor([5, 5, 3])
    assert float(malignancy_adjusted_qwk(preds, target, torch.ones(3), 6, "malignant")) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: quadratic_weighted_kappa(torch.tensor([0, 6]), torch.tensor([0, 1]), 6), r"preds\[1\] = 6"),
        (lambda: quadratic_weighted_kappa(torch.tensor([0, 1]), torch.tensor([-1, 1]), 6), r"target\[0\] = -1"),
        (lambda: quadratic_weighted_kappa(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), 6), "preds has 3"),
        (lambda: quadratic_weighted_kappa(torch.tensor([0.2, 0.9]), torch.tensor([0, 1]), 6), "risk_to_class"),
        (lambda: quadratic_weighted_kappa(torch.tensor([0, 1]), torch.tensor([0, 1]), 1), "num_classes"),
        (lambda: QuadraticWeightedKappa(6).update(torch.tensor([0, 4]), torch.tensor([0, 9])), r"target\[1\] = 9"),
        (
            lambda: malignancy_adjusted_qwk(
                torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1.0, 0.3]), 6, "benign"
            ),
            r"malignancy\[1\] = 0.3",
        ),
        (
            lambda: malignancy_adjusted_qwk(
                torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1.0, float("nan")]), 6, "benign"
            ),
            r"malignancy\[1\] = nan",
        ),
        (
            lambda: malignancy_adjusted_qwk(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.ones(3), 6, "benign"),
            "malignancy has 3",
        ),
        (lambda: malignancy_adjusted_qwk(torch.tensor([0]), torch.tensor([0]), torch.ones(1), 6, "m"), "kind must be"),
        (lambda: MalignancyAdjustedQWK(6, "Malignant"), "kind must be"),
        (lambda: malignancy_auroc(torch.tensor([1, 0]), torch.tensor([1.0, 0.0])), "risk must be a float"),
        (lambda: malignancy_auroc(torch.tensor([0.1, 0.4]), torch.tensor([1.0, 2.0])), r"malignancy\[1\] = 2.0"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_malignancy_auroc_matches_sklearn_on_known_samples():
    generator = torch.Generator().manual_seed(7)
    _, target, malignancy = random_case(generator, 6, 200)
    risk = (target.float() + 3 * torch.rand(200, generator=generator)) / 9
    risk[:20] = risk[20:40]  # ties
    known = malignancy != 0.5
    expected = roc_auc_score((malignancy[known] == 1).numpy(), risk[known].numpy())
    assert float(malignancy_auroc(risk, malignancy)) == pytest.approx(expected, abs=1e-6)
    metric = MalignancyAUROC()
    for part in torch.arange(200).split(64):
        metric.update(risk[part], malignancy[part])
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)


def test_malignancy_auroc_undefined_without_both_pathologies():
    with pytest.warns(UndefinedMetricWarning, match="not both malignant and benign"):
        assert torch.isnan(malignancy_auroc(torch.tensor([0.2, 0.8, 0.5]), torch.tensor([1.0, 1.0, 0.5])))
    with pytest.warns(UndefinedMetricWarning), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The ``compute`` method")
        assert torch.isnan(MalignancyAUROC().compute())


def test_confusion_matrix_orientation_matches_sklearn():
    generator = torch.Generator().manual_seed(4)
    preds, target, _ = random_case(generator, 6, 100)
    expected = sk_confusion_matrix(target.numpy(), preds.numpy(), labels=list(range(6)))  # rows = y_true
    assert confusion_matrix(preds, target, 6).tolist() == expected.tolist()


def test_metric_attributes_follow_torchmetrics():
    for metric in (QuadraticWeightedKappa(4), MalignancyAdjustedQWK(4, "benign")):
        assert metric.full_state_update is False
        assert metric.higher_is_better is True
        assert metric.is_differentiable is False
        assert metric._reductions["confmat"].__name__ == "dim_zero_sum"
        metric.update(
            torch.tensor([1]),
            torch.tensor([3]),
            *([torch.zeros(1)] if isinstance(metric, MalignancyAdjustedQWK) else []),
        )
        assert metric.confmat[3, 1] == 1  # rows = truth, columns = prediction
        metric.reset()
        assert metric.confmat.sum() == 0


@pytest.mark.parametrize(
    "module",
    [
        birads_calc.metrics.functional,
        birads_calc.metrics.kappa,
        birads_calc.metrics.auroc,
        birads_calc.metrics.bootstrap,
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"torch": torch})
    assert result.attempted > 0
    assert result.failed == 0
