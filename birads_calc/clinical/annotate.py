"""A reader's DICOM SEG of a manifest's calcifications: what a radiologist would draw in a viewer, made from the
manifest's masks (one segment per row, labelled with its ``lesion_id``), one SEG per series of mammograms.

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

from birads_calc.clinical.results import segmentation
from birads_calc.clinical.studies import complete_type2, write_instance
from birads_calc.data.manifest import read_manifest
from birads_calc.data.masks import read_mask

ANNOTATOR = "birads-calc annotation"


def manifest_segs(manifest: Path) -> list[Dataset]:
    """One SEG per series of the manifest's images, a segment per manifest row (label = ``lesion_id``)."""
    lesions = read_manifest(manifest, require_labels=False)
    images: dict[Path, Dataset] = {}
    for lesion in lesions:
        if lesion.image not in images:
            images[lesion.image] = complete_type2(pydicom.dcmread(lesion.image))
    by_series: dict[str, list] = {}
    for lesion in lesions:
        image = images[lesion.image]
        label = lesion.lesion_id or f"row-{lesion.row}"
        by_series.setdefault(str(image.SeriesInstanceUID), []).append((image, read_mask(lesion.mask), label))
    segs = []
    for segments in by_series.values():
        series = segments[0][0].SeriesInstanceUID
        members = [x for x in images.values() if x.SeriesInstanceUID == series]
        segs.append(segmentation(members, segments, manufacturer=ANNOTATOR, model_name="manifest masks"))
    return segs


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
