"""CBIS-DDSM -> manifest: one row per calcification ROI of the calc case-description CSVs.

Scale and labels: four-class (``assessment`` 2/3/4/5; 0 = incomplete is reported and left out). Pathology
MALIGNANT -> malignant, BENIGN -> benign (both biopsy-proven). BENIGN_WITHOUT_CALLBACK means the lesion was not
recalled, so no biopsy was done: by the paper's rule (no biopsy -> malignancy 0.5, §2.3) it becomes unknown
pathology (empty cell) by default; ``--without_callback benign`` counts it as benign instead (541 of the 1,872
calcification rows of the two official CSVs, docs/datasets.md).

Split: the official one is kept by patient: test-CSV rows -> ``test``; training-CSV rows -> ``train``, except a
seeded ``val_fraction`` of the training patients -> ``val`` (the data module takes a split column as a whole, and
checkpoint selection needs a validation set that never sees the test patients).

Files: the TCIA download is searched by folder name, not by the CSV's full path, because downloads differ from
the CSV in everything below the case folder (``Calc-Training_P_00005_RIGHT_CC`` for the mammogram,
``..._CC_1`` for ROI 1): UID folders or ``08-07-2016-DDSM-...`` folders, files named ``000000.dcm``/
``000001.dcm`` or ``1-1.dcm``/``1-2.dcm``, and CSV names that swap crop and mask. The ROI mask is therefore told
from the cropped image by content: the mask is the binary image with the full mammogram's size.
The CSV quirk of a newline inside every quoted crop path is stripped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from birads_calc.categories import LabelError, normalize_label, parse_label
from birads_calc.data.adapters import (
    Conversion,
    ConversionError,
    carve_validation,
    check_fraction,
    find_files,
    manifest_path,
    require_dir,
)
from birads_calc.data.dicom import ImageReadError, read_header, read_image
from birads_calc.data.limits import Fraction, Seed
from birads_calc.data.masks import write_mask
from birads_calc.progress import track

TRAIN_CSV = "calc_case_description_train_set.csv"
TEST_CSV = "calc_case_description_test_set.csv"
COLUMNS = {
    "patient_id": "patient_id",
    "laterality": "left or right breast",
    "view": "image view",
    "abnormality_id": "abnormality id",
    "assessment": "assessment",
    "pathology": "pathology",
    "image": "image file path",
    "crop": "cropped image file path",
    "roi_mask": "ROI mask file path",
}
PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": ""}  # "": no biopsy, unknown
WITHOUT_CALLBACK = "BENIGN_WITHOUT_CALLBACK"
LATERALITY = {"LEFT": "L", "RIGHT": "R"}


@dataclass(frozen=True)
class Case:
    """One row of a calc case-description CSV (values stripped of surrounding whitespace and newlines)."""

    source: str
    split: str
    patient_id: str
    laterality: str
    view: str
    abnormality_id: str
    assessment: str
    pathology: str
    image: str
    crop: str
    roi_mask: str

    @property
    def image_folder(self) -> str:
        """The case folder of the full mammogram, e.g. ``Calc-Training_P_00005_RIGHT_CC``."""
        return self.image.split("/")[0]

    @property
    def roi_folder(self) -> str:
        """The case folder of this ROI's crop and mask, e.g. ``Calc-Training_P_00005_RIGHT_CC_1``."""
        return self.roi_mask.split("/")[0]


