"""A study as the clinical path sees it: the mammograms it rates, the SEGs it may use, and what it skipped.

Studies come from a PACS (``pacs``) or a local folder (``read_folder``); either way every object is sorted here
(:func:`select`), so the rest of the path does not care where they came from:

* **rated**: Digital Mammography X-Ray Image Storage - For Presentation (or an MG image of an older SOP class
  marked FOR PRESENTATION), single frame, ImageType ORIGINAL/DERIVED + PRIMARY, not a 2-D image generated from
  a tomosynthesis volume, and of one of the asked views (``--views``; every view by default);
* **used**: a SEG whose segments are coded as calcifications (``codes.is_calcification``) on a rated image;
* **ignored with a note** (one line per object, by series and instance number): tomosynthesis, CR, "for
  processing" images, screen captures, other views, SEGs of other structures (e.g. a density SEG of the whole
  breast), and birads-calc's own earlier results (kept aside: a new SR names the last one as its predecessor).

Each study also gets a pseudonym (``study-1``, ``study-2``, ... in the order asked for), the only name it has in
CSVs, file names and messages about its content: identifying DICOM fields stay inside the DICOM objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from birads_calc.clinical.codes import is_calcification
from birads_calc.clinical.errors import ClinicalError

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SR_CLASSES = {
    COMPREHENSIVE_3D_SR: "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR",
}
SOP_CLASS_NAMES = {
    MG_FOR_PRESENTATION: "digital mammogram for presentation",
    MG_FOR_PROCESSING: "digital mammogram for processing",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "breast tomosynthesis volume",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "breast projection X-ray (tomosynthesis)",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "breast projection X-ray for processing",
    "1.2.840.10008.5.1.4.1.1.1": "computed radiography (CR)",
    "1.2.840.10008.5.1.4.1.1.1.1": "digital X-ray for presentation",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state",
    SEG_STORAGE: "segmentation",
    **{uid: f"{name} report" for uid, name in SR_CLASSES.items()},
}
MAMMOGRAPHY_VIEWS = ("CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "ISO", "CV", "AT")
OUR_MANUFACTURER = "birads-calc"
# Type 2 attributes of the patient, study and series modules that highdicom copies from the source images into
# the SEG and SR; some exports (and the synthetic phantom) leave them out, where the standard allows them empty.
TYPE2_COPIED = {
    "PatientName": "",
    "PatientID": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "StudyID": "",
    "StudyDate": "",
    "StudyTime": "",
    "AccessionNumber": "",
    "ReferringPhysicianName": "",
    "SeriesNumber": None,
    "InstanceNumber": None,
}


@dataclass
class Study:
    """One study: ``key`` is its pseudonym (``study-N``), ``uid`` its Study Instance UID.

    Attributes:
        images: the mammograms to rate, in series then instance order.
        segs: SEGs with calcification segments (a reader's, or another program's).
        notes: one line per object left out, and why.
        earlier: birads-calc's own earlier SRs of this study (headers only), newest last.
        series_numbers: every Series Number the study already uses (new results take higher ones).
    """

    key: str
    uid: str
    images: list[Dataset] = field(default_factory=list)
    segs: list[Dataset] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    earlier: list[Dataset] = field(default_factory=list)
    series_numbers: set[int] = field(default_factory=set)

    def image(self, sop_instance_uid: str) -> Dataset | None:
        return next((x for x in self.images if x.SOPInstanceUID == sop_instance_uid), None)


def describe(ds: Dataset) -> str:
    """An object named without identifying fields: ``series 3 object 2 (breast tomosynthesis volume)``."""
    kind = SOP_CLASS_NAMES.get(str(ds.get("SOPClassUID", "")), f"{ds.get('Modality', '?')} object")
    series, instance = (ds.get(k) if ds.get(k) not in (None, "") else "?" for k in ("SeriesNumber", "InstanceNumber"))
    return f"series {series} object {instance} ({kind})"


def made_by_us(ds: Dataset) -> bool:
    """An object birads-calc wrote (stored back earlier): its regions are results, not input."""
    return str(ds.get("Manufacturer", "")) == OUR_MANUFACTURER


def image_verdict(ds: Dataset, views: Sequence[str] | None) -> str | None:
    """``None`` when the object is a mammogram to rate, else why it is left out."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == MG_FOR_PROCESSING or str(ds.get("PresentationIntentType", "")).upper() == "FOR PROCESSING":
        return "a 'for processing' image: birads-calc rates the 'for presentation' images a radiologist reads"
    if sop_class != MG_FOR_PRESENTATION and not (ds.get("Modality") == "MG" and sop_class not in SOP_CLASS_NAMES):
        return "not a 2-D digital mammogram (birads-calc rates Digital Mammography X-Ray Images for presentation)"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return f"{ds.NumberOfFrames} frames: not a 2-D mammogram"
    image_type = [str(x).upper() for x in (ds.get("ImageType") or [])]
    if len(image_type) > 1 and image_type[1] == "SECONDARY":
        return "ImageType SECONDARY (a derived copy or screen capture, not the acquired image)"
    if any(value in ("GENERATED_2D", "SYNTHESIZED", "TOMOSYNTHESIS") for value in image_type[2:]):
        return "a 2-D image generated from tomosynthesis: the model was trained on acquired mammograms"
    view = str(ds.get("ViewPosition", "") or "").upper()
    if views and view not in views:
        return f"view {view or 'unknown'} not asked for (--views {' '.join(views)})"
    return None


