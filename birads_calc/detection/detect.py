"""One mammogram in, its calcification regions out: the stages behind :func:`detect_image`.

1. the image is scaled to its own range (every contrast threshold is then relative: a 12-bit image stored in a
   16-bit container detects as the full-range one), and its pixel spacing is checked;
2. ``breast``: where the breast is (or the whole image, for a crop);
3. ``specks``: candidate specks, measured by ``features``;
4. ``ranking``: the learned second stage's probability that each candidate is a calcification;
5. ``regions``: likely specks grouped by the BI-RADS distribution terms, scored from their members.

``scorer="handmade"`` replaces steps 4-5 by the earlier hand-made filters and score, for comparison.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from birads_calc.detection.breast import Breast, find_breast
from birads_calc.detection.features import speck_features
from birads_calc.detection.ranking import load_ranker
from birads_calc.detection.regions import (
    MIN_SCORE,
    RANKED_MIN_SCORE,
    group_ranked,
    group_specks,
    handmade_specks,
    region_mask,
)
from birads_calc.detection.specks import Maps, Specks, find_candidates
from birads_calc.errors import InputError

NO_BREAST = "breast not found"
NO_CALCIFICATION = "no calcification found"
MIN_SPACING_MM, MAX_SPACING_MM = 0.02, 1.0  # mammograms are 0.05-0.2 mm; outside this a header or option is wrong
SCORERS = ("learned", "handmade")


class SpacingError(InputError, ValueError):
    """A pixel spacing the detector cannot use (not two finite numbers within 0.02-1.0 mm)."""


@dataclass(frozen=True)
class Region:
    """One calcification region found on an image.

    Attributes:
        region_id: 1, 2, ... in the order of ``ImageDetection.regions`` (best score first).
        score: in (0, 1] (rounded to 6 decimals), higher = more certainly calcifications.
        n_specks: number of specks in the region.
        area_mm2: area of the mask in mm².
        bbox: (row0, col0, row1, col1) of the mask, ends exclusive.
        centroid: (row, col) of the mask's pixels.
        local_mask: bool [row1 - row0, col1 - col0], the mask within ``bbox`` (what is kept in memory).
        shape: (H, W) of the image.

    ``mask`` (bool [H, W], the region's specks grown by one pixel) is built from ``local_mask`` when asked for.
    """

    region_id: int
    score: float
    n_specks: int
    area_mm2: float
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    local_mask: np.ndarray = field(repr=False)
    shape: tuple[int, int] = (0, 0)

    @property
    def mask(self) -> np.ndarray:
        """bool [H, W]: the full-size mask (allocated on each call; keep ``local_mask`` + ``bbox`` instead)."""
        full = np.zeros(self.shape, bool)
        r0, c0, r1, c1 = self.bbox
        full[r0:r1, c0:c1] = self.local_mask
        return full


@dataclass(frozen=True)
class ImageDetection:
    """What :func:`detect_image` found on one image.

    Attributes:
        regions: best score first; empty when none was found.
        reason: why no region was found (starts with ``"breast not found"`` or ``"no calcification found"``),
            else ``None``.
        breast: the segmented breast (masks at full resolution).
        specks: every candidate speck found inside the breast, grouped or not (with the learned scorer, each
            with its ``probability``).
        seconds: wall time of each stage (``breast``, ``specks``, ``ranking``, ``regions``).
    """

    regions: list[Region]
    reason: str | None
    breast: Breast | None = field(default=None, repr=False)
    specks: Specks | None = field(default=None, repr=False)
    seconds: dict[str, float] = field(default_factory=dict, repr=False)


def detect_image(
    pixels: np.ndarray,
    pixel_spacing: tuple[float, float],
    *,
    min_score: float | None = None,
    crop: bool | None = None,
    scorer: str = "learned",
    weights: str | Path | None = None,
) -> ImageDetection:
    """Find the calcification regions of one mammogram (or of a crop of one).

    Args:
        pixels: float [H, W], MONOCHROME2 (bright = dense), as ``data.dicom.read_image`` gives; only the relative
            values matter (the image is scaled by its own minimum and maximum).
        pixel_spacing: (row_mm, col_mm); required, since every size the detector uses is physical.
        min_score: regions scoring below are left out (default: the scorer's operating point; 0 keeps every
            group, as the FROC benchmark needs).
        crop: ``True``: the image is a patch of tissue (no film, skin or border margins); ``False``: a whole
            mammogram; ``None``: decided from the image (no flat film background: a crop).
        scorer: ``"learned"`` (the shipped second stage, or ``weights``) or ``"handmade"`` (the earlier score).
        weights: a ranker written by ``birads-calc detect-train`` instead of the shipped one.

    Returns:
        The regions (best score first) or, when there are none, the reason.

    Raises:
        SpacingError: the spacing is not two finite numbers within 0.02-1.0 mm (an ``InputError``: the CLI
            reports it as bad input).
        ValueError: ``pixels`` is not a 2-D image of finite values, or ``scorer`` is unknown (a caller's bug).
    """
    spacing = check_spacing(pixel_spacing)
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be a 2-D image, got shape {pixels.shape}")
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    if min_score is None:
        min_score = RANKED_MIN_SCORE if scorer == "learned" else MIN_SCORE
    ranker = load_ranker(weights) if scorer == "learned" else None  # a wrong file fails before any work
    found = describe(pixels, spacing, crop, measure=ranker is not None)
    seconds = dict(found.seconds)
    if found.breast.reason:
        return ImageDetection([], found.breast.reason, found.breast, seconds=seconds)
    start = time.perf_counter()
    specks = found.specks
    if ranker is not None:
        points_mm = specks.centroids * np.asarray(spacing)[None, :]
        specks = replace(specks, probability=ranker.probabilities(found.features, points_mm))
    seconds["ranking"] = time.perf_counter() - start
    start = time.perf_counter()
    if ranker is not None:
        groups = group_ranked(specks, spacing, min_score)
    else:
        groups = group_specks(specks, spacing, min_score)
        specks = specks.subset(handmade_specks(specks))  # the members' indices refer to these
    boxes = ndimage.find_objects(specks.labels)
    regions = [_region(k + 1, g.score, *region_mask(specks, g.members, pixels.shape, boxes), len(g.members),
                       pixels.shape, spacing) for k, g in enumerate(groups)]  # fmt: skip
    seconds["regions"] = time.perf_counter() - start
    reason = None if regions else f"{NO_CALCIFICATION} ({len(specks)} candidate speck(s), none likely enough)"
    return ImageDetection(regions, reason, found.breast, specks, seconds)


@dataclass(frozen=True)
class Description:
    """An image's breast, candidate specks, the maps they were found on and their features (``describe``)."""

    breast: Breast
    specks: Specks | None = None
    maps: Maps | None = None
    features: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def describe(pixels: np.ndarray, spacing: tuple[float, float], crop: bool | None = None, measure: bool = True):
    """Stages 1-3 of :func:`detect_image` (own range, breast, candidates and, with ``measure``, their features);
    ``detect-train`` describes its scenes with the same code."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    scaled = own_range(np.asarray(pixels, np.float32))
    if scaled is None:
        empty = np.zeros(np.shape(pixels), bool)
        return Description(Breast(empty, empty, empty, False, reason=f"{NO_BREAST} (a flat image: no contrast)"))
    breast = find_breast(scaled, spacing, crop)
    seconds["breast"] = time.perf_counter() - start
    if breast.reason:
        return Description(breast, seconds=seconds)
    start = time.perf_counter()
    specks, maps = find_candidates(scaled, breast.search, spacing, breast.mask, breast.level)
    seconds["specks"] = time.perf_counter() - start
    start = time.perf_counter()
    features = speck_features(specks, maps, breast, spacing) if measure else None
    seconds["features"] = time.perf_counter() - start
    return Description(breast, specks, maps, features, seconds)


def check_spacing(pixel_spacing) -> tuple[float, float]:
    """(row_mm, col_mm) as floats, or :class:`SpacingError` naming the value."""
    try:
        row, col = (float(x) for x in pixel_spacing)
    except (TypeError, ValueError):
        raise SpacingError(f"pixel spacing must be (row_mm, col_mm), got {pixel_spacing!r}") from None
    for value in (row, col):
        if not math.isfinite(value) or value <= 0:
            raise SpacingError(f"pixel spacing {value!r} mm is not a positive finite number")
        if not MIN_SPACING_MM <= value <= MAX_SPACING_MM:
            raise SpacingError(
                f"pixel spacing {value:g} mm is outside {MIN_SPACING_MM}-{MAX_SPACING_MM} mm (mammograms are "
                "0.05-0.2 mm per pixel): the header or --pixel_spacing is wrong"
            )
    return row, col


def own_range(pixels: np.ndarray) -> np.ndarray | None:
    """``pixels`` scaled to [0, 1] by their own minimum and maximum; ``None`` for a flat image.

    Raises:
        ValueError: the image holds NaN or infinity.
    """
    if not np.isfinite(pixels).all():
        raise ValueError("pixels must be finite (the image holds NaN or infinity)")
    low, high = float(pixels.min()), float(pixels.max())
    if high - low < 1e-6:
        return None
    return ((pixels - low) / (high - low)).astype(np.float32)


def _region(region_id: int, score: float, local: np.ndarray, corner, n_specks: int, shape, spacing) -> Region:
    rows, cols = np.nonzero(local)
    r0, c0 = int(rows.min()), int(cols.min())
    r1, c1 = int(rows.max()) + 1, int(cols.max()) + 1
    return Region(
        region_id=region_id,
        score=round(float(score), 6),
        n_specks=int(n_specks),
        area_mm2=round(float(len(rows)) * spacing[0] * spacing[1], 4),
        bbox=(corner[0] + r0, corner[1] + c0, corner[0] + r1, corner[1] + c1),
        centroid=(float(rows.mean()) + corner[0], float(cols.mean()) + corner[1]),
        local_mask=local[r0:r1, c0:c1].copy(),
        shape=tuple(shape),
    )
