"""The DICOM path end to end: a 4-image study from a PACS to its SR + SEGs stored back, as a command.

A real PACS (Orthanc + DICOMweb plugin, started on a loopback port as the tests do) holds one synthetic study of
4 mammograms (``synth`` defaults: 512x416 at 0.2 mm) with a reader's SEG per image (15 regions). Each timed run is
the command ``python -m birads_calc predict --dicomweb URL --study UID --ckpt_path resnet18.ckpt --overlays false``
in a fresh process, so Python start-up and every import are included: retrieve (WADO-RS, stored syntax), rate every
region (a ResNet-18, the paper's backbone, random weights: the cost does not depend on them), write predictions.csv /
breasts.csv / studies.csv, build and write the 4 SEGs and the SR, store them (STOW-RS) and confirm each on the PACS
(QIDO-RS).

Figures (medians of 3 runs, same machine, same PACS, same run):

* ``clinical.study_command_seconds``: the command end to end (wall clock; its CPU time, user + system, in the unit
  text: on a shared machine the wall clock grows with the other jobs' load, the CPU time much less), against the
  retrieval alone (``Pacs.retrieve`` of the study, in process) as baseline; ratio = baseline / value, the share of
  the command that retrieval takes.
* ``clinical.import_seconds``: a fresh ``python -c`` importing what the command imports (the clinical path, the
  reports, the backbone library), against ``import torch`` alone as baseline.

``--baseline_tree DIR`` (a tree of an earlier commit, ``git archive COMMIT | tar -x -C DIR``) also times that
commit's command on the same PACS, alternating with this one, as ``clinical.study_command_vs_tree``.

Needs Orthanc (``apt-get install orthanc orthanc-dicomweb``); without it the figures are reported as missing.
"""

from __future__ import annotations

import os
import statistics
import subprocess
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
from birads_calc.clinical.annotate import manifest_segs  # noqa: E402
from birads_calc.clinical.pacs import Pacs  # noqa: E402
from birads_calc.data.synthetic import generate  # noqa: E402
from birads_calc.training.model import BiradsClassifier  # noqa: E402

REPEAT = 3
DATA = {"window": 160, "stride": 40, "pixel_spacing_mm": None, "voi": "window", "attention": True, "num_classes": 6}
SPACING = {"pixel_spacing_mm": None, "training_mm": {"median": 0.2, "min": 0.2, "max": 0.2, "n_images": 4,
                                                     "n_without_spacing": 0}}  # fmt: skip
# what the command imports: the clinical path, the reports it writes, the backbone library (torch comes with them)
IMPORTS = "import birads_calc.cli, birads_calc.clinical.predict, birads_calc.reporting.reports, timm"


def write_checkpoint(path: Path) -> Path:
    """A ResNet-18 checkpoint in Lightning's layout: weights, hyperparameters, data settings, training scale."""
    import lightning

    model = BiradsClassifier("resnet18", 6, pretrained=False)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "datamodule_hyper_parameters": DATA,
        "birads_calc": {"spacing": SPACING},
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, path)
    return path


def four_image_study(folder: Path) -> list[pydicom.Dataset]:
    """Patient 0 of ``synth --seed 0`` (4 views) and its reader's SEGs."""
    summary = generate(folder, patients=1, seed=0, workers=1)
    images = [pydicom.dcmread(p) for p in sorted((folder / "images").rglob("*.dcm"))]
    assert len(images) == 4, f"expected a 4-image study, synth wrote {len(images)}"
    for ds in images:
        ds.PatientOrientation = ["A", "R"] if ds.ImageLaterality == "L" else ["P", "L"]
    return images + manifest_segs(summary.manifest)


def run(quick: bool = False, baseline_tree: Path | None = None) -> dict[str, dict]:
    repeat = 1 if quick else REPEAT
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    old_env = {**os.environ, "PYTHONPATH": str(baseline_tree)} if baseline_tree else None
    old: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        try:
            with start_orthanc(root / "orthanc") as url:
                datasets = four_image_study(root / "synth")
                DICOMwebClient(url).store_instances(datasets)
                uid = str(datasets[0].StudyInstanceUID)
                checkpoint = write_checkpoint(root / "resnet18.ckpt")
                retrieval = [_seconds(lambda: Pacs(url).retrieve("study-1", uid)) for _ in range(repeat)]
                command = [
                    sys.executable,
                    "-m",
                    "birads_calc",
                    "predict",
                    "--dicomweb",
                    url,
                    "--study",
                    uid,
                    "--ckpt_path",
                    str(checkpoint),
                    "--overlays",
                    "false",
                    "--predict_dir",
                    str(root / "out"),
                ]
                totals, cpu = [], []
                for _ in range(repeat):
                    before = os.times()
                    totals.append(_seconds(lambda: _run(command, env)))
                    after = os.times()
                    cpu.append(
                        after.children_user + after.children_system - before.children_user - before.children_system
                    )
                    if old_env is not None:  # the earlier commit's command, right after (same load)
                        old.append(_seconds(lambda: _run([*command[:-1], str(root / "old")], old_env)))
        except OrthancMissing as missing:
            return {"clinical.study_command_seconds": figure(None, None, f"s ({missing})", None, lower_is_better=True)}
        imports = [_seconds(lambda: _run([sys.executable, "-c", IMPORTS], env)) for _ in range(repeat)]
        torch_alone = [_seconds(lambda: _run([sys.executable, "-c", "import torch"], env)) for _ in range(repeat)]
    value, baseline = statistics.median(totals), statistics.median(retrieval)
    unit = (
        f"s per 4-image study as a command, start-up and imports included (median of {repeat}; CPU "
        f"{statistics.median(cpu):.2f} s user+system) vs WADO-RS retrieval"
    )
    imported, torch_s = statistics.median(imports), statistics.median(torch_alone)
    figures = {}
    if old:
        figures["clinical.study_command_vs_tree"] = figure(
            value, statistics.median(old), f"s per study as a command, this tree vs {baseline_tree} (median of "
            f"{repeat}, alternating); ratio = earlier / now", None, ratio=statistics.median(old) / value,
        )  # fmt: skip
    return figures | {
        "clinical.study_command_seconds": figure(value, baseline, unit, None, ratio=baseline / value),
        "clinical.import_seconds": figure(
            imported,
            torch_s,
            f"s to import the command's modules (median of {repeat}) vs import torch alone",
            None,
            ratio=torch_s / imported,
        ),
    }


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _run(command: list[str], env: dict) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} exited with {done.returncode}:\n{done.stderr[-2000:]}")


if __name__ == "__main__":
    tree = Path(sys.argv[sys.argv.index("--baseline_tree") + 1]) if "--baseline_tree" in sys.argv else None
    for name, entry in run(quick="--quick" in sys.argv, baseline_tree=tree).items():
        print(name, entry)
