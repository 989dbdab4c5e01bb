"""The manifest: one CSV row per calcification (DESIGN §3), its validation and the ``check-data`` tool.

Every row is checked and every problem is reported at once, each naming its row number, column and file, so a
user fixes a hospital export in one pass instead of one traceback at a time. Row numbers are 1-based data rows
(row 1 is the first line under the header); messages also give the file's line number.

Checks: required columns, an empty manifest, empty cells, paths escaping the manifest's folder, missing or
unreadable images and masks, truncated/multi-frame/colour DICOMs, mask size differing from the image, empty or
non-binary masks, unknown BI-RADS labels or pathology values, duplicate (image, mask) rows, unknown split values,
a patient whose rows fall in two splits, and one image listed under two patients (by path, or by the hash of its
pixel data for a copy: the patient split could otherwise put one mammogram into train and test). Images are
validated from their headers (``read_header``: size without decoding pixels); masks are read whole because an
empty mask can only be seen that way. Cells a spreadsheet would run as formulas come back as written
(``birads_calc.io.unescape_cell``: ``'=x`` is read as ``=x``).
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from birads_calc.categories import LabelError, label_name, parse_label, parse_pathology, scale
from birads_calc.data.dicom import ImageHeader, ImageReadError, pixel_fingerprint, read_header
from birads_calc.data.masks import MaskError, read_mask
from birads_calc.errors import InputError
from birads_calc.io import not_a_file, unescape_cell

log = logging.getLogger(__name__)

# Column order used whenever birads-calc writes a manifest (synth, convert).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "image",
    "mask",
    "birads",
    "pathology",
    "lesion_id",
    "laterality",
    "view",
    "split",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "image", "mask")
SPLITS: tuple[str, ...] = ("train", "val", "test")
WORKBOOK_SIGNATURES = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # zip (xlsx, ods) and OLE2 (xls) files
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class Lesion:
    """One manifest row: a calcification on an image.

    Attributes:
        row: 1-based data row number, used in every message about the lesion.
        patient_id: splits are by patient.
        image: absolute path of the mammogram.
        mask: absolute path of this calcification's mask.
        label: class index on the configured scale, ``None`` where the row has no label.
        malignancy: 1.0 malignant, 0.0 benign, 0.5 unknown.
        lesion_id, laterality, view: free text from the manifest ("" when absent).
        split: ``"train"``/``"val"``/``"test"``, or ``""`` when the manifest does not fix it.
    """

    row: int
    patient_id: str
    image: Path
    mask: Path
    label: int | None
    malignancy: float
    lesion_id: str = ""
    laterality: str = ""
    view: str = ""
    split: str = ""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest; ``row`` is ``None`` for the manifest as a whole."""

    row: int | None
    message: str
    column: str | None = None
    file: Path | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = "manifest" if self.row is None else f"row {self.row}" + (f" (line {self.line})" if self.line else "")
        if self.column:
            where += f", column '{self.column}'"
        if self.file is not None:
            where += f" [{self.file}]"
        return f"{where}: {self.message}"


class ManifestError(InputError, ValueError):
    """A manifest that cannot be used; ``.problems`` lists every problem found, not just the first."""

    def __init__(self, manifest: str | os.PathLike, problems: list[Problem]):
        self.manifest = Path(manifest)
        self.problems = list(problems)
        rows = {p.row for p in self.problems if p.row is not None}
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"{self.manifest}: {len(self.problems)} problem(s) in {len(rows)} row(s):\n{lines}\n"
            "Fix them, or set skip_bad_rows to leave those rows out (each is reported)."
        )


class SkippedRowsWarning(UserWarning):
    """Rows left out of a manifest because ``skip_bad_rows`` was set (the warning lists them and why)."""


class ClassCoverageWarning(UserWarning):
    """Labelled lesions that leave classes of the BI-RADS scale out (the warning names them, with the counts)."""


