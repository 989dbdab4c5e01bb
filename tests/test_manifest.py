"""Manifest reading and validation: every planted problem reported at once with its row, and check-data."""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from birads_calc.cli import main as cli_main
from birads_calc.data.manifest import ManifestError, SkippedRowsWarning, read_manifest
from tests.factories import disc, make_tiny_dataset, write_dicom, write_manifest, write_mask

SIZE = 64


def good_row(root: Path, name: str, patient: str, birads: str = "4A", **extra) -> dict:
    """Write a valid 64x64 DICOM + disc mask and return its manifest row. Each image is its own (the lesion's
    brightness follows the name): identical pixels under two patients would be reported as one image."""
    stored = np.full((SIZE, SIZE), 1000)
    stored[disc((SIZE, SIZE), (30, 30), 4)] = 2000 + zlib.crc32(name.encode()) % 2000
    write_dicom(root / f"{name}.dcm", stored, bits_stored=12)
    write_mask(root / f"{name}.png", disc((SIZE, SIZE), (30, 30), 4))
    return {"patient_id": patient, "image": f"{name}.dcm", "mask": f"{name}.png", "birads": birads, **extra}


def bad_manifest(root: Path) -> tuple[Path, dict[int, str]]:
    """A manifest with one planted problem per row (rows 2..N) after a good row 1; returns {row: column}."""
    rows, planted = [good_row(root, "ok", "P0", pathology="benign")], {}

    def plant(column: str, row: dict):
        rows.append(row)
        planted[len(rows)] = column

    plant("image", {**good_row(root, "a", "P1"), "image": "nowhere.dcm"})
    (root / "text.dcm").write_text("not a dicom")
    plant("image", {**good_row(root, "b", "P2"), "image": "text.dcm"})
    good = root / "a.dcm"
    (root / "trunc.dcm").write_bytes(good.read_bytes()[: good.stat().st_size - 500])
    plant("image", {**good_row(root, "c", "P3"), "image": "trunc.dcm"})
    write_dicom(root / "multi.dcm", np.zeros((SIZE, SIZE)), bits_stored=12, frames=2)
    plant("image", {**good_row(root, "d", "P4"), "image": "multi.dcm"})
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(root / "nopix.dcm")
    plant("image", {**good_row(root, "e", "P5"), "image": "nopix.dcm"})
    write_mask(root / "small.png", disc((32, 32), (10, 10), 3))
    plant("mask", {**good_row(root, "f", "P6"), "mask": "small.png"})
    write_mask(root / "empty.png", np.zeros((SIZE, SIZE), bool))
    plant("mask", {**good_row(root, "g", "P7"), "mask": "empty.png"})
    Image.fromarray(np.arange(SIZE * SIZE, dtype=np.uint8).reshape(SIZE, SIZE)).save(root / "gray.png")
    plant("mask", {**good_row(root, "h", "P8"), "mask": "gray.png"})
    for i, label in enumerate(["0", "1", "6", "4", "7b", ""]):
        plant("birads", good_row(root, f"lab{i}", f"L{i}", birads=label))
    plant("pathology", good_row(root, "i", "P9", pathology="maybe"))
    plant("mask", dict(rows[0]))  # duplicate of row 1
    plant("image", {**good_row(root, "j", "P10"), "image": "../outside.dcm"})
    plant("patient_id", {**good_row(root, "k", "P11"), "patient_id": ""})
    rows.append(good_row(root, "s1", "PS", split="train"))
    plant("split", good_row(root, "s2", "PS", split="test"))
    planted[len(rows) - 1] = "split"  # both rows of the patient in two splits are reported
    plant("split", good_row(root, "s3", "PT", split="holdout"))
    for row in rows:  # the manifest uses splits, so every row needs one
        row.setdefault("split", "train")
    return write_manifest(root / "manifest.csv", rows), planted


def test_clean_manifest_reads_every_field(tmp_path):
    manifest = make_tiny_dataset(tmp_path, patients=3, lesions_per_image=2, size=64)
    lesions = read_manifest(manifest)
    assert [x.row for x in lesions] == [1, 2, 3, 4, 5, 6]
    assert [x.label for x in lesions] == [0, 1, 2, 3, 4, 5]  # 2, 3, 4A, 4B, 4C, 5 cycled by the factory
    assert [x.malignancy for x in lesions] == [0.0, 0.5, 0.5, 0.5, 1.0, 1.0]
    first = lesions[0]
    assert first.image == tmp_path / "images" / "P000_0.dcm" and first.image.is_absolute()
    assert (first.patient_id, first.lesion_id, first.laterality, first.view, first.split) == (
        "P000", "P000_0_0", "L", "CC", "")  # fmt: skip


