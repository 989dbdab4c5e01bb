"""``predict --dicom_dir``: DICOM studies from a folder, results as SEGs and a TID 1500 SR (tiny model, CPU).

The references are independent of the code under test: the synthetic manifest (which mask belongs to which
image), predictions.csv / breasts.csv (written by the reporting stage), highdicom's SR/SEG parsers, dciodvfy, the SR
reader OHIF uses (``@cornerstonejs/adapters``, run by node), the detector run on its own, and the images' own
headers (spacing).
"""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from clinical_helpers import (
    CONFIG,
    breast_findings,
    check_every_sr,
    dciodvfy_problems,
    fit_tiny,
    read_csv,
    seg_segments,
    sr_findings,
    synthetic_studies,
    viewer_measurements,
)
from privacy import find_leaks, identifying_values
from training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.clinical.codes import BIRADS_CODES, CLUSTER, DETECTOR_FAMILY
from birads_calc.data.dicom import read_image
from birads_calc.data.manifest import read_manifest
from birads_calc.data.masks import read_mask
from birads_calc.detection import detect_image
from birads_calc.training.checkpoints import training_spacing

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


def check_viewer_reads(sr_path: Path, images, rows) -> None:
    """OHIF's SR reader turns every region into a rectangle on its image, labelled with its BI-RADS category."""
    findings = sr_findings(pydicom.dcmread(sr_path))
    measurements = viewer_measurements(sr_path, images)
    assert len(measurements) == len(rows)  # the breast groups carry no coordinates: not measurements
    by_label = {m["label"]: m for m in measurements}
    for row in rows:
        finding = findings[row["lesion_id"]]
        m = by_label[finding["comment"]]  # the viewer's label is the group's comment
        assert m["tool"] == "RectangleROI" and m["image"] == finding["image"]
        assert f"BI-RADS {row['birads_pred']} " in m["label"]
        corners = np.asarray(m["points"])
        assert np.allclose(corners.min(0), finding["box"].min(0)) and np.allclose(corners.max(0), finding["box"].max(0))


def test_dicom_dir_writes_a_seg_per_image_and_a_viewer_ready_sr(trained, study, tmp_path, capfd):
    runs, best = trained
    folder, manifest = study
    out = tmp_path / "out"
    args = ["--dicom_dir", str(folder), "--predict_dir", str(out), "--evaluate_checkpoint", "best", "--cad_sr"]
    assert predict(runs, *args) == 0
    err = capfd.readouterr().err
    assert f"newest best checkpoint of config 'proposed': {best}" in err and "Traceback" not in err

    rows = read_csv(out / "predictions.csv")
    lesions = read_manifest(manifest, require_labels=False)
    assert len(rows) == len(lesions)  # every reader segment rated once
    assert {r["patient_id"] for r in rows} == {"study-1"} and all(r["birads_pred"] in BIRADS_CODES for r in rows)
    assert read_csv(out / "studies.csv") == [
        {"study": "study-1", "status": "written", "reason": f"6 DICOM object(s) in {out / 'dicom' / 'study-1'}",
         "objects_stored": "0", "exit_code": "0"}
    ]  # fmt: skip

    results = out / "dicom" / "study-1"
    sr_path, seg_paths = results / "sr.dcm", sorted(results.glob("seg-*.dcm"))
    sr, segs = pydicom.dcmread(sr_path), [pydicom.dcmread(p) for p in seg_paths]
    images = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, folder.rglob("S*.dcm"))}
    assert len(segs) == len(images) and len({ds.SeriesInstanceUID for ds in segs}) == 1  # a SEG per image, one series
    source = next(iter(images.values()))
    for ds in [sr, *segs]:  # they file into the patient's study
        assert (ds.StudyInstanceUID, ds.PatientName, ds.PatientID) == (
            source.StudyInstanceUID, source.PatientName, source.PatientID
        )  # fmt: skip
        assert ds.ContentQualification == "RESEARCH" and "NOT FOR CLINICAL USE" in ds.SeriesDescription
        assert int(ds.SeriesNumber) > 9100
    for seg in segs:  # Pixel Measures from the image
        image = images[seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID]
        measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        assert [float(v) for v in measures.PixelSpacing] == [float(v) for v in image.PixelSpacing]

    # every region: the SR's category and risk are predictions.csv's; its rectangle encloses the reader's mask on
    # its image; its SEG segment (same tracking UID) is that mask, coded as a calcification cluster of that breast
    findings, segments = sr_findings(sr), seg_segments(segs)
    masks = {m.lesion_id: read_mask(m.mask) for m in lesions}
    assert len(findings) == len(rows) == len(segments)
    for row in rows:
        finding = findings[row["lesion_id"]]
        segment = segments[finding["tracking_uid"]]
        assert finding["birads_pred"] == row["birads_pred"] and finding["risk"] == pytest.approx(float(row["risk"]))
        assert finding["certainty"] is None and finding["comment"].startswith(f"{segment['label']} (")
        assert segment["label"] == finding["label"] in masks  # the reader's label kept, in the SEG and the SR
        assert np.array_equal(segment["mask"], masks[segment["label"]])
        assert segment["image"] == finding["image"] and segment["type"] == CLUSTER.value
        assert segment["algorithm"] == "MANUAL"
        laterality = images[finding["image"]].ImageLaterality
        assert segment["laterality"] == [{"L": "Left", "R": "Right"}[laterality]] and laterality == row["laterality"]
        r, c = np.nonzero(segment["mask"])
        (left, top), (right, bottom) = finding["box"].min(0), finding["box"].max(0)
        assert left < c.min() and right > c.max() + 1 and top < r.min() and bottom > r.max() + 1
        assert np.allclose(finding["centre"], [c.mean() + 0.5, r.mean() + 0.5], atol=1e-3)
    breasts = read_csv(out / "breasts.csv")
    names = {"L": "Left breast", "R": "Right breast"}
    assert breast_findings(sr) == {names[b["laterality"]]: b["birads_max"] for b in breasts}

    texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
    assert any(t.startswith("checkpoint sha256 ") for t in texts) and any("NOT FOR CLINICAL USE" in t for t in texts)
    assert str(runs) not in sr_path.read_bytes().decode("latin-1")  # no path of this machine
    assert any(e.keyword == "ConceptNameCodeSequence" and e.value[0].CodeMeaning == "Image Library"
               for e in sr.iterall())  # fmt: skip
    for path in [sr_path, *seg_paths, results / "cad-sr.dcm"]:
        assert dciodvfy_problems(path) == [], path
    check_viewer_reads(sr_path, images.values(), rows)
    check_cad_sr(pydicom.dcmread(results / "cad-sr.dcm"), findings, rows)


