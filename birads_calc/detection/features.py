"""What the learned second stage sees of each candidate speck: multi-scale measurements in physical units.

Every feature is a number that does not change when the image is shifted, mirrored or rotated (responses at a
pixel, eigenvalues, areas, distances), is in millimetres or in local noise units (so the same speck measures the
same on a 0.1 mm digital image and a 0.2 mm film scan as far as its pixels allow), or is relative to the image's
own range. In the order of ``FEATURES``:

* **contrast**: the peak significance (``z``, the strongest difference-of-Gaussians response in local robust
  standard deviations) and the response at each speck scale and at a wider one (0.5 mm: a glandular knot answers
  there as much as at the speck scale, a calcification much less); the mean significance over the speck;
  the peak's contrast over the 1 mm background as a share of the image's range, and the local noise likewise
  (log: grainy film vs clean detector);
* **shape**: area, length, width and elongation (a uniform bar with the speck's second moments); the Hessian
  eigenvalues at the fine and coarse speck scales at the peak (``skimage.feature.hessian_matrix_eigvals``; a blob
  has two strong negative eigenvalues, a vessel one, as HDoGReg uses them), in noise units, and their
  anisotropy; the gradient asymmetry (a step's bright side has one, a spot or line none);
* **context**: the background level (dense or fatty tissue), the distance to the skin line (capped; the skin's
  bright rim makes specks), the neighbours within 2, 5 and 10 mm (calcifications come in groups) and their
  summed evidence within 5 mm. No feature describes the whole image (its density of candidates, its mean
  probability): in training every scene holds inserted calcifications, so such a feature would learn "this image
  has calcifications" from the recipe itself, not from the film.

**Context** (``CONTEXT``, for the ranker's second pass, "auto-context"): what the first pass thinks of the
neighbours. Most neighbours are noise peaks, so counting them says little; the summed probability of the others
within 2, 5 and 10 mm and the most likely one within 5 mm say whether a candidate sits in a group of likely
calcifications.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.feature import hessian_matrix_eigvals

from birads_calc.detection.breast import Breast
from birads_calc.detection.specks import LOW_Z, SPECK_SIGMAS_MM, Maps, Specks, bar_extents

WIDE_SIGMA_MM = 0.5
NEIGHBOUR_RADII_MM = (2.0, 5.0, 10.0)
EVIDENCE_CAP = 12.0

FEATURES = (
    "peak_z",
    "z_fine",
    "z_coarse",
    "z_wide",
    "mean_z",
    "log_contrast",
    "log_noise",
    "log_area",
    "length_mm",
    "width_mm",
    "elongation",
    "hessian_fine_1",
    "hessian_fine_2",
    "hessian_coarse_1",
    "hessian_coarse_2",
    "anisotropy_fine",
    "anisotropy_coarse",
    "asymmetry",
    "background",
    "skin_mm",
    "neighbours_2mm",
    "neighbours_5mm",
    "neighbours_10mm",
    "evidence_5mm",
)


CONTEXT = ("likely_2mm", "likely_5mm", "likely_10mm", "most_likely_5mm")


def context_features(points_mm: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """float32 [N, len(CONTEXT)] from the candidates' positions (mm) and first-pass probabilities."""
    n = len(points_mm)
    if n == 0:
        return np.zeros((0, len(CONTEXT)), np.float32)
    tree = cKDTree(points_mm)
    columns = []
    for radius in NEIGHBOUR_RADII_MM:
        near = tree.query_ball_point(points_mm, radius)
        columns.append(np.asarray([probability[x].sum() for x in near]) - probability)
        if radius == NEIGHBOUR_RADII_MM[1]:
            others = [np.asarray([k for k in x if k != i], int) for i, x in enumerate(near)]
            most = np.asarray([probability[x].max() if len(x) else 0.0 for x in others])
    columns.append(most)
    return np.column_stack(columns).astype(np.float32)