def select(key: str, uid: str, instances: Iterable[Dataset], where: str, views: Sequence[str] | None = None) -> Study:
    """Sort a study's objects (headers are enough, except for the SEGs, which need their pixels).

    Raises:
        ClinicalError: nothing to rate in the study (the message says what it holds).
    """
    study = Study(key, uid)
    views = [v.upper() for v in views] if views else None
    for ds in instances:
        if "SeriesNumber" in ds and str(ds.SeriesNumber).strip():
            study.series_numbers.add(int(ds.SeriesNumber))
        sop_class = str(ds.get("SOPClassUID", ""))
        if made_by_us(ds):
            if sop_class == COMPREHENSIVE_3D_SR:
                study.earlier.append(ds)  # the TID 1500 reports a new one succeeds (not a CAD SR)
            continue  # results of an earlier run: never input
        if sop_class == SEG_STORAGE or ds.get("Modality") == "SEG":
            if any(is_calcification(s) for s in ds.get("SegmentSequence", [])):
                study.segs.append(ds)
            else:
                study.notes.append(f"{describe(ds)}: ignored, its segments are not coded as calcifications")
            continue
        verdict = image_verdict(ds, views)
        if verdict is None:
            study.images.append(complete_type2(ds))
        elif ds.get("Modality") in ("MG", "CR", "DX") or sop_class in SOP_CLASS_NAMES:
            study.notes.append(f"{describe(ds)}: skipped, {verdict}")
    if not study.images:
        held = "; ".join(study.notes) if study.notes else "no image at all"
        raise ClinicalError(f"{key} (study {uid} in {where}) holds no mammogram to rate: {held}")
    study.images.sort(key=lambda x: (_number(x, "SeriesNumber"), _number(x, "InstanceNumber"), str(x.SOPInstanceUID)))
    study.earlier.sort(key=lambda x: (str(x.get("ContentDate", "")), str(x.get("ContentTime", ""))))
    return study


def _number(ds: Dataset, keyword: str) -> int:
    try:
        return int(ds.get(keyword) or 0)
    except (TypeError, ValueError):
        return 0


def complete_type2(ds: Dataset) -> Dataset:
    """Add the copied Type 2 attributes a source image lacks, empty (the standard's value for "unknown")."""
    for keyword, empty in TYPE2_COPIED.items():
        if keyword not in ds:
            setattr(ds, keyword, empty)
    return ds


def read_folder(folder: Path, studies: Sequence[str] = ()) -> dict[str, list[Path]]:
    """The DICOM files of a folder (searched recursively) by Study Instance UID: all studies, or those asked for.

    Only headers are read here; ``load_folder_study`` reads a study's files whole.

    Raises:
        ClinicalError: the folder is missing or holds no DICOM file, or an asked-for study is not in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ClinicalError(f"--dicom_dir {folder}: no such folder")
    by_study: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = _read_dicom(path, stop_before_pixels=True)
        if ds is not None and "StudyInstanceUID" in ds:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(path)
    if not by_study:
        raise ClinicalError(f"--dicom_dir {folder}: no DICOM file found")
    uids = list(studies) or sorted(by_study)
    return {uid: by_study.get(uid, []) for uid in uids}


def load_folder_study(key: str, uid: str, paths: Sequence[Path], folder: Path, views=None) -> Study:
    """One study of a folder: its files sorted by :func:`select` (pixels read for the rated images and SEGs)."""
    if not paths:
        raise ClinicalError(f"{key}: --dicom_dir {folder}: study {uid} not found among its DICOM files")
    headers = [h for h in (_read_dicom(p, stop_before_pixels=True) for p in paths) if h is not None]  # .filename set
    study = select(key, uid, headers, str(folder), views)
    study.images = [complete_type2(pydicom.dcmread(x.filename)) for x in study.images]
    study.segs = [pydicom.dcmread(x.filename) for x in study.segs]
    return study


def _read_dicom(path: Path, stop_before_pixels: bool = False) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None  # not DICOM (a README, a PNG): a folder export often holds such files beside the images


def write_instance(path: str | os.PathLike, ds: Dataset) -> Path:
    """Save a retrieved or built instance as a DICOM file (with its file meta information)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
