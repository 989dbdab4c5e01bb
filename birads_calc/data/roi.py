"""Lesion windows and attention ROIs (paper §2.2, §3.1; DESIGN §4).

Windows are ``window x window`` squares given by their top-left corner ``(top, left)`` in image pixels.

* **Training** pairs a lesion with every window of the grid that contains its bounding box. The grid is anchored
  at the image origin: tops are ``0, stride, 2*stride, ...`` up to the first window that reaches the bottom edge
  (so every pixel is covered; only that last row/column of windows reaches past the edge and is zero-padded).
  A lesion that no grid window contains (larger than a window, or too large to fit between two grid lines) gets
  one window centred on its bounding box instead.
* **Val / test / predict** use one window centred on the lesion's bounding box.
* **Channels** ``[x, x * M_all, x * M_lesion]``: ``x`` the window in [0, 1], ``M_all`` the union of the masks of
  every lesion of that image, ``M_lesion`` this lesion's mask. Without attention: ``[x, x, x]``.

The loader ships compact arrays (uint16 pixels, one uint8 mask plane with bit 0 = ``M_all`` and bit 1 =
``M_lesion``); :func:`assemble` turns a batch of them into the float ``[B, 3, W, W]`` input on the device, with
the random flips/rotations of training. :func:`attention_roi` is the plain NumPy reference it is tested against.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from birads_calc.errors import InputError

PIXEL_SCALE = 65535  # uint16 storage of a [0, 1] image: quantisation step 1.5e-5
BIT_ALL, BIT_LESION = 1, 2  # bits of the packed mask plane

Box = tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive


class GridError(InputError, ValueError):
    """A window/stride pair that cannot make the training grid (the message gives both numbers)."""


def check_grid(window: int, stride: int) -> None:
    """Refuse a non-positive window or stride, and a stride larger than the window.

    A stride larger than the window leaves ``stride - window`` pixels between neighbouring grid windows that no
    training window covers, so lesions there get only their centred window and the grid is no longer the paper's
    overlapping sampling (400 px windows, stride 100).
    """
    if window <= 0 or stride <= 0:
        raise GridError(f"window and stride must be positive, got window {window}, stride {stride}")
    if stride > window:
        raise GridError(
            f"stride {stride} is larger than window {window}: the grid would leave {stride - window} px between "
            "neighbouring windows uncovered; choose a stride of at most the window (paper: window 400, stride 100)"
        )


def oversized_lesions(sizes: list[tuple[int, str, int, int]], window: int) -> str | None:
    """A warning naming how many lesions are larger than the window (and the largest), or ``None``.

    Args:
        sizes: ``(row, image, height, width)`` of every lesion's bounding box, in the pixels the window is cut from.
        window: the window size in the same pixels.
    """
    over = [s for s in sizes if max(s[2], s[3]) > window]
    if not over:
        return None
    row, image, height, width = max(over, key=lambda s: max(s[2], s[3]))
    need = max(max(h, w) for _, _, h, w in sizes)
    return (
        f"{len(over)} of {len(sizes)} lesion(s) are larger than the {window} px window, which cuts them (largest: "
        f"{height} x {width} px, row {row} [{image}]); a window of at least {need} px holds every lesion "
        "(data.window / prepare --window)"
    )


def bounding_box(mask: np.ndarray) -> Box:
    """Bounding box of the nonzero pixels of a 2-D mask.

    Raises:
        ValueError: for an empty mask (it has no box).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no bounding box")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _grid_starts(low: int, high: int, size: int, window: int, stride: int) -> list[int]:
    """Grid starts ``k * stride`` whose window ``[s, s + window)`` contains ``[low, high)`` along one axis."""
    last = math.ceil(max(size - window, 0) / stride) * stride  # first start whose window reaches the edge
    first_k = max(0, math.ceil((high - window) / stride))
    last_k = min(low, last) // stride
    return [k * stride for k in range(first_k, last_k + 1)]


def centred_window(box: Box, window: int) -> tuple[int, int]:
    """Top-left corner of the window centred on a bounding box (may lie outside the image: zero padding)."""
    top, left, bottom, right = box
    return (top + bottom) // 2 - window // 2, (left + right) // 2 - window // 2


def grid_windows(box: Box, image_shape: tuple[int, int], window: int = 400, stride: int = 100) -> list[tuple[int, int]]:
    """Every grid window containing the box, row-major; the centred window when none does.

    Example:
        >>> grid_windows((120, 130, 150, 160), (600, 600), window=400, stride=100)
        [(0, 0), (0, 100), (100, 0), (100, 100)]
    """
    tops = _grid_starts(box[0], box[2], image_shape[0], window, stride)
    lefts = _grid_starts(box[1], box[3], image_shape[1], window, stride)
    if not tops or not lefts:
        return [centred_window(box, window)]
    return [(t, left) for t in tops for left in lefts]


