"""``predict --dicom_dir``: DICOM studies from a folder, results as a SEG and a TID 1500 SR (tiny model, CPU).

The references are independent of the code under test: the synthetic manifest (which mask belongs to which
image), predictions.csv / breasts.csv (written by the reporting stage), highdicom's SR/SEG parsers and dciodvfy.
"""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from clinical_helpers import (
    CONFIG,
    breast_findings,
    dciodvfy_errors,
    fit_tiny,
    read_csv,
    segment_of_frame,
    sr_findings,
    synthetic_studies,
)
from privacy import find_leaks, identifying_values
from training_helpers import single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.clinical.codes import BIRADS_CODES
from birads_calc.data.manifest import read_manifest
from birads_calc.data.masks import read_mask

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return fit_tiny(tmp_path_factory.mktemp("clinical"))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """(folder of one synthetic study + its reader's SEGs, the synthetic manifest)."""
    root = tmp_path_factory.mktemp("study")
    manifest = synthetic_studies(root)
    return root / "dicom", manifest


def predict(runs: Path, *args: str) -> int:
    return main(["predict", "--config", str(CONFIG), "--runs_root", str(runs), "--overlay_size", "96", *args])


def test_dicom_dir_rates_every_seg_region_and_writes_a_valid_sr_and_seg(trained, study, tmp_path, capfd):
    runs, best = trained
    folder, manifest = study
    out = tmp_path / "out"
    assert predict(runs, "--dicom_dir", str(folder), "--predict_dir", str(out)) == 0
    err = capfd.readouterr().err
    assert f"newest best checkpoint of config 'proposed': {best}" in err and "Traceback" not in err

    rows = read_csv(out / "predictions.csv")
    lesions = read_manifest(manifest, require_labels=False)
    assert len(rows) == len(lesions)  # every reader segment rated once
    assert {r["patient_id"] for r in rows} == {"study-1"} and all(r["birads_pred"] in BIRADS_CODES for r in rows)

    sr_path, seg_paths = out / "dicom" / "study-1" / "sr.dcm", sorted((out / "dicom" / "study-1").glob("seg-*.dcm"))
    sr = pydicom.dcmread(sr_path)
    segs = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, seg_paths)}
    images = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, folder.rglob("S*.dcm"))}
    assert len(segs) == len({ds.SeriesInstanceUID for ds in images.values()})  # one SEG per series of images
    # they belong to the patient's study: same study, same patient module
    source = next(iter(images.values()))
    for ds in [sr, *segs.values()]:
        assert (ds.StudyInstanceUID, ds.PatientName, ds.PatientID) == (
            source.StudyInstanceUID, source.PatientName, source.PatientID
        )  # fmt: skip
        assert ds.ContentQualification == "RESEARCH" and "NOT FOR CLINICAL USE" in ds.SeriesDescription

    # every region: the SR's category and risk are predictions.csv's; its SEG frame is the reader's mask
    findings = sr_findings(sr)
    assert sorted(findings) == sorted(r["lesion_id"] for r in rows)
    masks = {(m.image.name, m.lesion_id): read_mask(m.mask) for m in lesions}
    for row in rows:
        finding = findings[row["lesion_id"]]
        assert finding["birads_pred"] == row["birads_pred"] and finding["risk"] == float(row["risk"])
        label, mask = segment_of_frame(segs[finding["seg"]], finding["frame"])
        assert label == row["lesion_id"]
        image = images[finding["image"]]
        assert image.ImageLaterality == row["laterality"]
        expected = [m for (name, _), m in masks.items() if Path(image.filename).name == name]
        assert any(np.array_equal(mask, m) for m in expected)  # the region is one of that image's reader masks
    breasts = read_csv(out / "breasts.csv")
    names = {"L": "left breast: highest category", "R": "right breast: highest category"}
    assert breast_findings(sr) == {names[b["laterality"]]: b["birads_max"] for b in breasts}

    texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]  # algorithm name and parameters
    assert f"checkpoint {best}" in texts and any("NOT FOR CLINICAL USE" in t for t in texts)
    for path in [sr_path, *seg_paths]:
        assert dciodvfy_errors(path) == [], path


def test_no_identifying_field_outside_the_dicom_results(trained, study, tmp_path, capfd):
    runs, _ = trained
    folder, _ = study
    needles = identifying_values(folder.rglob("S*.dcm"))
    assert any("CANARY" in n for n in needles)
    capfd.readouterr()
    assert predict(runs, "--dicom_dir", str(folder), "--predict_dir", str(tmp_path / "out")) == 0
    logs = capfd.readouterr()
    assert find_leaks(needles, tmp_path / "out", [logs.out, logs.err], exclude=["dicom/*/*.dcm"]) == []
    assert find_leaks(needles, runs) == []  # nothing beside the run either (the DICOM path sends nothing to W&B)
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) > 0
    # and the DICOM results do carry them: they file into the patient's study
    assert find_leaks(needles, tmp_path / "out" / "dicom") != []


