"""Synthetic mammography dataset generator behind ``birads-calc synth`` (DICOM + per-lesion masks + manifest).

No public dataset has per-calcification six-class BI-RADS with biopsy results, so the project ships a
generator grounded in the published figures below. Modules:

* ``lesions``: metadata only (category, latent suspicion, morphology, distribution, malignancy, biopsy);
  fast, so its statistics can be checked on thousands of draws (``sample_dataset``);
* ``morphology``: calcification geometry in millimetres per lexicon morphology and distribution;
* ``phantom``: breast outline, skin line, power-law parenchyma, rendering as projected calcium thickness;
* ``writer``: DICOM / PNG mask / ``manifest.csv`` output, process pool, determinism by seed.

Grounding (sources):

* Class mix: the paper's Table 2 (3180 / 1751 / 323 / 241 / 778 / 902 for BI-RADS 2 / 3 / 4A / 4B / 4C / 5;
  7,175 calcification regions on 1,776 mammograms of 708 patients, so about 4 regions per image and 2.5 images
  per patient). Zhang et al., "BI-RADS Classification of Calcification on Mammograms".
* Likelihood of malignancy per category: ACR BI-RADS Atlas, 5th edition (2013): 2 essentially 0%, 3 <= 2%,
  4A 2-10%, 4B 10-50%, 4C 50-95%, 5 >= 95%. Categories 2 and 3 are followed up, not biopsied, so their
  pathology is mostly unknown (empty); 4A and above are biopsied (``--pathology clinical``, the default). The
  paper's data has a biopsy result for essentially every calcification (2,731 malignant + 5,426 benign of 7,175
  regions); ``--pathology paper`` reports one for every lesion, drawn from the same latent malignancy.
* Morphology and distribution: ACR BI-RADS Atlas 5th ed. lexicon (typically benign: coarse/popcorn, rim,
  vascular, large rod-like, round, punctate < 0.5 mm; suspicious: amorphous, coarse heterogeneous, fine
  pleomorphic, fine linear / fine-linear branching; distributions diffuse, regional > 2 cm, grouped within about
  1 cm, linear, segmental, with suspicion rising in that order). Descriptor risk ordering from Burnside et al.,
  "Use of microcalcification descriptors in BI-RADS 4th edition to stratify risk of malignancy", Radiology 2007
  (coarse heterogeneous 7.1% and amorphous 13.3%, higher for fine pleomorphic and fine linear) and Kim et al.,
  "'Category 4A' microcalcifications", Acta Radiologica 2018 (amorphous and grouped most common in 4A; fine
  pleomorphic or fine linear/branching 91.4%). Hence amorphous / coarse heterogeneous sit at 4A-4B, fine
  pleomorphic at 4C and fine linear/branching in a linear or segmental distribution at 5.
* Reader overlap: the category drives a continuous latent suspicion, blurred across neighbouring bands, and the
  appearance is drawn from the latent value, so neighbouring categories overlap in appearance as they do for
  readers.
* Sizes: microcalcifications 0.1-1 mm; coarse / popcorn and rod-like > 2 mm; punctate < 0.5 mm. Full-field
  digital mammography samples at 0.05-0.1 mm per pixel with 12-14 bits stored in 16.
* Parenchyma: power-law power spectrum ``P(f) ~ 1/f^beta`` with beta about 3: Burgess, Jacobson & Judy, "Human
  observer detection experiments with mammograms and power-law noise", Medical Physics 28(4), 2001.

Everything is in physical units (mm), so the same dataset can be drawn at the paper's scale
(``--image_size 3328 2560 --pixel_spacing 0.085``: 400-pixel windows cover 34 mm) or at a CPU-demo scale
(default ``512 416`` at 0.2 mm/pixel, where a 160-pixel window covers 32 mm).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import PositiveInt, restricted_number_type

from birads_calc.data.limits import ImageSide, PixelSpacingMm, Seed
from birads_calc.data.synthetic.lesions import ImageSpec, LesionSpec, sample_dataset
from birads_calc.data.synthetic.writer import CANARY_MARKER, CANARY_NAME, Summary, generate
from birads_calc.errors import InputError

__all__ = [
    "CANARY_MARKER",
    "CANARY_NAME",
    "ImageSpec",
    "LesionSpec",
    "Summary",
    "configure_parser",
    "generate",
    "main",
    "sample_dataset",
]

DEFAULT_IMAGE_SIZE = (512, 416)
DEFAULT_PIXEL_SPACING = 0.2
DEFAULT_PATIENTS = 100
MAX_PATIENTS = 100_000  # about 100 times the paper's 708; a typo such as 10**9 would run for days
Patients = restricted_number_type("Patients", int, [(">=", 1), ("<=", MAX_PATIENTS)])


def configure_parser(parser: ArgumentParser) -> None:
    """Options of ``birads-calc synth``."""
    parser.add_argument("--out", type=Path, required=True, help="Output folder (images/, masks/, manifest.csv).")
    parser.add_argument(
        "--patients", type=Patients, default=DEFAULT_PATIENTS, help="Number of patients (~2.5 views each), 1-100000."
    )
    parser.add_argument("--seed", type=Seed, default=0, help="Dataset seed in [0, 2^32): same seed, same bytes.")
    parser.add_argument(
        "--image_size",
        type=ImageSide,
        nargs=2,
        default=list(DEFAULT_IMAGE_SIZE),
        metavar=("ROWS", "COLS"),
        help="Image size in pixels (paper scale: 3328 2560 with --pixel_spacing 0.085).",
    )
    parser.add_argument(
        "--pixel_spacing", type=PixelSpacingMm, default=DEFAULT_PIXEL_SPACING, help="mm per pixel, 0.01-2."
    )
    parser.add_argument(
        "--workers", type=PositiveInt, default=2, help="Worker processes (the output does not depend on it)."
    )
    parser.add_argument(
        "--num_classes", type=Literal[6, 4], default=6, help="6 (2,3,4A,4B,4C,5) or 4 (2,3,4,5) labels."
    )
    parser.add_argument("--overwrite", type=bool, default=False, help="Replace an existing dataset in --out.")
    parser.add_argument(
        "--pathology",
        type=Literal["paper", "clinical"],
        default="clinical",
        help="Which calcifications get a pathology: clinical = biopsied ones only (all 4A-5, 3% of 2, 10% of 3); "
        "paper = every one, as in the paper's data (docs/synthetic.md).",
    )


def main(cfg: Namespace) -> int:
    """Run ``birads-calc synth``; returns the exit code."""
    problem = _check(cfg)
    if problem:
        raise InputError(problem)  # the CLI prints it on stderr, exit code 2
    summary = generate(
        cfg.out,
        patients=cfg.patients,
        seed=cfg.seed,
        shape=tuple(cfg.image_size),
        spacing=cfg.pixel_spacing,
        workers=cfg.workers,
        num_classes=cfg.num_classes,
        pathology=cfg.pathology,
    )
    if summary.not_drawn:
        print(
            f"note: {summary.not_drawn} calcifications did not fit in their breast at this image size and were "
            f"left out of the manifest (listed with drawn=0 in {Path(cfg.out) / 'lesions.csv'})",
            file=sys.stderr,
        )
    print(
        f"wrote {summary.images} images and {summary.lesions} calcifications of {cfg.patients} patients "
        f"in {summary.seconds:.1f} s: {summary.manifest}"
    )
    return 0


def _check(cfg: Namespace) -> str | None:
    """A clear message for options that cannot work together, before any file is written (each option's own range
    is a type of the parser)."""
    rows, cols = cfg.image_size
    if min(rows, cols) * cfg.pixel_spacing < 40:
        return (
            f"--image_size {rows} {cols} at {cfg.pixel_spacing} mm/pixel covers less than 40 mm; a breast with "
            "calcifications needs more (e.g. 512 416 at 0.2 mm/pixel)"
        )
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        return f"--out {cfg.out} is a file; give the folder to write the dataset into"
    if (Path(cfg.out) / "manifest.csv").exists() and not cfg.overwrite:
        return f"{Path(cfg.out) / 'manifest.csv'} already exists; pass --overwrite true to replace the dataset"
    return None
