"""QWK, MAQWK-M, MAQWK-B (paper §2.4, Eq. 5-7) and the malignancy AUROC of the risk score, as functions.

Orientation (DESIGN §6): the confusion matrix ``O`` has rows = truth and columns = prediction, ``O[i, j]`` counts
samples of true class ``i`` predicted as ``j``. The expected matrix is ``E = outer(row sums, column sums) / n``
and the kappa is ``1 - sum(W * O) / sum(W * E)`` with ``W[i, j] = (i - j) ** 2`` (Eq. 5).

MAQWK (Eq. 6-7) keeps one side of ``W`` and builds ``O`` and ``E`` from one pathology subset alone:

* MAQWK-M (``kind="malignant"``): malignant samples only, strictly lower triangle of ``W`` (``pred < truth``,
  the under-calls that delay a cancer diagnosis);
* MAQWK-B (``kind="benign"``): benign samples only, strictly upper triangle (``pred > truth``, false alarms).

Samples of unknown malignancy (0.5) count for QWK and for neither MAQWK. Table 1 of the paper fixes this
orientation: six samples ``2, 3, 4A, 4B, 4C, 5`` with only 4A wrong give MAQWK-M 0.8356 for 4A->2 and 1.0 for
4A->4C, MAQWK-B 0.8153 for 4A->4C and 1.0 for 4A->2.

Undefined values follow scikit-learn's ``cohen_kappa_score``: when the expected cost ``sum(W * E)`` is zero (no
samples, a single class among them, or for MAQWK no prediction on the penalised side of any true class of the
subset) the value is ``nan`` and an :class:`UndefinedMetricWarning` is issued. AUROC with only one pathology
among the known samples is ``nan`` with the same warning (torchmetrics would return 0, scikit-learn raises).

Each metric is split torchmetrics-style into a private ``_..._update`` (batch -> confusion counts, one
``bincount``) and a private ``_..._compute`` (counts -> value) so that the classes in :mod:`birads_calc.metrics`
and the bootstrap reuse them.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

from birads_calc.categories import BENIGN, MALIGNANT, UNKNOWN

Kind = Literal["malignant", "benign"]
KINDS: dict[str, float] = {"malignant": MALIGNANT, "benign": BENIGN}
METRIC_NAMES: dict[str, str] = {"malignant": "MAQWK-M", "benign": "MAQWK-B"}


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given samples (zero denominator) and was set to ``nan``."""


# --------------------------------------------------------------------------------------------------- validation


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (6 or 4 for the BI-RADS scales), got {num_classes!r}")
    return num_classes


def _check_kind(kind: str) -> float:
    """The malignancy value a MAQWK kind keeps (1.0 for "malignant", 0.0 for "benign")."""
    if kind not in KINDS:
        raise ValueError(f"kind must be 'malignant' (MAQWK-M) or 'benign' (MAQWK-B), got {kind!r}")
    return KINDS[kind]


def _within(values: Tensor, low: float, high: float) -> bool:
    """Whether all values lie in [low, high], in one min/max pass (NaN lies nowhere)."""
    smallest, largest = torch.aminmax(values)
    return low <= float(smallest) and float(largest) <= high


def _as_indices(name: str, values: Tensor, num_classes: int) -> Tensor:
    values = torch.as_tensor(values)
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold class indices (an integer tensor), got dtype {values.dtype}; "
            "map risk scores to classes with birads_calc.categories.risk_to_class and logits with argmax"
        )
    values = values.reshape(-1)
    # one min/max pass; locating the first bad value is only paid for on the error path
    if values.numel() and not _within(values, 0, num_classes - 1):
        bad = (values < 0) | (values >= num_classes)
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name}[{first}] = {int(values[first])} is not a class index of the {num_classes}-class scale "
            f"(0..{num_classes - 1}); {int(bad.sum())} of {values.numel()} values are out of range"
        )
    return values


def _flat_float(values: Tensor) -> Tensor:
    values = torch.as_tensor(values).reshape(-1)
    return values if values.is_floating_point() else values.to(torch.float32)


def _as_malignancy(malignancy: Tensor) -> Tensor:
    """Validated malignancy codes as a flat float tensor."""
    malignancy = _flat_float(malignancy)
    _pathology(malignancy)
    return malignancy


