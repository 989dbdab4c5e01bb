"""Calibration of the predicted categories against biopsy results (ACR BI-RADS Atlas, 5th edition, 2013).

Each BI-RADS category promises a likelihood of malignancy: 2 essentially 0%, 3 <= 2%, 4A 2-10%, 4B 10-50%,
4C 50-95%, 5 >= 95% (on the older four-class scale, 4 spans 2-95%). :func:`calibration_table` puts the observed
malignancy rate of the lesions the model put in each category next to that range, counting only lesions with a
biopsy result (pathology malignant or benign; unknown = 0.5 is left out), with a Wilson score interval so a reader
sees how much a rate from a handful of biopsies can be trusted.

Caveat for the reader: lesions rated 2 or 3 are followed up, not biopsied, so the lower categories usually have few
or no biopsy results and their rows say so (``n_biopsied`` 0, no rate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from birads_calc.categories import BENIGN, MALIGNANT, scale

# Likelihood-of-malignancy range (low, high) of each category, as fractions; closed intervals.
LIKELIHOOD_RANGES: dict[int, dict[str, tuple[float, float]]] = {
    6: {
        "2": (0.0, 0.0),
        "3": (0.0, 0.02),
        "4A": (0.02, 0.10),
        "4B": (0.10, 0.50),
        "4C": (0.50, 0.95),
        "5": (0.95, 1.0),
    },
    4: {"2": (0.0, 0.0), "3": (0.0, 0.02), "4": (0.02, 0.95), "5": (0.95, 1.0)},
}
CALIBRATION_COLUMNS = (
    "category",
    "expected_range",
    "range_low",
    "range_high",
    "n_predicted",
    "n_biopsied",
    "n_malignant",
    "observed_rate",
    "ci_low",
    "ci_high",
    "rate_in_range",
    "ci_overlaps_range",
)


def range_text(low: float, high: float) -> str:
    """The range as the Atlas words it: ``~0%``, ``<= 2%``, ``2-10%``, ``>= 95%``."""
    if high == 0.0:
        return "~0%"
    if low == 0.0:
        return f"<= {high:.0%}"
    if high == 1.0:
        return f">= {low:.0%}"
    return f"{low * 100:.0f}-{high:.0%}"


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float] | tuple[None, None]:
    """Wilson score interval of a binomial proportion (``scipy.stats.binomtest``); ``(None, None)`` for 0 trials."""
    if trials == 0:
        return None, None
    ci = binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def calibration_table(
    pred: Sequence[int] | np.ndarray, malignancy: Sequence[float] | np.ndarray, num_classes: int, level: float = 0.95
) -> list[dict[str, Any]]:
    """One row per category: observed malignancy rate among its biopsied lesions next to the expected range.

    Args:
        pred: predicted class index per lesion.
        malignancy: 1.0 malignant, 0.0 benign, 0.5 unknown (left out of the rates) per lesion.
        num_classes: 6 or 4.
        level: confidence level of the Wilson interval.

    Returns:
        Rows with the columns of :data:`CALIBRATION_COLUMNS`; ``rate_in_range`` is ``"yes"``/``"no"`` for the
        observed rate, ``ci_overlaps_range`` the same for the interval (a rate outside the range whose interval
        still overlaps it is not evidence of miscalibration), both empty without biopsies.

    Example:
        >>> rows = calibration_table([5, 5, 5, 0], [1.0, 1.0, 0.0, 0.5], num_classes=6)
        >>> rows[5]["n_biopsied"], rows[5]["n_malignant"], round(rows[5]["observed_rate"], 3), rows[0]["n_biopsied"]
        (3, 2, 0.667, 0)
    """
    pred = np.asarray(pred, dtype=np.int64)
    malignancy = np.asarray(malignancy, dtype=np.float64)
    if pred.shape != malignancy.shape:
        raise ValueError(f"pred and malignancy differ in length: {pred.shape} vs {malignancy.shape}")
    biopsied = (malignancy == MALIGNANT) | (malignancy == BENIGN)
    rows = []
    for index, name in enumerate(scale(num_classes)):
        low, high = LIKELIHOOD_RANGES[num_classes][name]
        mine = pred == index
        n_biopsied = int((mine & biopsied).sum())
        n_malignant = int((mine & (malignancy == MALIGNANT)).sum())
        rate = n_malignant / n_biopsied if n_biopsied else None
        ci_low, ci_high = wilson_interval(n_malignant, n_biopsied, level)
        rows.append(
            {
                "category": name,
                "expected_range": range_text(low, high),
                "range_low": low,
                "range_high": high,
                "n_predicted": int(mine.sum()),
                "n_biopsied": n_biopsied,
                "n_malignant": n_malignant,
                "observed_rate": rate,
                "ci_low": ci_low,
                "ci_high": ci_high,
                "rate_in_range": "" if rate is None else _yes_no(low <= rate <= high),
                "ci_overlaps_range": "" if rate is None else _yes_no(ci_low <= high and ci_high >= low),
            }
        )
    return rows


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
