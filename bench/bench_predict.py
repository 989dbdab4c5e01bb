"""Predict latency for a reading radiologist: one mammogram with 4 calcifications, DICOM to CSV rows (DESIGN §8).

The model (ResNet-18, 400x400 windows, attention ROI) is loaded once; every study then goes through the direct
one-study path (``birads_calc.inference.study``: decode the DICOM, read the 4 masks, cut the centred windows with
``data.roi``, assemble the attention channels, one forward pass, ``reports.prediction_rows``, ``predictions.csv``
written atomically). The figure is the median seconds per mammogram over many studies, process start and model
loading excluded, on this machine's CPU.

Figures:

* ``predict.seconds_per_mammogram``: the target (<= 2 s), value only;
* ``predict.decode_share``: the same value against the time to decode the DICOM alone (baseline, same run);
  ratio = decode / total, the fraction of a prediction spent decoding;
* ``predict.model_share``: the same against the model's forward pass on the study's 4 windows alone.

The model runs in channels-last memory format (``model.channels_last: true``), about 30% faster convolutions on
this CPU than the default layout.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_loader import LESIONS_PER_IMAGE, SHAPE, make_dataset
from bench.common import figure
from birads_calc.data.cache import CacheSettings
from birads_calc.data.dicom import read_image
from birads_calc.data.manifest import read_manifest
from birads_calc.data.roi import assemble
from birads_calc.inference.study import image_windows, predict_lesions
from birads_calc.io import write_csv
from birads_calc.reporting.reports import PREDICTION_COLUMNS, prediction_rows
from birads_calc.training.model import BiradsClassifier

TARGET_SECONDS = 2.0
NUM_CLASSES = 4  # the generated labels are 2, 3, 4, 5; the scale does not change the cost


def studies(manifest: Path) -> list[list]:
    """The manifest's lesions grouped by image: one study per mammogram."""
    by_image: dict[Path, list] = {}
    for lesion in read_manifest(manifest, NUM_CLASSES, require_labels=False):
        by_image.setdefault(lesion.image, []).append(lesion)
    return list(by_image.values())


def run(quick: bool = False) -> dict[str, dict]:
    count = 4 if quick else 20
    settings = CacheSettings(window=400, stride=100, num_classes=NUM_CLASSES)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = make_dataset(root / "data", count)
        groups = studies(manifest)
        assert all(len(g) == LESIONS_PER_IMAGE for g in groups)
        model = BiradsClassifier("resnet18", NUM_CLASSES, pretrained=False, channels_last=True).eval()
        predict_lesions(model, groups[0], settings)  # warm-up: first-call allocations, not part of a study
        totals, decodes, forwards = [], [], []
        for k, lesions in enumerate(groups):
            start = time.perf_counter()
            predictions = predict_lesions(model, lesions, settings)
            rows = prediction_rows(predictions, lesions, NUM_CLASSES, root=manifest.parent)
            write_csv(root / "out" / f"{k}.csv", rows, PREDICTION_COLUMNS)
            totals.append(time.perf_counter() - start)
            start = time.perf_counter()
            read_image(lesions[0].image)
            decodes.append(time.perf_counter() - start)
            forwards.append(forward_seconds(model, lesions, settings))
    total, decode, forward = (statistics.median(t) for t in (totals, decodes, forwards))
    shape = f"{SHAPE[0]}x{SHAPE[1]} 16-bit DICOM, {LESIONS_PER_IMAGE} lesions, {torch.get_num_threads()} threads"
    return {
        "predict.seconds_per_mammogram": figure(
            total, None, f"s/mammogram (median of {count}; {shape})", TARGET_SECONDS, lower_is_better=True
        ),
        "predict.decode_share": figure(
            total, decode, "s/mammogram vs DICOM decode alone (ratio = decode share)", None, ratio=decode / total
        ),
        "predict.model_share": figure(
            total, forward, "s/mammogram vs model forward alone (ratio = model share)", None, ratio=forward / total
        ),
    }


def forward_seconds(model: BiradsClassifier, lesions: list, settings: CacheSettings) -> float:
    """Seconds of the model's forward pass alone on the study's windows (prepared outside the timing)."""
    pixels, masks = image_windows(lesions, settings)
    image = assemble(torch.from_numpy(pixels), torch.from_numpy(masks))
    with torch.inference_mode():
        start = time.perf_counter()
        model(image)
        return time.perf_counter() - start


if __name__ == "__main__":
    for name, entry in run(quick="--quick" in sys.argv).items():
        print(name, entry)