def context_box(windows: list[tuple[int, int]], window: int) -> Box:
    """The smallest box holding all the given windows (a lesion's cached context crop)."""
    tops, lefts = zip(*windows, strict=True)
    return min(tops), min(lefts), max(tops) + window, max(lefts) + window


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """``array[top:bottom, left:right]`` with zeros where the box reaches past the array's edge."""
    top, left, bottom, right = box
    out = np.zeros((bottom - top, right - left), dtype=array.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(bottom, array.shape[0]), min(right, array.shape[1])
    if src_bottom > src_top and src_right > src_left:
        out[src_top - top : src_bottom - top, src_left - left : src_right - left] = array[
            src_top:src_bottom, src_left:src_right
        ]
    return out


def attention_roi(x: np.ndarray, mask_all: np.ndarray, mask_lesion: np.ndarray, attention: bool = True) -> np.ndarray:
    """The reference ROI of one window: float32 ``[3, W, W]`` = ``[x, x*M_all, x*M_lesion]`` or ``[x, x, x]``."""
    x = np.asarray(x, dtype=np.float32)
    if not attention:
        return np.stack([x, x, x])
    return np.stack([x, x * (mask_all != 0), x * (mask_lesion != 0)]).astype(np.float32)


def to_pixels(x: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as uint16 (the cache's and the loader's storage)."""
    return np.round(np.clip(x, 0.0, 1.0) * PIXEL_SCALE).astype(np.uint16)


def pack_masks(mask_all: np.ndarray, mask_lesion: np.ndarray) -> np.ndarray:
    """Both masks in one uint8 plane: bit 0 = ``M_all``, bit 1 = ``M_lesion``."""
    return ((mask_all != 0) * BIT_ALL | (mask_lesion != 0) * BIT_LESION).astype(np.uint8)


def assemble(
    pixels: torch.Tensor,
    masks: torch.Tensor,
    attention: bool = True,
    augment: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Float ROIs from a batch of compact arrays, on whatever device the batch is.

    Args:
        pixels: uint16 ``[B, W, W]`` (image scaled by 65535).
        masks: uint8 ``[B, W, W]``, bit 0 = all calcifications, bit 1 = this lesion.
        attention: ``[x, x*M_all, x*M_lesion]`` when True, ``[x, x, x]`` otherwise.
        augment: apply one of the 8 flips/90-degree rotations, drawn per sample (training only).
        generator: random source for the augmentation (on the batch's device).

    Returns:
        float32 ``[B, 3, W, W]`` in [0, 1].
    """
    batch, height, width = pixels.shape
    image = torch.empty((batch, 3, height, width), dtype=torch.float32, device=pixels.device)
    x = image[:, 0]
    x.copy_(pixels).mul_(1.0 / PIXEL_SCALE)  # written in place: no stacked copies of a 60 MB batch
    if attention:
        masks = masks.to(torch.uint8)
        torch.mul(x, masks & BIT_ALL, out=image[:, 1])
        torch.mul(x, (masks & BIT_LESION) >> 1, out=image[:, 2])
    else:
        image[:, 1].copy_(x)
        image[:, 2].copy_(x)
    return dihedral(image, generator) if augment else image


def dihedral(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply a random element of the dihedral group (4 rotations x optional flip) to each sample of ``[B, C, W, W]``.

    Each of the 8 transforms of a square is a permutation of its pixels, so the whole batch is one ``gather``
    with per-sample permutations: no per-sample loop and no host synchronisation on a GPU.
    """
    batch, channels, height, width = image.shape
    if height != width:
        raise ValueError(f"dihedral augmentation needs square windows, got {height}x{width}")
    choice = torch.randint(0, 8, (batch,), device=image.device, generator=generator)
    index = _dihedral_permutations(width, image.device)[choice]  # [B, W*W]
    flat = image.reshape(batch, channels, width * width)
    return flat.gather(2, index.unsqueeze(1).expand(-1, channels, -1)).reshape(image.shape)


_PERMUTATIONS: dict[tuple[int, str], torch.Tensor] = {}


def _dihedral_permutations(width: int, device: torch.device) -> torch.Tensor:
    """``[8, W*W]`` source pixel of each output pixel for rot90^k (k = 0..3), then the same after a flip."""
    key = (width, str(device))
    if key not in _PERMUTATIONS:
        grid = torch.arange(width * width).reshape(width, width)
        transforms = [torch.rot90(grid, k, dims=(0, 1)) for k in range(4)]
        transforms += [torch.rot90(grid.flip(1), k, dims=(0, 1)) for k in range(4)]
        _PERMUTATIONS[key] = torch.stack([t.reshape(-1) for t in transforms]).to(device)
    return _PERMUTATIONS[key]
