"""How well detected regions match known ones: cluster-level FROC and speck-level sensitivity/precision.

Matching rules (the same for the benchmark and the tests):

* a detected region *hits* a true region when its centroid lies in the true region's bounding box grown by
  ``TOLERANCE_MM``, or when at least half of its mask lies in the true mask grown by that margin (a long
  linear or segmental region's centroid can fall between its specks);
* a true region is *found* when any detected region hits it; a detected region that hits none is a false
  positive;
* specks: a true speck (an 8-connected component of the true masks) is found when a detected speck touches it;
  a detected speck is correct when it touches a true mask (grown by one pixel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

TOLERANCE_MM = 2.0
FROC_RATES = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class ImageMatch:
    """One image's detections against its truth: per detection its score and which truths it hits."""

    scores: np.ndarray  # [D]
    hits: list[set[int]]  # per detection, indices of the true regions it hits
    n_truth: int


def match_image(detected: Sequence, truths: Sequence[np.ndarray], spacing: tuple[float, float]) -> ImageMatch:
    """Match regions (with ``centroid``, ``score`` and ``local_mask`` + ``bbox``, or a full ``mask``) to true
    masks (bool [H, W] each)."""
    grow = max(1, round(TOLERANCE_MM / min(spacing)))
    boxes, grown = [], []
    for truth in truths:
        rows, cols = np.nonzero(truth)
        boxes.append((rows.min() - grow, cols.min() - grow, rows.max() + grow, cols.max() + grow))
        grown.append(None)  # dilated lazily: only for detections whose centroid misses every box
    hits = []
    for region in detected:
        r, c = region.centroid
        found = {k for k, (r0, c0, r1, c1) in enumerate(boxes) if r0 <= r <= r1 and c0 <= c <= c1}
        if not found:
            local, (r0, c0, r1, c1) = _local(region)
            for k, truth in enumerate(truths):
                tr0, tc0, tr1, tc1 = boxes[k]
                if r1 <= tr0 or r0 > tr1 or c1 <= tc0 or c0 > tc1:
                    continue  # the region's box lies outside the grown truth: no overlap possible
                if grown[k] is None:
                    grown[k] = ndimage.binary_dilation(truth, iterations=grow)
                if (local & grown[k][r0:r1, c0:c1]).sum() >= 0.5 * local.sum():
                    found.add(k)
        hits.append(found)
    return ImageMatch(np.asarray([r.score for r in detected], float), hits, len(truths))


def _local(region) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A region's mask within its bounding box, and the box."""
    if getattr(region, "local_mask", None) is not None:
        return region.local_mask, tuple(region.bbox)
    mask = region.mask
    rows, cols = np.nonzero(mask)
    box = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    return mask[box[0] : box[2], box[1] : box[3]], box


def froc(matches: Sequence[ImageMatch], rates: Sequence[float] = FROC_RATES) -> dict[str, float]:
    """Cluster-level sensitivity at each rate of false-positive regions per image (best threshold within it).

    Returns ``{"sens@0.25": ..., ..., "max_sensitivity": ..., "fp_per_image_at_max": ...}``.
    """
    n_images = len(matches)
    n_truth = sum(m.n_truth for m in matches)
    entries = []  # (score, image, hits)
    for i, m in enumerate(matches):
        entries += [(float(s), i, h) for s, h in zip(m.scores, m.hits, strict=True)]
    entries.sort(key=lambda e: -e[0])
    found: set[tuple[int, int]] = set()
    false_positives = 0
    curve = [(0.0, 0.0)]  # (fp per image, sensitivity) after each distinct score
    for k, (score, image, hit) in enumerate(entries):
        if hit:
            found |= {(image, t) for t in hit}
        else:
            false_positives += 1
        if k + 1 == len(entries) or entries[k + 1][0] != score:
            curve.append((false_positives / max(n_images, 1), len(found) / max(n_truth, 1)))
    result = {f"sens@{rate:g}": max(s for fp, s in curve if fp <= rate) for rate in rates}
    result["max_sensitivity"] = curve[-1][1]
    result["fp_per_image_at_max"] = curve[-1][0]
    return result


def speck_counts(detected: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Counts for speck-level sensitivity and precision of one image (bool [H, W] masks of all specks)."""
    structure = np.ones((3, 3), bool)
    true_labels, n_true = ndimage.label(truth, structure=structure)
    found_labels, n_found = ndimage.label(detected, structure=structure)
    touched = np.unique(true_labels[detected & truth])
    near_truth = ndimage.binary_dilation(truth, structure=structure)
    correct = np.unique(found_labels[detected & near_truth])
    return {
        "true_specks": int(n_true),
        "true_found": int((touched > 0).sum()),
        "detected_specks": int(n_found),
        "detected_correct": int((correct > 0).sum()),
    }


def operating_point(matches: Sequence[ImageMatch], min_score: float) -> tuple[float, float]:
    """(sensitivity, false-positive regions per image) keeping only regions scoring at least ``min_score``."""
    found = sum(
        len(set().union(*[h for s, h in zip(m.scores, m.hits, strict=True) if s >= min_score])) for m in matches
    )
    false_pos = sum(
        int(np.sum([not h and s >= min_score for s, h in zip(m.scores, m.hits, strict=True)])) for m in matches
    )
    return found / max(sum(m.n_truth for m in matches), 1), false_pos / max(len(matches), 1)
