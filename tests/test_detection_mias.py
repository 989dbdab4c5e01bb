"""The detector on real film mammograms: mini-MIAS (../shared/data), a few images so the test stays quick.

A circle of Info.txt counts as found when a region's centroid lies in it (the benchmark's rule; full figures in
docs/detection.md from bench/bench_detection.py). Skipped with a reason where the data is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from birads_calc.data.adapters.mias import BACKGROUND_GRAY, read_info
from birads_calc.data.dicom import read_image
from birads_calc.detection import detect_image

SPACING = (0.2, 0.2)  # Info.txt: 200 micron pixel edge
CALCIFIED = ("mdb219", "mdb241", "mdb248", "mdb249")  # clusters the detector finds (regression guard)
NORMAL = ("mdb210", "mdb215", "mdb232")


@pytest.fixture(scope="module")
def mias(shared_data):
    root = shared_data / "mini-mias"
    if not (root / "Info.txt").is_file():
        pytest.skip(f"mini-MIAS not found at {root}")
    circles: dict[str, list] = {}
    for _, fields in read_info(root / "Info.txt"):
        if len(fields) >= 7 and fields[2] == "CALC" and all(f.isdigit() for f in fields[4:7]):
            x, y, radius = (int(f) for f in fields[4:7])
            circles.setdefault(fields[0], []).append((1024 - y, x, radius))  # origin bottom-left
    return root, circles


def test_calcification_clusters_are_found_in_their_circles(mias):
    root, circles = mias
    found = total = 0
    for ref in CALCIFIED:
        result = detect_image(read_image(root / "images" / f"{ref}.pgm").pixels, SPACING)
        for r, c, radius in circles[ref]:
            total += 1
            found += any(np.hypot(g.centroid[0] - r, g.centroid[1] - c) <= radius for g in result.regions)
    assert found >= 4, f"{found} of {total} circles found"


def test_normal_mammograms_have_few_regions_and_none_on_film_or_labels(mias):
    root, _ = mias
    regions = 0
    for ref in NORMAL:
        pixels = read_image(root / "images" / f"{ref}.pgm").pixels
        result = detect_image(pixels, SPACING)
        assert result.breast.mask.mean() < 0.7  # the padded film around the breast is not breast
        regions += len(result.regions)
        for region in result.regions:
            r, c = (round(v) for v in region.centroid)
            assert pixels[r - 2 : r + 3, c - 2 : c + 3].mean() >= BACKGROUND_GRAY  # on tissue, not film
            assert not (region.mask & ~result.breast.mask).any()
    assert regions / len(NORMAL) <= 4
