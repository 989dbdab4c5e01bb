"""``birads-calc detect``: calcification regions of mammograms without masks, as masks + a manifest.

Usage: ``birads-calc detect (MANIFEST | --images DIR_OR_FILES...) --out DIR [--pixel_spacing MM] [--crop]
[--scorer learned|handmade] [--weights ranker.pt]``.

Writes into ``--out``:

* ``masks/<image>/<image>_r<k>.png``: one mask per region (PNG 0/255, the image's size);
* ``detections.csv``: one row per region (``image`` as given, ``region_id``, ``score``, ``n_specks``,
  ``area_mm2``, ``bbox`` as ``row0 col0 row1 col1`` (ends exclusive), ``centroid_row``, ``centroid_col`` in the
  image's pixels, ``lesion_id``, ``mask``);
* ``manifest.csv``: one row per region in the manifest format (DESIGN §3), which ``check-data --labels optional``
  and ``predict`` read as it is;
* ``labelled.csv``, when the input manifest outlines and labels calcifications (``mask``, ``birads``): the
  regions that hit an outlined one (the FROC rule of ``evaluate``), with its ``birads`` and ``pathology``, which
  ``fit`` and ``test`` read as it is (the regions that hit none are counted on screen);
* ``report.csv``: one row per input image with its outcome (``regions``, ``no calcification found``,
  ``breast not found``, ``unreadable``, ``no pixel spacing``, ``bad pixel spacing``) and the reason: nothing is
  dropped silently.

A pixel spacing (from ``--pixel_spacing`` or a DICOM header) must be a finite number within 0.02-1.0 mm: an image
whose header says otherwise is a ``bad pixel spacing`` row naming its value, and the others go on; a bad
``--pixel_spacing`` stops the command before any work with one message.

The exit code is 0 when every image was read (found regions or not), 2 when some image could not be used.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from birads_calc.data.dicom import ImageReadError, PixelSpacingError, read_image
from birads_calc.data.manifest import MANIFEST_COLUMNS, ManifestError, read_rows, resolve_path
from birads_calc.data.masks import MaskError, read_mask, write_mask
from birads_calc.detection.detect import SCORERS, ImageDetection, Region, SpacingError, check_spacing, detect_image
from birads_calc.detection.evaluate import match_image
from birads_calc.detection.ranking import RankerError, load_ranker
from birads_calc.io import write_csv

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".pgm", ".tif", ".tiff")
RASTER_SUFFIXES = (".png", ".pgm", ".tif", ".tiff")  # carry no pixel spacing
DETECTION_COLUMNS = (
    "image",
    "region_id",
    "score",
    "n_specks",
    "area_mm2",
    "bbox",
    "centroid_row",
    "centroid_col",
    "lesion_id",
    "mask",
)
REPORT_COLUMNS = ("image", "status", "n_regions", "n_specks", "reason", "seconds")
FAILED = ("unreadable", "no pixel spacing", "bad pixel spacing")  # statuses that make the exit code 2


class DetectInputError(ValueError):
    """Inputs that cannot be used at all (no image given, a missing folder, PNG without --pixel_spacing)."""


@dataclass
class Truth:
    """An outlined calcification of the input manifest (used only to carry its label over)."""

    mask: Path
    birads: str
    pathology: str


@dataclass
class InputImage:
    """One image to run the detector on, with what the input said about it."""

    given: str  # as the manifest cell or command line gave it
    path: Path
    patient_id: str
    laterality: str = ""
    view: str = ""
    split: str = ""
    truths: list[Truth] = field(default_factory=list)
    labels: dict[int, Truth] = field(default_factory=dict)  # region_id -> the outlined calcification it hits


@dataclass(frozen=True)
class DetectSummary:
    """What :func:`run_detection` wrote: the files and per-image outcomes."""

    manifest: Path
    detections: Path
    report: Path
    images: int
    regions: int
    failed: int
    labelled: Path | None = None  # labelled.csv: the regions that took an outlined calcification's label
    unlabelled: int = 0


def configure_parser(parser) -> None:
    """Options of ``birads-calc detect``."""
    parser.add_argument(
        "manifest", type=str | None, nargs="?", default=None, help="A manifest (image column; masks optional)."
    )
    parser.add_argument("--images", type=str, nargs="+", default=None, help="DICOM/PNG/PGM files or folders of them.")
    parser.add_argument("--out", type=Path, required=True, help="Output folder (masks/, detections.csv, manifest.csv).")
    parser.add_argument(
        "--pixel_spacing",
        type=str | None,
        default=None,
        help="mm per pixel (0.02-1.0) for images that carry none (PNG, PGM, DICOMs without PixelSpacing).",
    )
    parser.add_argument(
        "--crop",
        type=bool | None,
        default=None,
        nargs="?",
        const=True,
        help="The images are crops of tissue (no film, skin or border margins); default: decided per image.",
    )
    parser.add_argument("--scorer", type=str, default="learned", help=f"Region score: one of {', '.join(SCORERS)}.")
    parser.add_argument(
        "--weights", type=Path | None, default=None, help="A ranker from detect-train (default: shipped)."
    )


def main(cfg) -> int:
    """Run ``birads-calc detect``; returns the exit code."""
    try:
        spacing = spacing_option(cfg.pixel_spacing)
        options = DetectOptions(cfg.crop, cfg.scorer, cfg.weights)
        summary = run_detection(cfg.out, cfg.manifest, cfg.images, spacing, progress=True, options=options)
    except (DetectInputError, ManifestError, RankerError) as error:
        print(f"birads-calc detect: error: {error}", file=sys.stderr)
        return 2
    print(
        f"detect: {summary.regions} region(s) on {summary.images - summary.failed} of {summary.images} image(s); "
        f"wrote {summary.detections}, {summary.manifest} and {summary.report}"
    )
    if summary.labelled:
        print(
            f"detect: {summary.regions - summary.unlabelled} region(s) hit an outlined calcification and took its "
            f"label: {summary.labelled} (for fit/test); {summary.unlabelled} hit none (false positives or "
            "calcifications nobody outlined) and are only in manifest.csv"
        )
    if summary.failed:
        print(f"detect: {summary.failed} image(s) could not be used; {summary.report} says why", file=sys.stderr)
        return 2
    return 0


@dataclass(frozen=True)
class DetectOptions:
    """How to detect: crops (``None``: per image), the region scorer and the ranker's weights file."""

    crop: bool | None = None
    scorer: str = "learned"
    weights: Path | None = None