def test_bad_manifest_reports_every_planted_problem(tmp_path):
    manifest, planted = bad_manifest(tmp_path)
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    problems = caught.value.problems
    found = {(p.row, p.column) for p in problems}
    for row, column in planted.items():
        assert (row, column) in found, f"row {row} ({column}) not reported; got {sorted(found, key=str)}"
    assert not any(p.row == 1 for p in problems)  # the good row is not blamed
    assert {p.row for p in problems} == set(planted)
    text = str(caught.value)
    for fragment in ["row 2 (line 3), column 'image'", "file not found",
                     "not a DICOM", "truncated", "multi-frame", "no PixelData", "mask is 32x32 but the image is 64x64",
                     "mask is empty", "not binary", "'0' (incomplete)", "has no subcategory", "missing BI-RADS label",
                     "unknown pathology", "duplicate of row 1", "escapes the manifest's folder",
                     "has rows in 2 splits", "unknown split 'holdout'"]:  # fmt: skip
        assert fragment in text, fragment
    assert str(tmp_path / "small.png") in text and str(tmp_path / "trunc.dcm") in text


def test_skip_bad_rows_keeps_the_good_ones_and_says_why(tmp_path):
    manifest, planted = bad_manifest(tmp_path)
    with pytest.warns(SkippedRowsWarning, match=rf"skipped {len(planted)} bad row\(s\)"):
        lesions = read_manifest(manifest, skip_bad_rows=True)
    assert [x.row for x in lesions] == [1]


def test_manifest_level_problems(tmp_path):
    write_manifest(tmp_path / "empty.csv", [])
    with pytest.raises(ManifestError, match="no data rows"):
        read_manifest(tmp_path / "empty.csv")
    write_manifest(tmp_path / "nocol.csv", [{"patient_id": "P"}], columns=["patient_id", "image", "birads"])
    with pytest.raises(ManifestError, match="missing required column 'mask'"):
        read_manifest(tmp_path / "nocol.csv")
    with pytest.raises(ManifestError, match="manifest file not found"):
        read_manifest(tmp_path / "absent.csv")


def test_labels_optional_for_prediction_and_absolute_paths(tmp_path):
    row = good_row(tmp_path / "data", "x", "P0", birads="")
    row["image"] = str(tmp_path / "data" / "x.dcm")  # absolute paths are allowed
    manifest = write_manifest(tmp_path / "data" / "m.csv", [row], columns=["patient_id", "image", "mask", "birads"])
    with pytest.raises(ManifestError, match="missing BI-RADS label"):
        read_manifest(manifest)
    lesions = read_manifest(manifest, require_labels=False)
    assert lesions[0].label is None and lesions[0].malignancy == 0.5
    no_label_column = write_manifest(tmp_path / "data" / "n.csv", [row], columns=["patient_id", "image", "mask"])
    assert read_manifest(no_label_column, require_labels=False)[0].label is None
    with pytest.raises(ManifestError, match="missing column 'birads'"):
        read_manifest(no_label_column)


