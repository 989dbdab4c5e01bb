"""The DICOM path end to end: a 4-image study from a PACS to its SR + SEG stored back (DESIGN §8, §11).

A real PACS (Orthanc + DICOMweb plugin, started on a loopback port as the tests do) holds one synthetic study of
4 mammograms (``synth`` defaults: 512x416 at 0.2 mm) with a reader's SEG per image. Each timed run is the
``birads-calc predict --dicomweb URL --study UID`` command called in-process with a ResNet-18 checkpoint (the
paper's backbone, random weights: the cost does not depend on them): retrieve (WADO-RS), rate every region
(``predict_lesions``), write predictions.csv / breasts.csv, build and write the SEGs and the SR, store them
(STOW-RS). Overlays are off (``--overlays false``); model loading is included, Python start-up is not.

Figures:

* ``clinical.study_seconds``: median seconds per study over 3 runs, against retrieval alone (the study's MG and
  SEG series over WADO-RS, median of 3, same PACS, same run) as baseline; ratio = baseline / value, the share of
  the end-to-end time that retrieval takes.

Needs Orthanc (``apt-get install orthanc orthanc-dicomweb``); without it the figure is reported as missing.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's Orthanc launcher

from dicomweb_client import DICOMwebClient  # noqa: E402
from orthanc import OrthancMissing, start_orthanc  # noqa: E402

from bench.common import figure  # noqa: E402
from birads_calc.cli import main  # noqa: E402
from birads_calc.clinical.annotate import manifest_segs  # noqa: E402
from birads_calc.clinical.pacs import Pacs  # noqa: E402
from birads_calc.data.synthetic import generate  # noqa: E402
from birads_calc.training.model import BiradsClassifier  # noqa: E402

REPEAT = 3
DATA = {"window": 160, "stride": 40, "pixel_spacing_mm": None, "voi": "window", "attention": True, "num_classes": 6}


def write_checkpoint(path: Path) -> Path:
    """A ResNet-18 checkpoint in Lightning's layout, with the data module's settings beside the weights."""
    import lightning

    model = BiradsClassifier("resnet18", 6, pretrained=False)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "datamodule_hyper_parameters": DATA,
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, path)
    return path


def four_image_study(folder: Path) -> list[pydicom.Dataset]:
    """Patient 0 of ``synth --seed 0`` (4 views) and its reader's SEGs."""
    summary = generate(folder, patients=1, seed=0, workers=1)
    images = [pydicom.dcmread(p) for p in sorted((folder / "images").rglob("*.dcm"))]
    assert len(images) == 4, f"expected a 4-image study, synth wrote {len(images)}"
    return images + manifest_segs(summary.manifest)


def run(quick: bool = False) -> dict[str, dict]:
    repeat = 1 if quick else REPEAT
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        try:
            with start_orthanc(root / "orthanc") as url:
                datasets = four_image_study(root / "synth")
                DICOMwebClient(url).store_instances(datasets)
                uid = str(datasets[0].StudyInstanceUID)
                checkpoint = write_checkpoint(root / "resnet18.ckpt")
                retrieval = [_seconds(lambda: Pacs(url).retrieve("study-1", uid)) for _ in range(repeat)]
                args = ["predict", "--dicomweb", url, "--study", uid, "--ckpt_path", str(checkpoint),
                        "--overlays", "false", "--predict_dir", str(root / "out")]  # fmt: skip
                assert main([*args, "--store", "false"]) == 0  # warm-up: first imports and allocations
                totals = [_seconds(lambda: _check(main(args))) for _ in range(repeat)]
        except OrthancMissing as missing:
            return {"clinical.study_seconds": figure(None, None, f"s/study ({missing})", None, lower_is_better=True)}
    value, baseline = statistics.median(totals), statistics.median(retrieval)
    unit = f"s per 4-image study end to end (median of {repeat}) vs WADO-RS retrieval alone; ratio = retrieval share"
    return {"clinical.study_seconds": figure(value, baseline, unit, None, ratio=baseline / value)}


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _check(code: int) -> None:
    if code != 0:
        raise RuntimeError(f"predict --dicomweb exited with {code}")


if __name__ == "__main__":
    for name, entry in run(quick="--quick" in sys.argv).items():
        print(name, entry)