def spacing_option(value) -> float | None:
    """``--pixel_spacing``: a number of mm within the detector's range, or :class:`DetectInputError`."""
    if value is None:
        return None
    try:
        spacing = float(value)
    except (TypeError, ValueError):
        raise DetectInputError(f"--pixel_spacing must be a number of mm (e.g. 0.2), got {value!r}") from None
    try:
        return check_spacing((spacing, spacing))[0]
    except SpacingError as error:
        raise DetectInputError(f"--pixel_spacing {value}: {error}") from None


def run_detection(
    out: Path,
    manifest: str | os.PathLike | None = None,
    images: Sequence[str] | None = None,
    pixel_spacing: float | None = None,
    progress: bool = False,
    options: DetectOptions = DetectOptions(),
) -> DetectSummary:
    """Detect on every input image and write masks, ``detections.csv``, ``manifest.csv`` and ``report.csv``."""
    if (manifest is None) == (not images):
        raise DetectInputError("give either a MANIFEST or --images DIR_OR_FILES..., not both and not neither")
    pixel_spacing = spacing_option(pixel_spacing)
    if options.scorer not in SCORERS:
        raise DetectInputError(f"--scorer must be one of {', '.join(SCORERS)}, got {options.scorer!r}")
    if options.scorer == "learned":
        load_ranker(options.weights)  # a wrong weights file stops the command before any image
    inputs = read_manifest_images(Path(manifest)) if manifest is not None else list_images(images)
    _require_spacing_for_rasters(inputs, pixel_spacing)
    out = Path(out)
    detections, manifest_rows, report = [], [], []
    stems: dict[str, int] = defaultdict(int)
    for n, item in enumerate(inputs, start=1):
        start = time.perf_counter()
        result, status = _detect_one(item, pixel_spacing, options)
        key = _unique_stem(item.path, stems)
        rows = _write_regions(out, item, key, result) if result is not None else []
        detections += [d for d, _ in rows]
        manifest_rows += [m for _, m in rows]
        report.append(_report_row(item, status, result, time.perf_counter() - start))
        if progress:
            print(f"detect: [{n}/{len(inputs)}] {item.given}: {report[-1]['status']}", file=sys.stderr, flush=True)
    failed = sum(row["status"] in FAILED for row in report)
    labelled = [row for row in manifest_rows if row["birads"]]
    return DetectSummary(
        labelled=write_csv(out / "labelled.csv", labelled, MANIFEST_COLUMNS) if labelled else None,
        unlabelled=len(manifest_rows) - len(labelled),
        manifest=write_csv(out / "manifest.csv", manifest_rows, MANIFEST_COLUMNS),
        detections=write_csv(out / "detections.csv", detections, DETECTION_COLUMNS),
        report=write_csv(out / "report.csv", report, REPORT_COLUMNS),
        images=len(inputs),
        regions=len(detections),
        failed=failed,
    )


