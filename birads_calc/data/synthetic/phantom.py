"""The breast phantom: outline, skin line, parenchyma texture, and calcifications rendered as calcium thickness.

The image is built in x-ray attenuation (line integral of the linear attenuation coefficient, dimensionless):

* compressed breast of thickness ``T`` (45-65 mm) whose path length falls off over the last ~0.4 T toward the
  skin (the uncompressed periphery), plus a skin layer of higher attenuation (the bright skin line);
* glandular fraction ``g = clip(density + 0.22 n, 0, 1)`` with ``n`` a Gaussian field of power spectrum
  ``1/f^beta`` (beta = 3, in cycles per mm so the texture does not depend on the pixel spacing), kept out of a
  subcutaneous fat layer; attenuation ``T (mu_fat + g (mu_gland - mu_fat))``;
* pectoral muscle (MLO views) as a dense triangle in the chest-wall corner;
* calcifications: ``mu_calc x`` projected calcium thickness of every primitive, supersampled where it is
  sub-pixel (partial volume), then the whole image blurred by the detector's point spread and given quantum noise.

Attenuation coefficients near 20 keV: fat 0.045/mm, gland 0.080/mm, calcification 2.0/mm (hydroxyapatite mixed
with tissue; pure hydroxyapatite is higher). A processed ("for presentation") mammogram is close to linear in
attenuation, so the display value is attenuation over a per-image reference, bright = dense (MONOCHROME2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from PIL import Image
from scipy import ndimage

from birads_calc.data.synthetic.lesions import ImageSpec
from birads_calc.data.synthetic.morphology import Geometry, lesion_geometry

MU_FAT, MU_GLAND, MU_CALC = 0.045, 0.080, 2.0  # per mm
BETA = 3.0  # power-law exponent of the parenchyma (Burgess et al. 2001)
SKIN_MM = 1.5
SUBCUTANEOUS_FAT_MM = 4.0
NEIGHBOUR_GAP_MM = (1.0, 12.0)  # edge-to-edge distance of a lesion placed next to an earlier one
PSF_SIGMA_MM = 0.04
SKIN_GRID_MM = 0.4  # resolution of the skin-distance map
PLACEMENT_TRIES = 4  # detector blur (about half a pixel at 0.085 mm)


@dataclass(frozen=True)
class Breast:
    """Where the breast is: mask, distance to the skin (mm), nipple position and the placement-forbidden areas."""

    mask: np.ndarray  # bool [H, W]
    skin_distance: np.ndarray  # float32 mm, 0 outside
    pectoral: np.ndarray  # bool [H, W]
    nipple: tuple[float, float]  # (row, col) pixels
    chest_wall_right: bool


@dataclass(frozen=True)
class RenderedImage:
    """A rendered mammogram: display values in [0, 1] (MONOCHROME2) and one mask per lesion drawn.

    ``masks[k]`` is ``None`` where lesion ``k`` did not fit in the breast (reported, never silently dropped).
    """

    pixels: np.ndarray
    masks: list[np.ndarray | None]
    breast: np.ndarray


def power_law_noise(shape: tuple[int, int], spacing: float, rng: np.random.Generator, beta: float = BETA):
    """Zero-mean, unit-variance Gaussian field with power spectrum ``1/f^beta`` (f in cycles/mm).

    Frequencies below 1/100 mm^-1 are flattened (a breast is about 10 cm across), which keeps the field finite.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    fy = scipy.fft.fftfreq(shape[0], d=spacing).astype(np.float32)[:, None]
    fx = scipy.fft.rfftfreq(shape[1], d=spacing).astype(np.float32)[None, :]
    amplitude = (fy**2 + fx**2 + np.float32(0.01**2)) ** np.float32(-beta / 4)  # |F|^2 ~ f^-beta
    field = scipy.fft.irfft2(scipy.fft.rfft2(white) * amplitude, s=shape)  # float32 throughout
    field -= field.mean()
    return field / (field.std() + 1e-12)