def check_cad_sr(cad: pydicom.Dataset, findings: dict, rows) -> None:
    """The Mammography CAD SR: per region a calcification cluster with the SR's rectangle and centre on its image,
    "Presentation Optional", and the region's category as its assessment."""
    assert (
        cad.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.50"
        and cad.ContentTemplateSequence[0].TemplateIdentifier == "4000"
    )
    (summary,) = [x for x in cad.ContentSequence if x.ConceptNameCodeSequence[0].CodeValue == "111017"]
    marks = []
    for individual in summary.ContentSequence:
        items = {x.ConceptNameCodeSequence[0].CodeValue: x for x in individual.ContentSequence}
        assert items["111056"].ConceptCodeSequence[0].CodeValue == "111151"  # Presentation Optional
        finding = items["111059"]
        assert finding.ConceptCodeSequence[0].CodeValue == CLUSTER.value
        shapes = {
            x.ConceptNameCodeSequence[0].CodeMeaning: x for x in finding.ContentSequence if x.ValueType == "SCOORD"
        }
        image = shapes["Outline"].ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        category = next(
            k for k, v in BIRADS_CODES.items() if v.value == items["111005"].ConceptCodeSequence[0].CodeValue
        )
        marks.append(
            (image, tuple(np.round(shapes["Outline"].GraphicData, 3)), tuple(shapes["Center"].GraphicData), category)
        )
    expected = [
        (f["image"], tuple(np.round(f["box"].ravel(), 3)), tuple(np.float32(f["centre"])), f["birads_pred"])
        for f in (findings[r["lesion_id"]] for r in rows)
    ]
    assert sorted(marks) == sorted(expected)


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
    assert check_every_sr(tmp_path / "out") == 1


