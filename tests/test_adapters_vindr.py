"""VinDr-Mammo adapter on a generated finding_annotations.csv and tiny DICOMs with bright specks in a box."""

import csv

import numpy as np
import pytest

from birads_calc.cli import main as cli
from birads_calc.data.adapters import vindr
from birads_calc.data.masks import read_mask
from tests.adapters_fixtures import write_vindr_csv
from tests.factories import write_dicom

H, W = 160, 120
SPECKS = [(20, 10), (40, 30), (60, 5)]  # 2x2 px specks (0.2 mm at 0.1 mm/px) inside box A
OUTSIDE = [(120, 100)]  # a speck outside every box: never in a mask


def image_with_specks(rng) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:H, :W]
    pixels = 1500 + 4 * rows + 300 * np.exp(-((rows - 90) ** 2 + (cols - 60) ** 2) / 800) + rng.normal(0, 8, (H, W))
    specks = np.zeros((H, W), bool)
    for r, c in SPECKS + OUTSIDE:
        pixels[r : r + 2, c : c + 2] += 900
        specks[r : r + 2, c : c + 2] = True
    return np.clip(pixels, 0, 4095), specks


def row(study, image, cats, birads, box, split="training", size=(H, W)):
    xmin, ymin, xmax, ymax = box if box else ("", "", "", "")
    return dict(
        study_id=study,
        image_id=image,
        laterality="L",
        view_position="CC",
        height=size[0],
        width=size[1],
        finding_categories=str(cats),
        finding_birads=birads,
        xmin=xmin,
        ymin=ymin,
        xmax=xmax,
        ymax=ymax,
        split=split,
    )


@pytest.fixture
def vindr_folder(tmp_path):
    src = tmp_path / "vindr"
    rng = np.random.default_rng(0)
    pixels, specks = image_with_specks(rng)
    write_dicom(src / "images" / "st1" / "img1.dicom", pixels, bits_stored=12, window=(2200, 2000))
    other = pixels.copy()  # another study's image: identical pixels would be one mammogram under two patients
    other[0, 0] += 1
    write_dicom(src / "images" / "st2" / "img2.dicom", other, bits_stored=12, window=(2200, 2000))
    box_a = (-3.25, 12.5, 45.75, 70.1)  # slightly negative xmin, as in the real file
    rows = [
        row("st1", "img1", ["Suspicious Calcification"], "BI-RADS 4", box_a),  # row 1
        row("st1", "img1", ["Suspicious Calcification"], "BI-RADS 5", (70, 80, 110, 110)),  # no speck there
        row("st1", "img1", ["Mass"], "BI-RADS 3", (10, 10, 30, 30)),
        row("st1", "img1", ["No Finding"], "", None),
        row("st2", "img2", ["Suspicious Calcification", "Mass"], "BI-RADS 4", box_a, split="test"),  # row 5
        row("st2", "img2", ["Suspicious Calcification"], "", box_a, split="test"),
        row("st3", "img3", ["Suspicious Calcification"], "BI-RADS 3", box_a),  # DICOM not downloaded
        row("st2", "img2", ["Suspicious Calcification"], "BI-RADS 3", box_a, split="test", size=(H + 1, W)),
    ]
    write_vindr_csv(src / "finding_annotations.csv", rows)
    return src, specks


