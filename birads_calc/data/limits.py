"""The ranges the data layer accepts for seeds, pixel spacings and image sizes, as command-line types and checks.

A value outside them is refused when the command line is parsed (the types below are jsonargparse restrictions,
so the message names the option and the value) or, for what a file says, when the file is read:

* seeds lie in ``[0, 2**32)``: what NumPy's and PyTorch's generators accept on every platform (``-1`` would stop
  a run later with a bare ``ValueError``);
* pixel spacings lie in ``[0.01, 2]`` mm, from an option or a DICOM header: full-field digital mammography samples
  at 0.05-0.1 mm and digitised film at up to 0.2 mm (mini-MIAS), so the range leaves room on both sides while
  refusing a zero, a NaN, or millimetres mistaken for micrometres (``85`` for 0.085 mm), which would resample an
  image to millions of pixels per side;
* an image to be allocated (a resampled mammogram) holds at most :data:`MAX_PIXELS` pixels, checked before the
  array is made.
"""

from __future__ import annotations

import math

from jsonargparse.typing import ClosedUnitInterval, restricted_number_type

SEED_LIMIT = 2**32
SPACING_RANGE_MM = (0.01, 2.0)
MAX_PIXELS = 2**27  # 134 Mpx: 4x the largest full-field mammograms (about 4096 x 5600 at 0.05 mm); ~0.5 GiB float32
MAX_IMAGE_SIDE = 16384  # pixels per side of an image birads-calc draws itself (synth)

Seed = restricted_number_type("Seed", int, [(">=", 0), ("<", SEED_LIMIT)])
PixelSpacingMm = restricted_number_type(
    "PixelSpacingMm", float, [(">=", SPACING_RANGE_MM[0]), ("<=", SPACING_RANGE_MM[1])]
)
ImageSide = restricted_number_type("ImageSide", int, [(">=", 1), ("<=", MAX_IMAGE_SIDE)])
# the converters' options (convert FORMAT --help)
Fraction = restricted_number_type("Fraction", float, [(">=", 0), ("<", 1)])  # a share of patients, e.g. val_fraction
SizeMm = restricted_number_type("SizeMm", float, [(">=", 0), ("<=", 10)])  # a calcification's size
RadiusPx = restricted_number_type("RadiusPx", float, [(">", 0), ("<=", 100)])  # a disc drawn around a point
Contrast = ClosedUnitInterval  # gray units of a [0, 1] image
Deviations = restricted_number_type("Deviations", float, [(">", 0), ("<=", 50)])  # robust standard deviations


def spacing_problem(value: float) -> str | None:
    """Why ``value`` (mm per pixel) is not a usable pixel spacing, or ``None`` when it is."""
    low, high = SPACING_RANGE_MM
    if not math.isfinite(value):
        return f"pixel spacing {value} is not a finite number"
    if value == 0:
        return "zero pixel spacing"
    if not low <= value <= high:
        return f"pixel spacing {value:g} mm is outside {low:g}-{high:g} mm (micrometres given as millimetres?)"
    return None
