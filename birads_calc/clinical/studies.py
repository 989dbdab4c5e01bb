"""A study as the clinical path sees it: its "for presentation" mammograms and its DICOM SEGs.

Studies come from a PACS (``pacs``) or a local folder (``read_folder``); either way they are sorted into a
:class:`Study` here, so the rest of the path does not care where they came from. Each study also gets a pseudonym
(``study-1``, ``study-2``, ... in the order asked for), the only name it has in CSVs, file names and messages
about its content: identifying DICOM fields stay inside the DICOM objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from birads_calc.clinical.errors import ClinicalError

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
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
    """One study: ``key`` is its pseudonym (``study-N``), ``uid`` its Study Instance UID."""

    key: str
    uid: str
    images: list[Dataset] = field(default_factory=list)
    segs: list[Dataset] = field(default_factory=list)

    def image(self, sop_instance_uid: str) -> Dataset | None:
        return next((x for x in self.images if x.SOPInstanceUID == sop_instance_uid), None)


def for_presentation(ds: Dataset) -> bool | None:
    """True for an MG "for presentation" image, False for "for processing", None for anything else."""
    if ds.get("Modality") != "MG" and ds.get("SOPClassUID") not in (MG_FOR_PRESENTATION, MG_FOR_PROCESSING):
        return None
    intent = str(ds.get("PresentationIntentType", "")).upper()
    if intent:
        return intent == "FOR PRESENTATION"
    return ds.get("SOPClassUID") != MG_FOR_PROCESSING


def is_seg(ds: Dataset) -> bool:
    return ds.get("SOPClassUID") == SEG_STORAGE or ds.get("Modality") == "SEG"


def made_by_us(ds: Dataset) -> bool:
    """A SEG birads-calc wrote (stored back earlier): its regions are results, not input."""
    return str(ds.get("Manufacturer", "")) == OUR_MANUFACTURER


def build_study(key: str, uid: str, instances: Iterable[Dataset], where: str) -> Study:
    """Sort a study's instances into mammograms and SEGs; refuse a study with nothing to rate.

    Args:
        key: the pseudonym (``study-N``).
        uid: the Study Instance UID (named in messages: the user typed it or the query found it).
        instances: every instance retrieved or read.
        where: where the study came from, for messages (the PACS URL or the folder).
    """
    instances = list(instances)
    intents = [for_presentation(x) for x in instances]
    study = Study(key, uid)
    study.images = [complete_type2(x) for x, intent in zip(instances, intents, strict=True) if intent]
    study.segs = [x for x in instances if is_seg(x) and not made_by_us(x)]
    if not study.images:
        if False in intents:
            raise ClinicalError(
                f"{key} (study {uid} in {where}) holds only 'for processing' mammograms; birads-calc rates the "
                "'for presentation' images (PresentationIntentType FOR PRESENTATION) a radiologist reads"
            )
        raise ClinicalError(f"{key} (study {uid} in {where}) holds no mammogram (Modality MG)")
    study.images.sort(key=lambda x: (str(x.get("SeriesInstanceUID")), int(x.get("InstanceNumber") or 0)))
    return study


def complete_type2(ds: Dataset) -> Dataset:
    """Add the copied Type 2 attributes a source image lacks, empty (the standard's value for "unknown")."""
    for keyword, empty in TYPE2_COPIED.items():
        if keyword not in ds:
            setattr(ds, keyword, empty)
    return ds


def read_folder(folder: Path, studies: Sequence[str] = ()) -> list[Study]:
    """The studies of a folder of DICOM files (searched recursively), all of them or those asked for.

    Raises:
        ClinicalError: the folder is missing or holds no DICOM file, or an asked-for study is not in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ClinicalError(f"--dicom_dir {folder}: no such folder")
    by_study: dict[str, list[Dataset]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = _read_dicom(path)
        if ds is not None and "StudyInstanceUID" in ds:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    if not by_study:
        raise ClinicalError(f"--dicom_dir {folder}: no DICOM file found")
    uids = list(studies) or sorted(by_study)
    missing = [uid for uid in uids if uid not in by_study]
    if missing:
        raise ClinicalError(f"--dicom_dir {folder}: study {', '.join(missing)} not found among its DICOM files")
    return [build_study(f"study-{n}", uid, by_study[uid], str(folder)) for n, uid in enumerate(uids, 1)]


def _read_dicom(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None  # not DICOM (a README, a PNG): a folder export often holds such files beside the images


def write_instance(path: str | os.PathLike, ds: Dataset) -> Path:
    """Save a retrieved or built instance as a DICOM file (with its file meta information)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