def breast_model(spec: ImageSpec, shape: tuple[int, int], spacing: float, rng: np.random.Generator) -> Breast:
    """Outline of a compressed breast against the chest wall, with a wavy skin line and (MLO) a pectoral muscle.

    The outline is a half-ellipse against the chest wall whose depth varies smoothly along the rows (a few
    random harmonics), so each row's breast is one run of pixels from the chest wall. The chest wall is on the
    left edge for right breasts and on the right edge for left breasts; the nipple is the deepest point.
    """
    h, w = shape
    mlo = spec.view == "MLO"
    centre_row = h * (rng.uniform(0.5, 0.6) if mlo else rng.uniform(0.45, 0.55))
    depth = w * rng.uniform(0.7, 0.88)
    half_height = h * (rng.uniform(0.45, 0.52) if mlo else rng.uniform(0.36, 0.45))
    dy = (np.arange(h) - centre_row) / half_height
    phase = np.arccos(np.clip(dy, -1, 1))
    wobble = 1 + sum(rng.normal(0, 0.02) * np.cos(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    boundary = depth * np.sqrt(np.clip(1 - dy**2, 0, None)) * wobble  # breast depth (pixels) of each row
    cols = np.arange(w)[None, :]
    mask = cols < boundary[:, None]
    pectoral = np.zeros(shape, bool)
    if mlo:
        width, height = w * rng.uniform(0.18, 0.32), h * rng.uniform(0.35, 0.55)
        pectoral = cols < (width * (1 - np.arange(h) / height))[:, None]
        mask |= pectoral
    nipple_row = float(np.argmax(boundary))
    breast = Breast(mask, _skin_distance(mask, spacing), pectoral, (nipple_row, float(boundary.max())), False)
    return _mirror(breast, w) if spec.laterality == "L" else breast


def _skin_distance(mask: np.ndarray, spacing: float) -> np.ndarray:
    """Distance (mm) from each breast pixel to the skin, the chest-wall edge of the image not counting as skin.

    Computed on a grid of about ``SKIN_GRID_MM`` and interpolated back (bilinear): the distance is smooth, and the
    exact transform at paper scale (millions of pixels) would dominate the rendering time.
    """
    step = max(1, int(SKIN_GRID_MM / spacing))
    coarse = mask[::step, ::step]
    padded = np.pad(coarse, ((1, 1), (1, 0)), constant_values=False)
    padded[:, 0] = padded[:, 1]  # chest wall side: the breast continues beyond the edge
    distance = ndimage.distance_transform_edt(padded)[1:-1, 1:].astype(np.float32) * (step * spacing)
    if step > 1:
        # coarse sample k sits at fine pixel k*step; scale the box so the sample centres line up
        image = Image.fromarray(np.pad(distance, ((0, 1), (0, 1)), mode="edge"), mode="F")
        fine = image.resize((mask.shape[1], mask.shape[0]), Image.BILINEAR, box=_box(distance.shape, mask.shape, step))
        distance = np.asarray(fine, dtype=np.float32)
    return distance * mask


def _box(coarse_shape, fine_shape, step) -> tuple[float, float, float, float]:
    """PIL resize box (in coarse pixels) that maps coarse sample centres onto the fine pixels they came from."""
    offset = 0.5 - 0.5 / step
    return (offset, offset, offset + fine_shape[1] / step, offset + fine_shape[0] / step)


def _mirror(breast: Breast, width: int) -> Breast:
    return Breast(
        breast.mask[:, ::-1].copy(),
        breast.skin_distance[:, ::-1].copy(),
        breast.pectoral[:, ::-1].copy(),
        (breast.nipple[0], width - 1 - breast.nipple[1]),
        chest_wall_right=True,
    )


def tissue_attenuation(spec: ImageSpec, breast: Breast, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Attenuation of breast tissue, skin and pectoral muscle (no calcifications), float32 [H, W]."""
    thickness = rng.uniform(45, 65)
    periphery = 0.4 * thickness
    fraction = np.clip(breast.skin_distance / periphery, 0, 1)
    path = thickness * np.sqrt(1 - (1 - fraction) ** 2)  # rounded edge of the compressed breast
    fat_layer = np.clip((breast.skin_distance - SUBCUTANEOUS_FAT_MM) / 10.0, 0, 1)
    glandular = np.clip(spec.density + 0.22 * power_law_noise(breast.mask.shape, spacing, rng), 0, 1) * fat_layer
    attenuation = path * (MU_FAT + glandular * (MU_GLAND - MU_FAT))
    attenuation += 0.25 * np.exp(-breast.skin_distance / SKIN_MM) * breast.mask  # skin seen edge-on
    attenuation += breast.pectoral * 0.035 * thickness * (1 - 0.3 * fraction)
    return (attenuation * breast.mask).astype(np.float32)


def render_image(spec: ImageSpec, shape: tuple[int, int], spacing: float, rng: np.random.Generator) -> RenderedImage:
    """Render one mammogram and its lesion masks; every random choice comes from ``rng``.

    Returns display values in [0, 1] (MONOCHROME2: bright = dense), the lesion masks (bool, same size) and the
    breast mask.
    """
    breast = breast_model(spec, shape, spacing, rng)
    attenuation = tissue_attenuation(spec, breast, spacing, rng)
    calcium = np.zeros(shape, np.float32)
    masks = _place_and_draw(spec, breast, spacing, rng, calcium)
    attenuation += MU_CALC * calcium
    attenuation = ndimage.gaussian_filter(attenuation, PSF_SIGMA_MM / spacing)
    reference = float(attenuation[breast.mask].max()) * 1.05 if breast.mask.any() else 1.0
    noise = rng.normal(0, 0.004 * min(3.0, 0.1 / spacing), shape).astype(np.float32)  # finer pixels: noisier
    pixels = np.clip(attenuation / reference + noise + 0.01, 0, 1)
    return RenderedImage(pixels=pixels, masks=masks, breast=breast.mask)


def _place_and_draw(spec, breast: Breast, spacing: float, rng, calcium: np.ndarray) -> list[np.ndarray | None]:
    """Place every lesion inside the breast, not overlapping, some next to an earlier one; draw it."""
    shape = breast.mask.shape
    placed: list[tuple[np.ndarray, float]] = []  # (centre mm, extent mm)
    masks: list[np.ndarray | None] = []
    allowed = breast.mask & ~breast.pectoral
    for lesion in spec.lesions:
        geometry = lesion_geometry(lesion, rng)
        for _ in range(PLACEMENT_TRIES):  # a crowded or small breast: gather the specks closer and try again
            extent = geometry.extent
            centre = _choose_centre(lesion.near_previous, extent, placed, allowed, breast, spacing, rng)
            if centre is not None:
                break
            geometry = geometry.gathered(0.8)
        if centre is None:
            masks.append(None)
            continue
        placed.append((centre, extent))
        towards_nipple = np.arctan2(breast.nipple[0] * spacing - centre[0], breast.nipple[1] * spacing - centre[1])
        rotation = towards_nipple + rng.normal(0, 0.3)
        masks.append(_draw(geometry, centre, rotation, spacing, calcium, shape))
    return masks


def _choose_centre(near_previous, extent, placed, allowed, breast: Breast, spacing, rng) -> np.ndarray | None:
    """A lesion centre (row, col in mm) whose whole extent lies inside the breast, away from the skin and image edge."""
    margin = extent + 2.0
    h, w = allowed.shape

    def fits(c: np.ndarray) -> bool:
        r, k = int(c[0] / spacing), int(c[1] / spacing)
        if not (0 <= r < h and 0 <= k < w) or not allowed[r, k] or breast.skin_distance[r, k] < margin:
            return False
        if min(c[0], h * spacing - c[0], c[1], w * spacing - c[1]) < margin:
            return False
        return all(np.hypot(*(c - other)) >= extent + other_extent + 1.0 for other, other_extent in placed)

    if near_previous and placed:
        for _ in range(30):
            other, other_extent = placed[int(rng.integers(len(placed)))]
            gap = extent + other_extent + rng.uniform(*NEIGHBOUR_GAP_MM)
            angle = rng.uniform(0, 2 * np.pi)
            candidate = other + gap * np.array([np.sin(angle), np.cos(angle)])
            if fits(candidate):
                return candidate
    candidates = np.flatnonzero(allowed & (breast.skin_distance >= margin))
    for _ in range(min(100, len(candidates))):
        index = candidates[rng.integers(len(candidates))]
        candidate = (np.array(np.unravel_index(index, allowed.shape), float) + rng.random(2)) * spacing
        if fits(candidate):
            return candidate
    return None


def _draw(geometry: Geometry, centre, rotation, spacing, calcium: np.ndarray, shape) -> np.ndarray:
    """Rasterise one lesion (projected calcium thickness, mm) into ``calcium``; return its full-size mask.

    The mask is every pixel the calcium touches, grown by one pixel (the outline a reader would draw around
    the specks), so even a sub-pixel speck has a non-empty mask. Work happens in the lesion's bounding box.
    """
    cos, sin = np.cos(rotation), np.sin(rotation)

    def to_image(x, y):  # lesion frame (x toward the nipple) -> image (row, col) in mm
        return np.array([centre[0] + x * sin + y * cos, centre[1] + x * cos - y * sin])

    reach = geometry.extent + 3 * spacing
    r0, c0 = (max(int((v - reach) / spacing), 0) for v in centre)
    r1, c1 = (
        min(int((centre[0] + reach) / spacing) + 2, shape[0]),
        min(int((centre[1] + reach) / spacing) + 2, shape[1]),
    )
    origin = np.array([r0, c0]) * spacing
    local = np.zeros((r1 - r0, c1 - c0), np.float32)
    seeds = []
    for x0, y0, x1, y1, radius, density in geometry.capsules:
        a, b = to_image(x0, y0) - origin, to_image(x1, y1) - origin
        _rasterise(local, spacing, np.minimum(a, b) - radius, np.maximum(a, b) + radius, radius,
                   lambda y, x, a=a, b=b, r=radius, d=density: _capsule(y, x, a, b, r) * d)  # fmt: skip
        seeds += [a, b]
    for x, y, outer, inner, density in geometry.shells:
        c = to_image(x, y) - origin
        _rasterise(local, spacing, c - outer, c + outer, outer - inner,
                   lambda y, x, c=c, o=outer, i=inner, d=density: _shell(y, x, c, o, i) * d)  # fmt: skip
        seeds.append(c + np.array([(outer + inner) / 2, 0]))
    local_mask = local > 0
    for seed in seeds:
        row, col = (int(np.clip(v / spacing, 0, n - 1)) for v, n in zip(seed, local.shape, strict=True))
        local_mask[row, col] = True
    np.maximum(calcium[r0:r1, c0:c1], local, out=calcium[r0:r1, c0:c1])
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = ndimage.binary_dilation(local_mask, iterations=1)
    return mask


def _rasterise(target: np.ndarray, spacing: float, low_mm, high_mm, feature_mm: float, thickness_fn) -> None:
    """Evaluate ``thickness_fn(rows_mm [R, 1], cols_mm [1, C])`` over a bounding box, supersampled when thin."""
    r0, c0 = (max(int(v / spacing), 0) for v in low_mm)
    r1, c1 = (min(int(v / spacing) + 2, n) for v, n in zip(high_mm, target.shape, strict=True))
    if r1 <= r0 or c1 <= c0:
        return
    factor = min(int(np.ceil(3 * spacing / max(feature_mm, 1e-3))), 5)  # partial volume of thin features
    offsets = (np.arange(factor) + 0.5) / factor
    rows = (np.arange(r0, r1)[:, None] + offsets).reshape(-1, 1) * spacing
    cols = (np.arange(c0, c1)[:, None] + offsets).reshape(1, -1) * spacing
    values = thickness_fn(rows, cols).reshape(r1 - r0, factor, c1 - c0, factor).mean(axis=(1, 3))
    np.maximum(target[r0:r1, c0:c1], values, out=target[r0:r1, c0:c1])


def _capsule(rows: np.ndarray, cols: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """Path length through a capsule (segment a-b swept by a sphere of ``radius``) along the beam."""
    ab = b - a
    pr, pc = rows - a[0], cols - a[1]
    t = np.minimum(np.maximum((pr * ab[0] + pc * ab[1]) / max(float(ab @ ab), 1e-12), 0), 1)
    d2 = (pr - t * ab[0]) ** 2 + (pc - t * ab[1]) ** 2
    return 2 * np.sqrt(np.maximum(radius**2 - d2, 0))


def _shell(rows: np.ndarray, cols: np.ndarray, centre: np.ndarray, outer: float, inner: float) -> np.ndarray:
    """Path length through a hollow sphere: brightest at the rim (the eggshell look)."""
    d2 = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
    return 2 * (np.sqrt(np.maximum(outer**2 - d2, 0)) - np.sqrt(np.maximum(inner**2 - d2, 0)))
