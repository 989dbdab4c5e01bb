"""One mammogram in, its calcification regions out: the three stages behind :func:`detect_image`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from birads_calc.detection.breast import Breast, find_breast
from birads_calc.detection.regions import MIN_SCORE, group_specks, region_mask
from birads_calc.detection.specks import Specks, find_specks

NO_BREAST = "breast not found"
NO_CALCIFICATION = "no calcification found"


@dataclass(frozen=True)
class Region:
    """One calcification region found on an image.

    Attributes:
        region_id: 1, 2, ... in the order of ``ImageDetection.regions`` (best score first).
        score: in (0, 1), higher = more certainly calcifications.
        mask: bool [H, W], the region's specks grown by one pixel.
        n_specks: number of specks in the region.
        area_mm2: area of the mask in mm².
        bbox: (row0, col0, row1, col1) of the mask, ends exclusive.
        centroid: (row, col) of the mask's pixels.
    """

    region_id: int
    score: float
    mask: np.ndarray
    n_specks: int
    area_mm2: float
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]


@dataclass(frozen=True)
class ImageDetection:
    """What :func:`detect_image` found on one image.

    Attributes:
        regions: best score first; empty when none was found.
        reason: why no region was found (starts with ``"breast not found"`` or ``"no calcification found"``),
            else ``None``.
        breast: the segmented breast (masks at full resolution).
        specks: every speck found inside the breast, grouped or not.
    """

    regions: list[Region]
    reason: str | None
    breast: Breast | None = field(default=None, repr=False)
    specks: Specks | None = field(default=None, repr=False)
    seconds: dict[str, float] = field(default_factory=dict, repr=False)


def detect_image(
    pixels: np.ndarray, pixel_spacing: tuple[float, float], *, min_score: float = MIN_SCORE
) -> ImageDetection:
    """Find the calcification regions of one mammogram.

    Args:
        pixels: float [H, W] in [0, 1], MONOCHROME2 (bright = dense), as ``data.dicom.read_image`` gives.
        pixel_spacing: (row_mm, col_mm); required, since every size the detector uses is physical.
        min_score: regions scoring below are left out (0 keeps every group, as the FROC benchmark needs).

    Returns:
        The regions (best score first) or, when there are none, the reason.

    Raises:
        ValueError: ``pixels`` is not a 2-D image or the spacing is not two positive numbers (a caller's bug;
            a bad *image* gives a reason instead).
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    spacing = _spacing(pixel_spacing)
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be a 2-D image, got shape {pixels.shape}")
    t0 = time.perf_counter()
    breast = find_breast(pixels, spacing)
    t1 = time.perf_counter()
    if breast.reason:
        return ImageDetection([], breast.reason, breast, seconds={"breast": t1 - t0})
    specks = find_specks(pixels, breast.search, spacing, breast.mask, breast.level)
    t2 = time.perf_counter()
    groups = group_specks(specks, spacing, min_score)
    regions = [_region(k + 1, g.score, region_mask(specks, g.members, pixels.shape), len(g.members), spacing)
               for k, g in enumerate(groups)]  # fmt: skip
    reason = None if regions else f"{NO_CALCIFICATION} ({len(specks)} isolated speck(s), no group)"
    seconds = {"breast": t1 - t0, "specks": t2 - t1, "regions": time.perf_counter() - t2}
    return ImageDetection(regions, reason, breast, specks, seconds)


def _spacing(pixel_spacing) -> tuple[float, float]:
    try:
        row, col = (float(x) for x in pixel_spacing)
    except (TypeError, ValueError):
        raise ValueError(f"pixel_spacing must be (row_mm, col_mm), got {pixel_spacing!r}") from None
    if not (row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col)):
        raise ValueError(f"pixel_spacing must be two positive numbers of mm, got {pixel_spacing!r}")
    return row, col


def _region(region_id: int, score: float, mask: np.ndarray, n_specks: int, spacing) -> Region:
    rows, cols = np.nonzero(mask)
    bbox = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    return Region(
        region_id=region_id,
        score=round(float(score), 6),
        mask=mask,
        n_specks=int(n_specks),
        area_mm2=round(float(len(rows)) * spacing[0] * spacing[1], 4),
        bbox=bbox,
        centroid=(float(rows.mean()), float(cols.mean())),
    )
