"""Patient-level bootstrap confidence intervals for QWK, MAQWK-M/-B, the malignancy AUROC or any metric.

Lesions of one patient are not independent (several calcifications per breast, often rated together), so the
bootstrap resamples *patients* with replacement and keeps each drawn patient's lesions together; the interval is
the percentile interval of the metric over the resamples.

A resample is described by how often each patient was drawn (a multinomial count vector). For the kappa metrics
the counts are sufficient statistics: the confusion matrix of a resample is the count-weighted sum of per-patient
confusion matrices, so all resamples cost one matrix product instead of re-scanning the samples. Any other
metric (AUROC included) is evaluated on the resampled samples themselves.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from birads_calc.categories import UNKNOWN
from birads_calc.metrics.functional import (
    UndefinedMetricWarning,
    _as_malignancy,
    _maqwk_compute,
    _maqwk_update,
    _qwk_compute,
    _qwk_update,
    malignancy_adjusted_qwk,
    malignancy_auroc,
    quadratic_weighted_kappa,
)

# keep one chunk of the resample-by-patient count matrix near 64 MB (float64)
_CHUNK_ELEMENTS = 2**23


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate with its patient-level bootstrap percentile interval.

    Attributes:
        value: the metric on all samples (``nan`` when undefined).
        low: lower bound of the interval.
        high: upper bound of the interval.
        n: samples the metric counts (e.g. malignant lesions for MAQWK-M, known pathology for AUROC).
        groups: number of patients (resampling units).
        resamples: number of bootstrap resamples drawn.
        level: confidence level, e.g. 0.95.
        undefined: resamples on which the metric was undefined (``nan``); they are left out of the percentiles,
            and the interval is ``nan`` when all of them are.
    """

    value: float
    low: float
    high: float
    n: int
    groups: int
    resamples: int
    level: float
    undefined: int

    def as_dict(self) -> dict[str, float | int | None]:
        """``{"value", "ci_low", "ci_high", "n"}`` as in ``metrics.json``; ``nan`` becomes ``None`` (JSON null)."""

        def finite(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {"value": finite(self.value), "ci_low": finite(self.low), "ci_high": finite(self.high), "n": self.n}


def bootstrap_ci(
    metric_fn: Callable[..., Tensor | float],
    *inputs: Tensor | Sequence,
    groups: Sequence[Hashable] | Tensor,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    **kwargs,
) -> BootstrapCI:
    """Patient-level bootstrap percentile interval of ``metric_fn(*inputs, **kwargs)``.

    Args:
        metric_fn: the metric: :func:`quadratic_weighted_kappa` and :func:`malignancy_adjusted_qwk` take the fast
            confusion-matrix path; anything else (e.g. :func:`malignancy_auroc`) is called once per resample.
        inputs: per-sample tensors (or sequences), one value per sample each, passed positionally to
            ``metric_fn`` (e.g. ``preds, target`` or ``preds, target, malignancy`` or ``risk, malignancy``).
        groups: the resampling unit of each sample, normally its patient id (any hashable: str, int).
        resamples: number of bootstrap resamples.
        level: confidence level of the two-sided percentile interval.
        seed: seed of the resampling (same seed, same interval).
        kwargs: fixed keyword arguments of ``metric_fn`` (``num_classes``, ``kind``).

    Returns:
        The point estimate on all samples, the interval and the counts behind it.

    Raises:
        ValueError: inputs and groups of different lengths, ``resamples < 1``, ``level`` outside (0, 1), or any
            error of the metric itself (bad class index, malignancy code...).

    Example:
        >>> preds, target = torch.tensor([0, 1, 2, 2, 3, 3]), torch.tensor([0, 1, 1, 2, 3, 3])
        >>> ci = bootstrap_ci(quadratic_weighted_kappa, preds, target, groups=["a", "a", "b", "c", "c", "d"],
        ...                   num_classes=4, resamples=200)
        >>> ci.low <= ci.value <= ci.high
        True
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    if any(isinstance(x, (str, int, float)) for x in inputs):
        raise ValueError(
            "bootstrap_ci takes per-sample inputs positionally and fixed options as keywords, "
            "e.g. bootstrap_ci(malignancy_adjusted_qwk, preds, target, malignancy, groups=ids, num_classes=6, "
            "kind='malignant')"
        )
    inputs = tuple(torch.as_tensor(x) for x in inputs)
    codes, num_groups = _group_codes(groups)
    for position, x in enumerate(inputs):
        if x.reshape(-1).numel() != codes.numel():
            raise ValueError(
                f"input {position} of the metric has {x.reshape(-1).numel()} values but groups has {codes.numel()}; "
                "give one patient id per sample"
            )
    value = float(metric_fn(*inputs, **kwargs))
    fast = _confusion_path(metric_fn, inputs, kwargs, codes, num_groups)
    generator = torch.Generator().manual_seed(seed)
    if fast is not None:
        per_group, compute = fast
        stats = per_group.reshape(num_groups, -1).to(torch.float64)
        n = int(per_group.sum())
        values = torch.cat(
            [
                compute((counts @ stats).reshape(-1, *per_group.shape[1:]))
                for counts in _draws(num_groups, resamples, generator)
            ]
        )
    else:
        n = _sample_count(metric_fn, inputs)
        values = _replay(metric_fn, inputs, kwargs, codes, _draws(num_groups, resamples, generator))
    return _interval(value, values, n, num_groups, level)


def metric_on_resamples(
    metric_fn: Callable[..., Tensor | float],
    *inputs: Tensor | Sequence,
    groups: Sequence[Hashable],
    units: Sequence[Hashable],
    counts: Tensor | np.ndarray,
    **kwargs,
) -> Tensor:
    """The metric on given resamples: ``counts[r, u]`` = how often unit ``units[u]`` (a patient) is drawn in
    resample ``r``; each drawn unit brings all its samples. ``nan`` where the metric is undefined.

    For comparisons that must resample several runs alike (the same patients for every method and seed,
    ``birads-calc compare``): the caller draws ``counts`` once and evaluates every run on them.

    Example:
        >>> preds, target = torch.tensor([0, 1, 1, 1]), torch.tensor([0, 1, 1, 0])
        >>> counts = torch.tensor([[1, 1], [2, 0]])  # all patients; patient "a" twice
        >>> metric_on_resamples(quadratic_weighted_kappa, preds, target, groups=["a", "a", "b", "b"],
        ...                     units=["a", "b"], counts=counts, num_classes=2).tolist()
        [0.5, 1.0]
    """
    inputs = tuple(torch.as_tensor(x) for x in inputs)
    index = {unit: k for k, unit in enumerate(units)}
    codes = torch.tensor([index[g] for g in groups], dtype=torch.long)
    counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1, len(index))
    fast = _confusion_path(metric_fn, inputs, kwargs, codes, len(index))
    if fast is not None:
        per_group, compute = fast
        stats = per_group.reshape(len(index), -1).to(torch.float64)
        return compute((counts @ stats).reshape(-1, *per_group.shape[1:])).to(torch.float64)
    return _replay(metric_fn, inputs, kwargs, codes, [counts])


def _group_codes(groups: Sequence[Hashable] | Tensor) -> tuple[Tensor, int]:
    """Patient ids -> group index per sample (order of first appearance) and the number of groups."""
    ids = groups.reshape(-1).tolist() if isinstance(groups, Tensor) else list(groups)
    index: dict[Hashable, int] = {}
    codes = torch.tensor([index.setdefault(g, len(index)) for g in ids], dtype=torch.long)
    if not index:
        raise ValueError("bootstrap_ci needs at least one sample (groups is empty)")
    return codes, len(index)


def _draws(num_groups: int, resamples: int, generator: torch.Generator):
    """Yield chunks ``[R_chunk, G]`` of how often each group is drawn, ``G`` draws with replacement per resample."""
    chunk = max(1, _CHUNK_ELEMENTS // num_groups)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        picks = torch.randint(num_groups, (rows, num_groups), generator=generator)
        counts = torch.zeros(rows, num_groups, dtype=torch.float64)
        yield counts.scatter_add_(1, picks, torch.ones_like(counts))


def _confusion_path(
    metric_fn: Callable, inputs: tuple[Tensor, ...], kwargs: dict, codes: Tensor, num_groups: int
) -> tuple[Tensor, Callable[[Tensor], Tensor]] | None:
    """Per-group confusion matrices ``[G, N, N]`` and a batched compute, for the kappa metrics; else None."""
    if metric_fn not in (quadratic_weighted_kappa, malignancy_adjusted_qwk):
        return None
    args = inspect.signature(metric_fn).bind(*inputs, **kwargs)
    args.apply_defaults()
    a = args.arguments
    if metric_fn is quadratic_weighted_kappa:
        per_group = _qwk_update(a["preds"], a["target"], a["num_classes"], True, codes, num_groups)
        return per_group, lambda confmat: _qwk_compute(confmat, warn=False)
    per_group = _maqwk_update(
        a["preds"], a["target"], a["malignancy"], a["num_classes"], a["kind"], True, codes, num_groups
    )
    return per_group, lambda confmat: _maqwk_compute(confmat, a["kind"], warn=False)


def _sample_count(metric_fn: Callable, inputs: tuple[Tensor, ...]) -> int:
    """Samples the metric counts: those of known pathology for the AUROC, all of them otherwise."""
    if metric_fn is malignancy_auroc:
        return int((_as_malignancy(inputs[1]) != UNKNOWN).sum())
    return inputs[0].reshape(-1).numel()


def _replay(
    metric_fn: Callable, inputs: tuple[Tensor, ...], kwargs: dict, codes: Tensor, draws: Iterable[Tensor]
) -> Tensor:
    """Evaluate the metric on each resample: every sample repeated as often as its patient was drawn."""
    flat = [x.reshape(-1) for x in inputs]
    samples, codes = np.arange(codes.numel()), codes.numpy()
    values = []
    with warnings.catch_warnings():
        # undefined resamples are counted in BootstrapCI.undefined instead of warned about one by one
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for counts in draws:
            for row in counts.long().numpy():
                # numpy's repeat: torch.repeat_interleave costs milliseconds per call on CPU
                index = torch.from_numpy(np.repeat(samples, row[codes]))
                values.append(float(metric_fn(*(x[index] for x in flat), **kwargs)))
    return torch.tensor(values, dtype=torch.float64)


def _interval(value: float, values: Tensor, n: int, num_groups: int, level: float) -> BootstrapCI:
    defined = values[~torch.isnan(values)]
    tail = (1 - level) / 2
    if defined.numel():
        low, high = torch.quantile(defined, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    else:
        low = high = math.nan
    return BootstrapCI(
        value=value,
        low=low,
        high=high,
        n=n,
        groups=num_groups,
        resamples=values.numel(),
        level=level,
        undefined=values.numel() - defined.numel(),
    )