def read_cases(path: Path, split: str) -> list[Case]:
    """Parse a calc case-description CSV into :class:`Case` records, one per data row, in file order.

    Raises:
        ConversionError: the file is unreadable or lacks one of the columns used.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS.values() if c not in (reader.fieldnames or [])]
            if missing:
                raise ConversionError(f"{path}: not a CBIS-DDSM calc CSV, missing column(s) {missing}")
            return [
                Case(f"{path.name} row {n}", split, **{k: (row[c] or "").strip() for k, c in COLUMNS.items()})
                for n, row in enumerate(reader, start=1)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConversionError(f"cannot read {path}: {error}") from None


def labels(case: Case, without_callback: Literal["unknown", "benign"] = "unknown") -> tuple[str, str]:
    """The manifest's ``birads`` (four-class) and ``pathology`` of a case.

    Args:
        case: the CSV row.
        without_callback: ``BENIGN_WITHOUT_CALLBACK`` (not recalled, no biopsy) as ``unknown`` pathology (the
            paper's rule for lesions without biopsy) or as ``benign``.

    Raises:
        LabelError: assessment outside 2/3/4/5 (e.g. 0) or an unknown pathology, naming the value.
    """
    parse_label(case.assessment, num_classes=4)
    if case.pathology not in PATHOLOGY:
        raise LabelError(f"unknown pathology {case.pathology!r}; expected one of {', '.join(PATHOLOGY)}")
    if case.pathology == WITHOUT_CALLBACK and without_callback == "benign":
        return normalize_label(case.assessment), "benign"
    return normalize_label(case.assessment), PATHOLOGY[case.pathology]


def convert(
    src: Path,
    out: Path,
    train_csv: Path | None = None,
    test_csv: Path | None = None,
    dicom_dir: Path | None = None,
    val_fraction: Fraction = 0.25,
    seed: Seed = 0,
    without_callback: Literal["unknown", "benign"] = "unknown",
) -> Conversion:
    """Convert CBIS-DDSM calcification cases (CSVs + TCIA DICOM download).

    Args:
        src: folder holding the two calc CSVs and the DICOM tree (``CBIS-DDSM/Calc-...`` folders).
        out: the manifest to write; ROI masks go to ``<its folder>/masks/cbis-ddsm/`` as PNG.
        train_csv: the training CSV (default: ``src/calc_case_description_train_set.csv``).
        test_csv: the test CSV (default: ``src/calc_case_description_test_set.csv``).
        dicom_dir: the DICOM tree (default: ``src``).
        val_fraction: share of the training patients moved to the ``val`` split.
        seed: seed of that patient draw.
        without_callback: pathology of ``BENIGN_WITHOUT_CALLBACK`` rows (not recalled, so never biopsied):
            ``unknown`` (default, the paper's rule: no biopsy -> malignancy 0.5) or ``benign``.
    """
    check_fraction(val_fraction)
    src = require_dir(Path(src), "CBIS-DDSM folder")
    cases = []
    for given, default, split in ((train_csv, TRAIN_CSV, "train"), (test_csv, TEST_CSV, "test")):
        path = Path(given) if given else src / default
        if given or path.exists():
            cases += read_cases(path, split)
    if not cases:
        raise ConversionError(f"no calc case-description CSV found: expected {TRAIN_CSV} / {TEST_CSV} in {src}")
    folders = index_case_folders(require_dir(Path(dicom_dir) if dicom_dir else src, "DICOM folder"), cases)
    result = Conversion()
    root = Path(out).parent
    for case in track(cases, "convert cbis-ddsm", unit="case"):
        try:
            birads, pathology = labels(case, without_callback)
        except LabelError as error:
            incomplete = normalize_label(case.assessment) == "0"
            result.skip(case.source, "BI-RADS 0 (incomplete assessment)" if incomplete else "bad label", str(error))
            continue
        try:
            image, mask = locate(case, folders)
        except LocateError as error:
            # With no case folder at all the user most likely has the CSVs without the TCIA download.
            reason = error.reason if folders else "no CBIS-DDSM DICOM tree found (CSVs only? see --dicom_dir)"
            result.skip(case.source, reason, str(error))
            continue
        mask_path = write_mask(root / "masks" / "cbis-ddsm" / f"{case.roi_folder}.png", mask)
        result.rows.append(
            {
                "patient_id": case.patient_id,
                "image": manifest_path(image, root),
                "mask": manifest_path(mask_path, root),
                "birads": birads,
                "pathology": pathology,
                "lesion_id": case.roi_folder,
                "laterality": LATERALITY.get(case.laterality, case.laterality),
                "view": case.view,
                "split": case.split,
            }
        )
    carve_validation(result.rows, val_fraction, seed)
    return result


class LocateError(LookupError):
    """The DICOMs of a case are missing or ambiguous; ``reason`` groups the summary, the message names files."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def index_case_folders(root: Path, cases: list[Case]) -> dict[str, list[Path]]:
    """Map each case folder name the CSVs use to the DICOM files found below a folder of that name."""
    wanted = {c.image_folder for c in cases} | {c.roi_folder for c in cases}
    folders: dict[str, list[Path]] = {}
    for path in find_files(root, [".dcm"]):
        for part in path.relative_to(root).parts[:-1]:
            if part in wanted:
                folders.setdefault(part, []).append(path)
                break
    return folders


def locate(case: Case, folders: dict[str, list[Path]]) -> tuple[Path, np.ndarray]:
    """The full mammogram's DICOM and the ROI mask (boolean, the mammogram's size) of a case.

    Raises:
        LocateError: folder missing, several candidate mammograms, or no single binary mask of the right size.
    """
    images = folders.get(case.image_folder, [])
    if not images:
        raise LocateError("mammogram DICOM not found", f"no DICOM under a folder named {case.image_folder}")
    if len(images) > 1:
        named = [p for p in images if p.as_posix().endswith(case.image.split("/")[-1])]
        if len(named) != 1:
            raise LocateError("several mammogram DICOMs", f"{len(images)} DICOMs under {case.image_folder}")
        images = named
    shape = _header(images[0]).shape
    masks = []
    for path in folders.get(case.roi_folder, []):
        if _header(path).shape != shape:
            continue  # the cropped image (or a foreign file): never the full mammogram's size
        pixels = _read(path).pixels
        if np.unique(pixels).size <= 2:
            masks.append((path, pixels > pixels.min()))
    if len(masks) > 1:  # content cannot decide; the CSV's file name breaks the tie
        masks = [m for m in masks if m[0].name == case.roi_mask.split("/")[-1]]
    if len(masks) != 1:
        raise LocateError(
            "ROI mask not found",
            f"{len(folders.get(case.roi_folder, []))} DICOM(s) under {case.roi_folder}; "
            f"expected exactly one binary image of {shape[0]}x{shape[1]} (the mammogram's size)",
        )
    if not masks[0][1].any():
        raise LocateError("ROI mask is empty", f"{masks[0][0]} has no nonzero pixel")
    return images[0], masks[0][1]


def _header(path: Path):
    try:
        return read_header(path)
    except ImageReadError as error:
        raise LocateError("unreadable DICOM", str(error)) from None


def _read(path: Path):
    try:
        return read_image(path, voi="full", allow_blank=True)  # an ROI mask DICOM may be all zero
    except ImageReadError as error:
        raise LocateError("unreadable DICOM", str(error)) from None
