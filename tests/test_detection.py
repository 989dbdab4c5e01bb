"""The detector's stages on small generated mammograms with known breast, specks and clusters."""

from __future__ import annotations

import numpy as np
import pytest
from detection_fixtures import SPACING, phantom

from birads_calc.detection import ImageDetection, Region, detect_image
from birads_calc.detection.breast import find_breast
from birads_calc.detection.regions import LINK_MM, group_specks
from birads_calc.detection.specks import find_specks


def test_breast_excludes_background_and_film_label():
    pixels, breast, _, _ = phantom()
    found = find_breast(pixels, (SPACING, SPACING))
    assert found.reason is None and not found.chest_wall_right
    overlap = (found.mask & breast).sum() / (found.mask | breast).sum()
    assert overlap > 0.9
    assert not found.mask[10:40, -60:-15].any(), "the film label is not breast"
    assert not (found.search & ~breast).any(), "the speck search area stays inside the true breast"


def test_breast_not_found_on_blank_film_is_a_reason():
    result = detect_image(np.full((200, 160), 0.02, np.float32), (SPACING, SPACING))
    assert result.regions == [] and result.reason.startswith("breast not found")


def test_specks_found_where_they_were_drawn():
    pixels, _, centres, _ = phantom()
    breast = find_breast(pixels, (SPACING, SPACING))
    specks = find_specks(pixels, breast.search, (SPACING, SPACING))
    near = [min(np.hypot(*(np.asarray(c) - p)) for p in specks.centroids) for c in centres]
    assert np.mean(np.asarray(near) <= 3) >= 0.7, near  # touching specks may merge into one
    # nearly every speck is a drawn one (a noise peak may pass alone; regions need a group), never the label
    stray = [min(np.hypot(row - r, col - c) for r, c in centres) > 4 for row, col in specks.centroids]
    assert sum(stray) <= 1 and not specks.labels[10:40, -60:-15].any()


def test_specks_grouped_into_one_region_per_cluster():
    pixels, _, centres, owners = phantom()
    result = detect_image(pixels, (SPACING, SPACING))
    assert isinstance(result, ImageDetection) and result.reason is None
    assert len(result.regions) == 2
    truth = [np.mean([c for c, o in zip(centres, owners, strict=True) if o == k], axis=0) for k in (0, 1)]
    for region in result.regions:
        assert isinstance(region, Region)
        assert min(np.hypot(*(np.asarray(region.centroid) - t)) for t in truth) < 3 / SPACING
        r0, c0, r1, c1 = region.bbox
        assert region.mask[r0:r1, c0:c1].sum() == region.mask.sum() and region.mask[r0, :].any()
        assert region.area_mm2 == pytest.approx(region.mask.sum() * SPACING**2)
    scores = [r.score for r in result.regions]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert [r.region_id for r in result.regions] == [1, 2]


def test_a_line_of_specks_is_one_region_and_far_specks_are_not_merged():
    line = tuple((100.0 + 15 * k, 100.0, 1) for k in range(8))  # 8 specks 3 mm apart: a 21 mm linear group
    group = ((300.0, 60.0, 1), (303.0, 72.0, 1), (296.0, 66.0, 1))  # 3 specks within 2.5 mm, 19 mm further down
    pixels, _, _, _ = phantom(clusters=(*line, *group), jitter_mm=0, speck_contrast=0.2)
    result = detect_image(pixels, (SPACING, SPACING))
    sizes = sorted(r.n_specks for r in result.regions)
    assert sizes == [3, 8], sizes
    assert LINK_MM < (300 - 205) * SPACING  # the two groups are further apart than the link


def test_no_calcification_is_a_reason_not_an_error():
    pixels, _, _, _ = phantom(clusters=())
    result = detect_image(pixels, (SPACING, SPACING))
    assert result.regions == [] and result.reason.startswith("no calcification found")


def test_single_faint_specks_are_not_a_region():
    pixels, _, _, _ = phantom(clusters=((150.0, 60.0, 1), (260.0, 150.0, 1)))
    breast = find_breast(pixels, (SPACING, SPACING))
    specks = find_specks(pixels, breast.search, (SPACING, SPACING))
    assert len(specks) >= 1 and group_specks(specks, (SPACING, SPACING)) == []


@pytest.mark.parametrize("spacing", [None, (0.2,), (0.0, 0.2), (-1, 1)])
def test_pixel_spacing_is_required(spacing):
    pixels, _, _, _ = phantom()
    with pytest.raises(ValueError, match="pixel_spacing"):
        detect_image(pixels, spacing)


def test_a_faint_vessel_strand_is_not_a_speck_but_a_bright_coarse_calcification_is_a_region():
    pixels, _, _, _ = phantom(clusters=())
    rows, cols = np.mgrid[: pixels.shape[0], : pixels.shape[1]]
    vessel = (np.abs(rows - 120) <= 1.5) & (cols >= 60) & (cols < 110)  # 10 mm long, 0.6 mm wide, faint
    coarse = (rows - 250) ** 2 + (cols - 100) ** 2 <= 4**2  # one 1.6 mm calcification, bright
    pixels = np.clip(pixels + 0.04 * vessel + 0.3 * coarse, 0, 1).astype(np.float32)
    result = detect_image(pixels, (SPACING, SPACING))
    assert not result.specks.mask(pixels.shape)[vessel].any()
    assert [r.n_specks for r in result.regions] == [1] and result.regions[0].mask[250, 100]


def test_breast_area_uses_both_spacings():
    pixels = np.full((300, 200), 0.02, np.float32)
    pixels[80:220, :50] = 0.5  # 7,000 pixels: 560 mm² at 0.2 x 0.4 mm (a breast), 280 mm² if taken as 0.2 x 0.2
    assert find_breast(pixels, (SPACING, 2 * SPACING)).reason is None
    assert find_breast(pixels, (SPACING, SPACING)).reason.startswith("breast not found")


def test_the_bright_side_of_a_step_is_an_edge_but_a_bright_line_is_not():
    from birads_calc.detection.specks import _edge_like

    step = np.zeros((60, 60), np.float32)
    step[:, 30:] = 0.3  # a dense region's sharp border at column 30
    line = np.zeros((60, 60), np.float32)
    line[:, 29:32] = 0.3  # a thin bright cast, darker on both sides
    for image, first_col, edge in ((step, 30, True), (line, 29, False)):
        rows, cols = (a.ravel() for a in np.mgrid[10:50, first_col : first_col + 3])  # 4 mm x 0.3 mm at 0.1 mm
        ids = np.ones(rows.size, int)
        assert _edge_like(image, rows, cols, ids, 1, 0.1).tolist() == [edge]