def test_detect_flag_rates_the_detectors_regions_with_their_certainty(trained, study, tmp_path, capfd):
    runs, _ = trained
    folder, _ = study
    images = tmp_path / "images"
    shutil.copytree(folder, images, ignore=shutil.ignore_patterns("seg-*.dcm"))  # the study without its SEG
    assert predict(runs, "--dicom_dir", str(images), "--predict_dir", str(tmp_path / "refused")) == 2
    err = capfd.readouterr().err
    assert "study-1" in err and "has no DICOM SEG" in err and "--detect" in err and "Traceback" not in err
    assert read_csv(tmp_path / "refused" / "studies.csv")[0]["status"] == "failed"

    out = tmp_path / "out"
    assert predict(runs, "--dicom_dir", str(images), "--predict_dir", str(out), "--detect") == 0  # a plain flag
    rows = read_csv(out / "predictions.csv")
    sr_path = out / "dicom" / "study-1" / "sr.dcm"
    findings = sr_findings(pydicom.dcmread(sr_path))
    segs = [pydicom.dcmread(p) for p in sorted((out / "dicom" / "study-1").glob("seg-*.dcm"))]
    segments = seg_segments(segs)
    # the detector run on its own gives the same regions and scores (Certainty of Finding, in percent)
    sources = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, images.rglob("S*.dcm"))}
    expected = {}
    for uid, ds in sources.items():
        image = read_image(ds.filename)
        for region in detect_image(image.pixels, image.pixel_spacing).regions:
            expected[(uid, region.mask.tobytes())] = round(100 * region.score, 2)
    assert rows and len(findings) == len(rows) == len(expected)
    for finding in findings.values():
        segment = segments[finding["tracking_uid"]]
        assert finding["certainty"] == pytest.approx(expected[(segment["image"], segment["mask"].tobytes())])
        assert segment["algorithm"] == "AUTOMATIC"
    for seg in segs:
        family = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmFamilyCodeSequence[0]
        assert (family.CodeValue, family.CodingSchemeDesignator) == (DETECTOR_FAMILY.value, "DCM")
    for path in [sr_path, *(out / "dicom" / "study-1").glob("seg-*.dcm")]:
        assert dciodvfy_problems(path) == [], path
    check_viewer_reads(sr_path, sources.values(), rows)


def test_detect_weights_choose_the_detectors_ranker(trained, study, tmp_path, capfd):
    """--detect_weights: the regions and certainties come from that ranker (as `detect_image(weights=...)` gives
    them); a file that is no ranker is refused before any study, naming it; without --detect it is refused."""
    from tests.detection_fixtures import small_ranker

    runs, _ = trained
    folder, _ = study
    images = tmp_path / "images"
    shutil.copytree(folder, images, ignore=shutil.ignore_patterns("seg-*.dcm"))  # the study without its SEG
    ranker = small_ranker(tmp_path)
    (tmp_path / "wrong.pt").write_bytes(b"nonsense")
    for extra, named in ((["--detect", "--detect_weights", str(tmp_path / "wrong.pt")], "wrong.pt"),
                         (["--detect_weights", str(ranker)], "needs --detect")):  # fmt: skip
        capfd.readouterr()
        assert predict(runs, "--dicom_dir", str(images), "--predict_dir", str(tmp_path / "no"), *extra) == 2
        err = capfd.readouterr().err
        assert named in err and "Traceback" not in err, err
        assert not (tmp_path / "no" / "dicom").exists()
    out = tmp_path / "out"
    assert predict(runs, "--dicom_dir", str(images), "--predict_dir", str(out), "--detect", "--detect_weights",
                   str(ranker)) == 0  # fmt: skip
    findings = sr_findings(pydicom.dcmread(out / "dicom" / "study-1" / "sr.dcm")).values()
    certainties = sorted(finding["certainty"] for finding in findings)
    expected, shipped = [], []
    for path in images.rglob("S*.dcm"):
        image = read_image(path)
        for weights, scores in ((ranker, expected), (None, shipped)):
            regions = detect_image(image.pixels, image.pixel_spacing, weights=weights).regions
            scores += [round(100 * region.score, 2) for region in regions]
    assert certainties == pytest.approx(sorted(expected)) and sorted(expected) != sorted(shipped)
    # the SEGs say which ranker found the regions (Algorithm Parameters), so a result can be traced to its weights
    digest = hashlib.sha256(ranker.read_bytes()).hexdigest()
    for path in (out / "dicom" / "study-1").glob("seg-*.dcm"):
        algorithm = pydicom.dcmread(path).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert digest in str(algorithm.AlgorithmParameters), path


