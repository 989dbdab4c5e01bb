"""Multiplicity corrections of ``birads-calc compare``: Holm for the primary family, Benjamini-Hochberg otherwise.

* :func:`holm`: Holm's (1979) step-down adjusted p-values; rejecting where ``p_holm <= alpha`` keeps the
  probability of any false claim in the family (the familywise error rate) at most ``alpha``, whatever the
  dependence between the tests.
* :func:`benjamini_hochberg`: the step-up q-values of Benjamini & Hochberg (1995); rejecting where ``q <= alpha``
  keeps the expected share of false claims among the claims (the false discovery rate) at most ``alpha`` for
  independent or positively dependent tests (Benjamini & Yekutieli 2001).

``None`` or ``nan`` entries (no test was possible) are not part of the family and stay ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _family(p_values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """Positions and values of the testable entries."""
    positions = [i for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    return np.asarray(positions, dtype=np.int64), np.asarray([p_values[i] for i in positions], dtype=np.float64)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values: sorted ascending, ``max_{j <= i} min(1, (m - j + 1) p_(j))``.

    Example:
        >>> holm([0.01, 0.04, 0.03, None])
        [0.03, 0.06, 0.06, None]
    """
    positions, p = _family(p_values)
    adjusted: list[float | None] = [None] * len(p_values)
    if p.size == 0:
        return adjusted
    order = np.argsort(p, kind="stable")
    m = p.size
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    for rank, value in zip(order, np.maximum.accumulate(steps), strict=True):
        adjusted[int(positions[rank])] = round(float(value), 15)
    return adjusted


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg q-values: sorted ascending, ``min_{j >= i} min(1, m p_(j) / j)``.

    Example:
        >>> benjamini_hochberg([0.01, 0.04, 0.03, None])
        [0.03, 0.04, 0.04, None]
    """
    positions, p = _family(p_values)
    adjusted: list[float | None] = [None] * len(p_values)
    if p.size == 0:
        return adjusted
    order = np.argsort(p, kind="stable")
    m = p.size
    steps = np.minimum(1.0, m * p[order] / np.arange(1, m + 1))
    q = np.minimum.accumulate(steps[::-1])[::-1]
    for rank, value in zip(order, q, strict=True):
        adjusted[int(positions[rank])] = round(float(value), 15)
    return adjusted
