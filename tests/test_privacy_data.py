"""No identifying DICOM value reaches what the data tools write or print (issue #10, data side).

The synthetic DICOMs carry a canary identity (``CANARY_NAME``, PatientID and AccessionNumber with
``CANARY_MARKER``, a fake birth date); the factories' DICOMs carry ``CANARY^Patient^Zq7``, ``19700101`` and
``ACC-CANARY-1``. The needles are read back from the DICOMs themselves (``tests.privacy.identifying_values``), and
every file each tool writes (manifest, lesions.csv, masks, cache crops and index, not-converted lists) and every
line it prints or logs is searched for them. The bad-input corpus does the same for every error message
(``tests/test_bad_inputs.py``).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from birads_calc.cli import main as cli
from birads_calc.data.datamodule import BiradsDataModule
from birads_calc.data.synthetic import CANARY_MARKER, CANARY_NAME
from tests.adapters_fixtures import write_cbis_csv, write_tcia_case
from tests.privacy import IDENTIFYING_KEYWORDS, MIN_BINARY_NEEDLE, find_leaks, identifying_values

SYNTH = ["--patients", "3", "--seed", "3", "--image_size", "320", "256", "--pixel_spacing", "0.25", "--workers", "1"]


def test_find_leaks_finds_planted_values_in_any_encoding_and_case(tmp_path):
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "a.npy", np.frombuffer("xxCanary^Patientxx".encode("utf-16-le"), np.uint8))
    (tmp_path / "log.txt").write_text("loaded canary^patient from disk; id ab1\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01ab1\x02")  # short needle in binary data: not a finding
    (tmp_path / "input.dcm").write_bytes(b"\x00CANARY^PATIENT")
    found = find_leaks(["CANARY^Patient", "ab1"], tmp_path, texts=["ok", "user AB1"], exclude=["*.dcm"])
    assert sorted(found) == sorted(
        [
            f"{tmp_path / 'sub' / 'a.npy'}: CANARY^Patient",
            f"{tmp_path / 'log.txt'}: CANARY^Patient",
            f"{tmp_path / 'log.txt'}: ab1",
            "output 1: ab1",
        ]
    )
    assert len("ab1") < MIN_BINARY_NEEDLE
    with pytest.raises(ValueError):
        find_leaks([""], tmp_path)


def test_synth_check_data_prepare_and_loading_write_and_print_no_identifier(tmp_path, capsys, caplog):
    out = tmp_path / "synthetic"
    caplog.set_level(logging.DEBUG)
    texts = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli(["synth", "--out", str(out), *SYNTH]) == 0
        assert cli(["check-data", str(out / "manifest.csv")]) == 0
        assert cli(["prepare", str(out / "manifest.csv"), "--window", "96", "--stride", "48"]) == 0
        texts += capsys.readouterr()
        module = BiradsDataModule(
            out / "manifest.csv", window=96, stride=48, num_workers=0, batch_size=4, split_ratios=(1, 1, 1)
        )
        module.prepare_data()
        module.setup("fit")
        next(iter(module.train_dataloader()))
    texts += [str(w.message) for w in caught] + [caplog.text]

    dicoms = sorted(out.rglob("*.dcm"))
    needles = identifying_values(dicoms) | {CANARY_MARKER}
    assert {CANARY_NAME, "CANARY Patient Zq7"} <= needles and any(n.startswith("ACC") for n in needles)
    # positive control: the scanner does find the canary where it is (the input DICOMs)
    assert {f.split(": ")[0] for f in find_leaks(needles, out)} == {str(p) for p in dicoms}
    assert (out / ".birads_cache").is_dir() and (out / "lesions.csv").is_file()
    assert find_leaks(needles, out, texts, exclude=["images/*"]) == []


def test_convert_writes_and_prints_no_identifier_even_for_unreadable_dicoms(tmp_path, capsys):
    from birads_calc.data.adapters.cbis_ddsm import TRAIN_CSV

    src = tmp_path / "cbis"
    src.mkdir()
    cases = [
        dict(n=1, patient="P_00001", folder="Calc-Training_P_00001_LEFT_CC", abn=1, assessment=4, pathology="BENIGN"),
        dict(
            n=2, patient="P_00002", folder="Calc-Training_P_00002_LEFT_CC", abn=1, assessment=5, pathology="MALIGNANT"
        ),
    ]
    write_cbis_csv(src / TRAIN_CSV, cases)
    for case in cases:
        write_tcia_case(src, case, "csv")
    broken = next((src / "CBIS-DDSM" / cases[1]["folder"]).rglob("1-1.dcm"))
    broken.write_bytes(broken.read_bytes()[:-500])  # a truncated download: its error lands in the report
    dicoms = sorted(src.rglob("*.dcm"))
    # PatientID holds the public CBIS-DDSM case name, which the manifest is meant to carry; the rest must not leak
    needles = identifying_values(dicoms, [k for k in IDENTIFYING_KEYWORDS if k != "PatientID"])
    assert {"CANARY^Patient^Zq7", "19700101", "ACC-CANARY-1"} <= needles

    out = tmp_path / "out" / "manifest.csv"
    assert cli(["convert", "cbis-ddsm", "--src", str(src), "--out", str(out), "--val_fraction", "0"]) == 0
    printed = capsys.readouterr()
    report = out.with_name("manifest.not_converted.csv").read_text()
    assert "truncated" in report  # the unreadable DICOM was reported, with its reason ...
    assert find_leaks(needles, out.parent, [printed.out, printed.err]) == []  # ... and nothing identifying
