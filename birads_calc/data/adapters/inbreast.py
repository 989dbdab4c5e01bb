"""INbreast -> manifest: one row per ``Calcification`` ROI of the OsiriX XML files, labelled with its image's BI-RADS.

Inputs (as distributed): ``INbreast.xls`` (or its ``;``-separated ``INbreast.csv`` cut), ``AllXML/<File Name>.xml``
and ``AllDICOMs/<File Name>_<patient hash>_MG_<L|R>_<CC|ML>_ANON.dcm``; files are found anywhere below ``src``.

* Scale: six classes. INbreast rates each IMAGE (``Bi-Rads`` 1, 2, 3, 4a, 4b, 4c, 5, 6); every calcification ROI of
  the image takes that rating (approximate: the paper rates each calcification). Images rated 1 (negative) or 6
  (known cancer) are reported and left out, as the paper does.
* Masks: a contour ROI is filled; a single-point ROI (most individual calcifications) becomes a disc of
  ``point_radius`` pixels. ROIs of other kinds (Mass, Cluster, Distortion, ...) are reported, not converted:
  a ``Cluster`` outlines calcifications that are also annotated one by one.
* Patient: the table's ``Patient ID`` is literally "removed"; the hash in the DICOM file name identifies the
  patient (all images of a woman share it), so splits stay by patient.
* No biopsy result: ``pathology`` is empty (unknown).
"""

from __future__ import annotations

import csv
import math
import plistlib
import re
from pathlib import Path
from xml.parsers.expat import ExpatError

import numpy as np
from skimage.draw import polygon, polygon_perimeter

from birads_calc.categories import LabelError, label_name, normalize_label, parse_label
from birads_calc.data.adapters import Conversion, ConversionError, find_files, manifest_path, require_dir
from birads_calc.data.adapters.calcifications import circle
from birads_calc.data.dicom import ImageReadError, read_header
from birads_calc.data.limits import RadiusPx
from birads_calc.data.masks import write_mask
from birads_calc.progress import track

TABLES = ("INbreast.xls", "INbreast.csv")
POINT = re.compile(r"^\s*\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(?:,[^)]*)?\)\s*$")
EXCLUDED = {"1": "image BI-RADS 1 (negative)", "6": "image BI-RADS 6 (known cancer)"}


def read_table(path: Path) -> list[tuple[str, dict[str, str]]]:
    """Rows of ``INbreast.xls`` (first sheet) or ``INbreast.csv`` as (source, {column: text}).

    Cells are text with spreadsheet floats undone (``22678622.0`` -> ``"22678622"``) and spaces stripped, column
    names stripped too (the xls spells ``"Mass "``).

    Raises:
        ConversionError: unreadable file, or no ``File Name`` / ``Bi-Rads`` column.
    """
    path = Path(path)
    try:
        header, rows = _read_xls(path) if path.suffix.lower() == ".xls" else _read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as error:
        raise ConversionError(f"cannot read {path}: {error}") from None
    header = [_text(h) for h in header]
    missing = [c for c in ("File Name", "Bi-Rads") if c not in header]
    if missing:
        raise ConversionError(f"{path}: not an INbreast table, missing column(s) {missing}; found {header}")
    return [
        (f"{path.name} row {n}", {h: _text(v) for h, v in zip(header, row, strict=False)})
        for n, row in enumerate(rows, start=1)
    ]


def _read_xls(path: Path) -> tuple[list, list[list]]:
    try:
        import xlrd  # reads the legacy .xls format; only needed for INbreast.xls
    except ImportError:
        raise ConversionError(
            f"{path}: reading .xls needs the 'xlrd' package (pip install xlrd), or pass --table INbreast.csv"
        ) from None
    sheet = xlrd.open_workbook(str(path)).sheet_by_index(0)
    rows = [sheet.row_values(i) for i in range(sheet.nrows)]
    return (rows[0], rows[1:]) if rows else ([], [])


def _read_csv(path: Path) -> tuple[list, list[list]]:
    text = path.read_text(encoding="utf-8-sig", errors="strict")
    delimiter = ";" if ";" in text.splitlines()[0] else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    return (rows[0], rows[1:]) if rows else ([], [])


def _text(value: object) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text[:-2] if re.fullmatch(r"\d+\.0", text) else text


