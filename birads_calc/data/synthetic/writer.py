"""Write a synthetic dataset: one DICOM per mammogram, one PNG mask per calcification, then ``manifest.csv``.

Reproducibility: the dataset's metadata is drawn from the first child of ``SeedSequence(seed)``; every image is
rendered from its own grandchild seed, so the bytes do not depend on the number of worker processes or on the
order in which the workers finish. DICOM UIDs are derived from the seed too (no clock, no random UIDs).

Safety: every file is written atomically (``birads_calc.io``); the manifest is written last, so an interrupted
run never leaves a manifest that points at missing files. When a dataset is overwritten, its old manifest and
``lesions.csv`` are removed before the first image is replaced: an interrupted overwrite leaves no manifest at
all, never an old manifest over a mix of old and new images and masks. A run killed between writing a file and
renaming it into place leaves a hidden ``.<name>.<random>.partial<suffix>`` file; the next complete run deletes
those.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from birads_calc.categories import SIX_CLASS, scale
from birads_calc.data.manifest import MANIFEST_COLUMNS
from birads_calc.data.masks import write_mask
from birads_calc.data.synthetic.lesions import PATHOLOGY_COVERAGES, ImageSpec, sample_dataset
from birads_calc.data.synthetic.phantom import render_image
from birads_calc.progress import track
from birads_calc.io import atomic_path, write_csv

# Privacy canary: fake identifying values that must appear in the DICOMs and nowhere in any output or log.
CANARY_MARKER = "Zq7"
CANARY_NAME = "CANARY^Patient^Zq7"
MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
LESION_COLUMNS = (
    "lesion_id",
    "birads",
    "suspicion",
    "morphology",
    "distribution",
    "malignant_truth",
    "biopsied",
    "drawn",
)


@dataclass(frozen=True)
class Summary:
    """What ``generate`` wrote."""

    manifest: Path
    images: int
    lesions: int
    not_drawn: int
    seconds: float


@dataclass(frozen=True)
class _Task:
    spec: ImageSpec
    seed: np.random.SeedSequence
    shape: tuple[int, int]
    spacing: float
    out: Path
    num_classes: int
    dataset_seed: int
    pathology: str = "clinical"


def generate(
    out: Path,
    patients: int,
    seed: int = 0,
    shape: tuple[int, int] = (512, 416),
    spacing: float = 0.2,
    workers: int = 2,
    num_classes: int = 6,
    pathology: str = "clinical",
) -> Summary:
    """Generate a dataset under ``out`` and return what was written.

    ``pathology``: ``clinical`` reports a pathology only for biopsied lesions (all 4A-5, 3% of 2, 10% of 3);
    ``paper`` for every lesion, drawn from the same latent malignancy. Same seed, same images and labels: the two
    differ only in the manifest's ``pathology`` column (and ``lesions.csv``'s ``biopsied``).

    Lesions that do not fit in the breast (only at very small image sizes) are not drawn, are left out of the
    manifest, and are counted in ``Summary.not_drawn`` and in ``lesions.csv`` (``drawn`` = 0).
    """
    start = time.perf_counter()
    scale(num_classes)  # a clear error for anything but 6 or 4, before any work
    if pathology not in PATHOLOGY_COVERAGES:
        raise ValueError(f"pathology must be one of {PATHOLOGY_COVERAGES}, got {pathology!r}")
    out = Path(out)
    metadata_seed, render_seed = np.random.SeedSequence(seed).spawn(2)
    specs = sample_dataset(patients, np.random.default_rng(metadata_seed))
    tasks = [
        _Task(spec, child, tuple(shape), float(spacing), out, num_classes, seed, pathology)
        for spec, child in zip(specs, render_seed.spawn(len(specs)), strict=True)
    ]
    for stale in (out / "manifest.csv", out / "lesions.csv"):
        stale.unlink(missing_ok=True)  # before any image is replaced (see the module docstring)
    manifest_rows, lesion_rows = [], []
    for rows, extra in track(_run(tasks, workers), "synth: rendering", total=len(tasks), unit="image"):
        manifest_rows += rows
        lesion_rows += extra
    write_csv(out / "lesions.csv", lesion_rows, LESION_COLUMNS)
    manifest = write_csv(out / "manifest.csv", manifest_rows, MANIFEST_COLUMNS)  # last: every file exists now
    for leftover in out.rglob(".*.partial*"):  # temporary files of a killed run (atomic_path's names)
        leftover.unlink(missing_ok=True)
    not_drawn = sum(1 for row in lesion_rows if row["drawn"] == 0)
    return Summary(manifest, len(specs), len(manifest_rows), not_drawn, time.perf_counter() - start)


def _run(tasks: list[_Task], workers: int) -> Iterator[tuple[list[dict], list[dict]]]:
    """Results in task order, rendered in this process (workers <= 1) or in a process pool."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_render_and_write, tasks)
        return
    context = _pool_context()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_render_and_write, tasks, chunksize=max(1, len(tasks) // (8 * workers)))


def _pool_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a fresh server process that has imported this module once.

    Not plain fork: the caller may hold torch/OpenMP threads, which fork can deadlock. Not spawn: every worker
    would pay the package import again. ``spawn`` remains the fallback where forkserver does not exist.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _render_and_write(task: _Task) -> tuple[list[dict], list[dict]]:
    """Render one image, write its DICOM and masks, and return its manifest rows and lesion-truth rows."""
    spec = task.spec
    rendered = render_image(spec, task.shape, task.spacing, np.random.default_rng(task.seed))
    image_path = Path("images") / spec.patient_id / f"{spec.image_id}.dcm"
    write_dicom(task.out / image_path, rendered.pixels, spec, task.spacing, task.dataset_seed)
    manifest_rows, lesion_rows = [], []
    for k, (lesion, mask) in enumerate(zip(spec.lesions, rendered.masks, strict=True)):
        lesion_id = f"{spec.image_id}_{k}"
        label = _label(lesion.class_index, task.num_classes)
        lesion_rows.append(
            {
                "lesion_id": lesion_id,
                "birads": label,
                "suspicion": f"{lesion.suspicion:.4f}",
                "morphology": lesion.morphology,
                "distribution": lesion.distribution,
                "malignant_truth": int(lesion.malignant),
                "biopsied": int(lesion.biopsied or task.pathology == "paper"),
                "drawn": int(mask is not None),
            }
        )
        if mask is None:
            continue
        mask_path = Path("masks") / spec.patient_id / f"{lesion_id}.png"
        write_mask(task.out / mask_path, mask)
        manifest_rows.append(
            {
                "patient_id": spec.patient_id,
                "image": image_path.as_posix(),
                "mask": mask_path.as_posix(),
                "birads": label,
                "pathology": lesion.reported_pathology(task.pathology),
                "lesion_id": lesion_id,
                "laterality": spec.laterality,
                "view": spec.view,
            }
        )
    return manifest_rows, lesion_rows


def _label(class_index: int, num_classes: int) -> str:
    """Six-class index -> label of the requested scale (4A/4B/4C merge into 4 on the four-class scale)."""
    name = SIX_CLASS[class_index]
    return name[0] if num_classes == 4 and name.startswith("4") else name


def write_dicom(path: Path, pixels: np.ndarray, spec: ImageSpec, spacing: float, dataset_seed: int) -> Path:
    """Write display values in [0, 1] (MONOCHROME2 sense) as a 16-bit MG DICOM with the spec's bit depth.

    MONOCHROME1 files store ``max - value`` (bright = air), as some vendors do; the window (centre/width over
    the breast's 0.5-99.9 percentiles) is given in stored values, so a reader applies it before the inversion.
    """
    top = 2**spec.bits_stored - 1
    stored = np.round(np.clip(pixels, 0, 1) * top).astype(np.uint16)
    breast_values = stored[pixels > 0.02] if (pixels > 0.02).any() else stored.ravel()
    low, high = np.percentile(breast_values, [0.5, 99.9])
    centre, width = float((low + high) / 2), float(max(high - low, 1.0))
    if spec.photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
        centre = top - centre

    def uid(kind: str, key: str) -> str:
        return generate_uid(entropy_srcs=["birads-calc synth", str(dataset_seed), kind, key])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMOGRAPHY_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = uid("sop", spec.image_id)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MAMMOGRAPHY_FOR_PRESENTATION
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study", spec.patient_id)
    ds.SeriesInstanceUID = uid("series", spec.image_id)
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "birads-calc synthetic phantom"
    ds.BodyPartExamined = "BREAST"
    # Fake identifying fields (the privacy canary): never to be copied into any output.
    ds.PatientName = CANARY_NAME
    ds.PatientID = f"{CANARY_MARKER}-{spec.patient_index:06d}"
    ds.PatientBirthDate = f"{1940 + spec.patient_index % 45}{1 + spec.patient_index % 12:02d}15"
    ds.PatientSex = "F"
    ds.AccessionNumber = f"ACC{CANARY_MARKER}{spec.patient_index:06d}"
    ds.StudyDate = "20200101"
    ds.ImageLaterality = spec.laterality
    ds.Laterality = spec.laterality
    ds.ViewPosition = spec.view
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric
    ds.BitsAllocated = 16
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "US"
    ds.WindowCenter, ds.WindowWidth = round(centre, 1), round(width, 1)
    ds.VOILUTFunction = "LINEAR"
    ds.PixelSpacing = ds.ImagerPixelSpacing = [round(spacing, 6), round(spacing, 6)]
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = stored.tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
