"""Calcification geometry in millimetres, per BI-RADS lexicon morphology and distribution.

A lesion is a set of primitives in its own frame (centre at the origin, the duct axis along +x, pointing at the
nipple once placed):

* capsules ``(x0, y0, x1, y1, radius, density)``: a segment swept by a sphere. A point capsule is a round speck,
  a long one a rod or a fine linear cast, a clump of them a popcorn or a pleomorphic fragment;
* shells ``(x, y, outer, inner, density)``: a hollow sphere, the rim ("eggshell") calcification.

The renderer turns each primitive into projected calcium thickness (the x-ray path length through it), so the
sizes here are physical and the same lesion looks right at any pixel spacing. ``density`` (0..1] scales the
attenuation: amorphous calcifications are hazy, coarse ones dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birads_calc.data.synthetic.lesions import MORPHOLOGY_CENTRES, LesionSpec

N_CLASSES = 6


@dataclass(frozen=True)
class Geometry:
    """Primitives of one lesion in millimetres, lesion frame."""

    capsules: np.ndarray  # [K, 6] x0, y0, x1, y1, radius, density
    shells: np.ndarray  # [J, 5] x, y, outer radius, inner radius, density

    @property
    def extent(self) -> float:
        """Radius (mm) of the disc around the origin that holds every primitive."""
        reach = [0.0]
        if len(self.capsules):
            c = self.capsules
            reach.append(float(np.max(np.hypot(c[:, [0, 2]], c[:, [1, 3]]).max(axis=1) + c[:, 4])))
        if len(self.shells):
            s = self.shells
            reach.append(float(np.max(np.hypot(s[:, 0], s[:, 1]) + s[:, 2])))
        return max(reach)

    def gathered(self, factor: float) -> Geometry:
        """The same specks with their positions (and lengths) drawn ``factor`` closer to the lesion centre.

        Used where a lesion does not fit in a small breast: the layout shrinks, the speck sizes do not.
        """
        capsules, shells = self.capsules.copy(), self.shells.copy()
        capsules[:, :4] *= factor
        shells[:, :2] *= factor
        return Geometry(capsules, shells)


def lesion_geometry(spec: LesionSpec, rng: np.random.Generator) -> Geometry:
    """Draw the primitives of a lesion from its morphology, distribution and latent suspicion.

    Inside a morphology the latent value still acts: a lesion more suspicious than its morphology's centre has
    more, smaller and more varied specks, so appearance changes continuously along the latent axis.
    """
    offset = spec.suspicion * N_CLASSES - MORPHOLOGY_CENTRES[spec.morphology]
    size = float(np.clip(np.exp(-0.25 * offset), 0.6, 1.6))
    count = float(np.clip(np.exp(0.2 * offset), 0.6, 1.8))
    variability = float(np.clip(0.15 + 0.06 * spec.suspicion * N_CLASSES, 0.1, 0.6))
    builder = _BUILDERS[spec.morphology]
    capsules, shells = builder(rng, spec.distribution, size, count, variability)
    return Geometry(np.asarray(capsules, float).reshape(-1, 6), np.asarray(shells, float).reshape(-1, 5))


# ---------------------------------------------------------------- speck positions per distribution (lesion frame)


def _centres(rng: np.random.Generator, distribution: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` speck centres (mm) and the local duct direction (radians) at each, for a lexicon distribution."""
    if distribution in ("linear", "segmental"):
        return _duct_points(rng, n, branches=0 if distribution == "linear" else int(rng.integers(2, 5)))
    if distribution == "grouped":  # a few specks within about 1 cm
        sigma = rng.uniform(1.2, 2.5)
        points = np.clip(rng.normal(0, sigma, (n, 2)), -5, 5)
    elif distribution == "regional":  # a larger area (> 2 cm), not following a duct
        radius, aspect = rng.uniform(6, 11), rng.uniform(0.5, 1.0)
        angle, rho = rng.uniform(0, 2 * np.pi, n), radius * np.sqrt(rng.random(n))
        points = np.column_stack([rho * np.cos(angle), aspect * rho * np.sin(angle)])
    else:  # diffuse: few scattered items around the region centre
        points = rng.uniform(-6, 6, (n, 2))
    return points, rng.uniform(0, np.pi, n)