def read_rois(path: Path) -> list[tuple[str, list[tuple[float, float]]]]:
    """The ROIs of an OsiriX XML plist as (Name, [(x, y) pixel points]), in file order over all its images.

    Raises:
        ValueError: not a plist, or an ROI point that is not ``"(x, y)"``; the message names the file.
    """
    try:
        with Path(path).open("rb") as f:
            document = plistlib.load(f)
        rois = []
        for image in document["Images"]:
            for roi in image.get("ROIs", []):
                points = [_point(p) for p in roi.get("Point_px", [])]
                rois.append((str(roi.get("Name", "")).strip(), points))
        return rois
    except (OSError, ExpatError, plistlib.InvalidFileException, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not an INbreast ROI plist ({type(error).__name__}: {error})") from None


def _point(text: str) -> tuple[float, float]:
    match = POINT.match(str(text))
    if not match:
        raise ValueError(f"ROI point {text!r} is not '(x, y)'")
    return float(match.group(1)), float(match.group(2))


def roi_mask(points: list[tuple[float, float]], shape: tuple[int, int], point_radius: float) -> np.ndarray:
    """Mask of one ROI: a filled contour (with its outline, so thin ones are never empty) or a disc for a point."""
    mask = np.zeros(shape, dtype=bool)
    if len(points) == 1:
        return circle(shape, points[0][1], points[0][0], point_radius)
    cols, rows = np.array(points).T
    mask[polygon(rows, cols, shape)] = True
    mask[polygon_perimeter(np.round(rows), np.round(cols), shape, clip=False)] = True
    return mask


def convert(src: Path, out: Path, table: Path | None = None, point_radius: RadiusPx = 3.0) -> Conversion:
    """Convert INbreast (table + XML ROIs + DICOMs).

    Args:
        src: the INbreast folder (``INbreast.xls`` or ``.csv``, ``AllXML/``, ``AllDICOMs/``).
        out: the manifest to write; masks go to ``<its folder>/masks/inbreast/``.
        table: the table (default: ``src/INbreast.xls``, else ``src/INbreast.csv``).
        point_radius: radius in pixels of the disc drawn for a single-point calcification (INbreast pixels are
            0.07 mm: the default 3 px gives a disc about 0.5 mm across, a typical microcalcification).
    """
    src = require_dir(Path(src), "INbreast folder")
    table = Path(table) if table else next((src / t for t in TABLES if (src / t).exists()), src / TABLES[0])
    dicoms = {p.name.split("_")[0]: p for p in find_files(src, [".dcm"])}
    xmls = {p.stem: p for p in find_files(src, [".xml"])}
    root, result, seen = Path(out).parent, Conversion(), set()
    for source, row in track(read_table(table), "convert inbreast", unit="row"):
        name = row.get("File Name", "")
        if not name:
            result.skip(source, "table row without File Name (blank or totals row)")
            continue
        seen.add(name)
        if name not in xmls:
            result.skip(source, "image without XML ROI file (nothing annotated)", name)
            continue
        _convert_image(name, row, source, xmls[name], dicoms.get(name), point_radius, root, result)
    for name in sorted(set(xmls) - seen):
        result.skip(str(xmls[name]), "XML ROI file without a table row", name)
    return result


def _convert_image(name, row, source, xml, dicom, point_radius, root, result) -> None:
    """Append the rows of one image's calcification ROIs to ``result``; report the others."""
    try:
        rois = read_rois(xml)
    except ValueError as error:
        result.skip(str(xml), "unreadable XML ROI file", str(error))
        return
    calcifications = []
    for k, (kind, points) in enumerate(rois, start=1):
        where = f"{xml.name} ROI {k}"
        if kind.lower() != "calcification":
            result.skip(where, f"ROI '{kind}' is not a calcification")
        elif not points:
            result.skip(where, "calcification ROI without points")
        else:
            calcifications.append((k, where, points))
    if not calcifications:
        return
    skip_all = None
    try:
        birads = parse_label(row.get("Bi-Rads", ""), num_classes=6)
    except LabelError as error:
        skip_all = (EXCLUDED.get(normalize_label(row.get("Bi-Rads", "")), "bad label"), f"{source}: {error}")
    if skip_all is None and dicom is None:
        skip_all = ("DICOM not found", f"no {name}_*.dcm below the INbreast folder")
    if skip_all is None:
        try:
            shape = read_header(dicom).shape
        except ImageReadError as error:
            skip_all = ("unreadable DICOM", str(error))
    if skip_all is not None:
        for _, where, _ in calcifications:
            result.skip(where, *skip_all)
        return
    for k, where, points in calcifications:
        mask = roi_mask(points, shape, point_radius)
        if not mask.any():
            result.skip(where, "ROI lies outside the image", f"{len(points)} point(s), image {shape}")
            continue
        lesion_id = f"{name}_{k}"
        mask_path = write_mask(root / "masks" / "inbreast" / f"{lesion_id}.png", mask)
        parts = dicom.name.split("_")
        result.rows.append(
            {
                "patient_id": parts[1] if len(parts) > 2 else name,
                "image": manifest_path(dicom, root),
                "mask": manifest_path(mask_path, root),
                "birads": label_name(birads, num_classes=6),
                "pathology": "",
                "lesion_id": lesion_id,
                "laterality": row.get("Laterality", ""),
                "view": row.get("View", ""),
            }
        )