def read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_calcification_boxes_become_masks_of_the_specks_inside(vindr_folder, tmp_path):
    src, specks = vindr_folder
    out = tmp_path / "out" / "manifest.csv"
    assert cli(["convert", "vindr-mammo", "--src", str(src), "--out", str(out), "--val_fraction", "0"]) == 0
    rows = read(out)
    assert [(r["lesion_id"], r["birads"], r["split"], r["patient_id"]) for r in rows] == [
        ("img1_1", "4", "train", "st1"),
        ("img2_1", "4", "test", "st2"),
    ]
    box = np.zeros((H, W), bool)
    box[12:71, 0:46] = True  # (-3.25, 12.5)-(45.75, 70.1) clipped and rounded outwards
    for r in rows:
        mask = read_mask(out.parent / r["mask"])
        np.testing.assert_array_equal(mask, specks & box)  # every planted speck in the box, nothing else
    reasons = {(n["source"], n["reason"]) for n in read(out.with_name("manifest.not_converted.csv"))}
    assert reasons == {
        ("finding_annotations.csv row 2", "no calcification found by the detector inside the box"),
        ("finding_annotations.csv row 3", "not a calcification finding"),
        ("finding_annotations.csv row 4", "not a calcification finding"),
        ("finding_annotations.csv row 6", "calcification without a usable finding BI-RADS"),
        ("finding_annotations.csv row 7", "DICOM not found"),
        ("finding_annotations.csv row 8", "image size differs from the CSV's height/width"),
    }
    assert cli(["check-data", str(out), "--num_classes", "4"]) == 0


def test_detector_settings_reach_the_detector(vindr_folder, tmp_path):
    """Asking for specks of at least 0.5 mm drops the planted 0.2 mm ones: nothing is found."""
    src, _ = vindr_folder
    out = tmp_path / "manifest.csv"
    args = ["convert", "vindr-mammo", "--src", str(src), "--out", str(out), "--detector.min_speck_mm", "0.5"]
    assert cli(args) == 1
    assert not out.exists()


def test_finding_categories_parse_python_list_literals():
    assert vindr.categories({"finding_categories": "['Suspicious Calcification', 'Mass']"}) == [
        "Suspicious Calcification",
        "Mass",
    ]
    with pytest.raises(ValueError):
        vindr.categories({"finding_categories": "'Mass'"})


def test_validation_split_nan_boxes_and_unknown_splits_are_each_accounted_for(tmp_path):
    """The release's ``validation`` split becomes ``val`` (no extra val is then carved); a ``nan`` box coordinate
    and an unknown split are listed in the not-converted file with their rows, never abort nor vanish."""
    src = tmp_path / "vindr"
    pixels, _ = image_with_specks(np.random.default_rng(0))
    for study in ("st1", "st2", "st3"):
        write_dicom(src / "images" / study / f"{study}.dicom", pixels, bits_stored=12, window=(2200, 2000))
    box_a = (-3.25, 12.5, 45.75, 70.1)
    calc = ["Suspicious Calcification"]
    rows = [
        row("st1", "st1", calc, "BI-RADS 4", box_a),  # row 1: train
        row("st2", "st2", calc, "BI-RADS 4", box_a, split="validation"),  # row 2: val
        row("st3", "st3", calc, "BI-RADS 4", (float("nan"), 12.5, 45.75, 70.1), split="test"),  # row 3
        row("st3", "st3", calc, "BI-RADS 4", box_a, split="holdout"),  # row 4
        row("st3", "st3", calc, "BI-RADS 5", box_a, split="test"),  # row 5: test
    ]
    write_vindr_csv(src / "finding_annotations.csv", rows)
    out = tmp_path / "out" / "manifest.csv"
    assert cli(["convert", "vindr-mammo", "--src", str(src), "--out", str(out), "--val_fraction", "0.5"]) == 0
    assert [(r["patient_id"], r["split"]) for r in read(out)] == [("st1", "train"), ("st2", "val"), ("st3", "test")]
    skipped = {n["source"]: (n["reason"], n["detail"]) for n in read(out.with_name("manifest.not_converted.csv"))}
    assert set(skipped) == {"finding_annotations.csv row 3", "finding_annotations.csv row 4"}
    assert skipped["finding_annotations.csv row 3"][0] == "size or box coordinates are not numbers"
    assert "nan" in skipped["finding_annotations.csv row 3"][1]
    assert skipped["finding_annotations.csv row 4"] == (
        "unknown split (expected training, validation or test)",
        "'holdout'",
    )
