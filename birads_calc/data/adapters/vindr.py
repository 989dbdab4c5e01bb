"""VinDr-Mammo -> manifest: one row per ``Suspicious Calcification`` box, mask = specks found in the box.

Input: ``finding_annotations.csv`` (one row per finding per image) and ``images/<study_id>/<image_id>.dicom``
(found by ``image_id`` anywhere below ``src``).

* Scale: four classes; ``finding_birads`` reads ``BI-RADS 3``/``4``/``5`` (4 is not subdivided).
* Boxes are float pixel coordinates and may reach slightly past the image (negative values): clipped.
* The box is not a mask: the calcification pixels inside it are found with
  :func:`~birads_calc.data.adapters.calcifications.find_calcifications` at the DICOM's pixel spacing.
* Patient: VinDr-Mammo has one study per woman and no patient id; ``study_id`` stands for the patient.
* Split: ``training`` -> train (a seeded ``val_fraction`` of its patients -> val), ``test`` -> test.
* No biopsy result: ``pathology`` is empty (unknown).
"""

from __future__ import annotations

import ast
import math
import csv
from pathlib import Path

from birads_calc.categories import LabelError, label_name, parse_label
from birads_calc.data.adapters import (
    Conversion,
    ConversionError,
    carve_validation,
    check_fraction,
    find_files,
    manifest_path,
    require_dir,
)
from birads_calc.data.adapters.calcifications import DEFAULT_DETECTOR, SpeckDetector, box, find_calcifications
from birads_calc.data.dicom import ImageReadError, read_image
from birads_calc.data.limits import Fraction, PixelSpacingMm, Seed
from birads_calc.data.masks import write_mask
from birads_calc.progress import track

ANNOTATIONS = "finding_annotations.csv"
CALCIFICATION = "Suspicious Calcification"
COLUMNS = ("study_id", "image_id", "laterality", "view_position", "height", "width", "finding_categories")
COLUMNS += ("finding_birads", "xmin", "ymin", "xmax", "ymax", "split")
# the release's split names (and the manifest's own, should a re-export use them); any other value is reported
SPLITS = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test"}


def read_findings(path: Path) -> list[tuple[str, dict[str, str]]]:
    """Rows of ``finding_annotations.csv`` as (source, row).

    Raises:
        ConversionError: unreadable file or a missing column.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConversionError(f"{path}: not a VinDr-Mammo finding_annotations.csv, missing {missing}")
            return [(f"{path.name} row {n}", row) for n, row in enumerate(reader, start=1)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConversionError(f"cannot read {path}: {error}") from None


def categories(row: dict[str, str]) -> list[str]:
    """The finding categories of a row (the CSV holds a Python list literal such as ``"['Mass']"``)."""
    value = ast.literal_eval(row["finding_categories"])
    if not isinstance(value, list | tuple):
        raise ValueError(f"finding_categories {row['finding_categories']!r} is not a list")
    return [str(v).strip() for v in value]


def convert(
    src: Path,
    out: Path,
    annotations: Path | None = None,
    val_fraction: Fraction = 0.25,
    seed: Seed = 0,
    pixel_spacing_mm: PixelSpacingMm | None = None,
    detector: SpeckDetector = DEFAULT_DETECTOR,
) -> Conversion:
    """Convert VinDr-Mammo calcification findings.

    Args:
        src: the VinDr-Mammo folder (``finding_annotations.csv``, ``images/``).
        out: the manifest to write; masks go to ``<its folder>/masks/vindr-mammo/``.
        annotations: the findings table (default: ``src/finding_annotations.csv``).
        val_fraction: share of the training patients (studies) moved to the ``val`` split.
        seed: seed of that draw.
        pixel_spacing_mm: spacing to use for DICOMs that do not state one (default: such images are reported).
        detector: how calcification pixels are found inside each box.
    """
    check_fraction(val_fraction)
    src = require_dir(Path(src), "VinDr-Mammo folder")
    images = {p.stem: p for p in find_files(src, [".dicom", ".dcm"])}
    by_image: dict[str, list[tuple[str, dict[str, str], str]]] = {}
    result = Conversion()
    for source, row in read_findings(Path(annotations) if annotations else src / ANNOTATIONS):
        try:
            kinds = categories(row)
        except (ValueError, SyntaxError):
            result.skip(source, "unreadable finding_categories", row["finding_categories"])
            continue
        if CALCIFICATION not in kinds:
            result.skip(source, "not a calcification finding", ", ".join(kinds))
            continue
        try:
            birads = label_name(parse_label(row["finding_birads"], num_classes=4), num_classes=4)
        except LabelError as error:
            result.skip(source, "calcification without a usable finding BI-RADS", str(error))
            continue
        by_image.setdefault(row["image_id"], []).append((source, row, birads))
    root = Path(out).parent
    for image_id, findings in track(by_image.items(), "convert vindr-mammo", unit="image"):
        _convert_image(images.get(image_id), findings, pixel_spacing_mm, detector, root, result)
    if not any(r["split"] == "val" for r in result.rows):  # the release's own validation split wins
        carve_validation(result.rows, val_fraction, seed)
    return result


def _convert_image(path, findings, pixel_spacing_mm, detector, root, result) -> None:
    """Append the rows of one image's calcification boxes to ``result`` (decoding the DICOM once)."""

    def skip_all(reason: str, detail: str) -> None:
        for source, _, _ in findings:
            result.skip(source, reason, detail)

    image_id = findings[0][1]["image_id"]
    if path is None:
        return skip_all("DICOM not found", f"no {image_id}.dicom below the VinDr-Mammo folder")
    try:
        image = read_image(path)
    except ImageReadError as error:
        return skip_all("unreadable DICOM", str(error))
    spacing = image.pixel_spacing[0] if image.pixel_spacing else pixel_spacing_mm
    if spacing is None:
        return skip_all("DICOM has no pixel spacing (pass --pixel_spacing_mm)", str(path))
    shape = image.pixels.shape
    for k, (source, row, birads) in enumerate(findings, start=1):
        try:
            size = (round(float(row["height"])), round(float(row["width"])))
            corners = [float(row[c]) for c in ("xmin", "ymin", "xmax", "ymax")]
            if not all(math.isfinite(v) for v in corners):
                raise ValueError("nan")  # 'nan' parses as a float but is no coordinate
        except ValueError:
            values = {c: row[c] for c in ("height", "width", "xmin", "ymin", "xmax", "ymax")}
            result.skip(source, "size or box coordinates are not numbers", str(values))
            continue
        split = SPLITS.get(row["split"].strip().lower())
        if split is None:
            result.skip(source, "unknown split (expected training, validation or test)", repr(row["split"]))
            continue
        if size != shape:
            result.skip(source, "image size differs from the CSV's height/width", f"{path}: {shape}, CSV {size}")
            continue
        region = box(shape, *corners)
        if not region.any():
            result.skip(source, "box lies outside the image", str(corners))
            continue
        mask = find_calcifications(image.pixels, region, spacing, detector)
        if not mask.any():
            result.skip(source, "no calcification found by the detector inside the box", image_id)
            continue
        lesion_id = f"{image_id}_{k}"
        mask_path = write_mask(root / "masks" / "vindr-mammo" / f"{lesion_id}.png", mask)
        result.rows.append(
            {
                "patient_id": row["study_id"],
                "image": manifest_path(path, root),
                "mask": manifest_path(mask_path, root),
                "birads": birads,
                "pathology": "",
                "lesion_id": lesion_id,
                "laterality": row["laterality"],
                "view": row["view_position"],
                "split": split,
            }
        )
