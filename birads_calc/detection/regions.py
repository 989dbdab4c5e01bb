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

With the learned second stage (the default, :func:`group_ranked`), regions come from *ranked* specks: every
candidate whose probability of being a calcification reaches ``MEMBER_P`` takes part, linked as above (two likely
specks, both at least ``JOIN_P``, are linked up to twice ``LINK_MM`` apart, so a large faint cluster with gaps
over 5 mm stays one region); any group can be a region, since at 0.2 mm a tight cluster often shows as one or two
merged blobs. The region's score is the chance that at least one of its ``TOP_K`` most likely members is a
calcification, ``1 - prod(1 - p)`` (more likely members, higher score). The hand-made score below is kept as
``scorer="handmade"`` for comparison.

Each region's mask is its specks' pixels grown by one pixel, as a reader outlines specks (the synthetic
generator draws its truth masks the same way), kept in its bounding box until written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from birads_calc.detection.specks import HANDMADE_HIGH_Z, LOW_Z, Specks

LINK_MM = 5.0
MIN_SPECKS = 3
COARSE_MM2 = 0.8  # a single speck this large (about 1 mm across) counts as a calcification on its own
COARSE_MIN_Z = 6.0
EVIDENCE_CAP = 12.0  # per speck, in robust standard deviations above LOW_Z
EVIDENCE_SCALE = 25.0  # evidence at which the score reaches 1 - 1/e
CROWDING_WEIGHT = 2.0  # evidence per speck beyond the first for a group unlikely to arise by chance
MIN_SCORE = 0.3  # default operating point of the hand-made score (docs/detection.md); the FROC benchmark passes 0
MEMBER_P = 0.05  # a candidate this likely takes part in a ranked region
JOIN_P = 0.5  # two specks at least this likely are linked up to 2 x LINK_MM apart
TOP_K = 3  # members whose probabilities make the ranked region's score
RANKED_MIN_SCORE = 0.5  # default operating point of the learned score (docs/detection.md)


@dataclass(frozen=True)
class Group:
    """Specks that make one region: their indices into :class:`Specks` and the region's score."""

    members: np.ndarray
    score: float


def group_specks(specks: Specks, pixel_spacing: tuple[float, float], min_score: float = MIN_SCORE) -> list[Group]:
    """Hand-made regions of ``specks`` scoring at least ``min_score`` (best first); specks in no region are left
    out. Vessel- and edge-like specks are dropped first."""
    if len(specks) == 0:
        return []
    if specks.vessel is not None:
        specks = specks.subset(handmade_specks(specks))
    groups = []
    chance = chance_neighbours(specks)
    for members in _linked(specks, pixel_spacing, np.zeros(len(specks), bool)):
        if len(members) < MIN_SPECKS and not _coarse(specks, members):
            continue
        score = region_score(specks.peaks[members], chance)
        if score >= min_score:
            groups.append(Group(members, score))
    return _best_first(groups)


def handmade_specks(specks: Specks) -> np.ndarray:
    """bool [N]: the specks the hand-made score uses (not vessel- or edge-like, reaching ``HANDMADE_HIGH_Z``)."""
    return ~(specks.vessel | specks.edge) & (specks.peaks >= HANDMADE_HIGH_Z)


def group_ranked(
    specks: Specks, pixel_spacing: tuple[float, float], min_score: float = RANKED_MIN_SCORE
) -> list[Group]:
    """Regions of the likely specks (``specks.probability`` >= ``MEMBER_P``) scoring at least ``min_score``.

    Member indices refer to ``specks`` itself (unlikely specks are in no region).
    """
    if len(specks) == 0:
        return []
    likely = np.flatnonzero(specks.probability >= MEMBER_P)
    if len(likely) == 0:
        return []
    chosen = specks.subset(specks.probability >= MEMBER_P)
    groups = []
    for members in _linked(chosen, pixel_spacing, chosen.probability >= JOIN_P):
        score = ranked_score(chosen.probability[members])
        if score >= min_score:
            groups.append(Group(likely[members], score))
    return _best_first(groups)


def ranked_score(probabilities: np.ndarray) -> float:
    """``1 - prod(1 - p)`` over the ``TOP_K`` most likely members."""
    top = np.sort(np.asarray(probabilities, float))[::-1][:TOP_K]
    return float(1.0 - np.prod(1.0 - top))


def _best_first(groups: list[Group]) -> list[Group]:
    """Best score first."""
    return sorted(groups, key=lambda g: -g.score)


def _linked(specks: Specks, pixel_spacing, strong: np.ndarray) -> list[np.ndarray]:
    """Single-linkage groups: specks whose edges are within ``LINK_MM`` (``2 * LINK_MM`` when both ``strong``)."""
    n = len(specks)
    if n == 0:
        return []
    points_mm = specks.centroids * np.asarray(pixel_spacing)[None, :]
    radii = np.sqrt(specks.areas_mm2 / np.pi)
    reach = 2 * LINK_MM if strong.any() else LINK_MM
    # linked when their edges (not centres) are within LINK_MM: coarse calcifications are millimetres wide
    pairs = cKDTree(points_mm).query_pairs(reach + 2 * float(radii.max()), output_type="ndarray")
    if len(pairs):
        gaps = np.hypot(*(points_mm[pairs[:, 0]] - points_mm[pairs[:, 1]]).T) - radii[pairs[:, 0]] - radii[pairs[:, 1]]
        both = strong[pairs[:, 0]] & strong[pairs[:, 1]]
        pairs = pairs[(gaps <= LINK_MM) | (both & (gaps <= 2 * LINK_MM))]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)) if len(pairs) else None
    labels = connected_components(graph, directed=False)[1] if graph is not None else np.arange(n)
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(labels[order])) + 1)


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


def region_mask(
    specks: Specks, members: np.ndarray, shape: tuple[int, int], boxes: list | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """A group's mask in its bounding box (its specks' pixels grown by one pixel) and the box's top-left corner.

    Only the box is ever allocated: a region of a 4,000-pixel-wide mammogram costs its own size, not the image's.
    ``boxes``: ``scipy.ndimage.find_objects(specks.labels)``, computed once per image by the caller.
    """
    boxes = boxes if boxes is not None else ndimage.find_objects(specks.labels)
    spans = [boxes[m] for m in members]
    w0, w1 = min(b[0].start for b in spans), max(b[0].stop for b in spans)
    v0, v1 = min(b[1].start for b in spans), max(b[1].stop for b in spans)
    rows, cols = np.nonzero(np.isin(specks.labels[w0:w1, v0:v1], members + 1))
    rows, cols = rows + w0, cols + v0
    f = specks.factor
    r0, r1 = max(rows.min() * f - 1, 0), min((rows.max() + 1) * f + 1, shape[0])
    c0, c1 = max(cols.min() * f - 1, 0), min((cols.max() + 1) * f + 1, shape[1])
    local = np.zeros((r1 - r0, c1 - c0), bool)
    for r, c in zip(rows, cols, strict=True):  # a handful of working pixels per speck
        local[max(r * f - r0, 0) : r * f + f - r0, max(c * f - c0, 0) : c * f + f - c0] = True
    return ndimage.binary_dilation(local, structure=np.ones((3, 3))), (r0, c0)
