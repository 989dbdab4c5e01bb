"""A reader's DICOM SEG of a manifest's calcifications: what a radiologist would draw in a viewer, made from the
manifest's masks (one segment per row, labelled with its ``lesion_id``), one SEG per mammogram.

It turns a ``birads-calc synth`` dataset (or any manifest of DICOM images) into studies the DICOM path can rate:
``python -m birads_calc.clinical.annotate MANIFEST OUT_DIR`` writes the SEGs into OUT_DIR (the images stay where
they are; upload both to the PACS). The tests, the benchmark and docs/clinical.md use it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from birads_calc.clinical.results import segmentation
from birads_calc.clinical.studies import complete_type2, write_instance
from birads_calc.data.manifest import read_manifest
from birads_calc.data.masks import read_mask

ANNOTATOR = "birads-calc annotation"


def manifest_segs(manifest: Path) -> list[Dataset]:
    """One SEG per image of the manifest, a segment per manifest row (label = ``lesion_id``), in one series."""
    lesions = read_manifest(manifest, require_labels=False)
    by_image: dict[Path, list] = {}
    for lesion in lesions:
        label = lesion.lesion_id or f"row-{lesion.row}"
        by_image.setdefault(lesion.image, []).append((read_mask(lesion.mask), label, None, generate_uid(), False))
    series = generate_uid()
    return [
        segmentation(
            complete_type2(pydicom.dcmread(image)),
            segments,
            manufacturer=ANNOTATOR,
            model_name="manifest masks",
            series_uid=series,
            series_number=900,
            instance=k,
        )
        for k, (image, segments) in enumerate(by_image.items(), 1)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m birads_calc.clinical.annotate MANIFEST OUT_DIR", file=sys.stderr)
        return 2
    out = Path(args[1])
    out.mkdir(parents=True, exist_ok=True)
    segs = manifest_segs(Path(args[0]))
    for k, seg in enumerate(segs, 1):
        write_instance(out / f"seg-{k}.dcm", seg)
    print(f"wrote {len(segs)} SEG(s) into {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
