"""``birads-calc convert FORMAT --src DIR --out manifest.csv``: public datasets -> manifest (DESIGN §3).

Each format is one module with a ``convert(src, out, ...) -> Conversion`` function; its typed, documented
parameters become the command-line options of ``convert FORMAT`` (jsonargparse reads the signature and the
docstring). An adapter never drops anything silently: every source row, ROI or file it cannot turn into a
manifest row is a :class:`NotConverted` record with a short reason. ``convert`` writes the manifest, writes those
records beside it (``<manifest>.not_converted.csv``) and prints a summary grouped by reason.

The output set (manifest, not-converted list, ``masks/<format>/``) is written whole or not at all: the adapter
writes into a staging folder (``birads_calc.io.staged_outputs``) that is moved into place only when the conversion
has finished. An existing manifest at ``--out`` is never deleted or replaced without ``--overwrite true``; with it,
the old manifest stays until the new set is complete (it is removed just before the new files are moved in, so a
kill in between leaves no manifest rather than an old one over new masks), and a conversion that produces no row
leaves the old set as it was. Masks of other formats or manifests in ``masks/`` are kept.

Paths in the manifest are relative to the manifest's folder where the file lies under it (generated masks always
do: ``<out folder>/masks/<format>/...``) and absolute otherwise (the images stay in the user's download).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
from jsonargparse import ArgumentParser, Namespace

from birads_calc.data.manifest import MANIFEST_COLUMNS
from birads_calc.errors import InputError
from birads_calc.io import staged_outputs, write_csv

# format name -> (module, one-line help)
FORMATS: dict[str, tuple[str, str]] = {
    "cbis-ddsm": ("birads_calc.data.adapters.cbis_ddsm", "CBIS-DDSM calcification CSVs + TCIA DICOM download."),
    "inbreast": ("birads_calc.data.adapters.inbreast", "INbreast table (xls/csv) + OsiriX XML ROIs + DICOMs."),
    "vindr-mammo": ("birads_calc.data.adapters.vindr", "VinDr-Mammo finding_annotations.csv + DICOMs."),
    "mini-mias": ("birads_calc.data.adapters.mias", "mini-MIAS Info.txt + PGM images (no BI-RADS)."),
}
NOT_CONVERTED_COLUMNS: tuple[str, ...] = ("source", "reason", "detail")
EXAMPLES_PER_REASON = 3


class ConversionError(InputError, RuntimeError):
    """The source cannot be converted at all (missing folder or table, unreadable table)."""


@dataclass(frozen=True)
class NotConverted:
    """One source row, ROI or file that did not become a manifest row.

    Attributes:
        source: where it came from, e.g. ``"calc_case_description_train_set.csv row 45"``.
        reason: short and shared by all records with the same cause; the summary groups by it.
        detail: the specifics of this record (a path, a value).
    """

    source: str
    reason: str
    detail: str = ""


@dataclass
class Conversion:
    """What an adapter produced: manifest rows (dicts keyed by manifest column) and what it left out."""

    rows: list[dict[str, str]] = field(default_factory=list)
    not_converted: list[NotConverted] = field(default_factory=list)

    def skip(self, source: str, reason: str, detail: str = "") -> None:
        """Record that ``source`` was not converted, and why."""
        self.not_converted.append(NotConverted(source, reason, detail))


def manifest_path(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` as the manifest stores it: relative to ``root`` (the manifest's folder) if under it, else absolute."""
    # abspath, not resolve(): a symlinked download stays where the user put it, as the manifest reader sees it.
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def find_files(root: Path, suffixes: Iterable[str]) -> list[Path]:
    """All files under ``root`` whose suffix (any case) is one of ``suffixes``, sorted; follows symlinks."""
    suffixes = {s.lower() for s in suffixes}
    found = []
    for folder, _, names in os.walk(root, followlinks=True):
        found.extend(Path(folder, n) for n in names if Path(n).suffix.lower() in suffixes)
    return sorted(found)


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a :class:`ConversionError` naming ``what`` was expected there."""
    if not Path(path).is_dir():
        raise ConversionError(f"{what} not found: {path} is not a folder")
    return Path(path)


def check_fraction(fraction: float) -> None:
    """Refuse a validation share outside [0, 1) before any work is done."""
    if not 0 <= fraction < 1:
        raise ConversionError(f"val_fraction must be in [0, 1), got {fraction}")


def carve_validation(rows: list[dict[str, str]], fraction: float, seed: int) -> None:
    """Move a seeded ``fraction`` of the patients of the ``train`` rows to ``val`` (in place).

    Official splits name only train and test; the data module takes a split column as a whole, so the
    validation set (checkpoint selection) is drawn from the training patients, by patient, never by row.
    """
    check_fraction(fraction)
    patients = sorted({r["patient_id"] for r in rows if r.get("split") == "train"})
    chosen = np.random.default_rng(seed).permutation(len(patients))[: round(fraction * len(patients))]
    val = {patients[i] for i in chosen}
    for row in rows:
        if row.get("split") == "train" and row["patient_id"] in val:
            row["split"] = "val"


def configure_parser(parser: ArgumentParser) -> None:
    """One subcommand per format; its options come from the adapter's ``convert`` signature and docstring."""
    formats = parser.add_subcommands(dest="format", required=True)
    for name, (_, help_text) in FORMATS.items():
        formats.add_subcommand(name, format_parser(name), help=help_text)


