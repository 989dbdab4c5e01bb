"""Shared pieces of the clinical DICOM tests: a tiny trained checkpoint, synthetic studies with a reader's SEG,
the results read back with highdicom, and dciodvfy where it is installed."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from factories import make_tiny_dataset
from training_helpers import TINY_OVERRIDES

from birads_calc.cli import main
from birads_calc.clinical.annotate import manifest_segs
from birads_calc.clinical.codes import RISK_SCORE, category_from_code
from birads_calc.clinical.regions import read_seg
from birads_calc.clinical.results import segment_of_frame as segment_number
from birads_calc.data.synthetic import generate

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "proposed.yaml"
SHAPE, SPACING = (256, 208), 0.4


def fit_tiny(root: Path) -> tuple[Path, Path]:
    """A tiny model fitted once: (runs root, best checkpoint)."""
    manifest = make_tiny_dataset(root / "train", patients=6, size=128)
    runs = root / "runs"
    main(["fit", "--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs),
          *TINY_OVERRIDES, "--trainer.logger", "false", "--trainer.limit_val_batches", "1"])  # fmt: skip
    return runs, runs / "proposed" / "version_0" / "checkpoints" / "best.ckpt"


def synthetic_studies(root: Path, patients: int = 1, seed: int = 0, shape=SHAPE) -> Path:
    """``synth`` studies (one per patient) with a reader's SEG per series, all under ``root/dicom``."""
    summary = generate(root / "synth", patients=patients, seed=seed, shape=shape, spacing=SPACING, workers=1)
    folder = root / "dicom"
    shutil.copytree(root / "synth" / "images", folder)
    for k, seg in enumerate(manifest_segs(summary.manifest), 1):
        seg.save_as(folder / f"seg-{k}.dcm", enforce_file_format=True)
    return summary.manifest


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def sr_findings(sr: pydicom.Dataset) -> dict[str, dict]:
    """Per region (tracking identifier): category, risk, the referenced SEG and segment frame and source image."""
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    found = {}
    for group in report.content.get_planar_roi_measurement_groups():
        (evaluation,) = group.get_qualitative_evaluations()
        (measurement,) = group.get_measurements()
        assert measurement.name == RISK_SCORE
        reference = group.referenced_segmentation_frame
        found[group.tracking_identifier] = {
            "birads_pred": category_from_code(evaluation.value),
            "risk": float(measurement.value),
            "seg": reference[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
            "frame": int(reference[0].ReferencedSOPSequence[0].ReferencedFrameNumber),
            "image": reference[1].ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
            "sites": [site.value for site in group.finding_sites],
        }
    return found


def breast_findings(sr: pydicom.Dataset) -> dict[str, str]:
    """Per breast group (tracking identifier): its highest category."""
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    return {
        group.tracking_identifier: category_from_code(group.get_qualitative_evaluations()[0].value)
        for group in report.content.get_image_measurement_groups()
    }


def segment_of_frame(seg: pydicom.Dataset, frame: int):
    """(segment label, bool mask) of a SEG frame, read with highdicom."""
    segmentation = read_seg(seg)
    number = segment_number(seg, frame)
    return segmentation.get_segment_description(number).SegmentLabel, segmentation.get_frame(frame) > 0


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's error lines for a file (dicom3tools); skips the test where it is not installed."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
