"""Tiny, hand-controlled DICOMs, masks and manifests for tests (the realistic generator is ``synth``).

Every helper writes real files through pydicom / Pillow so the code under test reads them as it would read a
hospital export. Images are small (e.g. 256x256) to keep the suite fast.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CANARY_NAME = "CANARY^Patient^Zq7"  # searched for in outputs by the privacy tests
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MANIFEST_COLUMNS = ["patient_id", "image", "mask", "birads", "pathology", "lesion_id", "laterality", "view", "split"]


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    signed: bool = False,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    pixel_spacing: tuple[float, float] | None = (0.1, 0.1),
    patient_name: str = CANARY_NAME,
    patient_id: str = "P0",
    frames: int = 1,
) -> Path:
    """Write ``pixels`` (2-D integer array of stored values) as an uncompressed MG DICOM."""
    pixels = np.asarray(pixels)
    dtype = np.int16 if signed else np.uint16
    if bits_stored <= 8:
        dtype = np.int8 if signed else np.uint8
    data = pixels.astype(dtype)
    if frames > 1:
        data = np.stack([data] * frames)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "MG"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.AccessionNumber = "ACC-CANARY-1"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1.0
        ds.RescaleIntercept = intercept if intercept is not None else 0.0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
        ds.ImagerPixelSpacing = list(pixel_spacing)
    ds.PixelData = data.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_mask(path: Path, mask: np.ndarray) -> Path:
    """Write a binary mask as an 8-bit PNG (0 / 255)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255).save(path)
    return path


def disc(shape: Sequence[int], center: Sequence[float], radius: float) -> np.ndarray:
    """A boolean disc of ``radius`` pixels centred at ``(row, col)``."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def write_manifest(path: Path, rows: Iterable[dict], columns: Sequence[str] = MANIFEST_COLUMNS) -> Path:
    """Write manifest rows (dicts; missing keys become empty cells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


def make_tiny_dataset(
    root: Path,
    *,
    patients: int = 10,
    images_per_patient: int = 1,
    lesions_per_image: int = 2,
    size: int = 256,
    num_classes: int = 6,
    labels: bool = True,
    seed: int = 0,
) -> Path:
    """A small dataset whose lesion brightness rises with the BI-RADS class (so a model can learn it).

    Returns the manifest path. Lesion classes cycle through the scale so every class is present; pathology is
    malignant for the top classes, benign for the lowest, unknown otherwise.
    """
    from birads_calc.categories import scale

    rng = np.random.default_rng(seed)
    names = scale(num_classes)
    rows, k = [], 0
    for p in range(patients):
        pid = f"P{p:03d}"
        for i in range(images_per_patient):
            image = rng.normal(1200, 80, (size, size))
            lesion_masks = []
            for j in range(lesions_per_image):
                cls = k % num_classes
                k += 1
                center = rng.uniform(0.2 * size, 0.8 * size, 2)
                m = disc((size, size), center, radius=3 + cls)
                image[m] += 400 + 300 * cls
                lesion_masks.append((j, cls, m))
            img_path = write_dicom(
                root / "images" / f"{pid}_{i}.dcm",
                np.clip(image, 0, 4095),
                bits_stored=12,
                photometric="MONOCHROME2",
                patient_id=pid,
                window=(2000, 4000),
            )
            for j, cls, m in lesion_masks:
                mask_path = write_mask(root / "masks" / f"{pid}_{i}_{j}.png", m)
                pathology = "malignant" if cls >= num_classes - 2 else ("benign" if cls == 0 else "")
                rows.append(
                    {
                        "patient_id": pid,
                        "image": img_path.relative_to(root).as_posix(),
                        "mask": mask_path.relative_to(root).as_posix(),
                        "birads": names[cls] if labels else "",
                        "pathology": pathology,
                        "lesion_id": f"{pid}_{i}_{j}",
                        "laterality": "L" if i % 2 == 0 else "R",
                        "view": "CC",
                    }
                )
    return write_manifest(root / "manifest.csv", rows)
