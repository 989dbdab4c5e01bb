"""Small public-dataset look-alikes in their documented formats (see ../shared/data/*/SOURCE.md).

Each builder writes real files (tiny DICOMs via ``factories.write_dicom``, the exact CSV/plist layouts) and
returns what the test needs to check the conversion against: the masks it planted.
"""

from __future__ import annotations

import csv
import plistlib
from pathlib import Path

import numpy as np

from tests.factories import disc, write_dicom

CBIS_HEADER = (
    "patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,"
    "calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
)
UID = "1.3.6.1.4.1.9590.100.1.2."


def write_cbis_csv(path: Path, cases: list[dict]) -> Path:
    """A calc case-description CSV as TCIA ships it: the crop path quoted with a newline inside the quotes."""
    lines = [CBIS_HEADER]
    for c in cases:
        full = f"{c['folder']}/{UID}1{c['n']}/{UID}2{c['n']}/000000.dcm"
        roi = f"{c['folder']}_{c['abn']}/{UID}3{c['n']}/{UID}4{c['n']}"
        side, view = c["folder"].split("_")[-2:]
        lines.append(
            f"{c['patient']},3,{side},{view},{c['abn']},calcification,PLEOMORPHIC,CLUSTERED,"
            f'{c["assessment"]},{c["pathology"]},4,{full},"{roi}/000001.dcm\n",{roi}/000000.dcm'
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tcia_case(root: Path, case: dict, scheme: str, shape=(64, 48), rng=None) -> np.ndarray | None:
    """Write one case's full mammogram (if not already there) and ROI folder; return the planted mask.

    ``scheme``: ``"csv"`` (UID folders, 000000.dcm mask + 000001.dcm crop as the CSV says), ``"new"`` (NBIA's
    newer layout: date/series folders, 1-1.dcm crop + 1-2.dcm mask), ``"swapped"`` (UID folders but the mask is
    000001.dcm and the crop 000000.dcm: names disagree with the CSV), ``"crop-only"`` (no mask at all).
    """
    rng = rng or np.random.default_rng(case["n"])
    full_dir = root / "CBIS-DDSM" / case["folder"] / "08-07-2016-DDSM-12345" / "1.000000-full mammogram images-1"
    if not any(full_dir.glob("*.dcm")):
        write_dicom(full_dir / "1-1.dcm", rng.integers(0, 4000, shape), bits_stored=12, patient_id=case["folder"])
    roi_dir = root / "CBIS-DDSM" / f"{case['folder']}_{case['abn']}"
    mask = disc(shape, (10 + 8 * case["abn"], 20), 4)
    crop = rng.integers(0, 4000, (20, 16))
    mask_pixels = mask.astype(np.uint8) * 255
    names = {
        "csv": ("uids/000000.dcm", "uids/000001.dcm"),
        "new": ("07-20-2016-DDSM-1/1.000000-ROI mask images-2/1-2.dcm", "07-20-2016-DDSM-1/1.000000-crop-3/1-1.dcm"),
        "swapped": ("uids/000001.dcm", "uids/000000.dcm"),
        "crop-only": (None, "uids/000001.dcm"),
    }[scheme]
    if names[0]:
        write_dicom(roi_dir / names[0], mask_pixels, bits_stored=8, patient_id=case["folder"])
    write_dicom(roi_dir / names[1], crop, bits_stored=12, patient_id=case["folder"])
    return mask if names[0] else None


def write_inbreast_plist(path: Path, rois: list[tuple[str, list[tuple[float, float]]]]) -> Path:
    """An OsiriX ROI plist: Images[0].ROIs, each with Name, NumberOfPoints and Point_px strings ``"(x, y)"``."""
    document = {
        "Images": [
            {
                "ImageIndex": 0,
                "NumberOfROIs": len(rois),
                "ROIs": [
                    {
                        "Name": name,
                        "NumberOfPoints": len(points),
                        "Point_px": [f"({x:.3f}, {y:.3f})" for x, y in points],
                        "Point_mm": [f"({x * 0.07:.3f}, {y * 0.07:.3f}, 0.000)" for x, y in points],
                        "Area": 0.0,
                    }
                    for name, points in rois
                ],
            }
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        plistlib.dump(document, f, fmt=plistlib.FMT_XML)
    return path


def write_inbreast_csv(path: Path, rows: list[tuple]) -> Path:
    """``INbreast.csv``: the first 8 columns of the xls, ``;``-separated."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter=";")
        writer.writerow(
            ["Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR", "Bi-Rads"]
        )
        for laterality, view, name, birads in rows:
            writer.writerow(["removed", "removed", laterality, view, "201001", name, "2", birads])
    return path


VINDR_HEADER = [
    "study_id",
    "series_id",
    "image_id",
    "laterality",
    "view_position",
    "height",
    "width",
    "breast_birads",
    "breast_density",
    "finding_categories",
    "finding_birads",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
    "split",
]


def write_vindr_csv(path: Path, rows: list[dict]) -> Path:
    """``finding_annotations.csv`` with its exact header (list literals quoted by the csv module when needed)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=VINDR_HEADER)
        writer.writeheader()
        for row in rows:
            writer.writerow({"series_id": "s" * 32, "breast_birads": "BI-RADS 4", "breast_density": "DENSITY C", **row})
    return path