def read_manifest_images(path: Path) -> list[InputImage]:
    """The distinct images of a manifest, in order, with the first row's ids and every row's outlined mask."""
    header, rows = read_rows(path)
    if "image" not in header:
        raise DetectInputError(f"{path}: missing required column 'image' (header: {', '.join(header) or 'empty'})")
    root = Path(os.path.abspath(path.parent))
    by_path: dict[Path, InputImage] = {}
    problems = []
    for number, _, cells in rows:
        value = cells.get("image") or ""
        try:
            image = resolve_path(root, value) if value else None
        except ValueError as error:
            problems.append(f"row {number}, column 'image': {error}")
            continue
        if image is None:
            problems.append(f"row {number}, column 'image': empty cell (required)")
            continue
        item = by_path.setdefault(image, _input_image(value, image, cells))
        if cells.get("mask"):
            try:
                mask = resolve_path(root, cells["mask"])
            except ValueError:
                continue  # a bad mask only loses its label transfer; check-data reports it
            item.truths.append(Truth(mask, cells.get("birads") or "", cells.get("pathology") or ""))
    if problems:
        raise DetectInputError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    if not by_path:
        raise DetectInputError(f"{path}: the manifest has no data rows")
    return list(by_path.values())


def _input_image(given: str, path: Path, cells: dict) -> InputImage:
    return InputImage(
        given=given,
        path=path,
        patient_id=cells.get("patient_id") or path.stem,
        laterality=cells.get("laterality") or "",
        view=cells.get("view") or "",
        split=(cells.get("split") or "").lower(),
    )


def list_images(values: Sequence[str]) -> list[InputImage]:
    """Files as given, and the image files under each folder (sorted); the patient id is the file's stem."""
    found = []
    for value in values:
        path = Path(value)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DetectInputError(f"--images {value}: no DICOM/PNG/PGM/TIFF file in this folder")
            found += [InputImage(str(p), Path(os.path.abspath(p)), p.stem) for p in files]
        elif path.is_file():
            found.append(InputImage(value, Path(os.path.abspath(path)), path.stem))
        else:
            raise DetectInputError(f"--images {value}: no such file or folder")
    return found


def _require_spacing_for_rasters(inputs: list[InputImage], pixel_spacing: float | None) -> None:
    rasters = [x.given for x in inputs if x.path.suffix.lower() in RASTER_SUFFIXES]
    if rasters and pixel_spacing is None:
        listed = ", ".join(rasters[:3]) + (f" and {len(rasters) - 3} more" if len(rasters) > 3 else "")
        raise DetectInputError(
            f"{len(rasters)} image(s) carry no pixel spacing ({listed}): PNG/PGM/TIFF files need "
            "--pixel_spacing MM (e.g. 0.2 for mini-MIAS); every size the detector uses is in millimetres"
        )