def test_detect_rates_the_detectors_regions_when_the_study_has_no_seg(trained, study, tmp_path, capfd):
    runs, _ = trained
    folder, _ = study
    images = tmp_path / "images"
    shutil.copytree(folder, images, ignore=shutil.ignore_patterns("seg-*.dcm"))  # the study without its SEG
    assert predict(runs, "--dicom_dir", str(images), "--predict_dir", str(tmp_path / "out")) == 2
    err = capfd.readouterr().err
    assert "study-1" in err and "has no DICOM SEG" in err and "--detect" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written

    assert predict(runs, "--dicom_dir", str(images), "--predict_dir", str(tmp_path / "out"), "--detect", "true") == 0
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    sr = pydicom.dcmread(tmp_path / "out" / "dicom" / "study-1" / "sr.dcm")
    findings = sr_findings(sr)
    assert rows and sorted(findings) == sorted(r["lesion_id"] for r in rows)
    for row in rows:
        assert (findings[row["lesion_id"]]["birads_pred"], findings[row["lesion_id"]]["risk"]) == (
            row["birads_pred"], float(row["risk"])
        )  # fmt: skip
    for path in (tmp_path / "out" / "dicom" / "study-1").glob("seg-*.dcm"):
        seg = pydicom.dcmread(path)
        assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
        assert dciodvfy_errors(path) == []


def test_bad_studies_get_one_message_naming_the_study_and_nothing_is_written(trained, study, tmp_path, capfd):
    runs, _ = trained
    folder, _ = study
    out = tmp_path / "out"

    def refused(source: Path, *expected: str) -> None:
        capfd.readouterr()
        assert predict(runs, "--dicom_dir", str(source), "--predict_dir", str(out)) == 2
        err = capfd.readouterr().err
        assert all(text in err for text in expected) and "Traceback" not in err, err
        assert not out.exists()

    # only "for processing" mammograms
    processing = tmp_path / "processing"
    for path in folder.rglob("S*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PresentationIntentType = "FOR PROCESSING"
        (processing / path.name).parent.mkdir(exist_ok=True)
        ds.save_as(processing / path.name)
    refused(processing, "study-1", "only 'for processing'")
    # no mammogram at all (the SEGs alone)
    segs_only = tmp_path / "segs"
    shutil.copytree(folder, segs_only, ignore=shutil.ignore_patterns("S*.dcm"))
    refused(segs_only, "study-1", "no mammogram")
    # a SEG drawn on images of another size (same UIDs: the synthetic UIDs depend on the seed only)
    other = tmp_path / "other"
    synthetic_studies(other, shape=(192, 160))
    mismatched = tmp_path / "mismatched"
    shutil.copytree(other / "dicom", mismatched, ignore=shutil.ignore_patterns("seg-*.dcm"))
    for path in folder.glob("seg-*.dcm"):
        shutil.copy(path, mismatched / path.name)
    refused(mismatched, "study-1", "SEG's frames are 256x208", "192x160")
    # a study that is not in the folder, and a folder that does not exist
    capfd.readouterr()
    assert predict(runs, "--dicom_dir", str(folder), "--study", "1.2.3.4", "--predict_dir", str(out)) == 2
    assert "study 1.2.3.4 not found" in capfd.readouterr().err
    refused(tmp_path / "missing", "no such folder")


def test_a_study_where_the_detector_finds_nothing_is_named_and_left_out(trained, study, tmp_path, capfd):
    runs, _ = trained
    folder, manifest = study
    both = tmp_path / "both"
    shutil.copytree(folder, both)
    source = pydicom.dcmread(next(folder.rglob("S*.dcm")))
    blank = pydicom.dcmread(source.filename)  # a second study: one empty (all-air) mammogram, no SEG
    blank.StudyInstanceUID, blank.SeriesInstanceUID, blank.SOPInstanceUID = (pydicom.uid.generate_uid() for _ in "abc")
    blank.file_meta.MediaStorageSOPInstanceUID = blank.SOPInstanceUID
    # a faint smooth gradient: nothing to detect, yet not one value throughout (read_image refuses a blank image)
    air = np.tile(np.linspace(0, 40, blank.Columns), (blank.Rows, 1)).astype(np.uint16)
    blank.PixelData = air.tobytes()
    blank.save_as(both / "blank.dcm")
    uids = sorted([str(source.StudyInstanceUID), str(blank.StudyInstanceUID)])  # study-N: the folder's UID order
    key = f"study-{uids.index(str(blank.StudyInstanceUID)) + 1}"

    capfd.readouterr()
    assert predict(runs, "--dicom_dir", str(both), "--predict_dir", str(tmp_path / "out"), "--detect", "true") == 0
    err = capfd.readouterr().err
    assert f"{key}: the detector found no calcification region" in err
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert rows and key not in {r["patient_id"] for r in rows}  # the other study is rated from its SEG
    assert len(rows) == len(read_manifest(manifest, require_labels=False))
    assert sorted(p.name for p in (tmp_path / "out" / "dicom").iterdir()) == sorted({r["patient_id"] for r in rows})
