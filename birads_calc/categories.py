"""BI-RADS scales, label parsing and the risk <-> class mapping (paper §2.3, §3.2; DESIGN §2).

Two scales are supported:

* six classes (BI-RADS 5th edition, the paper's default): ``2, 3, 4A, 4B, 4C, 5`` -> class index 0..5;
* four classes (the older standard of the paper's footnote 4, and CBIS-DDSM / VinDr-Mammo): ``2, 3, 4, 5``.

A regression model outputs a risk ``r`` in [0, 1]. Class ``n`` (1-based) of ``N`` owns the segment
``[(n-1)/N, n/N]``; its training target is the segment centre ``(2n-1)/(2N)`` and a predicted risk maps back to
class index ``min(floor(r * N), N - 1)``.

Malignancy is encoded everywhere as ``1.0`` malignant, ``0.0`` benign, ``0.5`` unknown (``m_mid`` of Eq. 2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from birads_calc.errors import InputError

if TYPE_CHECKING:  # torch is imported where it is used: the data tools (synth, check-data) never need it
    import torch

SIX_CLASS: tuple[str, ...] = ("2", "3", "4A", "4B", "4C", "5")
FOUR_CLASS: tuple[str, ...] = ("2", "3", "4", "5")
SCALES: dict[int, tuple[str, ...]] = {6: SIX_CLASS, 4: FOUR_CLASS}

MALIGNANT, BENIGN, UNKNOWN = 1.0, 0.0, 0.5
PATHOLOGY_VALUES: dict[str, float] = {"malignant": MALIGNANT, "benign": BENIGN, "": UNKNOWN}

# "BI-RADS 4A", "birads: 4a", "BIRADS4A", "Bi-Rads category 4a" all reduce to the bare category "4A".
_PREFIX = re.compile(r"^\s*(bi[\s_-]?rads)?\s*(category|cat\.?)?\s*[:#]?\s*", re.IGNORECASE)


class LabelError(InputError, ValueError):
    """A BI-RADS or pathology value that the configured scale cannot use."""


def scale(num_classes: int) -> tuple[str, ...]:
    """The category names of a scale, lowest risk first.

    Args:
        num_classes: 6 (BI-RADS 5th edition) or 4 (older standard with a single category 4).

    Example:
        >>> scale(4)
        ('2', '3', '4', '5')
    """
    try:
        return SCALES[num_classes]
    except KeyError:
        raise LabelError(f"num_classes must be 6 or 4 (the BI-RADS scales), got {num_classes!r}") from None


def normalize_label(value: object) -> str:
    """Reduce a label as real files spell it (``" 4a "``, ``"BI-RADS 4A"``, ``4``, ``4.0``) to its bare form.

    The result is upper case without prefix or spaces; it is not checked against a scale.
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # spreadsheets turn "4" into 4.0
    text = _PREFIX.sub("", str(value)).strip().upper().replace(" ", "")
    return text


def parse_label(value: object, num_classes: int = 6) -> int:
    """Parse a BI-RADS label into its class index on the given scale.

    Args:
        value: the label as found in a file: ``"4a"``, ``"4A"``, ``" 4A "``, ``"BI-RADS 4A"``, ``5``, ...
        num_classes: 6 or 4; ``"4"`` is only valid on the four-class scale, ``"4A"``-``"4C"`` only on the six.

    Raises:
        LabelError: for anything outside the scale (0, 1, 6, empty, 4 on the six-class scale, 4A on the four-class
            scale, ...), naming the value.

    Example:
        >>> parse_label(" BI-RADS 4b "), parse_label("4", num_classes=4)
        (3, 2)
    """
    names = scale(num_classes)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise LabelError(f"missing BI-RADS label (empty); expected one of {', '.join(names)}")
    text = normalize_label(value)
    if text in names:
        return names.index(text)
    raise LabelError(_refusal(value, text, num_classes))


def _refusal(value: object, text: str, num_classes: int) -> str:
    names = ", ".join(scale(num_classes))
    if text == "":
        return f"missing BI-RADS label (empty); expected one of {names}"
    if text == "4" and num_classes == 6:
        return f"BI-RADS label {value!r} has no subcategory; the six-class scale needs 4A, 4B or 4C"
    if text in {"4A", "4B", "4C"} and num_classes == 4:
        return f"BI-RADS label {value!r} is a 5th-edition subcategory; the four-class scale uses 4"
    if text in {"0", "1", "6"}:
        meaning = {"0": "incomplete", "1": "negative", "6": "biopsy-proven malignancy"}[text]
        return (
            f"BI-RADS label {value!r} ({meaning}) is not a calcification rating; the paper excludes it. "
            f"Expected one of {names}"
        )
    return f"unknown BI-RADS label {value!r}; expected one of {names}"


def label_name(index: int, num_classes: int = 6) -> str:
    """The category name of a class index, e.g. ``label_name(2) == "4A"``."""
    names = scale(num_classes)
    if not 0 <= index < len(names):
        raise LabelError(f"class index {index} out of range for the {num_classes}-class scale")
    return names[index]


def parse_pathology(value: object) -> float:
    """Map a pathology value to the malignancy encoding: malignant 1.0, benign 0.0, empty/unknown 0.5.

    Accepts any case and surrounding spaces; ``None``/NaN count as empty.

    Raises:
        LabelError: for any other value, naming it.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    text = str(value).strip().lower()
    if text in PATHOLOGY_VALUES:
        return PATHOLOGY_VALUES[text]
    raise LabelError(f"unknown pathology {value!r}; expected 'malignant', 'benign' or empty (unknown)")


def class_to_risk(index: torch.Tensor | int, num_classes: int = 6) -> torch.Tensor:
    """Regression target of a class: the centre ``(2n-1)/(2N)`` of its segment (n = index + 1)."""
    import torch

    index = torch.as_tensor(index)
    return (2 * index.to(torch.float32) + 1) / (2 * num_classes)


def risk_to_class(risk: torch.Tensor | float | Sequence[float], num_classes: int = 6) -> torch.Tensor:
    """Predicted class index of a risk score: ``min(floor(r * N), N - 1)``, clamped at 0 from below.

    Example:
        >>> risk_to_class([0.0, 1 / 6, 0.5, 1.0]).tolist()
        [0, 1, 3, 5]
    """
    import torch

    risk = torch.as_tensor(risk, dtype=torch.float32)
    return torch.clamp(torch.floor(risk * num_classes), 0, num_classes - 1).to(torch.long)