def _pathology(malignancy: Tensor, validate: bool = True) -> Tensor:
    """Float malignancy -> int64 pathology code: 0 benign, 1 unknown, 2 malignant (twice the malignancy)."""
    twice = malignancy * 2
    # one pass for the range, one for integrality (NaN fails both)
    if validate and twice.numel() and (not _within(twice, 0, 2) or bool(torch.count_nonzero(twice.frac()))):
        valid = (malignancy == MALIGNANT) | (malignancy == BENIGN) | (malignancy == UNKNOWN)
        first = int((~valid).nonzero()[0, 0])
        raise ValueError(
            f"malignancy[{first}] = {float(malignancy[first])!r} is not a malignancy code; expected 1.0 (malignant), "
            f"0.0 (benign) or 0.5 (unknown); {int((~valid).sum())} of {malignancy.numel()} values are invalid"
        )
    return twice.long()


def _check_lengths(**tensors: Tensor) -> None:
    sizes = {name: t.numel() for name, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{name} has {size}" for name, size in sizes.items())
        raise ValueError(f"inputs must have one value per sample, but {described}")


# ------------------------------------------------------------------------------------------------ update steps


def _confusion(
    preds: Tensor, target: Tensor, num_classes: int, strata: Tensor | None = None, num_strata: int = 1
) -> Tensor:
    """Confusion counts (rows = truth) with one ``bincount``: ``[N, N]``, or ``[S, N, N]`` per stratum index."""
    size = num_classes**2
    cells = torch.add(preds, target, alpha=num_classes)
    if strata is None:
        return torch.bincount(cells, minlength=size).reshape(num_classes, num_classes)
    cells = torch.add(cells, strata, alpha=size)
    return torch.bincount(cells, minlength=num_strata * size).reshape(num_strata, num_classes, num_classes)


def _qwk_update(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    validate_args: bool = True,
    groups: Tensor | None = None,
    num_groups: int = 1,
) -> Tensor:
    """Batch -> int64 confusion matrix ``[N, N]`` (rows = truth), or ``[G, N, N]`` per group when ``groups`` given.

    Args:
        preds: predicted class indices.
        target: true class indices.
        num_classes: number of classes N.
        validate_args: check dtypes, ranges and lengths (skip only for inputs already checked).
        groups: optional group index in ``0..num_groups-1`` per sample (the bootstrap's patients).
        num_groups: number of groups.
    """
    if validate_args:
        preds = _as_indices("preds", preds, num_classes)
        target = _as_indices("target", target, num_classes)
        _check_lengths(preds=preds, target=target)
    strata = None if groups is None else groups.reshape(-1)
    return _confusion(preds.reshape(-1), target.reshape(-1), num_classes, strata, num_groups)


def _maqwk_update(
    preds: Tensor,
    target: Tensor,
    malignancy: Tensor,
    num_classes: int,
    kind: Kind,
    validate_args: bool = True,
    groups: Tensor | None = None,
    num_groups: int = 1,
) -> Tensor:
    """Confusion matrix of the subset of ``kind`` (malignant or benign samples only); see :func:`_qwk_update`."""
    keep_value = _check_kind(kind)
    if validate_args:
        preds = _as_indices("preds", preds, num_classes)
        target = _as_indices("target", target, num_classes)
    pathology = _pathology(_flat_float(malignancy), validate_args)
    if validate_args:
        _check_lengths(preds=preds, target=target, malignancy=pathology)
    # One bincount over (group, pathology, truth, prediction) rather than boolean indexing, which costs more than
    # the whole count; the slice of the wanted pathology is kept.
    keep = int(keep_value * 2)
    if groups is None:
        return _confusion(preds.reshape(-1), target.reshape(-1), num_classes, pathology, 3)[keep]
    strata = torch.add(pathology, groups.reshape(-1), alpha=3)
    return _confusion(preds.reshape(-1), target.reshape(-1), num_classes, strata, 3 * num_groups)[keep::3]


# ----------------------------------------------------------------------------------------------- compute steps


def _kappa_weights(num_classes: int, kind: Kind | None = None, device: torch.device | None = None) -> Tensor:
    """``W[i, j] = (i - j)^2`` (Eq. 5); strictly lower triangle for "malignant", upper for "benign" (Eq. 6)."""
    classes = torch.arange(num_classes, dtype=torch.float64, device=device)
    weights = (classes[:, None] - classes[None, :]) ** 2
    if kind is None:
        return weights
    _check_kind(kind)
    # rows = truth: below the diagonal the prediction is lower than the truth (an under-call). A comparison mask
    # rather than torch.tril/triu, which cost milliseconds per call on CPU (it matters for bootstrap replays).
    truth, pred = classes[:, None], classes[None, :]
    return weights * (pred < truth if kind == "malignant" else pred > truth)


def _kappa_compute(confmat: Tensor, weights: Tensor, name: str = "QWK", warn: bool = True) -> Tensor:
    """``1 - sum(W * O) / sum(W * E)`` for confusion matrices ``[..., N, N]``; float64 ``[...]``, ``nan`` where
    the expected cost is zero (scikit-learn's convention), with a warning unless ``warn`` is False."""
    observed = confmat.to(torch.float64)
    total = observed.sum(dim=(-2, -1))
    rows, cols = observed.sum(dim=-1), observed.sum(dim=-2)
    expected = rows[..., :, None] * cols[..., None, :] / total.clamp(min=1)[..., None, None]
    observed_cost = (weights * observed).sum(dim=(-2, -1))
    expected_cost = (weights * expected).sum(dim=(-2, -1))
    # a sum of non-negative terms: exactly zero iff no term is positive, so the comparison is safe
    defined = expected_cost > 0
    kappa = torch.where(defined, 1 - observed_cost / torch.where(defined, expected_cost, 1.0), torch.nan)
    if warn and not bool(defined.all()):
        warnings.warn(
            f"{name} is undefined (zero expected cost sum(W * E): no samples, a single class, or no prediction on "
            f"the penalised side of any true class) and is set to nan, as scikit-learn's cohen_kappa_score does",
            UndefinedMetricWarning,
            stacklevel=3,
        )
    return kappa


def _qwk_compute(confmat: Tensor, warn: bool = True) -> Tensor:
    """QWK of confusion matrices ``[..., N, N]`` (rows = truth)."""
    return _kappa_compute(confmat, _kappa_weights(confmat.shape[-1], device=confmat.device), "QWK", warn)


def _maqwk_compute(confmat: Tensor, kind: Kind, warn: bool = True) -> Tensor:
    """MAQWK of subset confusion matrices ``[..., N, N]`` (rows = truth) built by :func:`_maqwk_update`."""
    weights = _kappa_weights(confmat.shape[-1], kind, device=confmat.device)
    return _kappa_compute(confmat, weights, METRIC_NAMES[kind], warn)


def _auroc_update(risk: Tensor, malignancy: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and keep the samples of known pathology: ``(risk, is_malignant)`` as float and int64 tensors."""
    risk = torch.as_tensor(risk).reshape(-1)
    if not risk.is_floating_point():
        raise ValueError(f"risk must be a float tensor of risk scores, got dtype {risk.dtype}")
    malignancy = _as_malignancy(malignancy)
    _check_lengths(risk=risk, malignancy=malignancy)
    known = malignancy != UNKNOWN
    return risk[known], (malignancy[known] == MALIGNANT).long()


def _auroc_compute(risk: Tensor, labels: Tensor) -> Tensor:
    """torchmetrics' exact binary AUROC as float64; ``nan`` with a warning unless both labels are present."""
    positives = int(labels.sum())
    if positives in (0, labels.numel()):
        warnings.warn(
            f"malignancy AUROC is undefined: the {labels.numel()} samples of known pathology are not both "
            "malignant and benign; set to nan",
            UndefinedMetricWarning,
            stacklevel=3,
        )
        return torch.tensor(torch.nan, dtype=torch.float64, device=risk.device)
    return binary_auroc(risk, labels, validate_args=False).to(torch.float64)  # inputs checked by _auroc_update


# ------------------------------------------------------------------------------------------------ public API


def confusion_matrix(preds: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """The int64 confusion matrix ``[N, N]`` behind these metrics: rows = truth, columns = prediction.

    Example:
        >>> confusion_matrix(torch.tensor([1, 0]), torch.tensor([1, 1]), 2).tolist()
        [[0, 0], [1, 1]]
    """
    return _qwk_update(preds, target, _check_num_classes(num_classes))


def quadratic_weighted_kappa(preds: Tensor, target: Tensor, num_classes: int, validate_args: bool = True) -> Tensor:
    """Quadratic weighted kappa (paper Eq. 5), equal to ``cohen_kappa_score(weights="quadratic")``.

    Args:
        preds: predicted class indices (integer tensor, any shape).
        target: true class indices, as many as ``preds``.
        num_classes: number of classes (6 or 4 for the BI-RADS scales).
        validate_args: check dtypes, index ranges and lengths.

    Returns:
        A float64 scalar tensor; ``nan`` with an :class:`UndefinedMetricWarning` when undefined (no samples, or
        truth and prediction all in one and the same class), as scikit-learn does.

    Raises:
        ValueError: float predictions, an index outside ``0..num_classes-1`` or mismatched lengths.

    Example:
        >>> target = torch.tensor([0, 1, 2, 3, 4, 5])
        >>> round(float(quadratic_weighted_kappa(torch.tensor([0, 1, 0, 3, 4, 5]), target, 6)), 4)  # Table 1
        0.9024
    """
    _check_num_classes(num_classes)
    return _qwk_compute(_qwk_update(preds, target, num_classes, validate_args))


def malignancy_adjusted_qwk(
    preds: Tensor,
    target: Tensor,
    malignancy: Tensor,
    num_classes: int,
    kind: Kind,
    validate_args: bool = True,
) -> Tensor:
    """Malignancy-adjusted QWK (paper Eq. 6-7): MAQWK-M (``kind="malignant"``) or MAQWK-B (``kind="benign"``).

    MAQWK-M uses only malignant samples (malignancy 1.0) and penalises only predictions below the truth;
    MAQWK-B uses only benign samples (0.0) and penalises only predictions above the truth. ``O`` and ``E`` come
    from that subset alone; unknown samples (0.5) are ignored by both.

    Args:
        preds: predicted class indices (integer tensor).
        target: true class indices.
        malignancy: 1.0 malignant, 0.0 benign, 0.5 unknown, one per sample.
        num_classes: number of classes (6 or 4).
        kind: ``"malignant"`` or ``"benign"``.
        validate_args: check dtypes, ranges, malignancy codes and lengths.

    Returns:
        A float64 scalar tensor; ``nan`` with an :class:`UndefinedMetricWarning` when the subset is empty or its
        expected cost is zero (e.g. MAQWK-M when no prediction lies below the highest true class of the malignant
        samples: then there is no under-call, but none is expected by chance either), following scikit-learn.

    Raises:
        ValueError: float predictions, an index out of range, a malignancy code outside {0, 0.5, 1}, mismatched
            lengths, or an unknown ``kind``.

    Example:
        >>> preds, target, malignant = torch.tensor([0, 1, 0, 3, 4, 5]), torch.tensor([0, 1, 2, 3, 4, 5]), torch.ones(6)
        >>> round(float(malignancy_adjusted_qwk(preds, target, malignant, 6, "malignant")), 4)  # Table 1
        0.8356
    """
    _check_num_classes(num_classes)
    return _maqwk_compute(_maqwk_update(preds, target, malignancy, num_classes, kind, validate_args), kind)


def malignancy_auroc(risk: Tensor, malignancy: Tensor) -> Tensor:
    """AUROC of the risk score for biopsy malignancy, over the samples of known pathology (0.5 is left out).

    Uses torchmetrics' ``binary_auroc`` (exact, no thresholds binning).

    Args:
        risk: predicted risk scores (float tensor, higher = more suspicious).
        malignancy: 1.0 malignant, 0.0 benign, 0.5 unknown.

    Returns:
        A float64 scalar tensor; ``nan`` with an :class:`UndefinedMetricWarning` when the known samples are not
        both malignant and benign (scikit-learn raises there, torchmetrics would return a misleading 0).

    Example:
        >>> malignancy_auroc(torch.tensor([0.1, 0.9, 0.4, 0.7]), torch.tensor([0.0, 1.0, 0.5, 0.0]))
        tensor(1., dtype=torch.float64)
    """
    return _auroc_compute(*_auroc_update(risk, malignancy))