def _duct_points(rng: np.random.Generator, n: int, branches: int) -> tuple[np.ndarray, np.ndarray]:
    """Points along a gently curved duct (linear) or a duct and its branches (segmental), apex toward +x."""
    length = rng.uniform(8, 18) if branches == 0 else rng.uniform(12, 24)
    bend = rng.uniform(-0.05, 0.05)
    paths = []
    trunk_x = np.linspace(-length / 2, length / 2, 64)
    paths.append(np.column_stack([trunk_x, bend * trunk_x**2 / 2]))
    for _ in range(branches):  # branches leave the trunk and spread away from the nipple (a segment is a wedge)
        start = rng.uniform(-0.2, 0.4) * length
        angle = np.pi + rng.choice([-1, 1]) * rng.uniform(0.25, 0.6)
        reach = rng.uniform(0.3, 0.6) * length
        t = np.linspace(0, reach, 32)
        paths.append(np.column_stack([start + t * np.cos(angle), bend * start**2 / 2 + t * np.sin(angle)]))
    path = np.concatenate(paths)
    direction = np.concatenate([np.arctan2(np.gradient(p[:, 1]), np.gradient(p[:, 0])) for p in paths])
    pick = rng.integers(0, len(path), n)
    jitter = rng.normal(0, 0.25, (n, 2))
    return path[pick] + jitter, direction[pick]


def _n(rng: np.random.Generator, low: int, high: int, count: float) -> int:
    return max(1, round(float(rng.integers(low, high + 1)) * count))


def _radii(rng: np.random.Generator, n: int, low: float, high: float, size: float, variability: float) -> np.ndarray:
    """Speck radii: a lesion-level size and a speck-level spread that grows with suspicion (pleomorphism)."""
    base = rng.uniform(low, high) * size
    return np.clip(base * rng.lognormal(0, variability, n), 0.03, None)


def _points(centres: np.ndarray, radii: np.ndarray, density: np.ndarray | float) -> np.ndarray:
    density = np.broadcast_to(np.asarray(density, float), radii.shape)
    return np.column_stack([centres, centres, radii, density])


def _segments(centres: np.ndarray, angles: np.ndarray, lengths: np.ndarray, radii, density) -> np.ndarray:
    half = np.column_stack([np.cos(angles), np.sin(angles)]) * (lengths / 2)[:, None]
    radii = np.broadcast_to(np.asarray(radii, float), lengths.shape)
    density = np.broadcast_to(np.asarray(density, float), lengths.shape)
    return np.column_stack([centres - half, centres + half, radii, density])


# ---------------------------------------------------------------- one builder per lexicon morphology


def _coarse_popcorn(rng, distribution, size, count, variability):
    """Involuting fibroadenoma: 1-3 dense clumps > 2 mm, each a cluster of overlapping lobules."""
    items, _ = _centres(rng, distribution, _n(rng, 1, 3, count))
    lobes = []
    for centre in items:
        k = int(rng.integers(3, 7))
        offsets = rng.normal(0, 0.7 * size, (k, 2))
        lobes.append(_points(centre + offsets, rng.uniform(0.6, 1.3, k) * size, 1.0))
    return np.concatenate(lobes), []


def _rim(rng, distribution, size, count, variability):
    """Eggshell calcification: hollow spheres of 2-6 mm with a thin calcified wall."""
    items, _ = _centres(rng, distribution, _n(rng, 1, 3, count))
    outer = rng.uniform(1.0, 3.0, len(items)) * size
    inner = outer - rng.uniform(0.15, 0.35, len(items))
    return [], np.column_stack([items, outer, inner, np.ones(len(items))])


def _vascular(rng, distribution, size, count, variability):
    """Vessel wall calcification: two parallel dashed tracks (tram lines) along a curved vessel."""
    length = rng.uniform(10, 24)
    x = np.linspace(-length / 2, length / 2, 200)
    bend = rng.uniform(-0.04, 0.04)
    y = bend * x**2 / 2
    slope = np.arctan(bend * x)
    gap = rng.uniform(0.8, 1.4) * size
    dashes = []
    for side in (-1, 1):
        keep = rng.random(len(x)) < 0.6  # interrupted, as real vascular calcification is
        keep &= np.arange(len(x)) % 4 == 0
        cx = x[keep] - side * gap / 2 * np.sin(slope[keep])
        cy = y[keep] + side * gap / 2 * np.cos(slope[keep])
        lengths = rng.uniform(0.8, 2.0, keep.sum())
        dashes.append(_segments(np.column_stack([cx, cy]), slope[keep], lengths, 0.15 * size, 0.9))
    return np.concatenate(dashes), []


