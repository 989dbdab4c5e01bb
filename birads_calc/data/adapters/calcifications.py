"""Calcification pixels inside an annotated region (box or circle): white top-hat + robust threshold.

Datasets that mark calcifications with a box (VinDr-Mammo) or a circle around the cluster (mini-MIAS) give no
pixel mask, while the attention ROI (paper §2.2) needs one. Calcifications are small, bright specks on a
smoother background, which is exactly what a morphological white top-hat keeps: the image minus its opening
with a disc larger than any speck. Background structures wider than the disc (parenchyma, vessels seen broad)
are removed, specks narrower than it survive.

Parameters, all physical (converted to pixels with the image's pixel spacing):

* ``max_speck_mm`` — the disc's diameter: the largest calcification kept whole. Microcalcifications are 0.1 to
  1 mm; the default 1.4 mm keeps them and coarse ones up to about that size.
* ``min_speck_mm`` — specks whose area is below a disc of this diameter are dropped as noise (film grain,
  detector noise). The smallest object kept is always at least one pixel.
* ``k`` — a pixel is a speck when its top-hat exceeds the region's median top-hat by ``k`` robust standard
  deviations (1.4826 x the median absolute deviation), i.e. it stands out from this region's own texture.
* ``min_contrast`` — and by at least this much in image units ([0, 1] gray), so flat regions whose noise is tiny
  do not turn noise into specks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.measure import label
from skimage.morphology import disk, white_tophat

from birads_calc.data.limits import Contrast, Deviations, SizeMm


@dataclass(frozen=True)
class SpeckDetector:
    """Settings of :func:`find_calcifications` (the module docstring explains their physical meaning).

    Attributes:
        max_speck_mm: largest calcification kept whole (diameter of the top-hat disc), in mm.
        min_speck_mm: specks smaller than a disc of this diameter (mm) are dropped as noise.
        k: a speck's top-hat exceeds the region's median by this many robust standard deviations.
        min_contrast: and by at least this much, in gray units of the [0, 1] image.
    """

    max_speck_mm: SizeMm = 1.4
    min_speck_mm: SizeMm = 0.2
    k: Deviations = 3.5
    min_contrast: Contrast = 0.025

    def footprint_radius(self, pixel_spacing_mm: float) -> int:
        """Radius in pixels of the top-hat disc (at least 1)."""
        return max(1, math.ceil(self.max_speck_mm / pixel_spacing_mm / 2))

    def min_area(self, pixel_spacing_mm: float) -> int:
        """Smallest speck kept, in pixels (at least 1)."""
        return max(1, math.floor(math.pi * (self.min_speck_mm / pixel_spacing_mm / 2) ** 2))


DEFAULT_DETECTOR = SpeckDetector()


def find_calcifications(
    pixels: np.ndarray, region: np.ndarray, pixel_spacing_mm: float, detector: SpeckDetector | None = None
) -> np.ndarray:
    """Boolean mask of the calcification pixels that lie inside ``region``.

    Args:
        pixels: the image, float [H, W] in [0, 1], bright = dense (``read_image(...).pixels``).
        region: boolean [H, W], the annotated box or circle; the result never leaves it.
        pixel_spacing_mm: size of a pixel in mm (row spacing; mammograms have square pixels).
        detector: the settings; default :class:`SpeckDetector()`.

    Returns:
        Boolean [H, W]; all False when nothing in the region stands out as a speck.

    Example:
        >>> image = np.full((64, 64), 0.3, dtype=np.float32)
        >>> image[30:32, 40:42] = 0.8  # a 0.2 mm speck at 0.1 mm per pixel
        >>> region = np.zeros((64, 64), dtype=bool); region[20:50, 20:50] = True
        >>> int(find_calcifications(image, region, pixel_spacing_mm=0.1).sum())
        4
    """
    detector = detector or SpeckDetector()
    found = np.zeros(region.shape, dtype=bool)
    if not region.any():
        return found
    # Work on the region's bounding box plus a margin of one disc radius, not the whole mammogram.
    radius = detector.footprint_radius(pixel_spacing_mm)
    rows, cols = np.nonzero(region)
    r0, r1 = max(rows.min() - radius, 0), min(rows.max() + radius + 1, region.shape[0])
    c0, c1 = max(cols.min() - radius, 0), min(cols.max() + radius + 1, region.shape[1])
    crop = np.asarray(pixels[r0:r1, c0:c1], dtype=np.float32)
    inside = region[r0:r1, c0:c1]
    tophat = white_tophat(crop, disk(radius))
    values = tophat[inside]
    median = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - median)))
    specks = (tophat > max(median + detector.k * sigma, median + detector.min_contrast)) & inside
    found[r0:r1, c0:c1] = _drop_small(specks, detector.min_area(pixel_spacing_mm))
    return found


def _drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_area`` pixels."""
    if min_area <= 1:
        return mask
    labels = label(mask, connectivity=2)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]


def circle(shape: tuple[int, int], center_row: float, center_col: float, radius: float) -> np.ndarray:
    """Boolean disc of ``radius`` pixels at (row, col), clipped to ``shape``."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - center_row) ** 2 + (cols - center_col) ** 2 <= radius**2


def box(shape: tuple[int, int], xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
    """Boolean box covering the pixels from (xmin, ymin) to (xmax, ymax) inclusive, clipped to ``shape``.

    Coordinates are float pixel positions (x = column, y = row); boxes reaching past the edge (VinDr-Mammo has
    slightly negative ones) are clipped. An empty intersection gives an all-False mask.
    """
    mask = np.zeros(shape, dtype=bool)
    r0, c0 = max(math.floor(ymin), 0), max(math.floor(xmin), 0)
    r1, c1 = min(math.ceil(ymax), shape[0] - 1), min(math.ceil(xmax), shape[1] - 1)
    if r0 <= r1 and c0 <= c1:
        mask[r0 : r1 + 1, c0 : c1 + 1] = True
    return mask
