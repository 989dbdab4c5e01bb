"""Stage 3: specks grouped into calcification regions, following the BI-RADS distribution terms.

The BI-RADS lexicon (5th ed.) describes how calcifications lie: *grouped* (a few within about 1 cm, up to 2 cm),
*linear* (a line, as along a duct), *segmental* (a duct and its branches), *regional* (a larger area, > 2 cm) and
*diffuse* (scattered). Readers outline each such group as one region, so the detector does too:

* specks are linked when their edges are at most ``LINK_MM`` apart, and a region is a connected set of
  links (single linkage). A line or a branching duct is a chain of close specks and so stays one region however
  long it is; a regional spread stays one region as long as its specks are not further apart than the link;
* a region needs ``MIN_SPECKS`` specks (the clinical "cluster": at least three within 1 cm), unless one speck is
  large and strong enough to be a calcification on its own (a coarse or popcorn calcification, ``COARSE_MM2``);
* its score (higher = more certainly calcifications) adds the evidence of its specks: each speck's peak response
  above the detection threshold, capped so that one very bright artefact cannot carry a region, then squashed
  into (0, 1). More and clearer specks give a higher score.

Each region's mask is its specks' pixels grown by one pixel, as a reader outlines specks (the synthetic
generator draws its truth masks the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from birads_calc.detection.specks import LOW_Z, Specks

LINK_MM = 5.0
MIN_SPECKS = 3
COARSE_MM2 = 0.8  # a single speck this large (about 1 mm across) counts as a calcification on its own
COARSE_MIN_Z = 6.0
EVIDENCE_CAP = 12.0  # per speck, in robust standard deviations above LOW_Z
EVIDENCE_SCALE = 25.0  # evidence at which the score reaches 1 - 1/e
CROWDING_WEIGHT = 2.0  # evidence per speck beyond the first for a group unlikely to arise by chance
MIN_SCORE = 0.3  # default operating point (docs/detection.md); the FROC benchmark passes 0


@dataclass(frozen=True)
class Group:
    """Specks that make one region: their indices into :class:`Specks` and the region's score."""

    members: np.ndarray
    score: float


def group_specks(specks: Specks, pixel_spacing: tuple[float, float], min_score: float = MIN_SCORE) -> list[Group]:
    """Regions of ``specks`` scoring at least ``min_score`` (best first); specks in no region are left out."""
    if len(specks) == 0:
        return []
    points_mm = specks.centroids * np.asarray(pixel_spacing)[None, :]
    radii = np.sqrt(specks.areas_mm2 / np.pi)
    # linked when their edges (not centres) are within LINK_MM: coarse calcifications are millimetres wide
    pairs = cKDTree(points_mm).query_pairs(LINK_MM + 2 * float(radii.max()), output_type="ndarray")
    if len(pairs):
        gaps = np.hypot(*(points_mm[pairs[:, 0]] - points_mm[pairs[:, 1]]).T) - radii[pairs[:, 0]] - radii[pairs[:, 1]]
        pairs = pairs[gaps <= LINK_MM]
    n = len(specks)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) else None
    count, labels = connected_components(graph, directed=False) if graph is not None else (n, np.arange(n))
    groups = []
    chance = chance_neighbours(specks)
    for k in range(count):
        members = np.flatnonzero(labels == k)
        if len(members) < MIN_SPECKS and not _coarse(specks, members):
            continue
        score = region_score(specks.peaks[members], chance)
        if score >= min_score:
            groups.append(Group(members, score))
    return sorted(groups, key=lambda g: -g.score)


def _coarse(specks: Specks, members: np.ndarray) -> bool:
    return bool(np.any((specks.areas_mm2[members] >= COARSE_MM2) & (specks.peaks[members] >= COARSE_MIN_Z)))


def chance_neighbours(specks: Specks) -> float:
    """Specks expected within ``LINK_MM`` of a speck if this image's specks were scattered at random."""
    density = len(specks) / max(specks.searched_mm2, 1.0)
    return density * np.pi * LINK_MM**2


def region_score(peaks: np.ndarray, chance: float = 0.0) -> float:
    """Score in (0, 1) from the specks' peak responses (robust standard deviations) and their crowding.

    Each speck adds its capped response; each speck beyond the first also adds ``-log(chance)`` (weighted):
    a tight group is strong evidence on an image with few specks elsewhere (a clean digital mammogram) and weak
    evidence on one whose film grain scatters specks everywhere.
    """
    peaks = np.asarray(peaks)
    evidence = float(np.minimum(peaks - LOW_Z, EVIDENCE_CAP).clip(0).sum())
    if chance > 0:
        evidence += CROWDING_WEIGHT * (len(peaks) - 1) * max(0.0, -float(np.log(chance)))
    return 1.0 - float(np.exp(-evidence / EVIDENCE_SCALE))


def region_mask(specks: Specks, members: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Full-resolution mask of a group: its specks' pixels grown by one pixel (computed in its bounding box)."""
    selected = np.isin(specks.labels, members + 1)
    rows, cols = np.nonzero(selected)
    f = specks.factor
    r0, r1 = max(rows.min() * f - 1, 0), min((rows.max() + 1) * f + 1, shape[0])
    c0, c1 = max(cols.min() * f - 1, 0), min((cols.max() + 1) * f + 1, shape[1])
    local = np.zeros((r1 - r0, c1 - c0), bool)
    for r, c in zip(rows, cols, strict=True):  # a handful of working pixels per speck
        local[max(r * f - r0, 0) : r * f + f - r0, max(c * f - c0, 0) : c * f + f - c0] = True
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = ndimage.binary_dilation(local, structure=np.ones((3, 3)))
    return mask
