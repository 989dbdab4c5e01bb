"""``birads-calc convert``: format registry, options from the adapters' signatures, summary, shared helpers."""

import pytest

from birads_calc.cli import main as cli
from birads_calc.data.adapters import FORMATS, Conversion, ConversionError, carve_validation, manifest_path, summary


def test_help_lists_every_format(capsys):
    with pytest.raises(SystemExit) as info:
        cli(["convert", "--help"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in FORMATS)


def test_format_options_come_from_the_adapter_signature(capsys):
    with pytest.raises(SystemExit):
        cli(["convert", "mini-mias", "--help"])
    printed = capsys.readouterr().out
    for option in ("--src", "--out", "--detector.max_speck_mm", "--detector.k", "largest calcification kept"):
        assert option in printed


def test_missing_source_folder_is_a_clear_error(tmp_path, capsys):
    for name in FORMATS:
        assert cli(["convert", name, "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "m.csv")]) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / "nope") in err and "Traceback" not in err


def test_summary_groups_by_reason_with_counts_most_frequent_first(tmp_path):
    result = Conversion(rows=[{"patient_id": "a", "split": "train"}, {"patient_id": "b", "split": "test"}])
    for n in range(5):
        result.skip(f"f.csv row {n}", "BI-RADS 0 (incomplete assessment)")
    result.skip("f.csv row 9", "mask not found")
    text = summary("demo", result, tmp_path / "m.csv", tmp_path / "m.not_converted.csv").splitlines()
    assert text[0].startswith("convert demo: 2 rows written") and "2 patients; split: test 1, train 1" in text[0]
    assert "not converted: 6" in text[1]
    assert text[2].startswith(
        "  BI-RADS 0 (incomplete assessment): 5  (e.g. f.csv row 0; f.csv row 1; f.csv row 2, ..."
    )
    assert text[3] == "  mask not found: 1  (e.g. f.csv row 9)"


def test_carve_validation_moves_whole_training_patients_reproducibly():
    rows = [{"patient_id": f"P{p}", "split": "train"} for p in range(20) for _ in range(3)]
    rows += [{"patient_id": "T1", "split": "test"}]
    first = [dict(r) for r in rows]
    carve_validation(first, 0.25, seed=7)
    again = [dict(r) for r in rows]
    carve_validation(again, 0.25, seed=7)
    assert first == again
    val = {r["patient_id"] for r in first if r["split"] == "val"}
    assert len(val) == 5
    assert all(r["split"] == "val" for r in first if r["patient_id"] in val)  # whole patients only
    assert first[-1]["split"] == "test"
    with pytest.raises(ConversionError, match="val_fraction"):
        carve_validation(first, 1.0, seed=0)


def test_manifest_paths_relative_under_the_manifest_folder_else_absolute(tmp_path):
    assert manifest_path(tmp_path / "out" / "masks" / "a.png", tmp_path / "out") == "masks/a.png"
    assert manifest_path(tmp_path / "download" / "a.dcm", tmp_path / "out") == str(tmp_path / "download" / "a.dcm")