def speck_features(specks: Specks, maps: Maps, breast: Breast, spacing: tuple[float, float]) -> np.ndarray:
    """float32 [N, len(FEATURES)]: the measurements of each candidate (see the module docstring)."""
    n = len(specks)
    if n == 0:
        return np.zeros((0, len(FEATURES)), np.float32)
    work_mm = maps.work_mm
    rows, cols = np.nonzero(specks.labels)
    ids = specks.labels[rows, cols]
    pixels_per = np.bincount(ids, minlength=n + 1)[1:]
    pr, pc = specks.peak_pixels[:, 0], specks.peak_pixels[:, 1]
    fine, coarse = (s[pr, pc] - maps.background[pr, pc] for s in maps.smooth)
    z_fine, z_coarse = fine / maps.noise[0][pr, pc], coarse / maps.noise[1][pr, pc]
    z_wide = _wide_response(maps, pr, pc)
    mean_z = np.bincount(ids, maps.z[rows, cols], n + 1)[1:] / np.maximum(pixels_per, 1)
    contrast = np.maximum(fine, coarse)
    length, width = bar_extents(rows, cols, ids, n, pixels_per, work_mm)
    hessians = [
        _hessian(maps.smooth[k], maps.noise[k], pr, pc, max(sigma / work_mm, 0.5))
        for k, sigma in enumerate(SPECK_SIGMAS_MM)
    ]
    points = specks.centroids * np.asarray(spacing)[None, :]
    tree = cKDTree(points)
    counts = [np.asarray([len(x) - 1 for x in tree.query_ball_point(points, r)]) for r in NEIGHBOUR_RADII_MM]
    evidence = np.minimum(specks.peaks - LOW_Z, EVIDENCE_CAP).clip(0)
    near = tree.query_ball_point(points, NEIGHBOUR_RADII_MM[1])
    evidence_5 = np.asarray([evidence[x].sum() for x in near]) - evidence
    full_rows = (pr + 0.5) * specks.factor - 0.5
    full_cols = (pc + 0.5) * specks.factor - 0.5
    columns = [
        specks.peaks,
        z_fine,
        z_coarse,
        z_wide,
        mean_z,
        np.log(np.maximum(contrast, 1e-5)),
        np.log(maps.noise[0][pr, pc]),
        np.log(specks.areas_mm2),
        length,
        width,
        length / np.maximum(width, 1e-3),
        *hessians[0],
        *hessians[1],
        _anisotropy(*hessians[0]),
        _anisotropy(*hessians[1]),
        specks.asymmetry,
        maps.background[pr, pc],
        breast.skin_distance(full_rows, full_cols),
        *counts,
        evidence_5,
    ]
    return np.column_stack(columns).astype(np.float32)


def _wide_response(maps: Maps, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Response at ``WIDE_SIGMA_MM`` at the peaks, in the coarse speck scale's noise units."""
    wide = ndimage.gaussian_filter(maps.image, WIDE_SIGMA_MM / maps.work_mm, truncate=3.0)
    return (wide[rows, cols] - maps.background[rows, cols]) / maps.noise[1][rows, cols]


def _hessian(smooth: np.ndarray, noise: np.ndarray, rows, cols, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Hessian eigenvalues (larger first) of ``smooth`` at the peaks, scale-normalised and in noise units.

    Second differences of the image already blurred at the speck scale; a bright blob gives two negative values.
    """
    h, w = smooth.shape
    up, down = np.maximum(rows - 1, 0), np.minimum(rows + 1, h - 1)
    left, right = np.maximum(cols - 1, 0), np.minimum(cols + 1, w - 1)
    centre = smooth[rows, cols]
    hrr = smooth[up, cols] - 2 * centre + smooth[down, cols]
    hcc = smooth[rows, left] - 2 * centre + smooth[rows, right]
    hrc = (smooth[down, right] - smooth[down, left] - smooth[up, right] + smooth[up, left]) / 4
    first, second = hessian_matrix_eigvals([hrr, hrc, hcc])
    scale = sigma**2 / noise[rows, cols]
    return first * scale, second * scale


def _anisotropy(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(|l_big| - |l_small|) / (|l_big| + |l_small|): 0 for a round blob, 1 for a line."""
    a, b = np.abs(first), np.abs(second)
    return (np.maximum(a, b) - np.minimum(a, b)) / np.maximum(a + b, 1e-6)
