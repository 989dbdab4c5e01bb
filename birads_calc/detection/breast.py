"""Stage 1: where the breast is, so that nothing outside it is ever called a calcification.

Film and detector images hold bright things that are not breast: film labels and lead markers (bright, sharp,
small), the scanner's film border, and in MLO views the pectoral muscle (a dense band in the upper chest-wall
corner whose edge and texture make speck-like responses). The segmentation runs on a coarse copy of the image
(about ``GRID_MM`` per pixel), where it costs a few milliseconds:

1. foreground: Otsu's threshold between air and tissue, lowered part of the way toward the background level so
   the faint uncompressed periphery near the skin stays in;
2. a morphological opening of a few millimetres cuts thin bridges to labels and markers, and the largest
   component is the breast (labels are much smaller); holes are filled;
3. the chest-wall side is the image edge the breast leans on; in the upper part of that side a component of
   markedly brighter tissue touching the top edge and the chest wall is the pectoral muscle, kept only when its
   size and brightness make sense (a dense breast's bright glandular disc must not be taken for it);
4. the search area for specks is the breast without the pectoral muscle, a narrow band inside the skin line (the
   skin seen edge-on is a bright rim; the learned stage knows each candidate's distance to the skin, so the band
   is only wide enough to leave the rim itself out) and a band along the image border and along the chest-wall
   side of the breast, where the film cut the tissue (film edges, scanner artefacts, padding beside the chest
   wall).

A **crop** (a patch of tissue, as CBIS-DDSM ships one per finding) has no film around the breast: the whole
image is tissue, searched to its edges. ``crop=None`` decides from the image: a mammogram has a dark, flat film
or air background beside the breast; an image without one (or smaller than a breast) is a crop.

Every level is relative to the image's own range (the detector scales each image to [0, 1] by its minimum and
maximum first), so a 12-bit image stored in a 16-bit container segments as the full-range one does.
An image where no plausible breast is found gives a reason, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops
from skimage.morphology import disk

GRID_MM = 0.8  # resolution of the segmentation
OPENING_MM = 4.0  # cuts bridges to labels/markers narrower than this
SKIN_MARGIN_MM = 1.0  # specks are searched this far inside the skin line (the bright rim itself is left out)
BORDER_MARGIN_MM = 3.0  # ... and this far from the image edges
MIN_BREAST_FRACTION = 0.03  # a breast covers at least this share of the image
MIN_BREAST_AREA_MM2 = 400.0  # and at least 2 x 2 cm
PECTORAL_MAX_FRACTION = 0.4  # a pectoral muscle is less than this share of the breast
PECTORAL_MIN_FRACTION = 0.01
CORNER_MM = 8.0
FILM_MIN_FRACTION = 0.05  # a mammogram's film/air background covers at least this share of the image
FILM_FLATNESS = 0.35  # ... and varies far less than the tissue (spread ratio below this)
SKIN_DISTANCE_CAP_MM = 10.0


@dataclass(frozen=True)
class Breast:
    """The breast of one image, at full resolution.

    Attributes:
        mask: bool [H, W], the breast including the pectoral muscle.
        pectoral: bool [H, W], the pectoral muscle where one was found (else all False).
        search: bool [H, W], where specks are looked for: breast without pectoral, skin band and image border.
        chest_wall_right: whether the chest wall is on the image's right edge.
        level: the gray level separating tissue from film (pixels of ``mask`` below it are air at the skin).
        reason: why no breast was found (``mask`` then all False), else ``None``.
        crop: the image was taken as a crop (all tissue, no margins).
        skin_mm: float32 [h, w] on the coarse grid (``grid`` full-resolution pixels per cell): distance to the
            skin line in mm, capped at ``SKIN_DISTANCE_CAP_MM`` (the cap everywhere for a crop).
    """

    mask: np.ndarray
    pectoral: np.ndarray
    search: np.ndarray
    chest_wall_right: bool
    level: float = 0.0
    reason: str | None = None
    crop: bool = False
    skin_mm: np.ndarray | None = None
    grid: int = 1

    def skin_distance(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Distance (mm, capped) to the skin line at full-resolution positions."""
        if self.skin_mm is None:
            return np.full(len(rows), SKIN_DISTANCE_CAP_MM, np.float32)
        r = np.clip((np.asarray(rows) // self.grid).astype(int), 0, self.skin_mm.shape[0] - 1)
        c = np.clip((np.asarray(cols) // self.grid).astype(int), 0, self.skin_mm.shape[1] - 1)
        return self.skin_mm[r, c]


def find_breast(pixels: np.ndarray, pixel_spacing: tuple[float, float], crop: bool | None = None) -> Breast:
    """Segment the breast of a mammogram (float [H, W] in [0, 1], MONOCHROME2) with its pixel spacing in mm.

    ``crop``: ``True`` takes the whole image as tissue (a patch), ``False`` always looks for a breast on film,
    ``None`` decides from the image (a crop when there is no flat film background beside the tissue).
    """
    shape = pixels.shape
    factor = max(1, int(GRID_MM / min(pixel_spacing)))
    coarse = block_mean(pixels, factor)
    grid_mm = factor * min(pixel_spacing)
    breast, level = _largest_tissue(coarse, grid_mm)
    if crop or (crop is None and not _has_film(coarse, breast, level, grid_mm)):
        return _whole_image(pixels, factor)
    area_mm2 = float(breast.sum()) * factor**2 * pixel_spacing[0] * pixel_spacing[1]
    if not breast.any() or breast.mean() < MIN_BREAST_FRACTION or area_mm2 < MIN_BREAST_AREA_MM2:
        empty = np.zeros(shape, bool)
        return Breast(empty, empty, empty, False, level, reason="breast not found (no tissue region large enough)")
    chest_wall_right = _chest_wall_right(breast)
    pectoral = _pectoral(coarse, breast, chest_wall_right, grid_mm)
    # distance to the skin from the coarse mask (cell centres), interpolated: the skin line lies half a cell
    # outside the last breast cell's centre, so the margin is measured from there (not in whole cells)
    skin = ndimage.distance_transform_edt(np.pad(breast, 1)).astype(np.float32)[1:-1, 1:-1] * grid_mm
    near_muscle = ndimage.binary_dilation(pectoral, iterations=1 + math.ceil(SKIN_MARGIN_MM / grid_mm))
    inner = np.maximum(skin - grid_mm / 2, 0) * ~near_muscle
    search = spread(inner, factor, shape) > SKIN_MARGIN_MM
    mask, pectoral = (upsample(x, factor, shape) for x in (breast, pectoral))
    search &= mask
    edge = max(1, math.ceil(BORDER_MARGIN_MM / min(pixel_spacing)))
    search[:edge], search[-edge:], search[:, :edge], search[:, -edge:] = False, False, False, False
    # the chest-wall side is where the film or detector cut the tissue, wherever that lies in the image (a film
    # padded or cropped beside the chest wall): a straight bright step, an edge like the image border's
    columns = np.flatnonzero(mask.any(axis=0))
    if chest_wall_right:
        search[:, max(columns[-1] + 1 - edge, 0) :] = False
    else:
        search[:, : columns[0] + edge] = False
    skin = np.minimum(skin, SKIN_DISTANCE_CAP_MM)
    return Breast(mask, pectoral, search, chest_wall_right, level, skin_mm=skin, grid=factor)


def _whole_image(pixels: np.ndarray, factor: int) -> Breast:
    """A crop: every pixel is tissue and searched, no pectoral muscle, no skin."""
    everything = np.ones(pixels.shape, bool)
    return Breast(everything, np.zeros(pixels.shape, bool), everything, False, float(pixels.min()) - 1.0,
                  crop=True, grid=factor)  # fmt: skip


def _has_film(coarse: np.ndarray, breast: np.ndarray, level: float, grid_mm: float) -> bool:
    """Whether the image shows film (or air) beside the tissue: a background of at least ``FILM_MIN_FRACTION``
    of the image, a few millimetres away from the tissue, whose spread is a small part of the tissue's.

    A crop of tissue splits at Otsu's level into fat and gland, which are both textured; film is flat.
    """
    if not breast.any():
        return False
    away = max(1, round(2.0 / grid_mm))
    film = ~ndimage.binary_dilation(coarse > level, iterations=away)
    if film.mean() < FILM_MIN_FRACTION or breast.mean() > 1 - FILM_MIN_FRACTION:
        return False
    tissue = coarse[breast]

    def spread(values: np.ndarray) -> float:
        low, high = np.percentile(values, (10, 90))
        return float(high - low)

    return spread(coarse[film]) < FILM_FLATNESS * max(spread(tissue), 1e-6) or spread(coarse[film]) < 0.02


def block_mean(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks (the last partial blocks padded by edge values), float32."""
    if factor == 1:
        return np.asarray(pixels, np.float32)
    h, w = pixels.shape
    ph, pw = -h % factor, -w % factor
    padded = np.pad(pixels, ((0, ph), (0, pw)), mode="edge") if ph or pw else pixels
    total = np.zeros((padded.shape[0] // factor, padded.shape[1] // factor), np.float32)
    for i in range(factor):  # strided sums: several times faster than a mean over a 4-D view's axes
        for j in range(factor):
            total += padded[i::factor, j::factor]
    return total / np.float32(factor * factor)


def spread(values: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear enlargement of a coarse float map by ``factor`` (cell centres aligned), cropped to ``shape``."""
    if factor == 1:
        return values[: shape[0], : shape[1]].astype(np.float32)
    size = (values.shape[1] * factor, values.shape[0] * factor)
    full = np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    return full[: shape[0], : shape[1]]


def upsample(mask: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour enlargement of a coarse mask by ``factor``, cropped to ``shape``."""
    if factor == 1:
        return mask[: shape[0], : shape[1]].copy()
    return np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)[: shape[0], : shape[1]]


def _largest_tissue(coarse: np.ndarray, grid_mm: float) -> tuple[np.ndarray, float]:
    """The breast on the coarse grid (thresholded, opened, largest component, holes filled) and the threshold."""
    smooth = ndimage.gaussian_filter(coarse, 1.0)
    if float(smooth.max() - smooth.min()) < 1e-3:
        return np.zeros(coarse.shape, bool), 1.0
    otsu = float(threshold_otsu(smooth))
    background = float(np.percentile(smooth, 2))
    level = background + 0.35 * (otsu - background)
    foreground = smooth > level
    opened = ndimage.binary_opening(foreground, structure=disk(max(1, round(OPENING_MM / grid_mm / 2))))
    labels = label(opened)
    if labels.max() == 0:
        return np.zeros(coarse.shape, bool), level
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes))), level


def _chest_wall_right(breast: np.ndarray) -> bool:
    """The breast leans on the chest wall: of its bounding box's two side columns, the one holding more breast
    (film may be padded, so the image edge itself can be empty on both sides)."""
    cols = np.flatnonzero(breast.any(axis=0))
    band = max(1, (cols[-1] - cols[0] + 1) // 10)
    left = breast[:, cols[0] : cols[0] + band].sum()
    right = breast[:, cols[-1] + 1 - band : cols[-1] + 1].sum()
    return bool(right > left)


def _pectoral(coarse: np.ndarray, breast: np.ndarray, chest_wall_right: bool, grid_mm: float) -> np.ndarray:
    """The pectoral muscle: a bright component in the top chest-wall corner of the breast, or none."""
    none = np.zeros(breast.shape, bool)
    image = coarse[:, ::-1] if chest_wall_right else coarse  # work with the chest wall on the left
    inside = breast[:, ::-1] if chest_wall_right else breast
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if len(rows) < 8 or len(cols) < 8:
        return none
    top, height, wall = rows[0], rows[-1] - rows[0] + 1, cols[0]
    upper = np.zeros_like(inside)
    upper[top : top + height // 2, wall : wall + (cols[-1] - wall) // 2] = True
    values = image[inside & upper]
    if values.size < 50:
        return none
    smooth = ndimage.gaussian_filter(image, 1.5)
    # the muscle is the brightest tissue of that corner; where dense glands touch it, a higher threshold parts them
    levels = [float(threshold_otsu(values)), *np.percentile(values, (75, 85, 92))]
    # the muscle reaches the top of the breast at the chest wall; the very corner can be dim (thin tissue at the
    # film edge), so any bright component within CORNER_MM of it is a candidate
    reach = max(3, round(CORNER_MM / grid_mm))
    for level in sorted(levels):
        labels = label((smooth > level) & inside & upper)
        corner = set(np.unique(labels[top : top + reach, wall : wall + reach])) - {0}
        for props in sorted((p for p in regionprops(labels) if p.label in corner), key=lambda p: -p.area):
            muscle = ndimage.binary_fill_holes(labels == props.label)
            if _plausible_muscle(image, inside, muscle, props.bbox, top, height, cols[-1] - wall):
                return muscle[:, ::-1] if chest_wall_right else muscle
    return none


def _plausible_muscle(image, inside, muscle, bbox, top: int, height: int, breast_width: int) -> bool:
    """Share of the breast, brightness over the rest, and a wedge that narrows downward."""
    share = muscle.sum() / inside.sum()
    rest = image[inside & ~muscle]
    # the image is scaled to its own range before segmentation, so this is a share of that range
    contrast = float(image[muscle].mean() - np.median(rest)) if rest.size else 0.0
    widths = muscle.sum(axis=1)[top : bbox[2]]
    narrowing = widths[: max(1, len(widths) // 4)].mean() > 1.3 * widths[len(widths) // 2 :].mean()
    # cut square by the search box's lower edge: glandular tissue running on, not a muscle that tapers off
    narrowing &= widths[-1] < 0.25 * breast_width / 2 or bbox[2] < top + height // 2
    return bool(PECTORAL_MIN_FRACTION <= share <= PECTORAL_MAX_FRACTION and contrast > 0.03 and narrowing)