def _detect_one(
    item: InputImage, pixel_spacing: float | None, options: DetectOptions
) -> tuple[ImageDetection | None, str]:
    """The detection of one image, or ``None`` and why it could not run."""
    try:
        image = read_image(item.path)
    except PixelSpacingError as error:  # the header states a spacing outside 0.01-2 mm, or zero
        return None, f"bad pixel spacing: {error}"
    except ImageReadError as error:
        return None, f"unreadable: {error}"
    recorded = _recorded_spacing(item.path) if image.pixel_spacing is None else None
    if recorded is not None:  # a header value the reader could not take (0, negative, NaN): never replaced silently
        return None, f"bad pixel spacing: {item.given}: the DICOM records {recorded}, not a positive finite number"
    spacing = image.pixel_spacing or ((pixel_spacing, pixel_spacing) if pixel_spacing else None)
    if spacing is None:
        return None, "no pixel spacing: the DICOM has no PixelSpacing/ImagerPixelSpacing; pass --pixel_spacing MM"
    try:
        result = detect_image(image.pixels, spacing, crop=options.crop, scorer=options.scorer, weights=options.weights)
    except SpacingError as error:
        return None, f"bad pixel spacing: {item.given}: {error}"
    if item.truths and result.regions:
        _transfer_labels(item, result, spacing)
    return result, "regions" if result.regions else (result.reason or "")


def _recorded_spacing(path: Path) -> str | None:
    """A DICOM's PixelSpacing/ImagerPixelSpacing as written, when it has one (the reader returns ``None`` both
    for no spacing and for an unusable one)."""
    if path.suffix.lower() in RASTER_SUFFIXES:
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PixelSpacing", "ImagerPixelSpacing"])
    except Exception:  # the reader already decoded this file; a header it cannot parse again is no spacing
        return None
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2:
            return f"{key} {list(value)}"
    return None


def _transfer_labels(item: InputImage, result: ImageDetection, spacing) -> None:
    """Give each region the label of the outlined calcification it hits (kept on the item for the manifest)."""
    truths, kept = [], []
    for truth in item.truths:
        try:
            mask = read_mask(truth.mask)
        except MaskError:
            continue
        if mask.shape == result.regions[0].shape and mask.any():
            truths.append(mask)
            kept.append(truth)
    match = match_image(result.regions, truths, spacing)
    for region, hits in zip(result.regions, match.hits, strict=True):
        if hits:
            best = max(hits, key=lambda k: int((region.mask & truths[k]).sum()))
            item.labels[region.region_id] = kept[best]


def _unique_stem(path: Path, seen: dict[str, int]) -> str:
    """The image's file stem, numbered when two inputs share it (masks of different images never collide)."""
    seen[path.stem] += 1
    return path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}"


def _write_regions(out: Path, item: InputImage, key: str, result: ImageDetection) -> list[tuple[dict, dict]]:
    rows = []
    for region in result.regions:
        lesion_id = f"{key}_r{region.region_id}"
        mask = Path("masks") / key / f"{lesion_id}.png"
        write_mask(out / mask, region.mask)  # the full-size mask exists only while it is written
        truth = item.labels.get(region.region_id)
        rows.append((_detection_row(item, region, lesion_id, mask), _manifest_row(item, lesion_id, mask, truth)))
    return rows


def _detection_row(item: InputImage, region: Region, lesion_id: str, mask: Path) -> dict:
    return {
        "image": item.given,
        "region_id": region.region_id,
        "score": region.score,
        "n_specks": region.n_specks,
        "area_mm2": region.area_mm2,
        "bbox": " ".join(str(v) for v in region.bbox),
        "centroid_row": round(region.centroid[0], 2),
        "centroid_col": round(region.centroid[1], 2),
        "lesion_id": lesion_id,
        "mask": mask.as_posix(),
    }


def _manifest_row(item: InputImage, lesion_id: str, mask: Path, truth: Truth | None) -> dict:
    return {
        "patient_id": item.patient_id,
        "image": str(item.path),  # absolute: the images live outside --out and '..' paths are refused
        "mask": mask.as_posix(),
        "birads": truth.birads if truth else "",
        "pathology": truth.pathology if truth else "",
        "lesion_id": lesion_id,
        "laterality": item.laterality,
        "view": item.view,
        "split": item.split,
    }


def _report_row(item: InputImage, status: str, result: ImageDetection | None, seconds: float) -> dict:
    kind = status.split(":")[0].split(" (")[0]
    return {
        "image": item.given,
        "status": kind,
        "n_regions": len(result.regions) if result else 0,
        "n_specks": len(result.specks) if result is not None and result.specks is not None else 0,
        "reason": "" if kind == "regions" else status,
        "seconds": round(seconds, 3),
    }
