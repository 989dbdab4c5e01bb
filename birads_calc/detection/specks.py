"""Stage 2: candidate calcification specks inside the breast, measured in millimetres.

A calcification is a small spot brighter than the tissue around it. The detector works on a copy of the image
at about ``WORK_MM`` per pixel (finer images are block-averaged: a 0.1 mm speck still covers a pixel, and a
full-field mammogram shrinks four-fold) and looks at two band-pass (difference of Gaussians) responses:
the image blurred at a speck's scale (``SPECK_SIGMAS_MM``) minus the image blurred at ``BACKGROUND_SIGMA_MM``,
wider than any microcalcification. Parenchyma, vessels seen broad and the breast's slow shading cancel out;
specks stay.

Tissue texture differs across a breast (fatty areas are quiet, dense ones busy), so each response is divided by
its own local noise (:func:`local_noise`): a robust standard deviation of the response around each pixel, from
box filters (the same at every position: the result moves with the image when it is shifted or mirrored, unlike
tiles anchored at the image's corner). A speck is a connected set of pixels above ``LOW_Z`` robust standard
deviations that reaches ``HIGH_Z`` somewhere (hysteresis, so a faint speck's shoulder stays attached to its
peak), inside the breast's search area, no larger than ``MAX_AREA_MM2``.

These are *candidates*: most are noise peaks, vessel fragments and glandular knots. The learned second stage
(``ranking``) decides which look like calcifications, from the measurements ``features`` takes of each one. Two
hand-made filters are kept as flags (``vessel``, ``edge``) for the hand-made score (``regions``) and as
features: long faint strands, and the bright side of a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from birads_calc.detection.breast import block_mean, spread

WORK_MM = 0.1  # working resolution
SPECK_SIGMAS_MM = (0.07, 0.25)  # fine specks and coarser ones
BACKGROUND_SIGMA_MM = 1.0
NOISE_WINDOW_MM = 6.0  # the local noise is measured over about this width
LOW_Z = 2.5
HIGH_Z = 3.0  # candidates: the learned stage sorts them, so faint ones are kept
HANDMADE_HIGH_Z = 4.0  # the hand-made score's specks reach this (its hysteresis, before the learned stage)
MAX_AREA_MM2 = 40.0  # coarse, popcorn and rim calcifications reach about 7 mm; larger bright blobs are tissue
MAX_CANDIDATES = 4000  # the strongest kept on a pathological image (all noise); a mammogram has hundreds
ROBUST_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal distribution
GAUSS_ABS_TO_SD = 1.2533  # mean absolute deviation -> standard deviation of a normal distribution
NOISE_GRID = 2  # the first noise estimate (a clipping level only) is computed on blocks of this many pixels
CLIP_SD = 2.5  # responses beyond this many SD (specks, vessels) are clipped before the noise is measured
STRAND_MM, STRAND_ELONGATION, STRAND_WIDTH_MM, STRAND_KEEP_Z = 2.0, 3.0, 0.35, 8.0
EDGE_ASYMMETRY = 0.5


@dataclass(frozen=True)
class Maps:
    """The working-resolution images the candidates were found on (``features`` measures them there)."""

    image: np.ndarray  # block-averaged pixels
    inside: np.ndarray  # the search area
    background: np.ndarray  # the 1 mm tissue background
    smooth: tuple[np.ndarray, ...]  # the image at each of SPECK_SIGMAS_MM
    noise: tuple[np.ndarray, ...]  # the local robust SD of each speck response
    z: np.ndarray  # the strongest response over the scales, in local SDs
    work_mm: float


@dataclass(frozen=True)
class Specks:
    """The candidate specks of one image.

    Attributes:
        labels: int32 [h, w] at the working resolution; 0 = no speck, k = speck k-1.
        factor: full-resolution pixels per working pixel along each axis.
        centroids: float [N, 2] (row, col) in full-resolution pixels.
        areas_mm2: float [N].
        peaks: float [N], each speck's highest response in robust standard deviations.
        searched_mm2: the area searched (the breast's search area), for the image's speck density.
        peak_pixels: int [N, 2] (row, col) of each speck's strongest pixel, working resolution.
        vessel: bool [N], long faint strands (the hand-made vessel filter).
        edge: bool [N], the bright side of a step (the hand-made edge filter).
        asymmetry: float [N], |summed intensity gradient| / summed gradient magnitude (see ``_edge_like``).
        probability: float [N], the learned stage's probability of a calcification (set by ``ranking``).
    """

    labels: np.ndarray
    factor: int
    centroids: np.ndarray
    areas_mm2: np.ndarray
    peaks: np.ndarray
    searched_mm2: float = 0.0
    peak_pixels: np.ndarray | None = None
    vessel: np.ndarray | None = None
    edge: np.ndarray | None = None
    asymmetry: np.ndarray | None = None
    probability: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.peaks)

    def mask(self, shape: tuple[int, int], keep: np.ndarray | None = None) -> np.ndarray:
        """Full-resolution bool mask of the specks (all, or those whose index is in ``keep``)."""
        selected = self.labels > 0 if keep is None else np.isin(self.labels, np.asarray(keep) + 1)
        f = self.factor
        full = np.repeat(np.repeat(selected, f, axis=0), f, axis=1) if f > 1 else selected
        return full[: shape[0], : shape[1]]

    def subset(self, keep: np.ndarray) -> Specks:
        """The specks whose boolean ``keep`` is set, relabelled so that speck k is label k+1 again."""
        keep = np.asarray(keep, bool)
        remap = np.zeros(len(self) + 1, np.int32)
        remap[1:][keep] = np.arange(1, int(keep.sum()) + 1)
        pick = {name: getattr(self, name) for name in ("peak_pixels", "vessel", "edge", "asymmetry", "probability")}
        return Specks(remap[self.labels], self.factor, self.centroids[keep], self.areas_mm2[keep], self.peaks[keep],
                      self.searched_mm2, **{k: None if v is None else v[keep] for k, v in pick.items()})  # fmt: skip


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
    """Candidate specks of ``pixels`` (float [H, W] in [0, 1]) inside ``search`` (bool [H, W]).

    ``breast`` (bool [H, W], default ``search``) and its pixels above ``level``: the tissue the background is
    averaged over, so the dark film beyond the skin never makes the skin line look like a row of specks.
    """
    return find_candidates(pixels, search, pixel_spacing, breast, level)[0]


def find_candidates(
    pixels: np.ndarray,
    search: np.ndarray,
    pixel_spacing: tuple[float, float],
    breast: np.ndarray | None = None,
    level: float = 0.0,
) -> tuple[Specks, Maps]:
    """:func:`find_specks` and the working-resolution maps the features are measured on."""
    factor = working_factor(pixel_spacing)
    work_mm = factor * min(pixel_spacing)
    image = block_mean(pixels, factor)
    inside = search[::factor, ::factor][: image.shape[0], : image.shape[1]]
    tissue = inside if breast is None else breast[::factor, ::factor][: image.shape[0], : image.shape[1]]
    tissue = tissue & (image > level)
    maps = significance(image, inside, tissue, work_mm)
    z = maps.z
    searched_mm2 = float(inside.sum()) * work_mm**2
    keep = apply_hysteresis_threshold(z, LOW_Z, HIGH_Z)
    labels, count = ndimage.label(keep, structure=np.ones((3, 3)))
    if count == 0:
        none = np.zeros(0)
        return Specks(labels.astype(np.int32), factor, np.zeros((0, 2)), none, none, searched_mm2,
                      np.zeros((0, 2), int), none.astype(bool), none.astype(bool), none), maps  # fmt: skip
    # statistics over the few labelled pixels only (scipy's label statistics sort the whole image)
    rows, cols = np.nonzero(labels)
    ids = labels[rows, cols]
    pixels_per = np.bincount(ids, minlength=count + 1)[1:]
    areas = pixels_per * work_mm**2
    values = z[rows, cols]
    order = np.lexsort((-values, ids))  # per speck, its strongest pixel first
    first = order[np.searchsorted(ids[order], np.arange(1, count + 1))]
    peaks, peak_pixels = values[first], np.column_stack([rows[first], cols[first]])
    centroids = np.column_stack(
        [np.bincount(ids, rows, count + 1)[1:] / pixels_per, np.bincount(ids, cols, count + 1)[1:] / pixels_per]
    )
    centroids = (centroids + 0.5) * factor - 0.5  # working pixel centres -> full-resolution coordinates
    vessel = _vessel_like(rows, cols, ids, count, pixels_per, peaks, work_mm)
    # the bright side of a step (the pectoral muscle's or a dense gland's border), not a line or a spot
    asymmetry = gradient_asymmetry(image, rows, cols, ids, count)
    edge = long_specks(rows, cols, ids, count, work_mm) & (asymmetry > EDGE_ASYMMETRY)
    specks = Specks(labels.astype(np.int32), factor, centroids, areas, peaks, searched_mm2, peak_pixels, vessel, edge,
                    asymmetry)  # fmt: skip
    small = areas <= MAX_AREA_MM2
    if small.sum() > MAX_CANDIDATES:  # the strongest only
        small &= peaks >= np.sort(peaks[small])[-MAX_CANDIDATES]
    return (specks if small.all() else specks.subset(small)), maps


def long_specks(rows, cols, ids, count: int, work_mm: float) -> np.ndarray:
    """Specks about ``STRAND_MM`` long or longer (from the second moments of their pixels)."""
    n = np.maximum(np.bincount(ids, minlength=count + 1)[1:], 1)
    extent = np.maximum(
        np.bincount(ids, rows.astype(float) ** 2, count + 1)[1:] / n
        - (np.bincount(ids, rows, count + 1)[1:] / n) ** 2
        + np.bincount(ids, cols.astype(float) ** 2, count + 1)[1:] / n
        - (np.bincount(ids, cols, count + 1)[1:] / n) ** 2,
        0,
    )
    return np.sqrt(12 * extent) * work_mm >= STRAND_MM  # about the speck's length


def gradient_asymmetry(image: np.ndarray, rows, cols, ids, count: int) -> np.ndarray:
    """Per speck, |summed intensity gradient| / summed gradient magnitude over its pixels (0 spot/line, 1 step).

    Across a line or a spot the intensity gradient points inward from both sides and cancels over the speck;
    along a step (the bright side of the pectoral muscle's or a dense gland's border) it points one way.
    """
    smooth = ndimage.gaussian_filter(image, 1.0)
    h, w = image.shape
    gy = (smooth[np.minimum(rows + 1, h - 1), cols] - smooth[np.maximum(rows - 1, 0), cols]) / 2
    gx = (smooth[rows, np.minimum(cols + 1, w - 1)] - smooth[rows, np.maximum(cols - 1, 0)]) / 2
    total = np.hypot(np.bincount(ids, gy, count + 1)[1:], np.bincount(ids, gx, count + 1)[1:])
    magnitude = np.bincount(ids, np.hypot(gy, gx), count + 1)[1:]
    return (total / np.maximum(magnitude, 1e-12)).astype(np.float32)


def _vessel_like(rows, cols, ids, count, pixels_per, peaks, work_mm) -> np.ndarray:
    """Specks that are long, wide bright strands of modest contrast: vessels and fibrous tissue, not calcium.

    From each speck's second moments: longer than ``STRAND_MM``, at least ``STRAND_ELONGATION`` times longer
    than wide, wider than a fine linear cast (``STRAND_WIDTH_MM``) and below ``STRAND_KEEP_Z``.
    """
    length_mm, width_mm = bar_extents(rows, cols, ids, count, pixels_per, work_mm)
    return (
        (length_mm >= STRAND_MM)
        & (length_mm >= STRAND_ELONGATION * width_mm)
        & (width_mm >= STRAND_WIDTH_MM)
        & (peaks < STRAND_KEEP_Z)
    )


def bar_extents(rows, cols, ids, count, pixels_per, work_mm) -> tuple[np.ndarray, np.ndarray]:
    """Length and width (mm) of each speck taken as a uniform bar with its pixels' second moments."""
    n = np.maximum(pixels_per, 1)
    mr, mc = np.bincount(ids, rows, count + 1)[1:] / n, np.bincount(ids, cols, count + 1)[1:] / n
    rr = np.bincount(ids, rows.astype(float) ** 2, count + 1)[1:] / n - mr**2
    cc = np.bincount(ids, cols.astype(float) ** 2, count + 1)[1:] / n - mc**2
    rc = np.bincount(ids, rows.astype(float) * cols, count + 1)[1:] / n - mr * mc
    half_trace, root = (rr + cc) / 2, np.sqrt(((rr - cc) / 2) ** 2 + rc**2)
    major, minor = half_trace + root, np.maximum(half_trace - root, 1 / 12)  # variance along / across
    return np.sqrt(12 * major) * work_mm, np.sqrt(12 * minor) * work_mm


def significance(image: np.ndarray, inside: np.ndarray, tissue: np.ndarray, work_mm: float) -> Maps:
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
    window = max(5, round(NOISE_WINDOW_MM / work_mm) | 1)
    norm = _tent(inside.astype(np.float32), _span(window))  # the weights' tent: the same for both scales
    smooth, noise = [], []
    for sigma_mm in SPECK_SIGMAS_MM:
        sigma = max(sigma_mm / work_mm, 0.5)  # below half a pixel a Gaussian no longer smooths
        blurred = ndimage.gaussian_filter(image, sigma)
        response = blurred - background
        sd = local_noise(response, inside, window, norm)
        np.maximum(best, response / sd, out=best)
        smooth.append(blurred)
        noise.append(sd)
    best[~inside] = 0
    return Maps(image, inside, background, tuple(smooth), tuple(noise), best, work_mm)


def local_noise(response: np.ndarray, inside: np.ndarray, window: int, norm: np.ndarray | None = None) -> np.ndarray:
    """Robust local standard deviation of ``response`` over the ``inside`` pixels around each pixel.

    The mean absolute response under a tent-shaped weight of ``window`` pixels (two passes of a centred box
    filter), scaled to a standard deviation. Responses are clipped first at ``CLIP_SD`` of the whole image's
    robust deviation (1.4826 x its median absolute response), then at ``CLIP_SD`` of a first local estimate, so
    specks, vessels and a coarse calcification in the window barely raise it (what a median does, at the cost of
    box filters). A box filter weighs every position alike, so the estimate moves with the image when it is
    shifted or mirrored (tiles anchored at the image's corner do not). Only the first estimate, which merely sets
    the clipping level, is computed on ``NOISE_GRID`` x ``NOISE_GRID`` blocks (and interpolated back); the
    estimate itself is computed at every pixel. Where no inside pixel is near, the image's median is used.
    ``norm``: the tent of ``inside`` (computed here when not given).
    """
    h, w = response.shape
    span = _span(window)
    coarse_span = max(3, (window // NOISE_GRID // 2) | 1)
    absolute = np.abs(response)
    values = absolute[inside]  # the image's own robust level bounds the first pass (a big bright blob)
    overall = ROBUST_SIGMA * float(np.median(values)) if values.size else 1.0
    weight = inside.astype(np.float32)
    coarse_norm = _tent(block_mean(weight, NOISE_GRID), coarse_span)
    bounded = np.minimum(absolute, CLIP_SD * max(overall, 1e-6)) * weight
    first = GAUSS_ABS_TO_SD * _tent(block_mean(bounded, NOISE_GRID), coarse_span) / np.maximum(coarse_norm, 1e-6)
    first = np.where(coarse_norm > 0.05, first, overall)
    clipped = np.minimum(absolute, CLIP_SD * spread(first, NOISE_GRID, (h, w))) * weight
    norm = _tent(weight, span) if norm is None else norm
    second = GAUSS_ABS_TO_SD * _tent(clipped, span) / np.maximum(norm, 1e-6)
    return np.maximum(np.where(norm > 0.05, second, overall), 1e-6).astype(np.float32)


def _span(window: int) -> int:
    """Width of each of the two box filters whose tent is ``window`` pixels wide (odd: centred)."""
    return max(3, (window // 2) | 1)


def _tent(values: np.ndarray, span: int) -> np.ndarray:
    """Two passes of a centred box filter of ``span`` pixels: a tent twice as wide (mirror boundaries)."""
    return ndimage.uniform_filter(ndimage.uniform_filter(values, span, mode="mirror"), span, mode="mirror")
