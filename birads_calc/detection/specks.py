"""Stage 2: individual calcification specks inside the breast, measured in millimetres.

A calcification is a small spot brighter than the tissue around it. The detector works on a copy of the image
at about ``WORK_MM`` per pixel (finer images are block-averaged: a 0.1 mm speck still covers a pixel, and a
full-field mammogram shrinks four-fold) and looks at two band-pass (difference of Gaussians) responses:
the image blurred at a speck's scale (``SPECK_SIGMAS_MM``) minus the image blurred at ``BACKGROUND_SIGMA_MM``,
wider than any microcalcification. Parenchyma, vessels seen broad and the breast's slow shading cancel out;
specks stay.

Tissue texture differs across a breast (fatty areas are quiet, dense ones busy), so each response is divided by
its own local noise: the median absolute response of tiles of ``TILE_MM`` (1.4826 x MAD is a robust standard
deviation; a handful of specks in a tile barely move a median). A speck is a connected set of pixels above
``LOW_Z`` robust standard deviations that reaches ``HIGH_Z`` somewhere (hysteresis, so a faint speck's shoulder
stays attached to its peak), inside the breast's search area, no larger than ``MAX_AREA_MM2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from birads_calc.detection.breast import block_mean

WORK_MM = 0.1  # working resolution
SPECK_SIGMAS_MM = (0.07, 0.25)  # fine specks and coarser ones
BACKGROUND_SIGMA_MM = 1.0
TILE_MM = 6.0
LOW_Z = 2.5
HIGH_Z = 4.0
MAX_AREA_MM2 = 40.0  # coarse, popcorn and rim calcifications reach about 7 mm; larger bright blobs are tissue
ROBUST_SIGMA = 1.4826
STRAND_MM, STRAND_ELONGATION, STRAND_WIDTH_MM, STRAND_KEEP_Z = 2.0, 3.0, 0.35, 8.0
EDGE_ASYMMETRY = 0.5


@dataclass(frozen=True)
class Specks:
    """The specks of one image.

    Attributes:
        labels: int32 [h, w] at the working resolution; 0 = no speck, k = speck k-1.
        factor: full-resolution pixels per working pixel along each axis.
        centroids: float [N, 2] (row, col) in full-resolution pixels.
        areas_mm2: float [N].
        peaks: float [N], each speck's highest response in robust standard deviations (its evidence).
        searched_mm2: the area searched (the breast's search area), for the image's speck density.
    """

    labels: np.ndarray
    factor: int
    centroids: np.ndarray
    areas_mm2: np.ndarray
    peaks: np.ndarray
    searched_mm2: float = 0.0

    def __len__(self) -> int:
        return len(self.peaks)

    def mask(self, shape: tuple[int, int], keep: np.ndarray | None = None) -> np.ndarray:
        """Full-resolution bool mask of the specks (all, or those whose index is in ``keep``)."""
        selected = self.labels > 0 if keep is None else np.isin(self.labels, np.asarray(keep) + 1)
        f = self.factor
        full = np.repeat(np.repeat(selected, f, axis=0), f, axis=1) if f > 1 else selected
        return full[: shape[0], : shape[1]]


def working_factor(pixel_spacing: tuple[float, float]) -> int:
    """Block size that brings the image to about ``WORK_MM`` per pixel (1 for images already that coarse)."""
    return max(1, round(WORK_MM / min(pixel_spacing)))


def find_specks(
    pixels: np.ndarray,
    search: np.ndarray,
    pixel_spacing: tuple[float, float],
    breast: np.ndarray | None = None,
    level: float = 0.0,
) -> Specks:
    """Specks of ``pixels`` (float [H, W] in [0, 1]) inside ``search`` (bool [H, W]); sizes from ``pixel_spacing``.

    ``breast`` (bool [H, W], default ``search``) and its pixels above ``level``: the tissue the background is
    averaged over, so the dark film beyond the skin never makes the skin line look like a row of specks.
    """
    factor = working_factor(pixel_spacing)
    work_mm = factor * min(pixel_spacing)
    image = block_mean(pixels, factor)
    inside = search[::factor, ::factor][: image.shape[0], : image.shape[1]]
    tissue = inside if breast is None else breast[::factor, ::factor][: image.shape[0], : image.shape[1]]
    tissue = tissue & (image > level)
    z = significance(image, inside, tissue, work_mm)
    z[~inside] = 0
    searched_mm2 = float(inside.sum()) * work_mm**2
    keep = apply_hysteresis_threshold(z, LOW_Z, HIGH_Z)
    labels, count = ndimage.label(keep, structure=np.ones((3, 3)))
    if count == 0:
        return Specks(labels.astype(np.int32), factor, np.zeros((0, 2)), np.zeros(0), np.zeros(0), searched_mm2)
    index = np.arange(1, count + 1)
    # statistics over the few labelled pixels only (scipy's label statistics sort the whole image)
    rows, cols = np.nonzero(labels)
    ids = labels[rows, cols]
    pixels_per = np.bincount(ids, minlength=count + 1)[1:]
    areas = pixels_per * work_mm**2
    peaks = np.zeros(count + 1, np.float32)
    np.maximum.at(peaks, ids, z[rows, cols])
    peaks = peaks[1:]
    centroids = np.column_stack(
        [np.bincount(ids, rows, count + 1)[1:] / pixels_per, np.bincount(ids, cols, count + 1)[1:] / pixels_per]
    )
    centroids = (centroids + 0.5) * factor - 0.5  # working pixel centres -> full-resolution coordinates
    strands = _vessel_like(rows, cols, ids, count, pixels_per, peaks, work_mm)
    small = (areas <= MAX_AREA_MM2) & ~strands & ~_edge_like(image, rows, cols, ids, count, work_mm)
    if not small.all():  # relabel so that speck k is label k+1 again
        remap = np.zeros(count + 1, np.int32)
        remap[index[small]] = np.arange(1, int(small.sum()) + 1)
        labels = remap[labels]
        areas, peaks, centroids = areas[small], peaks[small], centroids[small]
    return Specks(labels.astype(np.int32), factor, centroids, areas, peaks, searched_mm2)


def _edge_like(image: np.ndarray, rows, cols, ids, count: int, work_mm: float) -> np.ndarray:
    """Specks that are the bright side of a step (the pectoral muscle's or a dense gland's border), not a line.

    Across a line or a spot the intensity gradient points inward from both sides and cancels over the speck;
    along a step it points the same way everywhere. A speck longer than ``STRAND_MM`` whose summed gradient is
    more than ``EDGE_ASYMMETRY`` of its summed gradient magnitude is an edge.
    """
    n = np.bincount(ids, minlength=count + 1)[1:]
    extent = np.maximum(
        np.bincount(ids, rows.astype(float) ** 2, count + 1)[1:] / np.maximum(n, 1)
        - (np.bincount(ids, rows, count + 1)[1:] / np.maximum(n, 1)) ** 2
        + np.bincount(ids, cols.astype(float) ** 2, count + 1)[1:] / np.maximum(n, 1)
        - (np.bincount(ids, cols, count + 1)[1:] / np.maximum(n, 1)) ** 2,
        0,
    )
    long = np.sqrt(12 * extent) * work_mm >= STRAND_MM  # about the speck's length
    if not long.any():
        return long
    keep = long[ids - 1]
    r, c, k = rows[keep], cols[keep], ids[keep]
    smooth = ndimage.gaussian_filter(image, 1.0)
    gy = (smooth[np.minimum(r + 1, image.shape[0] - 1), c] - smooth[np.maximum(r - 1, 0), c]) / 2
    gx = (smooth[r, np.minimum(c + 1, image.shape[1] - 1)] - smooth[r, np.maximum(c - 1, 0)]) / 2
    total = np.hypot(np.bincount(k, gy, count + 1)[1:], np.bincount(k, gx, count + 1)[1:])
    magnitude = np.bincount(k, np.hypot(gy, gx), count + 1)[1:]
    return long & (total > EDGE_ASYMMETRY * np.maximum(magnitude, 1e-12))


def _vessel_like(rows, cols, ids, count, pixels_per, peaks, work_mm) -> np.ndarray:
    """Specks that are long, wide bright strands of modest contrast: vessels and fibrous tissue, not calcium.

    From each speck's second moments: longer than ``STRAND_MM``, at least ``STRAND_ELONGATION`` times longer
    than wide, wider than a fine linear cast (``STRAND_WIDTH_MM``) and below ``STRAND_KEEP_Z``.
    """
    n = np.maximum(pixels_per, 1)
    mr, mc = np.bincount(ids, rows, count + 1)[1:] / n, np.bincount(ids, cols, count + 1)[1:] / n
    rr = np.bincount(ids, rows.astype(float) ** 2, count + 1)[1:] / n - mr**2
    cc = np.bincount(ids, cols.astype(float) ** 2, count + 1)[1:] / n - mc**2
    rc = np.bincount(ids, rows.astype(float) * cols, count + 1)[1:] / n - mr * mc
    half_trace, root = (rr + cc) / 2, np.sqrt(((rr - cc) / 2) ** 2 + rc**2)
    major, minor = half_trace + root, np.maximum(half_trace - root, 1 / 12)  # variance along / across
    length_mm, width_mm = np.sqrt(12 * major) * work_mm, np.sqrt(12 * minor) * work_mm  # uniform-bar extents
    return (
        (length_mm >= STRAND_MM)
        & (length_mm >= STRAND_ELONGATION * width_mm)
        & (width_mm >= STRAND_WIDTH_MM)
        & (peaks < STRAND_KEEP_Z)
    )


def significance(image: np.ndarray, inside: np.ndarray, tissue: np.ndarray, work_mm: float) -> np.ndarray:
    """Per pixel, the strongest speck response over the scales, in local robust standard deviations.

    The background is a normalised convolution over ``tissue`` (the Gaussian average of breast pixels only);
    the noise is measured on ``inside`` pixels only: the skin edge and the film outside would inflate it.
    """
    weight = tissue.astype(np.float32)
    sigma_bg = BACKGROUND_SIGMA_MM / work_mm
    # truncated at 3 sigma: the background needs no more precision, and the widest kernel dominates the time
    background = ndimage.gaussian_filter(image * weight, sigma_bg, truncate=3.0) / np.maximum(
        ndimage.gaussian_filter(weight, sigma_bg, truncate=3.0), 1e-3
    )
    best = np.zeros(image.shape, np.float32)
    tile = max(8, round(TILE_MM / work_mm))
    for sigma_mm in SPECK_SIGMAS_MM:
        sigma = max(sigma_mm / work_mm, 0.5)  # below half a pixel a Gaussian no longer smooths
        response = ndimage.gaussian_filter(image, sigma) - background
        np.maximum(best, response / local_noise(response, inside, tile), out=best)
    return best


def local_noise(response: np.ndarray, inside: np.ndarray, tile: int) -> np.ndarray:
    """Robust standard deviation of ``response`` over the ``inside`` pixels of each ``tile`` x ``tile`` block,
    spread back to every pixel.

    Every second pixel of a tile along each axis is plenty for a median and four times cheaper. Tiles with too
    few inside pixels take the median of the others.
    """
    h, w = response.shape
    ph, pw = -h % tile, -w % tile
    values = np.where(inside, np.abs(response), np.inf)
    padded = np.pad(values, ((0, ph), (0, pw)), constant_values=np.inf)
    blocks = padded.reshape(padded.shape[0] // tile, tile, padded.shape[1] // tile, tile)[:, ::2, :, ::2]
    blocks = np.sort(blocks.transpose(0, 2, 1, 3).reshape(blocks.shape[0], blocks.shape[2], -1), axis=2)
    count = np.isfinite(blocks).sum(axis=2)
    middle = np.take_along_axis(blocks, (count // 2)[..., None], axis=2)[..., 0] * ROBUST_SIGMA
    valid = (count >= blocks.shape[2] // 4) & (middle > 0)
    fill = float(np.median(middle[valid])) if valid.any() else 1.0
    mad = np.where(valid, middle, fill).astype(np.float32)
    # bilinear spread of the tile values avoids steps in the threshold at tile edges (PIL: 20x faster than zoom)
    noise = np.asarray(Image.fromarray(mad, mode="F").resize((padded.shape[1], padded.shape[0]), Image.BILINEAR))
    return np.maximum(noise[:h, :w], 1e-6)
