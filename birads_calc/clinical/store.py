"""Storing a study's results on a PACS so that what is reported stored is stored, and no SR points at nothing.

:func:`store_study` sends the SEGs first (STOW-RS), then checks each one on the PACS (QIDO-RS by SOP Instance UID:
a STOW answer is not proof, a server filter can drop an object it listed as stored); only when all of them are there
does it send the SR (and the CAD SR), and checks those too. A failure names what is and is not on the PACS. Nothing
that was stored is deleted (DICOMweb has no delete; a SEG without its SR is harmless and is completed by a re-send).

``birads-calc store DIR --dicomweb URL`` re-sends kept results: DIR is a predict folder (its ``dicom/``), its
``dicom/`` folder or one ``study-N`` folder; objects already on the PACS are not sent again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pydicom
from jsonargparse import ArgumentParser, Namespace
from pydicom.dataset import Dataset

from birads_calc.clinical.errors import ClinicalError
from birads_calc.clinical.pacs import Access, Pacs

STORE_HINT = "birads-calc store {folder} --dicomweb {url}"


class StoreError(ClinicalError):
    """A store that did not complete; ``stored`` counts the objects of the study that are on the PACS."""

    def __init__(self, message: str, stored: int):
        super().__init__(message, exit_code=1)
        self.stored = stored


def name_of(ds: Dataset) -> str:
    """``SEG 2`` / ``SR`` / ``Mammography CAD SR``: an object of the results, named without identifying fields."""
    if ds.Modality == "SEG":
        return f"SEG {ds.InstanceNumber}"
    return "Mammography CAD SR" if ds.SOPClassUID.endswith(".88.50") else "SR"


def store_study(pacs: Pacs, key: str, segs: Sequence[Dataset], reports: Sequence[Dataset], folder: Path) -> int:
    """Store one study's SEGs, then (only when every SEG is confirmed) its reports; returns the objects stored.

    Raises:
        StoreError: naming what is and is not on the PACS and how to send the rest again.
    """
    study_uid = str((list(segs) or list(reports))[0].StudyInstanceUID)
    confirmed: list[Dataset] = []
    for number, stage in enumerate((list(segs), list(reports))):
        there = [pacs.holds(study_uid, ds) for ds in stage]  # a re-send skips what is already there
        confirmed += [ds for ds, held in zip(stage, there, strict=True) if held]
        pending = [ds for ds, held in zip(stage, there, strict=True) if not held]
        if not pending:
            continue
        reasons = pacs.send(f"the results of {key}", pending)
        missing = []
        for ds in pending:
            if pacs.holds(study_uid, ds):
                confirmed.append(ds)
            else:
                why = reasons.get(str(ds.SOPInstanceUID), "not found on it after the store")
                missing.append(f"{name_of(ds)} ({why})")
        if missing:
            held = ", ".join(name_of(ds) for ds in confirmed) or "nothing"
            unsent = [name_of(ds) for ds in reports] if number == 0 else []
            not_sent = f"; not sent: {', '.join(unsent)} (it would point at what is missing)" if unsent else ""
            raise StoreError(
                f"{key}: the PACS {pacs.url} did not keep {', '.join(missing)}; on the PACS: {held}{not_sent}. "
                f"The files are kept in {folder}: send them again with "
                f"{STORE_HINT.format(folder=folder, url=pacs.url)}",
                stored=len(confirmed),
            )
    return len(confirmed)


def read_results(folder: Path) -> tuple[list[Dataset], list[Dataset]]:
    """(SEGs in instance order, reports) of one ``study-N`` folder."""
    segs = sorted((pydicom.dcmread(p) for p in folder.glob("seg-*.dcm")), key=lambda ds: int(ds.InstanceNumber))
    reports = [pydicom.dcmread(folder / name) for name in ("sr.dcm", "cad-sr.dcm") if (folder / name).is_file()]
    return segs, reports


def study_folders(folder: Path) -> list[Path]:
    """The ``study-N`` folders under DIR (a predict folder, its ``dicom/`` or one study folder)."""
    folder = Path(folder)
    if (folder / "sr.dcm").is_file():
        return [folder]
    root = folder / "dicom" if (folder / "dicom").is_dir() else folder
    found = sorted((p for p in root.glob("study-*") if (p / "sr.dcm").is_file()), key=lambda p: p.name)
    if not found:
        raise ClinicalError(f"{folder}: no results to store (no study-N/sr.dcm under it or its dicom/ folder)")
    return found


def configure_parser(parser: ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="A predict folder, its dicom/ folder or one study-N folder.")
    parser.add_argument("--dicomweb", type=str, required=True, help="DICOMweb root URL of the PACS.")
    add_access_options(parser)


def add_access_options(parser: ArgumentParser) -> None:
    """How to log in to the PACS (the secrets themselves come from the environment or the credentials file)."""
    parser.add_argument("--credentials", type=Path | None, default=None, help="File with user=/password= or token=.")
    parser.add_argument("--ca_bundle", type=Path | None, default=None, help="CA certificate(s) (PEM) of the PACS.")
    parser.add_argument("--client_cert", type=Path | None, default=None, help="Client certificate (PEM).")
    parser.add_argument("--client_key", type=Path | None, default=None, help="Its key, if not in --client_cert.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Seconds to wait for each PACS answer.")


def access_of(cfg: Namespace) -> Access:
    return Access(cfg.credentials, cfg.ca_bundle, cfg.client_cert, cfg.client_key)


def main(cfg: Namespace) -> int:
    try:
        pacs = Pacs(cfg.dicomweb, timeout=cfg.timeout, access=access_of(cfg))
        folders = study_folders(cfg.folder)
    except ClinicalError as error:
        print(f"birads-calc store: error: {error}", file=sys.stderr)
        return error.exit_code
    failed = 0
    for folder in folders:
        segs, reports = read_results(folder)
        try:
            count = store_study(pacs, folder.name, segs, reports, folder)
        except ClinicalError as error:
            print(f"birads-calc store: error: {error}", file=sys.stderr)
            failed = max(failed, error.exit_code)
            continue
        print(f"birads-calc store: {folder.name}: {count} object(s) on the PACS {pacs.url}", file=sys.stderr)
    return failed
