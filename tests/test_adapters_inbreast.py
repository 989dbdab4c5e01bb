"""INbreast adapter on a small folder generated in the documented formats (table, OsiriX plist, DICOM names)."""

import csv

import numpy as np
import pytest

from birads_calc.cli import main as cli
from birads_calc.data.adapters import inbreast
from birads_calc.data.masks import read_mask
from tests.adapters_fixtures import write_inbreast_csv, write_inbreast_plist
from tests.factories import disc, write_dicom

SHAPE = (80, 60)


@pytest.fixture
def inbreast_folder(tmp_path):
    src = tmp_path / "INbreast"
    dicoms = src / "AllDICOMs"
    for name, patient, side, view in [
        ("22678622", "6c613a14b80a8591", "R", "CC"),
        ("22678646", "6c613a14b80a8591", "R", "ML"),
        ("30011674", "8d0b9620c53c0268", "L", "CC"),
        ("51049107", "36ad16d5c4bf2d76", "L", "CC"),
    ]:
        write_dicom(dicoms / f"{name}_{patient}_MG_{side}_{view}_ANON.dcm", np.zeros(SHAPE), pixel_spacing=(0.07, 0.07))
    xml = src / "AllXML"
    write_inbreast_plist(
        xml / "22678622.xml",
        [
            ("Calcification", [(10.5, 20.2)]),  # a single point: a disc
            ("Calcification", [(30, 5), (40, 5), (40, 15), (30, 15)]),  # a contour: filled
            ("Mass", [(1, 1), (5, 1), (5, 5)]),
            ("Cluster", [(2, 2), (50, 2), (50, 50)]),
        ],
    )
    write_inbreast_plist(xml / "22678646.xml", [("Calcification", [(12.0, 60.0)])])
    write_inbreast_plist(xml / "30011674.xml", [("Calcification", [(5.0, 5.0)]), ("Calcification", [(9.0, 9.0)])])
    write_inbreast_plist(xml / "99999999.xml", [("Calcification", [(5.0, 5.0)])])  # no table row
    write_inbreast_csv(
        src / "INbreast.csv",
        [
            ("R", "CC", "22678622", "4a"),
            ("R", "MLO", "22678646.0", " 5 "),  # spreadsheet float and stray spaces, as the xls holds them
            ("L", "CC", "30011674", "6"),  # known cancer: left out
            ("L", "CC", "51049107", "1"),  # negative, no XML
            ("", "", "", ""),  # the blank row before the totals
        ],
    )
    return src


def read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_inbreast_rois_become_masks_with_the_image_birads(inbreast_folder, tmp_path, capsys):
    out = tmp_path / "out" / "manifest.csv"
    assert cli(["convert", "inbreast", "--src", str(inbreast_folder), "--out", str(out)]) == 0
    rows = {r["lesion_id"]: r for r in read(out)}
    assert set(rows) == {"22678622_1", "22678622_2", "22678646_1"}
    point = read_mask(out.parent / rows["22678622_1"]["mask"])
    np.testing.assert_array_equal(point, disc(SHAPE, (20.2, 10.5), 3))  # default radius 3 px, (x, y) -> (col, row)
    contour = read_mask(out.parent / rows["22678622_2"]["mask"])
    expected = np.zeros(SHAPE, bool)
    expected[5:16, 30:41] = True  # the square with corners (x 30..40, y 5..15), edges included
    np.testing.assert_array_equal(contour, expected)
    assert [rows[k]["birads"] for k in sorted(rows)] == ["4A", "4A", "5"]
    assert {r["patient_id"] for r in rows.values()} == {"6c613a14b80a8591"}
    assert rows["22678646_1"]["view"] == "MLO" and rows["22678622_1"]["laterality"] == "R"
    assert all(r["pathology"] == "" and r["image"].startswith("/") for r in rows.values())
    reasons = {(r["source"], r["reason"]) for r in read(out.with_name("manifest.not_converted.csv"))}
    assert reasons == {
        ("22678622.xml ROI 3", "ROI 'Mass' is not a calcification"),
        ("22678622.xml ROI 4", "ROI 'Cluster' is not a calcification"),
        ("30011674.xml ROI 1", "image BI-RADS 6 (known cancer)"),
        ("30011674.xml ROI 2", "image BI-RADS 6 (known cancer)"),
        ("INbreast.csv row 4", "image without XML ROI file (nothing annotated)"),
        ("INbreast.csv row 5", "table row without File Name (blank or totals row)"),
        (str(inbreast_folder / "AllXML" / "99999999.xml"), "XML ROI file without a table row"),
    }
    assert "image BI-RADS 6 (known cancer): 2" in capsys.readouterr().out
    assert cli(["check-data", str(out), "--num_classes", "6"]) == 0


def test_point_radius_option_sets_the_disc(inbreast_folder, tmp_path):
    out = tmp_path / "manifest.csv"
    assert cli(["convert", "inbreast", "--src", str(inbreast_folder), "--out", str(out), "--point_radius", "1.5"]) == 0
    row = next(r for r in read(out) if r["lesion_id"] == "22678646_1")
    np.testing.assert_array_equal(read_mask(tmp_path / row["mask"]), disc(SHAPE, (60.0, 12.0), 1.5))


def test_missing_dicom_and_bad_plist_are_reported(inbreast_folder, tmp_path):
    next((inbreast_folder / "AllDICOMs").glob("22678646_*")).unlink()
    (inbreast_folder / "AllXML" / "22678622.xml").write_text("<plist><dict><key>Images</key>")  # truncated
    result = inbreast.convert(inbreast_folder, tmp_path / "m.csv")
    assert result.rows == []
    reasons = {n.reason for n in result.not_converted}
    assert {"DICOM not found", "unreadable XML ROI file"} <= reasons
    bad = next(n for n in result.not_converted if n.reason == "unreadable XML ROI file")
    assert "22678622.xml" in bad.detail


def test_table_missing_columns_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "INbreast.csv").write_text("a;b\n1;2\n")
    assert cli(["convert", "inbreast", "--src", str(tmp_path), "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err
    assert "INbreast.csv" in err and "File Name" in err and "Traceback" not in err