def resolve_path(root: Path, value: str) -> Path:
    """Absolute path of a manifest cell: relative to the manifest's folder, absolute allowed, ``..`` escape refused.

    Raises:
        ValueError: when a relative path leads outside ``root``, or the cell holds a NUL byte.
    """
    if "\x00" in value:
        raise ValueError("path holds a NUL byte (binary data in the manifest?)")
    path = Path(value)
    if path.is_absolute():
        return Path(os.path.normpath(path))
    # normpath, not resolve: a symlinked data folder inside the root is legitimate, '..' out of it is not
    joined = Path(os.path.normpath(root / path))
    if joined != root and root not in joined.parents:
        raise ValueError(f"path {value!r} escapes the manifest's folder {root} ('..' is refused; use an absolute path)")
    return joined


def read_rows(path: str | os.PathLike) -> tuple[list[str], list[tuple[int, int, dict[str, str]]]]:
    """The raw manifest: header (lower case) and ``(row, line, cells)`` per non-blank data row.

    Raises:
        ManifestError: the file is missing, unreadable or not text.
    """
    path = Path(path)
    require_manifest_file(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets write a BOM
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            rows = []
            for number, record in enumerate(reader, start=1):
                if not any(cell.strip() for cell in record):
                    continue  # blank line: nothing to report or train on
                cells = {
                    name: (unescape_cell(record[i]).strip() if i < len(record) else None)
                    for i, name in enumerate(header)
                }
                if len(record) > len(header):
                    cells[None] = record[len(header) :]
                rows.append((number, reader.line_num, cells))
    except UnicodeDecodeError:
        raise ManifestError(path, [_not_utf8(path)]) from None
    except (OSError, csv.Error) as error:
        raise ManifestError(path, [Problem(None, f"cannot read the manifest as CSV ({error})", file=path)]) from None
    return header, rows


def require_manifest_file(path: Path) -> None:
    """A :class:`ManifestError` unless ``path`` is an existing file of CSV text; a folder, a typo, a FIFO, a device,
    a symbolic link loop, a workbook and UTF-16 text each get their own message."""
    problem = not_a_file(path)
    if problem == "is a folder, not a file":
        problem = "is a folder, not a manifest CSV file (give the path of the CSV, e.g. DATA/manifest.csv)"
    elif problem == "file not found":
        problem = "manifest file not found"
    if problem:
        raise ManifestError(path, [Problem(None, problem, file=path)])
    with path.open("rb") as f:
        start = f.read(64)
    if start[:4] in WORKBOOK_SIGNATURES:
        message = "is a spreadsheet workbook, not CSV text; export it as CSV (UTF-8)"
        raise ManifestError(path, [Problem(None, message, file=path)])
    if _utf16(start):
        message = (
            "is UTF-16 text (e.g. Excel's 'Unicode Text'), not UTF-8; save the manifest as 'CSV UTF-8', or convert "
            f"it: iconv -f utf-16 -t utf-8 {path} > manifest-utf8.csv"
        )
        raise ManifestError(path, [Problem(None, message, file=path)])


def _utf16(start: bytes) -> bool:
    """UTF-16 by its byte-order mark, or without one by a NUL byte beside every ASCII character of the header."""
    if start.startswith(UTF16_BOMS):
        return True
    pairs = len(start) // 2
    return pairs >= 4 and (start[1::2].count(0) == pairs or start[0::2].count(0) == pairs)


def _not_utf8(path: Path) -> Problem:
    """Where the first undecodable byte is (line number), so a legacy-encoded export can be found and fixed."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        offset = 0  # not reached in practice: the text reader failed on these same bytes
    except UnicodeDecodeError as error:  # decode the whole file: the reader's own error counts from a chunk start
        offset = error.start
    line = data[:offset].count(b"\n") + 1
    return Problem(
        None,
        f"line {line} is not UTF-8 text (byte 0x{data[offset : offset + 1].hex()}); save the manifest as UTF-8 "
        "(e.g. Excel: 'CSV UTF-8'), or convert it: iconv -f latin1 -t utf-8",
        file=path,
    )


def manifest_files(path: str | os.PathLike) -> list[Path]:
    """Every image and mask path a manifest names (no validation; unusable cells are left out)."""
    path = Path(path)
    root = Path(os.path.abspath(path.parent))
    _, rows = read_rows(path)
    files = []
    for _, _, cells in rows:
        for column in ("image", "mask"):
            if cells.get(column):
                try:
                    files.append(resolve_path(root, cells[column]))
                except ValueError:
                    continue
    return files


def read_manifest(
    path: str | os.PathLike,
    num_classes: int = 6,
    require_labels: bool = True,
    skip_bad_rows: bool = False,
    check_files: bool = True,
) -> list[Lesion]:
    """Read and validate a manifest; one :class:`Lesion` per row, in file order.

    Args:
        path: the manifest CSV; relative paths in it are relative to its folder.
        num_classes: 6 or 4, the BI-RADS scale of the ``birads`` column.
        require_labels: every row needs a BI-RADS label (fit/test); when False an empty label gives
            ``label=None`` (predict on new studies) but a non-empty one must still be valid.
        skip_bad_rows: leave bad rows out (with a :class:`SkippedRowsWarning` listing each and why) instead of
            raising. Problems of the manifest as a whole (missing column, no rows) always raise.
        check_files: open every image header and mask (size, emptiness, readability); False checks the CSV alone.

    Raises:
        ManifestError: listing every problem found, each with its row, column and file.

    Example:
        >>> lesions = read_manifest("data/demo/manifest.csv")  # doctest: +SKIP
        >>> lesions[0].row, lesions[0].label
        (1, 0)
    """
    path = Path(path)
    root = Path(os.path.abspath(path.parent))
    header, rows = read_rows(path)
    fatal = _header_problems(path, header, rows, require_labels)
    if fatal:
        raise ManifestError(path, fatal)

    problems: dict[int, list[Problem]] = defaultdict(list)
    lesions: dict[int, Lesion] = {}
    headers: dict[Path, ImageHeader | str] = {}  # each image header read once, however many lesions it has
    seen: dict[tuple[Path, Path], int] = {}
    for number, line, cells in rows:
        found = problems[number]
        lesion = _parse_row(number, line, cells, root, num_classes, require_labels, found)
        if lesion is None:
            continue
        first = seen.setdefault((lesion.image, lesion.mask), number)
        if first != number:
            found.append(Problem(number, f"duplicate of row {first} (same image and mask)", "mask", lesion.mask, line))
        elif check_files:
            found.extend(_file_problems(lesion, line, headers))
        lesions[number] = lesion
    for number, problem in _split_problems(rows, lesions):
        problems[number].append(problem)
    for number, problem in _shared_images(lesions, headers if check_files else None, {n: line for n, line, _ in rows}):
        problems[number].append(problem)

    bad = {n: p for n, p in problems.items() if p}
    if bad and not skip_bad_rows:
        raise ManifestError(path, [p for n in sorted(bad) for p in bad[n]])
    good = [lesions[n] for n, _, _ in rows if n in lesions and n not in bad]
    if bad:
        _warn_skipped(path, bad)
        if not good:
            raise ManifestError(path, [Problem(None, "no usable row left after skipping the bad ones", file=path)])
    return good


def _header_problems(path: Path, header: list[str], rows: list, require_labels: bool) -> list[Problem]:
    problems = [
        Problem(None, f"missing required column '{c}' (header: {', '.join(header) or 'empty'})", c, path)
        for c in REQUIRED_COLUMNS
        if c not in header
    ]
    if require_labels and "birads" not in header:
        problems.append(Problem(None, "missing column 'birads' (labels are needed for fit/validate/test)", "birads"))
    duplicates = [c for c, k in Counter(header).items() if k > 1 and c]
    if duplicates:
        problems.append(Problem(None, f"column(s) named twice in the header: {', '.join(duplicates)}", file=path))
    if not rows:
        problems.append(Problem(None, "the manifest has no data rows", file=path))
    return problems


def _parse_row(
    number: int, line: int, cells: dict, root: Path, num_classes: int, require_labels: bool, found: list[Problem]
) -> Lesion | None:
    """Parse one row's cells; problems go to ``found``; returns None when the row cannot even be described."""
    if None in cells:
        found.append(Problem(number, f"{len(cells[None])} cell(s) more than the header has columns", line=line))
    short = [column for column, value in cells.items() if column is not None and value is None]
    if short:  # csv gives a short row no value for its last columns; blank cells would hide a shifted row
        message = f"{len(short)} cell(s) fewer than the header has columns (no cell for {', '.join(short)})"
        found.append(Problem(number, message, line=line))
    paths: dict[str, Path] = {}
    for column in REQUIRED_COLUMNS:
        value = cells.get(column)
        if not value:
            found.append(Problem(number, "empty cell (required)", column, line=line))
        elif column != "patient_id":
            try:
                paths[column] = resolve_path(root, value)
            except ValueError as error:
                found.append(Problem(number, str(error), column, line=line))
    label = _label(cells.get("birads") or "", num_classes, require_labels, number, line, found)
    try:
        malignancy = parse_pathology(cells.get("pathology") or "")
    except LabelError as error:
        found.append(Problem(number, str(error), "pathology", line=line))
        malignancy = 0.5
    split = (cells.get("split") or "").lower()
    if split not in ("", *SPLITS):
        found.append(
            Problem(
                number, f"unknown split {cells.get('split')!r}; expected train, val, test or empty", "split", line=line
            )
        )
    if len(paths) < 2 or not cells.get("patient_id"):
        return None
    return Lesion(
        row=number,
        patient_id=cells["patient_id"],
        image=paths["image"],
        mask=paths["mask"],
        label=label,
        malignancy=malignancy,
        lesion_id=cells.get("lesion_id") or "",
        laterality=cells.get("laterality") or "",
        view=cells.get("view") or "",
        split=split,  # an unknown value is reported above, and the row left out
    )


def _label(value: str, num_classes: int, require: bool, number: int, line: int, found: list) -> int | None:
    if not value and not require:
        return None
    try:
        return parse_label(value, num_classes)
    except LabelError as error:
        found.append(Problem(number, str(error), "birads", line=line))
        return None


def _file_problems(lesion: Lesion, line: int, headers: dict[Path, ImageHeader | str]) -> list[Problem]:
    if lesion.image not in headers:
        try:
            headers[lesion.image] = read_header(lesion.image)
        except ImageReadError as error:
            headers[lesion.image] = without_path(str(error), lesion.image)
    header = headers[lesion.image]
    problems = []
    if isinstance(header, str):
        problems.append(Problem(lesion.row, header, "image", lesion.image, line))
    try:
        mask = read_mask(lesion.mask)
    except MaskError as error:
        return [*problems, Problem(lesion.row, without_path(str(error), lesion.mask), "mask", lesion.mask, line)]
    if isinstance(header, ImageHeader) and mask.shape != header.shape:
        problems.append(
            Problem(
                lesion.row,
                f"mask is {mask.shape[0]}x{mask.shape[1]} but the image is {header.rows}x{header.columns}",
                "mask",
                lesion.mask,
                line,
            )
        )
    if not mask.any():
        problems.append(Problem(lesion.row, "mask is empty (no calcification pixel)", "mask", lesion.mask, line))
    return problems


def without_path(message: str, path: Path) -> str:
    """Drop the leading ``"<path>: "`` of a reader's message: the problem already names the file."""
    prefix = f"{path}: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    if message == "file not found" or message.startswith("cannot read mask ([Errno 2]"):
        return "file not found"
    return message


def _split_problems(rows: list, lesions: dict[int, Lesion]) -> Iterable[tuple[int, Problem]]:
    """A patient with rows in two splits would leak into evaluation; a half-filled split column is ambiguous."""
    lines = {number: line for number, line, _ in rows}
    by_patient: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for lesion in lesions.values():
        by_patient[lesion.patient_id][lesion.split].append(lesion.row)
    uses_split = any(lesion.split for lesion in lesions.values())
    for patient, splits in by_patient.items():
        named = {s: r for s, r in splits.items() if s}
        if len(named) > 1:
            where = "; ".join(f"{s}: rows {', '.join(map(str, r))}" for s, r in sorted(named.items()))
            for rows_of_split in named.values():
                for number in rows_of_split:
                    message = f"patient {patient!r} has rows in {len(named)} splits ({where})"
                    yield number, Problem(number, message, "split", line=lines[number])
        if uses_split:
            for number in splits.get("", []):
                message = "split is empty while other rows set one (fill it for every row or for none)"
                yield number, Problem(number, message, "split", line=lines[number])


def _shared_images(
    lesions: dict[int, Lesion], headers: dict[Path, ImageHeader | str] | None, lines: dict[int, int]
) -> Iterable[tuple[int, Problem]]:
    """One mammogram listed under two or more patients: by its path, and (``headers`` given: the files were
    checked) by the hash of its pixel data, so that a copy under another name or patient id is found too. Each row
    involved is reported, naming the other patients' rows: the patient split could put the image in train and test.
    """
    by_path: dict[Path, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for lesion in lesions.values():
        by_path[lesion.image][lesion.patient_id].append(lesion.row)
    for image, patients in by_path.items():
        if len(patients) > 1:
            rows = {n: image for numbers in patients.values() for n in numbers}
            yield from _shared_problems(patients, rows, lines, copies=False)
    if headers is None:
        return
    for group in _same_pixels(by_path, headers):
        patients: dict[str, list[int]] = defaultdict(list)
        rows: dict[int, Path] = {}
        for image in group:
            for patient, numbers in by_path[image].items():
                patients[patient] += numbers
                rows.update(dict.fromkeys(numbers, image))
        yield from _shared_problems(patients, rows, lines, copies=True)


def _same_pixels(by_path: dict[Path, dict[str, list[int]]], headers: dict) -> list[list[Path]]:
    """Groups of distinct image files with identical pixel data whose rows span more than one patient.

    Only images of one size whose patients differ are hashed: first a sample of their pixel data, then, for the
    images whose samples match, all of it (``pixel_fingerprint``).
    """
    by_shape: dict[tuple[int, int], list[Path]] = defaultdict(list)
    for image in by_path:
        header = headers.get(image)
        if isinstance(header, ImageHeader):
            by_shape[header.shape].append(image)
    groups = []
    for candidates in by_shape.values():
        by_hash: dict[str, list[Path]] = {}
        for full in (False, True):
            if len({patient for image in candidates for patient in by_path[image]}) < 2:
                break
            by_hash = defaultdict(list)
            for image in candidates:
                try:
                    by_hash[pixel_fingerprint(image, full=full)].append(image)
                except ImageReadError:
                    continue  # its header was read a moment ago; a file vanishing now is reported by later steps
            candidates = [image for same in by_hash.values() if len(same) > 1 for image in same]
        else:
            groups += [g for g in by_hash.values() if len({p for image in g for p in by_path[image]}) > 1]
    return groups


def _shared_problems(
    patients: dict[str, list[int]], files: dict[int, Path], lines: dict[int, int], copies: bool
) -> Iterable[tuple[int, Problem]]:
    """A problem for every row of an image shared by ``patients``, naming the other patients' rows (and, for
    ``copies``, their files)."""
    for patient, numbers in patients.items():
        others = "; ".join(
            f"patient {other!r} (row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows))}"
            + (f", {files[rows[0]]}" if copies else "")
            + ")"
            for other, rows in patients.items()
            if other != patient
        )
        what = "same pixel data as the image of" if copies else "image is also listed under"
        message = (
            f"{what} {others}: one mammogram under two patient ids can fall into train and test; fix the patient "
            "id or remove the copy"
        )
        for number in numbers:
            yield number, Problem(number, message, "image", files[number], lines.get(number))


def _warn_skipped(path: Path, bad: dict[int, list[Problem]]) -> None:
    reasons = "\n".join(f"  {p}" for n in sorted(bad) for p in bad[n])
    message = f"{path}: skipped {len(bad)} bad row(s) (skip_bad_rows is set):\n{reasons}"
    log.warning(message)
    warnings.warn(message, SkippedRowsWarning, stacklevel=3)


def coverage_problem(lesions: Iterable[Lesion], num_classes: int, what: str = "the manifest") -> str | None:
    """Why labelled ``lesions`` do not cover the BI-RADS scale (the missing classes and the counts), or ``None``.

    A model trained without a class never predicts it, and QWK over the scale is then not comparable to the
    paper's; unlabelled lesions (a manifest for predict) are not counted.
    """
    counts = Counter(x.label for x in lesions if x.label is not None)
    if not counts:
        return None
    names = scale(num_classes)
    missing = [name for k, name in enumerate(names) if not counts[k]]
    if not missing:
        return None
    present = ", ".join(f"{name}: {counts[k]}" for k, name in enumerate(names) if counts[k])
    return (
        f"{what} has no lesion of BI-RADS {', '.join(missing)} ({len(missing)} of the {num_classes} classes of the "
        f"scale; lesions per class: {present}): a model trained on it never predicts those classes"
    )


def summary(lesions: list[Lesion], num_classes: int) -> dict[str, dict[str, int]]:
    """Counts of a clean manifest: per BI-RADS class, pathology, split, plus lesions/patients/images."""
    pathology = {1.0: "malignant", 0.0: "benign", 0.5: "unknown"}
    birads = Counter("unlabelled" if x.label is None else label_name(x.label, num_classes) for x in lesions)
    return {
        "birads": {name: birads[name] for name in (*scale(num_classes), "unlabelled") if birads[name]},
        "pathology": dict(Counter(pathology[x.malignancy] for x in lesions)),
        "split": dict(Counter(x.split for x in lesions if x.split)),
        "totals": {
            "lesions": len(lesions),
            "patients": len({x.patient_id for x in lesions}),
            "images": len({x.image for x in lesions}),
        },
    }


def configure_parser(parser) -> None:
    """Options of ``birads-calc check-data``."""
    parser.add_argument("manifest", type=str, help="the manifest CSV to validate")
    parser.add_argument("--num_classes", type=Literal[6, 4], default=6, help="BI-RADS scale of the birads column")
    parser.add_argument(
        "--labels",
        type=str,
        default="required",
        choices=["required", "optional"],
        help="'optional' accepts rows without a BI-RADS label (a manifest for predict)",
    )


def main(cfg) -> int:
    """``birads-calc check-data``: exit 0 and a summary when the manifest is clean, else every problem and 2."""
    try:
        lesions = read_manifest(cfg.manifest, cfg.num_classes, require_labels=cfg.labels == "required")
    except ManifestError as error:
        print(str(error).rsplit("\nFix them", 1)[0])
        return error.exit_code
    _print_summary(cfg.manifest, summary(lesions, cfg.num_classes))
    problem = coverage_problem(lesions, cfg.num_classes)
    if problem:
        print(f"warning: {problem}")
    return 0


def _print_summary(manifest: str, counts: dict[str, dict[str, int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    totals = counts["totals"]
    table = Table(title=f"{manifest}: OK", title_justify="left")
    table.add_column("field")
    table.add_column("value")
    table.add_column("count", justify="right")
    table.add_row(
        "total", "lesions / patients / images", f"{totals['lesions']} / {totals['patients']} / {totals['images']}"
    )
    for field in ("birads", "pathology", "split"):
        for value, count in counts[field].items():
            table.add_row(field, value, str(count))
    Console(soft_wrap=True).print(table)