def _large_rod_like(rng, distribution, size, count, variability):
    """Secretory disease: smooth solid rods >= 0.5 mm wide, 3-10 mm long, oriented along the ducts (toward +x)."""
    n = _n(rng, 2, 6, count)
    centres = np.column_stack([rng.uniform(-8, 8, n), rng.uniform(-4, 4, n)])
    angles = rng.normal(0, 0.3, n)
    lengths = rng.uniform(3, 10, n) * size
    return _segments(centres, angles, lengths, rng.uniform(0.3, 0.5, n) * size, 1.0), []


def _round(rng, distribution, size, count, variability):
    """Round calcifications: smooth, 0.5-1 mm across, similar to one another."""
    n = _n(rng, 3, 8, count)
    centres, _ = _centres(rng, distribution, n)
    return _points(centres, _radii(rng, n, 0.25, 0.5, size, variability / 2), 1.0), []


def _punctate(rng, distribution, size, count, variability):
    """Punctate: round specks under 0.5 mm."""
    n = _n(rng, 5, 12, count)
    centres, _ = _centres(rng, distribution, n)
    return _points(centres, _radii(rng, n, 0.1, 0.22, size, variability / 2), 1.0), []


def _amorphous(rng, distribution, size, count, variability):
    """Amorphous: tiny hazy specks without a definable shape, low contrast."""
    n = _n(rng, 10, 25, count)
    centres, _ = _centres(rng, distribution, n)
    return _points(centres, _radii(rng, n, 0.06, 0.14, size, variability), rng.uniform(0.3, 0.6, n)), []


def _fragments(rng, centres, angles, radius_range, size, variability, density_range, pieces=(1, 3)):
    """Irregular specks: each a clump of 1-3 short capsules of varied size and orientation."""
    out = []
    for centre, angle in zip(centres, angles, strict=True):
        k = int(rng.integers(pieces[0], pieces[1] + 1))
        radii = _radii(rng, k, *radius_range, size, variability)
        offsets = rng.normal(0, radii.mean(), (k, 2))
        turns = angle + rng.normal(0, 0.8, k)
        lengths = rng.uniform(0, 3, k) * radii
        out.append(_segments(centre + offsets, turns, lengths, radii, rng.uniform(*density_range, k)))
    return np.concatenate(out)


def _coarse_heterogeneous(rng, distribution, size, count, variability):
    """Coarse heterogeneous: irregular, conspicuous, 0.5-1 mm, tending to coalesce."""
    n = _n(rng, 5, 14, count)
    centres, angles = _centres(rng, distribution, n)
    return _fragments(rng, centres, angles, (0.15, 0.3), size, variability, (0.7, 1.0)), []


def _fine_pleomorphic(rng, distribution, size, count, variability):
    """Fine pleomorphic: under 0.5 mm, varying in size and shape, more conspicuous than amorphous."""
    n = _n(rng, 10, 25, count)
    centres, angles = _centres(rng, distribution, n)
    return _fragments(rng, centres, angles, (0.05, 0.15), size, variability, (0.6, 1.0)), []


def _fine_linear_branching(rng, distribution, size, count, variability):
    """Fine linear / branching: thin (< 0.5 mm) casts of a duct lumen, some branching, along the duct."""
    n = _n(rng, 10, 24, count)
    centres, angles = _centres(rng, distribution, n)
    lengths = rng.uniform(0.6, 2.5, n) * size
    radii = _radii(rng, n, 0.05, 0.12, size, variability / 2)
    casts = [_segments(centres, angles, lengths, radii, rng.uniform(0.7, 1.0, n))]
    branch = rng.random(n) < 0.3  # a Y: a second cast leaving the end of the first
    if branch.any():
        tips = (
            centres[branch]
            + np.column_stack([np.cos(angles[branch]), np.sin(angles[branch])]) * (lengths[branch] / 2)[:, None]
        )
        turn = angles[branch] + rng.choice([-1, 1], branch.sum()) * rng.uniform(0.4, 0.9, branch.sum())
        blen = lengths[branch] * 0.6
        mid = tips + np.column_stack([np.cos(turn), np.sin(turn)]) * (blen / 2)[:, None]
        casts.append(_segments(mid, turn, blen, radii[branch], 0.8))
    return np.concatenate(casts), []


_BUILDERS = {
    "coarse_popcorn": _coarse_popcorn,
    "rim": _rim,
    "vascular": _vascular,
    "large_rod_like": _large_rod_like,
    "round": _round,
    "punctate": _punctate,
    "amorphous": _amorphous,
    "coarse_heterogeneous": _coarse_heterogeneous,
    "fine_pleomorphic": _fine_pleomorphic,
    "fine_linear_branching": _fine_linear_branching,
}
assert set(_BUILDERS) == set(MORPHOLOGY_CENTRES)