def test_four_class_scale(tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", [good_row(tmp_path, "x", "P0", birads="BI-RADS 4")])
    assert read_manifest(manifest, num_classes=4)[0].label == 2
    with pytest.raises(ManifestError, match="no subcategory"):
        read_manifest(manifest, num_classes=6)


def test_check_data_command(tmp_path, capsys):
    manifest = make_tiny_dataset(tmp_path / "clean", patients=3, size=64)
    assert cli_main(["check-data", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "6 / 3 / 3" in out and "4A" in out and "malignant" in out
    bad, planted = bad_manifest(tmp_path / "bad")
    assert cli_main(["check-data", str(bad)]) == 2
    out = capsys.readouterr().out
    assert f"{len(planted)} problem(s) in {len(planted)} row(s)" in out
    for row in planted:
        assert f"row {row} (line {row + 1})" in out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning noise on a clean run
        assert cli_main(["check-data", str(manifest), "--labels", "optional"]) == 0


# -- one mammogram under two patients, classes the scale misses, UTF-16 (issue 23) ---------------------------------
def _image(root: Path, name: str, seed: int, patient: str = "P", size: int = SIZE) -> Path:
    stored = np.random.default_rng(seed).integers(500, 3500, (size, size))
    return write_dicom(root / f"{name}.dcm", stored, bits_stored=12, patient_id=patient)


def _rows(root: Path, images: list[tuple[str, str]]) -> Path:
    """A manifest of (patient, image name) rows, each with its own disc mask."""
    rows = []
    for k, (patient, name) in enumerate(images):
        write_mask(root / f"m{k}.png", disc((SIZE, SIZE), (10 + 4 * k, 30), 3))
        rows.append({"patient_id": patient, "image": f"{name}.dcm", "mask": f"m{k}.png", "birads": "3"})
    return write_manifest(root / "manifest.csv", rows)


def test_an_image_listed_under_two_patients_is_reported_on_every_row_of_both(tmp_path):
    _image(tmp_path, "a", 0)
    _image(tmp_path, "b", 1)
    manifest = _rows(tmp_path, [("P1", "a"), ("P1", "a"), ("P2", "b"), ("P3", "a")])  # rows 1-2: two lesions of P1
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    problems = {p.row: p for p in caught.value.problems}
    assert sorted(problems) == [1, 2, 4]  # row 3 (another image) is not blamed
    assert "image is also listed under patient 'P3' (row 4)" in problems[1].message
    assert "image is also listed under patient 'P1' (rows 1, 2)" in problems[4].message
    assert problems[4].file == tmp_path / "a.dcm" and problems[4].column == "image"
    # the same check needs no file access: the data module's reading of the manifest (check_files=False) has it
    with pytest.raises(ManifestError, match="also listed under"):
        read_manifest(manifest, check_files=False)
    kept = read_manifest(manifest, skip_bad_rows=True)  # skip_bad_rows leaves every row of that image out
    assert [x.row for x in kept] == [3]


def test_a_copy_of_an_image_under_another_patient_is_found_by_its_pixels(tmp_path):
    _image(tmp_path, "a", 0, patient="P1")
    _image(tmp_path, "copy", 0, patient="P2")  # the same pixels exported again, another header and name
    _image(tmp_path, "other", 1, patient="P2")
    _image(tmp_path, "own_copy", 1, patient="P2")  # a copy within one patient: no leak, not reported
    manifest = _rows(tmp_path, [("P1", "a"), ("P2", "copy"), ("P2", "other"), ("P2", "own_copy")])
    with pytest.raises(ManifestError) as caught:
        read_manifest(manifest)
    problems = {p.row: p for p in caught.value.problems}
    assert sorted(problems) == [1, 2]
    assert f"same pixel data as the image of patient 'P2' (row 2, {tmp_path / 'copy.dcm'})" in problems[1].message
    assert problems[2].file == tmp_path / "copy.dcm"
    assert len(read_manifest(manifest, check_files=False)) == 4  # pixels are compared only where files are read


def test_images_that_differ_in_one_unsampled_pixel_are_not_taken_for_copies(tmp_path):
    stored = np.random.default_rng(0).integers(500, 3500, (256, 256))
    write_dicom(tmp_path / "a.dcm", stored, bits_stored=12)
    stored.flat[5000] += 1  # byte 10000 of 131072: between two of the sampled chunks
    write_dicom(tmp_path / "b.dcm", stored, bits_stored=12)
    rows = [
        {"patient_id": p, "image": f"{n}.dcm", "mask": f"{n}.png", "birads": "3"} for p, n in (("P1", "a"), ("P2", "b"))
    ]
    for name in ("a", "b"):
        write_mask(tmp_path / f"{name}.png", disc((256, 256), (100, 100), 5))
    assert len(read_manifest(write_manifest(tmp_path / "m.csv", rows))) == 2


def test_coverage_problem_names_the_missing_classes_with_the_counts(tmp_path):
    from birads_calc.data.manifest import coverage_problem

    lesions = read_manifest(make_tiny_dataset(tmp_path, patients=3, size=64), check_files=False)
    assert coverage_problem(lesions, 6) is None  # the factory cycles through all six classes
    two_classes = [x for x in lesions if x.label in (0, 1)]
    assert coverage_problem(two_classes, 6) == (
        "the manifest has no lesion of BI-RADS 4A, 4B, 4C, 5 (4 of the 6 classes of the scale; lesions per class: "
        "2: 1, 3: 1): a model trained on it never predicts those classes"
    )
    unlabelled = read_manifest(make_tiny_dataset(tmp_path / "u", patients=1, size=64, labels=False),
                               require_labels=False)  # fmt: skip
    assert coverage_problem(unlabelled, 6) is None  # a manifest for predict: nothing to cover


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_manifest_is_named_as_such(tmp_path, encoding):
    path = write_manifest(tmp_path / "m.csv", [good_row(tmp_path, "x", "P0")])
    path.write_bytes(path.read_text().encode(encoding))  # with a BOM (utf-16) or without one (-le, -be)
    with pytest.raises(ManifestError, match="is UTF-16 text"):
        read_manifest(path)
