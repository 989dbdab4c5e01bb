"""Shared pieces of the clinical DICOM tests: a tiny trained checkpoint, synthetic studies with a reader's SEG, the
results read back with highdicom, dciodvfy where it is installed, and the viewer's SR reader (node) where it is."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from factories import make_tiny_dataset
from training_helpers import TINY_OVERRIDES

from birads_calc.cli import main
from birads_calc.clinical.annotate import manifest_segs
from birads_calc.clinical.codes import CERTAINTY, RISK_SCORE, category_from_code
from birads_calc.clinical.regions import read_seg
from birads_calc.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "proposed.yaml"
SHAPE, SPACING = (256, 208), 0.4
VIEWER = ROOT / "tests" / "viewer"
PRIVATE_CODE = "99BIRADSCALC"


def fit_tiny(root: Path, *overrides: str) -> tuple[Path, Path]:
    """A tiny model fitted once: (runs root, best checkpoint)."""
    manifest = make_tiny_dataset(root / "train", patients=6, size=128)
    runs = root / "runs"
    main(["fit", "--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs),
          *TINY_OVERRIDES, "--trainer.logger", "false", "--trainer.limit_val_batches", "1", *overrides])  # fmt: skip
    return runs, runs / "proposed" / "version_0" / "checkpoints" / "best.ckpt"


def synthetic_studies(root: Path, patients: int = 1, seed: int = 0, shape=SHAPE, spacing=SPACING) -> Path:
    """``synth`` studies (one per patient) with a reader's SEG per image, all under ``root/dicom``.

    The images get the Patient Orientation a real mammogram has (Type 1 in the MG IOD; the phantom leaves it out).
    """
    summary = generate(root / "synth", patients=patients, seed=seed, shape=shape, spacing=spacing, workers=1)
    folder = root / "dicom"
    for path in sorted((root / "synth" / "images").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientOrientation = ["A", "R"] if ds.ImageLaterality == "L" else ["P", "L"]
        target = folder / path.relative_to(root / "synth" / "images")
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
        ds.save_as(path)  # the manifest's copy too: the SEGs are made from it
    for k, seg in enumerate(manifest_segs(summary.manifest), 1):
        seg.save_as(folder / f"seg-{k}.dcm", enforce_file_format=True)
    return summary.manifest


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def sr_findings(sr: pydicom.Dataset) -> dict[str, dict]:
    """Per region (``lesion_id`` of predictions.csv, as the group's comment names it): its tracking identifier
    (``label``), category, risk, certainty, its rectangle and centre on its image, the comment itself."""
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    found = {}
    for group in report.content.get_planar_roi_measurement_groups():
        (evaluation,) = group.get_qualitative_evaluations()
        values = {m.name: m for m in group.get_measurements()}
        roi = group.roi
        numbers = [item for item in group[0].ContentSequence if item.ValueType == "NUM"]
        scoords = [child for item in numbers[:1] for child in item.get("ContentSequence", [])]
        (comment,) = [
            x.TextValue for x in group[0].ContentSequence if x.ConceptNameCodeSequence[0].CodeValue == "121106"
        ]
        region = comment.split(": BI-RADS")[0].split("(")[-1].rstrip(") ")
        found[region] = {
            "label": group.tracking_identifier,
            "comment": comment,
            "birads_pred": category_from_code(evaluation.value),
            "risk": float(values[RISK_SCORE].value),
            "certainty": float(values[CERTAINTY].value) if CERTAINTY in values else None,
            "image": roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
            "box": np.asarray(roi.value, dtype=float).reshape(-1, 2),
            "centre": next(np.asarray(x.GraphicData, float) for x in scoords if x.get("GraphicType") == "POINT"),
            "tracking_uid": group.tracking_uid,
            "sites": [site.value for site in group.finding_sites],
        }
    return found


def breast_findings(sr: pydicom.Dataset) -> dict[str, str]:
    """Per breast (finding site meaning, e.g. "Left breast"): its highest category, from the report's
    "Qualitative Evaluations" container."""
    (container,) = [
        x for x in sr.ContentSequence if x.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"
    ]
    found = {}
    for item in container.ContentSequence:
        site = item.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning
        found[site] = category_from_code(hd.sr.CodedConcept.from_dataset(item.ConceptCodeSequence[0]))
    return found


def seg_segments(segs) -> dict[str, dict]:
    """Per segment tracking UID: its label, bool mask, source image, property type and laterality modifier."""
    found = {}
    for ds in segs:
        seg = read_seg(ds)
        ((_, _, image),) = seg.get_source_image_uids()
        for item in ds.SegmentSequence:
            number = int(item.SegmentNumber)
            mask = seg.get_pixels_by_source_instance([image], segment_numbers=[number], ignore_spatial_locations=True)
            region = item.AnatomicRegionSequence[0]
            found[str(item.TrackingUID)] = {
                "label": str(item.SegmentLabel),
                "mask": mask[0, ..., 0] > 0,
                "image": image,
                "type": str(item.SegmentedPropertyTypeCodeSequence[0].CodeValue),
                "laterality": [str(m.CodeMeaning) for m in region.get("AnatomicRegionModifierSequence", [])],
                "algorithm": str(item.SegmentAlgorithmType),
                "colour": list(item.RecommendedDisplayCIELabValue),
            }
    return found


def dciodvfy_problems(path: Path) -> list[str]:
    """dciodvfy's errors and "unrecognized defined term" warnings (the private code aside); skips without it."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("Error") or ("nrecognized" in line and PRIVATE_CODE not in line)]


def viewer_measurements(sr_path: Path, images=None) -> list[dict]:
    """What OHIF's SR reader (``@cornerstonejs/adapters``) makes of an SR: one dict per measurement (tool, image,
    points in image pixels, label, finding). ``images``: the mammograms (default: the SR's evidence). Skips where
    node or the packages (``make install``) are missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the viewer's SR reader cannot run (apt-get install nodejs npm)")
    if not (VIEWER / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        pytest.skip("the viewer's SR reader is not installed: run 'make install' (npm ci in tests/viewer)")
    if images is None:
        sr = pydicom.dcmread(sr_path)
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        uids = [str(x.ReferencedSOPInstanceUID) for s in evidence for x in s.ReferencedSOPSequence]
    else:
        uids = [str(x.SOPInstanceUID) for x in images]
    table = sr_path.with_suffix(".images.json")
    table.write_text(json.dumps({uid: {"rows": 0, "columns": 0} for uid in uids}))  # the plane needs no size
    done = subprocess.run(
        [node, str(VIEWER / "read_sr.mjs"), str(sr_path), str(table)], capture_output=True, text=True, timeout=120
    )
    table.unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def check_every_sr(folder: Path) -> int:
    """Every SR (and SEG, CAD SR) under ``folder``: dciodvfy clean, and OHIF's reader makes each region a
    measurement on one of its mammograms, labelled with the region's BI-RADS category. Returns the SRs checked."""
    srs = sorted(Path(folder).rglob("sr.dcm"))
    for path in sorted(Path(folder).rglob("*.dcm")):
        assert dciodvfy_problems(path) == [], path
    for path in srs:
        findings = sr_findings(pydicom.dcmread(path))
        measurements = viewer_measurements(path)
        assert sorted(m["label"] for m in measurements) == sorted(f["comment"] for f in findings.values())
        for m in measurements:
            finding = next(f for f in findings.values() if f["comment"] == m["label"])
            assert m["image"] == finding["image"] and f"BI-RADS {finding['birads_pred']} " in m["label"]
    return len(srs)
