"""Small generated mammograms with known breast, specks and clusters for the detection tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPACING = 0.2  # mm per pixel, as mini-MIAS and the synthetic demo data


def phantom(
    shape: tuple[int, int] = (360, 280),
    clusters: tuple[tuple[float, float, int], ...] = ((150.0, 90.0, 6), (260.0, 120.0, 5)),
    seed: int = 0,
    label: bool = True,
    speck_contrast: float = 0.12,
    jitter_mm: float = 3.0,
):
    """A breast on a dark film with a bright label, and clusters of specks at known places.

    The breast is a half-ellipse against the left edge (the chest wall) with smooth texture and noise; each
    cluster ``(row, col, n)`` scatters ``n`` round specks (radius about 0.3 mm) within ``jitter_mm`` of its
    centre; a
    bright rectangular film label sits outside the breast in the top-right corner.

    Returns:
        (pixels float32 [H, W] in [0, 1], breast bool [H, W], speck centres list of (row, col), cluster id per
        speck)
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    rows, cols = np.mgrid[:h, :w].astype(np.float32)
    breast = ((rows - h / 2) / (0.45 * h)) ** 2 + (cols / (0.7 * w)) ** 2 <= 1
    texture = _smooth_noise(rng, shape, 8.0)
    image = np.where(breast, 0.45 + 0.05 * texture, 0.02).astype(np.float32)
    centres, owners = [], []
    for k, (r, c, n) in enumerate(clusters):
        for _ in range(n):
            dr, dc = rng.uniform(-jitter_mm, jitter_mm, 2) / SPACING
            centres.append((r + dr, c + dc))
            owners.append(k)
    for r, c in centres:
        image += speck_contrast * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.2**2))
    if label:
        image[10:40, w - 60 : w - 15] = 0.95
    image += rng.normal(0, 0.006, shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), breast, centres, owners


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field / (field.std() + 1e-9)).astype(np.float32)


def small_ranker(root: Path) -> Path:
    """A test-sized ranker (detect-train on one generated background): scores unlike the shipped one's."""
    from birads_calc.cli import main
    from tests.factories import write_dicom

    pixels, _, _, _ = phantom(clusters=(), seed=10, label=False)
    background = write_dicom(root / "ranker_bg.dcm", np.round(pixels * 4095), bits_stored=12,
                             pixel_spacing=(SPACING, SPACING))  # fmt: skip
    out = root / "small_ranker.pt"
    assert main(["detect-train", "--backgrounds", str(background), "--passes", "1", "--lesions", "4", "--epochs",
                 "3", "--resolutions", str(SPACING), "--validation", "0", "--out", str(out)]) == 0  # fmt: skip
    return out
