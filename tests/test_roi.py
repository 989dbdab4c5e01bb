"""Window enumeration on the grid, zero-padded crops, attention channels and the on-device assembly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from birads_calc.data.roi import (
    assemble,
    attention_roi,
    bounding_box,
    centred_window,
    context_box,
    crop,
    grid_windows,
    pack_masks,
    to_pixels,
)


def brute_force_windows(box, shape, window, stride):
    """Every grid window (tops 0, stride, ... up to the first reaching the edge) that contains ``box``."""
    starts = []
    for size in shape:
        s, axis = 0, []
        while True:
            axis.append(s)
            if s + window >= size:
                break
            s += stride
        starts.append(axis)
    top, left, bottom, right = box
    inside = [(t, c) for t in starts[0] for c in starts[1] if t <= top and t + window >= bottom]
    return [(t, c) for t, c in inside if c <= left and c + window >= right]


def test_grid_windows_paper_scale_example():
    # a 30x30 lesion at (120, 130) in a 600x600 image: tops/lefts 0 and 100 contain it (200 starts after it)
    assert grid_windows((120, 130, 150, 160), (600, 600), 400, 100) == [(0, 0), (0, 100), (100, 0), (100, 100)]


def test_grid_windows_match_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = tuple(int(v) for v in rng.integers(40, 300, 2))
        window, stride = int(rng.integers(16, 80)), int(rng.integers(4, 40))
        top, left = int(rng.integers(0, shape[0] - 1)), int(rng.integers(0, shape[1] - 1))
        box = (top, left, top + int(rng.integers(1, min(window, shape[0] - top) + 1)),
               left + int(rng.integers(1, min(window, shape[1] - left) + 1)))  # fmt: skip
        expected = brute_force_windows(box, shape, window, stride) or [centred_window(box, window)]
        assert grid_windows(box, shape, window, stride) == expected, (box, shape, window, stride)


def test_edge_lesion_gets_the_zero_padded_last_window():
    # 250 px image, window 64, stride 16: the grid's last start is 192 (192 + 64 = 256 > 250)
    box = (240, 240, 245, 245)
    assert grid_windows(box, (250, 250), 64, 16) == [(192, 192)]
    image = np.ones((250, 250), np.float32)
    patch = crop(image, (192, 192, 256, 256))
    assert patch.shape == (64, 64)
    assert patch[:58, :58].all() and not patch[58:].any() and not patch[:, 58:].any()


def test_oversize_lesion_gets_one_centred_window():
    box = (10, 20, 90, 40)  # 80 px tall, window 64
    assert grid_windows(box, (256, 256), 64, 16) == [(18, -2)]
    assert centred_window(box, 64) == ((10 + 90) // 2 - 32, (20 + 40) // 2 - 32)
    # a lesion that fits a window but sits across every grid line also falls back to the centred window
    assert grid_windows((10, 10, 70, 20), (256, 256), 64, 16) == [centred_window((10, 10, 70, 20), 64)]


def test_crop_and_context_box():
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    patch = crop(image, (-2, 7, 3, 12))
    expected = np.zeros((5, 5), np.float32)
    expected[2:, :3] = image[0:3, 7:10]
    np.testing.assert_array_equal(patch, expected)
    assert context_box([(0, 16), (16, 0), (8, 8)], 64) == (0, 0, 80, 80)
    mask = np.zeros((10, 10), bool)
    mask[2:4, 5:9] = True
    assert bounding_box(mask) == (2, 5, 4, 9)
    with pytest.raises(ValueError):
        bounding_box(np.zeros((3, 3), bool))


def random_batch(batch=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, size, size)).astype(np.float32)
    m_all = rng.random((batch, size, size)) < 0.4
    m_lesion = m_all & (rng.random((batch, size, size)) < 0.5)
    return x, m_all, m_lesion


def test_attention_roi_reference_is_the_papers_products():
    x, m_all, m_lesion = random_batch(1)
    roi = attention_roi(x[0], m_all[0], m_lesion[0])
    np.testing.assert_array_equal(roi[0], x[0])
    np.testing.assert_array_equal(roi[1], np.where(m_all[0], x[0], 0))
    np.testing.assert_array_equal(roi[2], np.where(m_lesion[0], x[0], 0))
    np.testing.assert_array_equal(attention_roi(x[0], m_all[0], m_lesion[0], attention=False), np.stack([x[0]] * 3))


@pytest.mark.parametrize("attention", [True, False])
def test_assemble_equals_numpy_reference(attention):
    x, m_all, m_lesion = random_batch()
    pixels = torch.from_numpy(to_pixels(x))
    masks = torch.from_numpy(np.stack([pack_masks(a, b) for a, b in zip(m_all, m_lesion, strict=True)]))
    out = assemble(pixels, masks, attention=attention).numpy()
    reference = np.stack([attention_roi(xi, a, b, attention) for xi, a, b in zip(x, m_all, m_lesion, strict=True)])
    assert out.shape == (6, 3, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference, atol=0.5 / 65535 + 1e-7)  # uint16 quantisation


def test_augmentation_applies_one_dihedral_transform_per_sample():
    x, m_all, m_lesion = random_batch(batch=64, seed=1)
    pixels = torch.from_numpy(to_pixels(x))
    masks = torch.from_numpy(np.stack([pack_masks(a, b) for a, b in zip(m_all, m_lesion, strict=True)]))
    plain = assemble(pixels, masks).numpy()
    out = assemble(pixels, masks, augment=True, generator=torch.Generator().manual_seed(0)).numpy()
    used = set()
    for sample, reference in zip(out, plain, strict=True):
        candidates = [np.rot90(np.flip(reference, -1) if f else reference, k, axes=(1, 2))
                      for f, k in itertools.product((0, 1), range(4))]  # fmt: skip
        matches = [i for i, c in enumerate(candidates) if np.array_equal(sample, c)]
        assert matches, "augmented sample is not a flip/rotation of its ROI"
        used.add(matches[0])
    assert len(used) == 8  # all 8 transforms drawn across 64 samples (fixed seed)