def format_parser(name: str) -> ArgumentParser:
    """The options of ``convert NAME``: the parameters of that adapter's ``convert``."""
    parser = ArgumentParser(prog=f"birads-calc convert {name}", description=FORMATS[name][1])
    parser.add_function_arguments(adapter(name).convert, as_group=False)
    parser.add_argument(
        "--overwrite",
        type=bool,
        default=False,
        help="replace an existing manifest at --out (with its not-converted list and masks of this format)",
    )
    return parser


def adapter(name: str) -> ModuleType:
    """The module implementing format ``name``."""
    return importlib.import_module(FORMATS[name][0])


class _NothingToReplace(Exception):
    """Nothing converted while a manifest already exists: the old set is kept as it was (no commit)."""


def main(cfg: Namespace) -> int:
    """Convert, write the manifest and the not-converted list as one set, print the summary; 0 when any row was
    written, 1 when none was, 2 for bad input (an existing manifest without ``--overwrite true`` included)."""
    name = cfg.format
    parser = format_parser(name)
    # Settings groups (e.g. the detector's dataclass) arrive as namespaces; make them objects again.
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse < 4.49
    options = dict(vars(instantiate(cfg[name])))
    overwrite = options.pop("overwrite", False)
    out = Path(options["out"])
    try:
        check_out(out, name, overwrite)
        with staged_outputs(out.parent, owned=[report_path(out).name], merge=["masks"]) as stage:
            result = adapter(name).convert(**{**options, "out": stage / out.name})
            relocate(result.rows, out.parent)
            if not result.rows and out.exists():
                raise _NothingToReplace
            report = write(result, stage / out.name)
            if result.rows:
                out.unlink(missing_ok=True)  # only now: a kill during the moves leaves no manifest, never the old one
    except ConversionError as error:
        print(f"convert {name}: {error}", file=sys.stderr)
        return 2
    except _NothingToReplace:
        print(summary(name, result, out, None) + f"\nthe existing {out} and its files were left as they were")
        return 1
    print(summary(name, result, out, report and report_path(out)))
    remove_leftovers(out, name)
    return 0 if result.rows else 1


def check_out(out: Path, name: str, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a folder, or an existing manifest without ``--overwrite true``."""
    if out.is_dir():
        raise ConversionError(f"--out {out} is a folder; give the manifest file to write, e.g. {out}/manifest.csv")
    if out.exists() and not overwrite:
        raise ConversionError(
            f"--out {out} already exists; pass --overwrite true to replace it (with its not-converted list and the "
            f"masks of masks/{name}/ it names), or give another --out"
        )


def relocate(rows: list[dict[str, str]], folder: Path) -> None:
    """The adapter wrote paths relative to the staging folder where they lie under it (its layout is the final
    one); absolute paths under the manifest's real ``folder`` become relative to it, as they would have been had
    the adapter written there."""
    for row in rows:
        for column in ("image", "mask"):
            value = row.get(column) or ""
            if value and Path(value).is_absolute():
                row[column] = manifest_path(value, folder)


def remove_leftovers(out: Path, name: str) -> None:
    """Delete the temporary files (``birads_calc.io.atomic_path``'s ``.<name>.<random>.partial``) that a killed
    conversion left beside the manifest and among this format's masks; this run's own files are all complete."""
    for folder, pattern in ((out.parent, f".{out.stem}*.partial*"), (out.parent / "masks" / name, ".*.partial*")):
        for leftover in folder.glob(pattern):
            leftover.unlink(missing_ok=True)


def report_path(out: Path) -> Path:
    """Where the not-converted list of manifest ``out`` goes: ``<stem>.not_converted.csv`` beside it."""
    return out.with_name(out.stem + ".not_converted.csv")


def write(result: Conversion, out: Path) -> Path | None:
    """Write the not-converted list, then the manifest (only when it has rows); return the list's path.

    The manifest comes last so that its presence means the conversion finished; a list left by an older run is
    removed when this one has nothing to report, so it is never taken for this run's.
    """
    report = report_path(out)
    if result.not_converted:
        write_csv(report, (vars(n) for n in result.not_converted), NOT_CONVERTED_COLUMNS)
    else:
        report.unlink(missing_ok=True)
    if result.rows:
        write_csv(out, result.rows, MANIFEST_COLUMNS)
    return report if result.not_converted else None


def summary(name: str, result: Conversion, out: Path, report: Path | None) -> str:
    """Human-readable account of a conversion: rows written (per split) and what was left out, by reason."""
    lines = []
    if result.rows:
        patients = len({r["patient_id"] for r in result.rows})
        splits = Counter(r.get("split", "") for r in result.rows)
        split_text = ", ".join(f"{s} {n}" for s, n in sorted(splits.items()) if s)
        lines.append(
            f"convert {name}: {len(result.rows)} rows written to {out} ({patients} patients"
            + (f"; split: {split_text}" if split_text else "")
            + ")"
        )
    else:
        lines.append(f"convert {name}: nothing could be converted; no manifest written to {out}")
    if result.not_converted:
        listed = f" (each listed in {report})" if report else ""
        lines.append(f"not converted: {len(result.not_converted)}{listed}")
        by_reason: dict[str, list[NotConverted]] = {}
        for record in result.not_converted:
            by_reason.setdefault(record.reason, []).append(record)
        for reason, records in sorted(by_reason.items(), key=lambda item: -len(item[1])):
            examples = "; ".join(r.source for r in records[:EXAMPLES_PER_REASON])
            more = ", ..." if len(records) > EXAMPLES_PER_REASON else ""
            lines.append(f"  {reason}: {len(records)}  (e.g. {examples}{more})")
    else:
        lines.append("not converted: none")
    return "\n".join(lines)
