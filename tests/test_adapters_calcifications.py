"""The shared speck detector (white top-hat + robust threshold) and the region helpers."""

import numpy as np
import pytest
from skimage.filters import gaussian

from birads_calc.data.adapters.calcifications import SpeckDetector, box, circle, find_calcifications
from tests.factories import disc


def background(shape=(200, 200), seed=0, noise=0.004):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    smooth = 0.3 + 0.1 * rows / shape[0] + 0.05 * np.sin(cols / 60)  # tissue-like slow variation
    return smooth + np.random.default_rng(seed).normal(0, noise, shape)


def test_specks_found_broad_bright_structure_ignored():
    """0.3 mm specks are kept, a 5 mm bright patch with soft edges (dense tissue, not a calcification) is not."""
    image = background()
    specks = disc(image.shape, (50, 60), 1.5) | disc(image.shape, (120, 140), 1.5)
    patch = gaussian(disc(image.shape, (150, 50), 25).astype(float), sigma=5)  # 0.1 mm per pixel
    image = image + 0.3 * specks + 0.3 * patch
    found = find_calcifications(image.astype(np.float32), np.ones(image.shape, bool), pixel_spacing_mm=0.1)
    np.testing.assert_array_equal(found, specks)


def test_result_never_leaves_the_region():
    image = background()
    specks = disc(image.shape, (50, 60), 1.5) | disc(image.shape, (150, 150), 1.5)
    image = image + 0.3 * specks
    region = circle(image.shape, 50, 60, 10)
    found = find_calcifications(image, region, pixel_spacing_mm=0.1)
    np.testing.assert_array_equal(found, specks & region)
    assert not find_calcifications(image, np.zeros(image.shape, bool), 0.1).any()


@pytest.mark.parametrize("seed", range(4))
def test_noise_only_region_gives_nothing(seed):
    """Noise well below ``min_contrast`` (sigma 0.0025 vs 0.025) never passes for a speck."""
    image = background(seed=seed, noise=0.0025)
    assert not find_calcifications(image, np.ones(image.shape, bool), pixel_spacing_mm=0.1).any()


def test_physical_sizes_follow_the_pixel_spacing():
    detector = SpeckDetector(max_speck_mm=1.4, min_speck_mm=0.2)
    assert detector.footprint_radius(0.2) == 4 and detector.footprint_radius(0.07) == 10
    assert detector.min_area(0.2) == 1 and detector.min_area(0.1) == 3  # pi * 1^2 -> 3 pixels
    image = background() + 0.3 * disc((200, 200), (100, 100), 0.5)  # one pixel
    region = np.ones((200, 200), bool)
    assert find_calcifications(image, region, 0.2).sum() == 1  # 0.2 mm: a pixel is a speck
    assert not find_calcifications(image, region, 0.05).any()  # 0.05 mm: a pixel is below 0.2 mm, noise


@pytest.mark.parametrize(
    ("corners", "expected"),
    [
        ((2.0, 3.0, 5.0, 7.0), (slice(3, 8), slice(2, 6))),
        ((-1.7, -0.2, 2.3, 1.5), (slice(0, 3), slice(0, 4))),  # slightly negative: clipped
        ((8.5, 8.5, 30.0, 30.0), (slice(8, 10), slice(8, 10))),  # past the edge: clipped
    ],
)
def test_box_is_inclusive_and_clipped(corners, expected):
    mask = box((10, 10), *corners)
    reference = np.zeros((10, 10), bool)
    reference[expected] = True
    np.testing.assert_array_equal(mask, reference)


def test_box_outside_the_image_is_empty():
    assert not box((10, 10), 20, 20, 30, 30).any()
