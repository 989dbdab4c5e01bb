"""Search outputs for patient-identifying values (privacy tests of the data tools, training and prediction).

Usage::

    needles = identifying_values(dicoms)            # what the input DICOMs really hold
    assert find_leaks(needles, folder=run_dir, texts=[captured.out, captured.err, caplog.text]) == []

Every file under ``folder`` is searched as bytes, text and binary alike (CSV, JSON, YAML, logs, checkpoints,
NumPy arrays, PNGs, W&B run files), for each needle in UTF-8 and UTF-16-LE and without regard to case. A short
needle could turn up in binary data by chance, so needles under :data:`MIN_BINARY_NEEDLE` bytes are searched in
text (captured output, and files that decode as UTF-8) only.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path

import pydicom

# DICOM attributes that identify a patient or a study instance a person could be traced by (PS3.15 Annex E basics).
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
)
MIN_BINARY_NEEDLE = 6  # 2**-48 chance per byte position: no accidental hit in gigabytes of pixels


def identifying_values(dicoms: Iterable[str | os.PathLike], keywords: Iterable[str] = IDENTIFYING_KEYWORDS) -> set[str]:
    """The non-empty identifying values the given DICOM files hold (person names also in other spellings).

    A PN value ``CANARY^Patient^Zq7`` yields itself, ``CANARY Patient Zq7`` and the family name ``CANARY``, so a
    name written with spaces or cut to its surname is found too. Given names are not searched alone: they are
    common words ("Patient") that outputs hold for other reasons.
    """
    keywords = tuple(keywords)
    values: set[str] = set()
    for path in dicoms:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in keywords:
            value = ds.get(keyword)
            if value is None or str(value).strip() == "":
                continue
            text = str(value).strip()
            values.add(text)
            if "^" in text:
                parts = [p for p in text.split("^") if p]
                values.add(" ".join(parts))
                if len(parts[0]) >= 3:
                    values.add(parts[0])
    return values


def find_leaks(
    needles: Iterable[str],
    folder: str | os.PathLike | None = None,
    texts: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> list[str]:
    """Every occurrence of a needle: ``"<file>: <needle>"`` or ``"output <i>: <needle>"``; empty when clean.

    Args:
        needles: the identifying strings (see :func:`identifying_values`).
        folder: searched recursively, every file (hidden ones and symlinked files included).
        texts: captured stdout/stderr, log text, warning messages.
        exclude: glob patterns (matched against the path relative to ``folder``) of files allowed to hold the
            values, i.e. the input DICOMs themselves.

    Raises:
        ValueError: for an empty needle (it would match everything).
    """
    needles = sorted(set(needles))
    if any(not n for n in needles):
        raise ValueError("empty needle")
    found = [f"output {i}: {n}" for i, text in enumerate(texts) for n in needles if n.lower() in text.lower()]
    if folder is None:
        return found
    folder = Path(folder)
    exclude = tuple(exclude)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if any(fnmatch.fnmatch(relative, pattern) for pattern in exclude):
            continue
        data = path.read_bytes().lower()
        is_text = _is_text(data)
        for needle in needles:
            if not is_text and len(needle.encode()) < MIN_BINARY_NEEDLE:
                continue
            if any(form in data for form in (needle.lower().encode(), needle.lower().encode("utf-16-le"))):
                found.append(f"{path}: {needle}")
    return found


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
