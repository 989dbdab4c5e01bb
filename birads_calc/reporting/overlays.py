"""Overlay PNGs for a reading radiologist: the mammogram, each calcification outlined in its category's colour.

One image per mammogram, downsampled so its longest side is at most ``max_side`` pixels (never enlarged). Every
calcification's outline (the contour of its mask, ``skimage.measure.find_contours`` at full resolution, then
scaled) is drawn in the fixed colour of its predicted category, with ``"<category> <risk>"`` written beside it;
a legend in a panel right of the image (never over tissue) lists the colours. A calcification too small to show
an outline at the overlay's scale gets a ring of :data:`MIN_MARKER_RADIUS` pixels around it, so nothing predicted
is invisible. Labels are drawn before the outlines, so a label never hides another lesion's outline.

The files are named by a non-identifying key (the stem of the image path in the manifest), never by anything read
from a DICOM header, and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.measure import find_contours

from birads_calc.categories import scale
from birads_calc.data.dicom import DEFAULT_VOI, read_image
from birads_calc.data.manifest import Lesion
from birads_calc.data.masks import read_mask
from birads_calc.data.roi import bounding_box
from birads_calc.io import atomic_path
from birads_calc.progress import track

# One fixed colour per category, from benign green to malignant magenta (colour-blind safe enough, and distinct
# from the gray image). Four-class 4 takes the 4B orange.
CATEGORY_COLOURS: dict[str, tuple[int, int, int]] = {
    "2": (0, 200, 83),
    "3": (0, 176, 255),
    "4": (255, 145, 0),
    "4A": (255, 234, 0),
    "4B": (255, 145, 0),
    "4C": (255, 61, 0),
    "5": (213, 0, 249),
}
DEFAULT_MAX_SIDE = 1024
MIN_MARKER_RADIUS = 6  # overlay pixels: rings smaller than this are hard to see
LINE_WIDTH = 2
FONT_SIZE = 14
LEGEND_LINE = FONT_SIZE + 6
LEGEND_WIDTH = 80  # panel right of the image


@dataclass(frozen=True)
class OverlayLesion:
    """What is drawn for one calcification: its full-resolution mask, predicted category name and risk."""

    mask: np.ndarray
    category: str
    risk: float


def overlay_scale(shape: tuple[int, int], max_side: int = DEFAULT_MAX_SIDE) -> float:
    """Factor from image to overlay pixels: the longest side becomes ``max_side``, never enlarged."""
    if max_side <= 0:
        raise ValueError(f"overlay size must be positive, got {max_side}")
    return min(1.0, max_side / max(shape))


def render_overlay(
    pixels: np.ndarray, lesions: Sequence[OverlayLesion], categories: Sequence[str], max_side: int = DEFAULT_MAX_SIDE
) -> Image.Image:
    """The overlay as an RGB image: the downsampled mammogram on the left, the legend in a panel on its right.

    The legend has its own panel so it never hides tissue; the mammogram part is ``overlay_size(shape, max_side)``
    and the whole image ``LEGEND_WIDTH`` wider (taller too if the image is shorter than the legend).

    Args:
        pixels: the mammogram, float ``[H, W]`` in [0, 1] (``read_image``).
        lesions: the calcifications of this image, masks of shape ``[H, W]``.
        categories: the scale's category names, for the legend.
        max_side: longest side of the mammogram part in pixels.
    """
    factor = overlay_scale(pixels.shape, max_side)
    width, height = overlay_size(pixels.shape, max_side)
    gray = Image.fromarray(np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8))
    gray = gray.resize((width, height), Image.Resampling.BOX) if factor < 1 else gray
    canvas = Image.new("RGB", (width + LEGEND_WIDTH, max(height, _legend_height(categories))))
    canvas.paste(gray.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    boxes = [bounding_box(lesion.mask) for lesion in lesions]
    for lesion, box in zip(lesions, boxes, strict=True):  # labels first: outlines drawn later stay visible
        _draw_label(draw, lesion, box, factor, font)
    for lesion, box in zip(lesions, boxes, strict=True):
        _draw_outline(draw, lesion, box, factor)
    _draw_legend(draw, categories, font, left=width)
    return canvas


def overlay_size(shape: tuple[int, int], max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """``(width, height)`` of the mammogram part of an overlay."""
    factor = overlay_scale(shape, max_side)
    return max(1, round(shape[1] * factor)), max(1, round(shape[0] * factor))


def _draw_outline(draw: ImageDraw.ImageDraw, lesion: OverlayLesion, box: tuple, factor: float) -> None:
    colour = CATEGORY_COLOURS[lesion.category]
    top, left, bottom, right = box
    # contours of the bounding-box crop only (a whole 3000x2500 mask per lesion would dominate the run time),
    # padded by one pixel so a lesion touching its box still gets a closed outline
    patch = np.pad(lesion.mask[top:bottom, left:right], 1).astype(np.float32)
    for contour in find_contours(patch, 0.5):
        points = [((c + left - 0.5) * factor, (r + top - 0.5) * factor) for r, c in contour]
        if len(points) > 1:
            draw.line(points, fill=colour, width=LINE_WIDTH, joint="curve")
    cx, cy = (left + right) / 2 * factor, (top + bottom) / 2 * factor
    if max(bottom - top, right - left) / 2 * factor < MIN_MARKER_RADIUS:  # outline too small to see: add a ring
        ring = MIN_MARKER_RADIUS + LINE_WIDTH
        draw.ellipse([cx - ring, cy - ring, cx + ring, cy + ring], outline=colour, width=LINE_WIDTH)


def _draw_label(draw: ImageDraw.ImageDraw, lesion: OverlayLesion, box: tuple, factor: float, font) -> None:
    top, left, bottom, right = box
    cx, cy = (left + right) / 2 * factor, (top + bottom) / 2 * factor
    anchor = (max(right * factor, cx + MIN_MARKER_RADIUS + LINE_WIDTH) + 4, cy - FONT_SIZE / 2)
    text = f"{lesion.category} {lesion.risk:.2f}"
    draw.rectangle(draw.textbbox(anchor, text, font=font), fill=(0, 0, 0))  # dark backing: readable on tissue
    draw.text(anchor, text, fill=CATEGORY_COLOURS[lesion.category], font=font)


def _legend_height(categories: Sequence[str]) -> int:
    return 12 + LEGEND_LINE * (len(categories) + 1)


def _draw_legend(draw: ImageDraw.ImageDraw, categories: Sequence[str], font, left: int) -> None:
    draw.text((left + 8, 6), "BI-RADS", fill=(255, 255, 255), font=font)
    for k, name in enumerate(categories, start=1):
        y = 6 + LEGEND_LINE * k
        draw.rectangle([left + 8, y + 2, left + 8 + FONT_SIZE - 2, y + FONT_SIZE], fill=CATEGORY_COLOURS[name])
        draw.text((left + 14 + FONT_SIZE, y), name, fill=(255, 255, 255), font=font)


def write_overlay(path: str | os.PathLike, image: Image.Image) -> Path:
    """Save an overlay as PNG atomically (a crash never leaves a truncated PNG under the final name)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def overlay_names(images: Sequence[str]) -> dict[str, str]:
    """A PNG file name per image path, from its stem; stems that repeat get ``_2``, ``_3``... in order of appearance.

    Example:
        >>> overlay_names(["a/x.dcm", "b/x.dcm", "b/y.dcm"])
        {'a/x.dcm': 'x.png', 'b/x.dcm': 'x_2.png', 'b/y.dcm': 'y.png'}
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for image in images:
        if image in names:
            continue
        stem = Path(image).stem
        name, k = f"{stem}.png", 1
        while name in taken:
            k += 1
            name = f"{stem}_{k}.png"
        taken.add(name)
        names[image] = name
    return names


def write_image_overlays(
    out_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    lesions_by_row: Mapping[int, Lesion],
    num_classes: int,
    max_side: int = DEFAULT_MAX_SIDE,
    voi: str = DEFAULT_VOI,
) -> dict[str, str]:
    """Draw one overlay per image of the prediction rows into ``out_dir``; return the file name of each image.

    Args:
        out_dir: the overlays folder (created).
        rows: ``predictions.csv`` rows (``image``, ``row``, ``birads_pred``, ``risk``).
        lesions_by_row: manifest row number -> lesion (its image and mask files).
        num_classes: 6 or 4 (the legend).
        max_side: longest side of an overlay's mammogram in pixels.
        voi: DICOM VOI mode, as the model's input used it.
    """
    by_image: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(row)
    names = overlay_names(list(by_image))
    for image, members in track(by_image.items(), "predict: drawing overlays", unit="image"):
        first = lesions_by_row[int(members[0]["row"])]
        pixels = read_image(first.image, voi=voi).pixels
        drawn = [
            OverlayLesion(read_mask(lesions_by_row[int(r["row"])].mask), r["birads_pred"], float(r["risk"]))
            for r in members
        ]
        write_overlay(Path(out_dir) / names[image], render_overlay(pixels, drawn, scale(num_classes), max_side))
    return names