def test_bad_studies_get_one_message_naming_the_study(trained, study, tmp_path, capfd):
    runs, _ = trained
    folder, _ = study
    out = tmp_path / "out"

    def refused(source: Path, *expected: str) -> None:
        capfd.readouterr()
        assert predict(runs, "--dicom_dir", str(source), "--predict_dir", str(out)) == 2
        err = capfd.readouterr().err
        assert all(text in err for text in expected) and "Traceback" not in err, err
        assert not (out / "predictions.csv").exists() and not (out / "dicom").exists()
        assert read_csv(out / "studies.csv")[0]["status"] == "failed"

    # only "for processing" mammograms
    processing = tmp_path / "processing"
    for path in folder.rglob("S*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PresentationIntentType = "FOR PROCESSING"
        (processing / path.name).parent.mkdir(exist_ok=True)
        ds.save_as(processing / path.name)
    refused(processing, "study-1", "no mammogram to rate", "'for processing'")
    # no mammogram at all (the SEGs alone)
    segs_only = tmp_path / "segs"
    shutil.copytree(folder, segs_only, ignore=shutil.ignore_patterns("S*.dcm"))
    refused(segs_only, "study-1", "no mammogram to rate")
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
    capfd.readouterr()
    assert predict(runs, "--dicom_dir", str(tmp_path / "missing"), "--predict_dir", str(tmp_path / "o2")) == 2
    assert "no such folder" in capfd.readouterr().err and not (tmp_path / "o2").exists()


def test_in_a_batch_each_study_succeeds_or_fails_on_its_own(trained, study, tmp_path, capfd):
    runs, _ = trained
    folder, manifest = study
    batch = tmp_path / "batch"
    shutil.copytree(folder, batch)
    source = pydicom.dcmread(next(folder.rglob("S*.dcm")))
    blank = pydicom.dcmread(source.filename)  # a second study: one empty (all-air) mammogram, no SEG
    blank.StudyInstanceUID, blank.SeriesInstanceUID, blank.SOPInstanceUID = (pydicom.uid.generate_uid() for _ in "abc")
    blank.file_meta.MediaStorageSOPInstanceUID = blank.SOPInstanceUID
    blank.PixelData = np.zeros((blank.Rows, blank.Columns), np.uint16).tobytes()
    blank.save_as(batch / "blank.dcm")
    cr = pydicom.dcmread(source.filename)  # a third: a CR alone, nothing to rate
    cr.StudyInstanceUID, cr.SeriesInstanceUID, cr.SOPInstanceUID = (pydicom.uid.generate_uid() for _ in "abc")
    cr.SOPClassUID = cr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    cr.Modality, cr.file_meta.MediaStorageSOPInstanceUID = "CR", cr.SOPInstanceUID
    cr.save_as(batch / "cr.dcm")
    uids = sorted(str(x.StudyInstanceUID) for x in (source, blank, cr))  # study-N: the folder's UID order
    key = {name: f"study-{uids.index(str(x.StudyInstanceUID)) + 1}" for name, x in
           (("source", source), ("blank", blank), ("cr", cr))}  # fmt: skip

    capfd.readouterr()
    out = tmp_path / "out"
    assert predict(runs, "--dicom_dir", str(batch), "--predict_dir", str(out), "--detect") == 2
    err = capfd.readouterr().err
    assert f"{key['blank']}: " in err and "blank" in err  # an all-air image is not a mammogram: refused, named
    assert f"{key['cr']}: not rated" in err and "computed radiography (CR)" in err and "Traceback" not in err
    rows = read_csv(out / "predictions.csv")
    assert {r["patient_id"] for r in rows} == {key["source"]}  # the good study is rated from its SEGs
    assert len(rows) == len(read_manifest(manifest, require_labels=False))
    assert [p.name for p in (out / "dicom").iterdir()] == [key["source"]]
    assert check_every_sr(out) == 1
    status = {r["study"]: (r["status"], r["exit_code"]) for r in read_csv(out / "studies.csv")}
    assert status == {
        key["source"]: ("written", "0"),
        key["blank"]: ("failed", "2"),
        key["cr"]: ("failed", "2"),
    }


@pytest.fixture(scope="module")
def fixed_scale(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model trained on images resampled to 0.2 mm per pixel."""
    return fit_tiny(tmp_path_factory.mktemp("fixed"), "--data.pixel_spacing_mm", "0.2")


def test_the_checkpoint_records_the_training_scale_and_predict_resamples_to_it(fixed_scale, tmp_path, capfd):
    from birads_calc.data.dicom import read_header
    from birads_calc.inference.study import image_windows, load_rater

    runs, best = fixed_scale
    record = training_spacing(torch.load(best, map_location="cpu", weights_only=True))
    train_images = {x.image for x in read_manifest(Path(best).parents[4] / "train" / "manifest.csv")}
    spacings = [read_header(p).pixel_spacing[0] for p in train_images]  # every image: the split picks some
    assert record["pixel_spacing_mm"] == 0.2
    assert min(spacings) <= record["training_mm"]["min"] <= record["training_mm"]["median"] <= max(spacings)
    assert (
        0 < record["training_mm"]["n_images"] <= len(train_images) and record["training_mm"]["n_without_spacing"] == 0
    )

    # one study, its headers saying 0.2 mm, then the same pixels saying 0.07 mm
    root = tmp_path / "a"
    synthetic_studies(root, spacing=0.2)
    again = tmp_path / "b"
    shutil.copytree(root / "dicom", again)
    for path in again.rglob("S*.dcm"):
        ds = pydicom.dcmread(path)
        ds.ImagerPixelSpacing = ds.PixelSpacing = [0.07, 0.07]
        ds.save_as(path)
    rater = load_rater(best)
    assert rater.settings.pixel_spacing_mm == 0.2
    outs = {}
    for name, folder in (("0.2", root / "dicom"), ("0.07", again)):
        outs[name] = tmp_path / f"out-{name}"
        assert predict(runs, "--dicom_dir", str(folder), "--predict_dir", str(outs[name])) == 0
    assert "warning" not in capfd.readouterr().err  # a fixed-scale model resamples: nothing to warn about
    assert sum(check_every_sr(out) for out in outs.values()) == 2
    # the inputs: at 0.07 mm the image is shrunk to 0.07/0.2 of its size before the windows are cut
    image = next((root / "dicom").rglob("S*.dcm"))
    lesions = [x for x in read_manifest(root / "synth" / "manifest.csv") if x.image.name == image.name]
    native, native_masks = image_windows(lesions, rater.settings)
    shrunk_image = again / image.relative_to(root / "dicom")
    shrunk = [x.__class__(**{**vars(x), "image": shrunk_image}) for x in lesions]
    resampled, resampled_masks = image_windows(shrunk, rater.settings)
    assert not np.array_equal(native, resampled)
    # physically right: each calcification covers (0.07 / 0.2)^2 of its native pixel area once resampled
    area = [np.count_nonzero(m & 2) for m in (native_masks, resampled_masks)]
    assert area[1] / area[0] == pytest.approx((0.07 / 0.2) ** 2, rel=0.35)
    assert read_csv(outs["0.2"] / "predictions.csv") != read_csv(outs["0.07"] / "predictions.csv")


def test_images_off_the_training_scale_are_named_and_without_scale_refused(trained, study, tmp_path, capfd):
    runs, best = trained
    folder, _ = study
    record = training_spacing(torch.load(best, map_location="cpu", weights_only=True))
    assert record["pixel_spacing_mm"] is None and record["training_mm"]["median"] == pytest.approx(0.1)
    capfd.readouterr()
    assert predict(runs, "--dicom_dir", str(folder), "--predict_dir", str(tmp_path / "out")) == 0
    err = capfd.readouterr().err
    assert "4 image(s) differ by more than 10 % from the 0.1 mm" in err and "(0.4 mm)" in err
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    for path in bare.rglob("S*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.ImagerPixelSpacing, ds.PixelSpacing
        ds.save_as(path)
    assert predict(runs, "--dicom_dir", str(bare), "--predict_dir", str(tmp_path / "bare-out")) == 2
    err = capfd.readouterr().err
    assert "record(s) no pixel spacing" in err and "--pixel_spacing MM" in err
    args = ["--dicom_dir", str(bare), "--predict_dir", str(tmp_path / "given"), "--pixel_spacing", "0.1"]
    assert predict(runs, *args) == 0
    assert "differ by more" not in capfd.readouterr().err  # 0.1 mm given: the training scale
    assert check_every_sr(tmp_path / "out") + check_every_sr(tmp_path / "given") == 2


def test_the_manifest_path_follows_the_same_scale_rule(trained, study, tmp_path, capfd):
    from birads_calc.data.cache import ScaleWarning

    runs, best = trained
    _, manifest = study
    base = ["predict", "--config", str(CONFIG), *TINY_OVERRIDES, "--trainer.logger", "false", "--ckpt_path", str(best),
            "--runs_root", str(runs), "--overlays", "false"]  # fmt: skip
    with pytest.warns(ScaleWarning, match=r"4 image\(s\) differ by more than 10 % from the 0.1 mm") as caught:
        main([*base, "--data.manifest", str(manifest), "--predict_dir", str(tmp_path / "warned")])
    (warning,) = [w for w in caught if issubclass(w.category, ScaleWarning)]
    assert "(0.4 mm)" in str(warning.message) and (tmp_path / "warned" / "predictions.csv").is_file()
    # the same images without any spacing: refused, naming the rows and the option; rated with --pixel_spacing
    bare = tmp_path / "bare"
    shutil.copytree(manifest.parent, bare, ignore=shutil.ignore_patterns(".birads_cache"))
    for path in (bare / "images").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.ImagerPixelSpacing, ds.PixelSpacing
        ds.save_as(path)
    capfd.readouterr()
    assert main([*base, "--data.manifest", str(bare / "manifest.csv"), "--predict_dir", str(tmp_path / "no")]) == 2
    err = capfd.readouterr().err
    assert "records no pixel spacing: give it with --pixel_spacing MM" in err and "row" in err
    args = [
        "--data.manifest",
        str(bare / "manifest.csv"),
        "--predict_dir",
        str(tmp_path / "given"),
        "--pixel_spacing",
        "0.1",
    ]
    assert main([*base, *args]) == 0
    assert read_csv(tmp_path / "given" / "predictions.csv")


def test_the_rater_is_the_trained_models_inference(trained):
    from birads_calc.inference.study import load_rater
    from birads_calc.training.model import BiradsClassifier

    _, best = trained
    rater = load_rater(best)
    model = BiradsClassifier.load_from_checkpoint(best, map_location="cpu", weights_only=True, pretrained=False).eval()
    image = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours, theirs = rater(image), model(image)
        assert torch.equal(ours, theirs)
        assert all(
            torch.equal(a, b) for a, b in zip(rater.risk_and_class(ours), model.risk_and_class(theirs), strict=True)
        )
    assert (rater.settings.window, rater.settings.stride, rater.attention) == (64, 32, True)  # TINY_OVERRIDES


def test_magnification_views_and_imager_spacing_give_the_spacing_at_the_breast(study, tmp_path):
    from birads_calc.clinical.results import segmentation
    from birads_calc.clinical.studies import complete_type2
    from birads_calc.data.dicom import dicom_spacing

    folder, _ = study
    image = complete_type2(pydicom.dcmread(next(folder.rglob("S*.dcm"))))
    del image.PixelSpacing  # the usual mammography header: the detector's spacing only
    image.ImagerPixelSpacing = [0.1, 0.1]
    image.EstimatedRadiographicMagnificationFactor = 1.8  # a magnification view
    assert dicom_spacing(image) == pytest.approx((0.1 / 1.8, 0.1 / 1.8))
    mask = np.zeros((image.Rows, image.Columns), bool)
    mask[100:110, 80:95] = True
    seg = segmentation(image, [(mask, "region-1", "4A", pydicom.uid.generate_uid(), False)], "x", "y")
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx([0.1 / 1.8, 0.1 / 1.8])
    image.PixelSpacing = [0.07, 0.07]  # calibrated in the patient: wins
    assert dicom_spacing(image) == (0.07, 0.07)


def test_a_bearer_token_from_the_environment_is_sent_and_a_401_explained(trained, monkeypatch, capfd):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from birads_calc.clinical.pacs import TOKEN_ENV

    class TokenOnly(BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name for the GET handler
            if self.headers.get("Authorization") != "Bearer tok-Zq7":
                self.send_error(401, "Unauthorized")
                return
            body = json.dumps([]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    runs, _ = trained
    try:
        capfd.readouterr()
        assert predict(runs, "--dicomweb", url, "--query", "StudyDate=20200101") == 2
        err = capfd.readouterr().err
        assert f"the PACS {url} asks who you are (HTTP 401" in err and TOKEN_ENV in err
        monkeypatch.setenv(TOKEN_ENV, "tok-Zq7")
        assert predict(runs, "--dicomweb", url, "--query", "StudyDate=20200101") == 2
        err = capfd.readouterr().err
        assert "no study on the PACS" in err and "tok-Zq7" not in err  # in, and the token never printed
    finally:
        server.shutdown()
        server.server_close()
