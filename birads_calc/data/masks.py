"""Calcification masks on disk: binary PNG (also TIFF / PGM / NumPy) in, 8-bit PNG 0/255 out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from birads_calc.errors import InputError
from birads_calc.io import atomic_path, not_a_file


class MaskError(InputError, ValueError):
    """A mask file that cannot be used (unreadable, not 2-D, not binary)."""


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask as a 2-D boolean array (nonzero = calcification).

    Accepts PNG/TIFF/PGM/BMP (any bit depth) and ``.npy``. A mask must be binary: two distinct values at most
    (e.g. 0/1 or 0/255). Anything else (a grayscale image mistaken for a mask, an RGB overlay) is refused, because
    thresholding it would silently invent a lesion outline.

    Raises:
        MaskError: naming the file and what is wrong with it.
    """
    path = Path(path)
    problem = not_a_file(path)  # before opening: a FIFO would block, a loop or a device would read as "not found"
    if problem:
        raise MaskError(f"{path}: {problem}")
    try:
        array = np.load(path) if path.suffix.lower() == ".npy" else np.asarray(Image.open(path))
    except (OSError, ValueError) as error:
        raise MaskError(f"{path}: cannot read mask ({error})") from None
    if array.ndim == 3 and array.shape[2] in (3, 4) and np.all(array[..., :3] == array[..., :1]):
        array = array[..., 0]  # gray stored as RGB(A)
    if array.ndim != 2:
        raise MaskError(f"{path}: a mask must be a 2-D single-channel image, got shape {array.shape}")
    values = np.unique(array)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise MaskError(f"{path}: mask is not binary (values {shown}); expected 0 and one nonzero value")
    return array != 0


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write a boolean mask as an 8-bit PNG with values 0/255, atomically."""
    path = Path(path)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise MaskError(f"{path}: a mask must be 2-D, got shape {mask.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray((mask != 0).astype(np.uint8) * 255).save(tmp, format="PNG")
    return path
