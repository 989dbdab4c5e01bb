"""The bad-input corpus: each case builds, in a fresh folder, a manifest with one planted problem (or a valid
oddity that real exports contain) and says what every entry point must do with it.

A case's manifest has two good rows (patients ``A`` and ``B``, rows 1 and 2) and, for row-level cases, the
planted row 3 (patient ``C``). Files are tiny (64x64 DICOMs, 12 bits) so the whole corpus runs in seconds.
``tests/test_bad_inputs.py`` runs each case through ``read_image``/``read_mask`` (where a file is at fault),
``read_manifest``, ``birads-calc check-data``, ``birads-calc prepare`` and ``BiradsDataModule`` (prepare_data +
setup), and counts the outcomes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import tifffile
from PIL import Image

from tests.factories import MANIFEST_COLUMNS, disc, write_dicom, write_manifest, write_mask

SIZE = 64
CENTRE = (30, 30)
LESION = disc((SIZE, SIZE), CENTRE, 4)
WINDOW, STRIDE = 32, 16  # small windows so the cache of a 64x64 image is quick to build
ENTRY_POINTS = ("reader", "read_manifest", "check-data", "prepare", "datamodule")


@dataclass
class Built:
    """What a case wrote and what must come of it.

    Attributes:
        manifest: the manifest to validate.
        row: the row the message must name (``None``: a problem of the manifest as a whole).
        file: the file the message must name (the image, the mask, or the manifest itself).
        fragments: words the message must contain; empty for a valid case.
        valid_in: entry points where this input is valid although ``fragments`` is set (e.g. a missing label is
            fine for ``prepare``, which serves predict too).
        reader: ``"image"`` or ``"mask"`` when the file at fault is also read directly with ``read_image`` /
            ``read_mask`` (which must fail naming it, or for a valid case return the values ``check`` tests).
        rows: data rows the manifest holds (a valid case must keep every one of them).
        check: for valid cases, checks on what was read (``lesions`` from ``read_manifest``; ``image`` from
            ``read_image`` of ``file``; ``cache`` the data module's cache); each key optional.
        options: extra settings for prepare and the data module (e.g. a target pixel spacing).
    """

    manifest: Path
    row: int | None = None
    file: Path | None = None
    fragments: tuple[str, ...] = ()
    valid_in: frozenset[str] = frozenset()
    reader: str | None = None
    rows: int = 3
    check: dict[str, Callable] = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def expects_error(self, entry_point: str) -> bool:
        return bool(self.fragments) and entry_point not in self.valid_in


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    build: Callable[[Path], Built]


# -- building blocks -------------------------------------------------------------------------------------------------


def good_image(root: Path, name: str, **kwargs) -> Path:
    """``root/images/name``: a 12-bit 64x64 DICOM with a bright disc where :data:`LESION` lies."""
    return good_dicom(root / "images" / name, **kwargs)


def good_dicom(path: Path, mark: int = 0, **kwargs) -> Path:
    """The corpus image; ``mark`` brightens its far corner so that each patient's image is its own (identical pixels
    under two patients are reported as one mammogram listed twice)."""
    kwargs.setdefault("bits_stored", 12)
    stored = _stored_with_lesion(3000, 1000)
    stored[-1, -1] += mark
    return write_dicom(path, stored, **kwargs)


def good_rows(root: Path) -> list[dict]:
    rows = []
    for patient in ("A", "B"):
        good_image(root, f"{patient}.dcm", patient_id=patient, mark=ord(patient))
        write_mask(root / "masks" / f"{patient}.png", LESION)
        rows.append({"patient_id": patient, "image": f"images/{patient}.dcm", "mask": f"masks/{patient}.png"})
        rows[-1].update(birads="4A", pathology="malignant", lesion_id=f"{patient}_0")
    return rows


def row_case(
    root: Path,
    fragments: tuple[str, ...],
    *,
    image: str = "images/C.dcm",
    mask: str = "masks/C.png",
    at_fault: str | None = None,
    reader: str | None = None,
    **cells,
) -> Built:
    """Two good rows plus row 3 (patient C) with ``image``/``mask``/``cells``; the image and mask are written
    (a good one) unless the caller already planted that file."""
    if not (root / image).exists() and image == "images/C.dcm":
        good_image(root, "C.dcm", patient_id="C")
    if not (root / mask).exists() and mask == "masks/C.png":
        write_mask(root / mask, LESION)
    row = {"patient_id": "C", "image": image, "mask": mask, "birads": "3", "pathology": "", "lesion_id": "C_0"}
    row.update(cells)
    manifest = write_manifest(root / "manifest.csv", [*good_rows(root), row])
    file = {"image": root / image, "mask": root / mask, None: manifest}[at_fault]
    return Built(manifest, 3, file, fragments, reader=reader)


def image_case(write: Callable[[Path], object], fragments: tuple[str, ...], name: str = "C.dcm", **extra):
    """A case whose row-3 image is written by ``write(path)``."""

    def build(root: Path) -> Built:
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        built = row_case(root, fragments, image=f"images/{name}", at_fault="image", reader="image")
        for key, value in extra.items():
            setattr(built, key, value)
        return built

    return build


def mask_case(write: Callable[[Path], object], fragments: tuple[str, ...], name: str = "C.png", **extra):
    """A case whose row-3 mask is written by ``write(path)``."""

    def build(root: Path) -> Built:
        path = root / "masks" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        reader = extra.get("reader", "mask")  # not pop: the case is built again by test_counts
        built = row_case(root, fragments, mask=f"masks/{name}", at_fault="mask", reader=reader)
        for key, value in extra.items():
            if key != "reader":
                setattr(built, key, value)
        return built

    return build


def cell_case(fragments: tuple[str, ...], **cells):
    """A case whose row 3 has the given manifest cells (the fault is in the manifest itself)."""
    return lambda root: row_case(root, fragments, **cells)


def manifest_case(write: Callable[[Path, Path], Path], fragments: tuple[str, ...]):
    """A case whose whole manifest is written by ``write(root, path)`` (returns the path to give the tools)."""

    def build(root: Path) -> Built:
        manifest = write(root, root / "manifest.csv")
        return Built(manifest, None, manifest, fragments)

    return build


def _plain_dicom(path: Path, stored: np.ndarray, **kwargs) -> None:
    write_dicom(path, stored, pixel_spacing=(0.1, 0.1), **kwargs)


def _stored_with_lesion(high: int, low: int) -> np.ndarray:
    stored = np.full((SIZE, SIZE), low)
    stored[LESION] = high
    return stored


def _edit_dicom(path: Path, edit: Callable[[pydicom.Dataset], None]) -> None:
    good_dicom(path)
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)


def _truncate(path: Path) -> None:
    good_dicom(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 3000])


def _decimal_comma_window(path: Path) -> None:
    """WindowCenter written with a decimal comma (``8412,2``), as some exports do: the raw DS bytes are patched,
    since pydicom refuses to write such a value."""
    good_dicom(path, window=(2000.0, 4000.0))
    raw = path.read_bytes()
    at = raw.index(bytes.fromhex("28005010") + b"DS")  # (0028,1050) WindowCenter, explicit VR little endian
    length = int.from_bytes(raw[at + 6 : at + 8], "little")
    value = b"8412,2"
    path.write_bytes(raw[: at + 6] + len(value).to_bytes(2, "little") + value + raw[at + 8 + length :])


def _without_pixels(ds: pydicom.Dataset) -> None:
    del ds.PixelData


def _set(**values) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        for key, value in values.items():
            setattr(ds, key, value)

    return edit


def _float_tiff(values: np.ndarray) -> Callable[[Path], None]:
    return lambda path: tifffile.imwrite(path, values.astype(np.float32))


def _png(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: Image.fromarray(array).save(path)


def _with_nonfinite(value: float) -> np.ndarray:
    values = np.full((SIZE, SIZE), 0.3, np.float32)
    values[LESION] = 0.9
    values[5, 7] = value
    return values


# -- checks of valid inputs (hand-computed expectations) ---------------------------------------------------------------


def expect_pixels(expected: np.ndarray, spacing=(0.1, 0.1)) -> Callable:
    def check(image) -> None:
        np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
        assert image.pixel_spacing == spacing

    return check


def expect_cached_centre(value: float) -> Callable:
    """The cache's uint16 pixel at the lesion centre of row 3 is ``value * 65535`` (+-1: float32 rounding)."""

    def check(cache) -> None:
        entry = cache.entry_of_row()[3]
        top, left = (int(v) for v in cache.centres[entry])
        pixels, masks = cache.crop_window(entry, top, left)
        r, c = CENTRE[0] - top, CENTRE[1] - left
        assert abs(int(pixels[r, c]) - value * 65535) <= 1, (pixels[r, c], value * 65535)
        assert masks[r, c] == 3  # bit 0: all calcifications, bit 1: this lesion

    return check


def expect_lesions(**fields) -> Callable:
    """Row 3's fields after validation (e.g. ``label=2`` for 4A)."""

    def check(lesions) -> None:
        lesion = next(x for x in lesions if x.row == 3)
        for key, value in fields.items():
            assert getattr(lesion, key) == value, (key, getattr(lesion, key), value)

    return check


def _valid(build: Callable[[Path], Built], **checks) -> Callable[[Path], Built]:
    def wrapped(root: Path) -> Built:
        built = build(root)
        built.fragments = ()
        built.check.update(checks)
        return built

    return wrapped


# -- manifest writers ----------------------------------------------------------------------------------------------


def _header_only(root: Path, path: Path) -> Path:
    return write_manifest(path, [])


def _zero_bytes(root: Path, path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _missing_column(column: str) -> Callable[[Path, Path], Path]:
    def write(root: Path, path: Path) -> Path:
        return write_manifest(path, good_rows(root), [c for c in MANIFEST_COLUMNS if c != column])

    return write


def _semicolons(root: Path, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, delimiter=";", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(good_rows(root))
    return path


def _header_twice(root: Path, path: Path) -> Path:
    text = write_manifest(path, good_rows(root)).read_text().splitlines()
    text[0] += ",birads"
    path.write_text("\n".join(line + ("," if i else "") for i, line in enumerate(text)) + "\n")
    return path


def _folder(root: Path, path: Path) -> Path:
    good_rows(root)
    return root / "images"


def _missing(root: Path, path: Path) -> Path:
    return root / "no_such_manifest.csv"


def _latin1(root: Path, path: Path) -> Path:
    write_manifest(path, good_rows(root))
    text = path.read_text().replace("A_0", "Hélène_0")  # row 1 = line 2
    path.write_bytes(text.encode("latin-1"))
    return path


def _workbook(root: Path, path: Path) -> Path:
    import zipfile

    good_rows(root)
    with zipfile.ZipFile(path, "w") as book:  # what "Save As .xlsx, then rename to .csv" produces
        book.writestr("xl/workbook.xml", "<workbook/>")
    return path


def _nul_bytes(root: Path, path: Path) -> Path:
    write_manifest(path, good_rows(root))
    path.write_bytes(path.read_bytes() + b"C,images/C.dcm,\x00\x00\x00,2\n")
    return path


def _excel_flavoured(root: Path, path: Path) -> Path:
    """BOM, Windows line ends, header cells with spaces and capitals, blank trailing rows: a valid manifest."""
    good_image(root, "C.dcm", patient_id="C")
    write_mask(root / "masks" / "C.png", LESION)
    rows = [*good_rows(root), {"patient_id": "C", "image": "images/C.dcm", "mask": "masks/C.png", "birads": "4B"}]
    header = [" Patient_ID ", "Image ", " MASK", "BIRADS ", "pathology"]
    lines = [",".join(header)] + [
        ",".join(r.get(k, "") for k in ("patient_id", "image", "mask", "birads", "pathology")) for r in rows
    ]
    path.write_bytes(("\ufeff" + "\r\n".join([*lines, ",,,,", ""])).encode("utf-8"))
    return path


# -- the corpus ----------------------------------------------------------------------------------------------------


def _spacing_missing_resample(root: Path) -> Built:
    built = image_case(lambda p: _plain_dicom(p, _stored_with_lesion(3000, 1000), bits_stored=12), ())(root)
    ds = pydicom.dcmread(root / "images" / "C.dcm")
    del ds.PixelSpacing, ds.ImagerPixelSpacing
    ds.save_as(root / "images" / "C.dcm")
    built.fragments = ("pixel_spacing_mm is set but the file records no pixel spacing",)
    built.valid_in = frozenset({"reader", "read_manifest", "check-data"})
    built.options = {"pixel_spacing_mm": 0.2}
    return built


def _absolute_paths(root: Path) -> Built:
    built = row_case(root, (), image=str(root / "images" / "C.dcm"), mask=str(root / "masks" / "C.png"))
    good_image(root, "C.dcm", patient_id="C")
    write_mask(root / "masks" / "C.png", LESION)
    return built


def _patient_in_two_splits(root: Path) -> Built:
    rows = good_rows(root)
    good_image(root, "A2.dcm", patient_id="A")
    write_mask(root / "masks" / "A2.png", LESION)
    rows[0]["split"], rows[1]["split"] = "train", "val"
    rows.append({"patient_id": "A", "image": "images/A2.dcm", "mask": "masks/A2.png", "birads": "2", "split": "test"})
    manifest = write_manifest(root / "manifest.csv", rows)
    return Built(manifest, 3, manifest, ("patient 'A' has rows in 2 splits", "train: rows 1", "test: rows 3"))


def _duplicate(root: Path) -> Built:
    rows = good_rows(root)
    manifest = write_manifest(root / "manifest.csv", [*rows, dict(rows[0])])
    return Built(manifest, 3, manifest, ("duplicate of row 1",))


def _too_many_cells(root: Path) -> Built:
    built = row_case(root, ("1 cell(s) more than the header has columns",))
    with built.manifest.open("a") as f:
        f.write("D,images/A.dcm,masks/C.png,2,,D_0,L,CC,,Hôpital, unquoted comma\n")
    built.row, built.file, built.rows, built.fragments = 4, built.manifest, 4, ("cell(s) more than the header",)
    return built


def _too_few_cells(root: Path) -> Built:
    built = row_case(root, ())
    with built.manifest.open("a") as f:
        f.write("D,images/A.dcm,masks/C.png,2\n")  # 4 of the 9 columns: an export that dropped trailing cells
    built.row, built.file, built.rows = 4, built.manifest, 4
    built.fragments = ("5 cell(s) fewer than the header has columns", "lesion_id, laterality, view, split")
    return built


def _empty_mask_file(path: Path) -> None:
    write_mask(path, np.zeros((SIZE, SIZE), bool))


def _signed16(path: Path) -> None:
    stored = np.full((SIZE, SIZE), -1000)
    stored[LESION] = 20000
    write_dicom(path, stored, bits_stored=16, signed=True)


def _eight_bit(path: Path) -> None:
    write_dicom(path, _stored_with_lesion(200, 50), bits_stored=8)


CASES: list[Case] = [
    # images
    Case("truncated_dicom", "DICOM cut short (copy interrupted)", image_case(_truncate, ("truncated",))),
    Case(
        "not_a_dicom",
        "text file named .dcm",
        image_case(lambda p: p.write_text("patient,image\n1,2\n"), ("not a DICOM",)),
    ),
    Case("zero_byte_dicom", "zero-byte .dcm", image_case(lambda p: p.write_bytes(b""), ("not a DICOM",))),
    Case(
        "multi_frame",
        "3-frame DICOM (tomosynthesis)",
        image_case(
            lambda p: _plain_dicom(p, _stored_with_lesion(3000, 1000), bits_stored=12, frames=3),
            ("multi-frame", "not supported"),
        ),
    ),
    Case(
        "window_centre_decimal_comma",
        "WindowCenter '8412,2' (a decimal comma)",
        image_case(_decimal_comma_window, ("WindowCenter is not a number", "'8412,2'")),
    ),
    Case(
        "no_pixel_data",
        "DICOM without PixelData",
        image_case(lambda p: _edit_dicom(p, _without_pixels), ("no PixelData",)),
    ),
    Case(
        "rows_exceed_pixels",
        "Rows larger than the pixel data holds",
        image_case(lambda p: _edit_dicom(p, _set(Rows=80)), ("truncated", "pixel data needs")),
    ),
    Case(
        "columns_disagree",
        "Columns smaller than the pixel data (pydicom would trim and shear)",
        image_case(lambda p: _edit_dicom(p, _set(Columns=60)), ("header does not describe the pixels",)),
    ),
    Case(
        "colour_dicom",
        "RGB DICOM (SamplesPerPixel 3)",
        image_case(
            lambda p: _edit_dicom(p, _set(SamplesPerPixel=3, PhotometricInterpretation="RGB")), ("colour DICOM",)
        ),
    ),
    Case(
        "monochrome1",
        "valid: MONOCHROME1 (bright = air) is inverted",
        _valid(
            image_case(lambda p: good_dicom(p, photometric="MONOCHROME1"), ()),
            image=expect_pixels(1 - _stored_with_lesion(3000, 1000) / 4095),
            cache=expect_cached_centre(1 - 3000 / 4095),
        ),
    ),
    Case(
        "colour_png_image",
        "RGB PNG as the mammogram",
        image_case(
            _png(np.dstack([np.full((SIZE, SIZE), v, np.uint8) for v in (10, 20, 30)])), ("colour image",), name="C.png"
        ),
    ),
    Case(
        "nan_tiff",
        "float TIFF holding NaN",
        image_case(_float_tiff(_with_nonfinite(np.nan)), ("non-finite",), name="C.tif"),
    ),
    Case(
        "inf_tiff",
        "float TIFF holding +inf",
        image_case(_float_tiff(_with_nonfinite(np.inf)), ("non-finite",), name="C.tif"),
    ),
    Case("image_missing", "image file absent", image_case(lambda p: None, ("file not found",), name="gone.dcm")),
    Case("image_is_folder", "a folder where the image should be", image_case(lambda p: p.mkdir(), ("is a folder",))),
    Case(
        "eight_bit_dicom",
        "valid: 8-bit DICOM (BitsAllocated 8)",
        _valid(
            image_case(_eight_bit, ()),
            image=expect_pixels(_stored_with_lesion(200, 50) / 255),
            cache=expect_cached_centre(200 / 255),
        ),
    ),
    Case(
        "signed_16_bit_dicom",
        "valid: signed 16-bit DICOM (PixelRepresentation 1)",
        _valid(
            image_case(_signed16, ()),
            image=expect_pixels(np.where(LESION, 20000 + 32768, -1000 + 32768) / 65535),
            cache=expect_cached_centre((20000 + 32768) / 65535),
        ),
    ),
    Case(
        "no_pixel_spacing",
        "valid: DICOM without PixelSpacing/ImagerPixelSpacing (native pixels)",
        _valid(
            image_case(
                lambda p: write_dicom(p, _stored_with_lesion(3000, 1000), bits_stored=12, pixel_spacing=None), ()
            ),
            image=expect_pixels(_stored_with_lesion(3000, 1000) / 4095, spacing=None),
            cache=expect_cached_centre(3000 / 4095),
        ),
    ),
    Case("no_pixel_spacing_resample", "DICOM without spacing while resampling is asked", _spacing_missing_resample),
    Case(
        "float_tiff_unit_range",
        "valid: float TIFF already in [0, 1]",
        _valid(
            image_case(_float_tiff(_with_nonfinite(0.5)), (), name="C.tif"),
            image=expect_pixels(_with_nonfinite(0.5), spacing=None),
            cache=expect_cached_centre(0.9),
        ),
    ),
    Case(
        "png16_image",
        "valid: 16-bit grayscale PNG",
        _valid(
            image_case(_png(_stored_with_lesion(60000, 1000).astype(np.uint16)), (), name="C.png"),
            image=expect_pixels(_stored_with_lesion(60000, 1000) / 65535, spacing=None),
            cache=expect_cached_centre(60000 / 65535),
        ),
    ),
    # masks
    Case(
        "mask_other_size",
        "mask 32x32 for a 64x64 image",
        mask_case(
            lambda p: write_mask(p, disc((32, 32), (15, 15), 4)), ("mask is 32x32 but the image is 64x64",), reader=None
        ),
    ),
    Case(
        "empty_mask", "mask with no calcification pixel", mask_case(_empty_mask_file, ("mask is empty",), reader=None)
    ),
    Case(
        "grey_mask",
        "8-bit grey image as mask (0/128/255)",
        mask_case(
            _png(np.where(LESION, 255, np.where(disc((SIZE, SIZE), (10, 10), 3), 128, 0)).astype(np.uint8)),
            ("not binary",),
        ),
    ),
    Case(
        "mask_without_zero",
        "two values but no background 0 (100/255)",
        mask_case(_png(np.where(LESION, 255, 100).astype(np.uint8)), ("not binary",)),
    ),
    Case(
        "label_map_mask",
        "label map with 3 values (0/1/2) as one lesion's mask",
        mask_case(
            _png(np.where(LESION, 1, np.where(disc((SIZE, SIZE), (10, 10), 3), 2, 0)).astype(np.uint8)), ("not binary",)
        ),
    ),
    Case(
        "rgb_overlay_mask",
        "red-on-black RGB overlay as mask",
        mask_case(
            _png(np.dstack([LESION * 255, np.zeros((SIZE, SIZE)), np.zeros((SIZE, SIZE))]).astype(np.uint8)),
            ("2-D single-channel",),
        ),
    ),
    Case(
        "mask_missing", "mask file absent", mask_case(lambda p: None, ("file not found",), name="gone.png", reader=None)
    ),
    Case("mask_is_folder", "a folder where the mask should be", mask_case(lambda p: p.mkdir(), ("is a folder",))),
    Case(
        "mask_zero_one",
        "valid: mask stored as 0/1 (looks black)",
        _valid(mask_case(_png(LESION.astype(np.uint8)), ()), mask=lambda m: np.testing.assert_array_equal(m, LESION)),
    ),
    Case(
        "mask_grey_as_rgb",
        "valid: binary mask saved as RGB (all channels equal)",
        _valid(
            mask_case(_png(np.dstack([LESION * 255] * 3).astype(np.uint8)), ()),
            mask=lambda m: np.testing.assert_array_equal(m, LESION),
        ),
    ),
    # manifest cells
    Case("label_0", "BI-RADS 0 (incomplete)", cell_case(("'0'", "incomplete"), birads="0")),
    Case("label_1", "BI-RADS 1 (negative: no lesion)", cell_case(("'1'", "negative"), birads="1")),
    Case("label_6", "BI-RADS 6 (known cancer)", cell_case(("'6'", "biopsy-proven"), birads="6")),
    Case("label_4_six_class", '"4" on the six-class scale', cell_case(("'4'", "no subcategory"), birads="4")),
    Case("label_garbage", "free text as label", cell_case(("'suspicious'",), birads="suspicious")),
    Case("label_missing", "empty label (fine for predict/prepare only)", lambda root: _label_missing(root)),
    Case(
        "label_4a_mixed_case",
        'valid: "4a" and " BI-RADS 4A " style labels',
        _valid(cell_case((), birads=" bi-rads 4a "), lesions=expect_lesions(label=2)),
    ),
    Case("duplicate_row", "row 3 repeats row 1", _duplicate),
    Case(
        "path_escapes",
        "image '../outside.dcm'",
        cell_case(("escapes the manifest's folder",), image="../outside.dcm"),
    ),
    Case("patient_in_two_splits", "one patient in train and test", _patient_in_two_splits),
    Case("unknown_split", 'split "validation"', lambda root: _with_splits(root, "validation", ("unknown split",))),
    Case("unknown_pathology", 'pathology "maybe"', cell_case(("pathology",), pathology="maybe")),
    Case("empty_patient_id", "empty patient_id", cell_case(("empty cell",), patient_id="")),
    Case("too_many_cells", "unquoted comma: more cells than columns", _too_many_cells),
    Case("too_few_cells", "a row with fewer cells than columns", _too_few_cells),
    Case(
        "absolute_paths",
        "valid: absolute image and mask paths",
        _valid(_absolute_paths, lesions=expect_lesions(label=1)),
    ),
    # manifests as a whole
    Case("header_only", "manifest with a header and no rows", manifest_case(_header_only, ("no data rows",))),
    Case("zero_byte_manifest", "zero-byte manifest", manifest_case(_zero_bytes, ("missing required column",))),
    Case(
        "missing_column",
        "no 'mask' column",
        manifest_case(_missing_column("mask"), ("missing required column 'mask'",)),
    ),
    Case(
        "semicolon_csv",
        "';'-separated export",
        manifest_case(_semicolons, ("missing required column", "patient_id;image;mask")),
    ),
    Case("column_twice", "a column named twice", manifest_case(_header_twice, ("named twice", "birads"))),
    Case("manifest_is_folder", "the data folder given as manifest", manifest_case(_folder, ("is a folder",))),
    Case("manifest_missing", "manifest path that does not exist", manifest_case(_missing, ("not found",))),
    Case("latin1_manifest", "Latin-1 encoded manifest", manifest_case(_latin1, ("line 2 is not UTF-8",))),
    Case("xlsx_as_csv", "Excel workbook named .csv", manifest_case(_workbook, ("spreadsheet workbook",))),
    Case("nul_bytes", "NUL bytes in the manifest", manifest_case(_nul_bytes, ("NUL",))),
    Case(
        "excel_flavoured",
        "valid: BOM, CRLF, spaced/capitalised headers, blank trailing row",
        lambda root: Built(
            manifest_case(_excel_flavoured, ())(root).manifest,
            check={"lesions": expect_lesions(patient_id="C", label=3, image=root / "images" / "C.dcm")},
        ),
    ),
]


def _with_splits(root: Path, bad: str, fragments: tuple[str, ...]) -> Built:
    built = row_case(root, fragments, split=bad)
    lines = built.manifest.read_text().splitlines()
    # every other row gets a split too, so only row 3's value is wrong
    header = lines[0].split(",")
    split = header.index("split")
    for i in (1, 2):
        cells = lines[i].split(",")
        cells[split] = "train" if i == 1 else "test"
        lines[i] = ",".join(cells)
    built.manifest.write_text("\n".join(lines) + "\n")
    return built


def _label_missing(root: Path) -> Built:
    built = row_case(root, ("missing BI-RADS label",), birads="")
    built.valid_in = frozenset({"prepare"})  # prepare serves predict too: labels optional there, not in fit
    return built


# -- not a mammogram, not a file, one image under two patients (issue 23) --------------------------------------------
ISSUE_23_CASES: list[str] = []  # names of the cases added by issue 23 (docs/reliability.md counts them apart)


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # reading it would block until something writes to it


def _symlink_loop(path: Path) -> None:
    path.symlink_to(path.name)  # a link to itself: ELOOP


def _modality(modality: str, body_part: str | None = None) -> Callable[[Path], None]:
    extra = {"BodyPartExamined": body_part} if body_part else {}
    return lambda path: _edit_dicom(path, _set(Modality=modality, **extra))


def _spacing(value: float) -> Callable[[Path], None]:
    return lambda path: _edit_dicom(path, _set(PixelSpacing=[value, value], ImagerPixelSpacing=[value, value]))


def _blank(root: Path, name: str, write: Callable[[Path], object]) -> Built:
    """A blank image: refused where pixels are decoded (the reader, prepare, the data module); check-data and
    read_manifest read headers only."""
    built = image_case(write, ("blank image", "the same value"), name=name)(root)
    built.valid_in = frozenset({"read_manifest", "check-data"})
    return built


def _resampled_to_huge(root: Path) -> Built:
    """Row 3's header says 2 mm per pixel and prepare resamples to 0.01 mm: 64 px would become 12800 px per side
    (164 Mpx), refused before anything is allocated; the file itself is valid."""
    built = image_case(_spacing(2.0), ("would make the 64 x 64 px image 12800 x 12800 px", "more than 134 Mpx"))(root)
    built.valid_in = frozenset({"reader", "read_manifest", "check-data"})
    built.options = {"pixel_spacing_mm": 0.01}
    return built


def _image_of_another_patient(root: Path) -> Built:
    """Row 3 (patient C) names patient A's image."""
    return row_case(root, ("image is also listed under patient 'A' (row 1)", "train and test"), image="images/A.dcm",
                    at_fault="image")  # fmt: skip


def _copy_of_another_patients_image(root: Path) -> Built:
    """Row 3's image is A's pixel data re-exported under patient id C (another file, another header)."""
    good_rows(root)
    ds = pydicom.dcmread(root / "images" / "A.dcm")
    ds.PatientID = "C"
    ds.save_as(root / "images" / "C.dcm")
    built = row_case(root, ("same pixel data as the image of patient 'A' (row 1",), at_fault="image")
    built.fragments += (str(root / "images" / "A.dcm"),)
    return built


def _utf16(root: Path, path: Path) -> Path:
    write_manifest(path, good_rows(root))
    path.write_bytes(path.read_text().encode("utf-16"))  # what Excel's "Unicode Text" export holds (with a BOM)
    return path


def _special_manifest(make: Callable[[Path], object]) -> Callable[[Path, Path], Path]:
    def write(root: Path, path: Path) -> Path:
        good_rows(root)
        made = make(path)
        return made if isinstance(made, Path) else path

    return write


def _formula_cells(root: Path) -> Built:
    """A manifest written by birads_calc.io.write_csv whose row 3 has cells a spreadsheet would run: escaped on
    writing, read back as they were."""
    from birads_calc.io import write_csv

    good_image(root, "C.dcm", patient_id="C")
    write_mask(root / "masks" / "C.png", LESION)
    row = {"patient_id": "@C", "image": "images/C.dcm", "mask": "masks/C.png", "birads": "3",
           "lesion_id": '=HYPERLINK("http://x","y")', "view": "-CC"}  # fmt: skip
    manifest = write_csv(root / "manifest.csv", [*good_rows(root), row], MANIFEST_COLUMNS)
    return Built(manifest, check={"lesions": expect_lesions(patient_id="@C", lesion_id=row["lesion_id"], view="-CC")})


def _case23(*args) -> Case:
    ISSUE_23_CASES.append(args[0])
    return Case(*args)


CASES += [
    _case23("ct_slice", "a CT slice (Modality CT) as the image", image_case(_modality("CT"), ("Modality is CT",))),
    _case23(
        "dx_chest",
        "a chest radiograph (Modality DX, BodyPartExamined CHEST)",
        image_case(_modality("DX", "CHEST"), ("Modality DX with BodyPartExamined CHEST", "not a mammogram")),
    ),
    _case23(
        "rg_breast",
        "valid: Modality RG, BodyPartExamined BREAST (as the WG-04 MG1 image)",
        _valid(image_case(_modality("RG", "BREAST"), ()), cache=expect_cached_centre(3000 / 4095)),
    ),
    _case23(
        "blank_dicom",
        "an all-zero DICOM",
        lambda root: _blank(root, "C.dcm", lambda p: _plain_dicom(p, np.zeros((SIZE, SIZE)), bits_stored=12)),
    ),
    _case23(
        "constant_png",
        "a PNG of one gray value",
        lambda root: _blank(root, "C.png", _png(np.full((SIZE, SIZE), 128, np.uint8))),
    ),
    _case23(
        "zero_spacing", "PixelSpacing 0\\0", image_case(_spacing(0.0), ("PixelSpacing is 0", "zero pixel spacing"))
    ),
    _case23(
        "absurd_spacing",
        "PixelSpacing 85 (micrometres written as mm)",
        image_case(_spacing(85.0), ("PixelSpacing is 85", "outside 0.01-2 mm")),
    ),
    _case23("resample_to_huge", "a 2 mm header resampled to 0.01 mm per pixel", lambda root: _resampled_to_huge(root)),
    _case23("image_fifo", "a named pipe as the image", image_case(_fifo, ("named pipe (FIFO)",), name="fifo.dcm")),
    _case23(
        "image_dev_null",
        "/dev/null as the image",
        lambda root: row_case(root, ("is a device",), image="/dev/null", at_fault="image", reader="image"),
    ),
    _case23(
        "image_symlink_loop",
        "an image link that points to itself",
        image_case(_symlink_loop, ("symbolic link loop",), name="loop.dcm"),
    ),
    _case23("mask_fifo", "a named pipe as the mask", mask_case(_fifo, ("named pipe (FIFO)",), name="fifo.png")),
    _case23(
        "mask_symlink_loop",
        "a mask link that points to itself",
        mask_case(_symlink_loop, ("symbolic link loop",), name="loop.png"),
    ),
    _case23("image_of_two_patients", "row 3 (patient C) names patient A's image", _image_of_another_patient),
    _case23(
        "image_copy_of_two_patients",
        "patient A's image re-exported as patient C's",
        _copy_of_another_patients_image,
    ),
    _case23("utf16_manifest", "a UTF-16 manifest (Excel 'Unicode Text')", manifest_case(_utf16, ("is UTF-16 text",))),
    _case23(
        "manifest_fifo",
        "a named pipe as the manifest",
        manifest_case(_special_manifest(_fifo), ("named pipe (FIFO)",)),
    ),
    _case23(
        "manifest_dev_null",
        "/dev/null as the manifest",
        manifest_case(_special_manifest(lambda path: Path("/dev/null")), ("is a device",)),
    ),
    _case23(
        "manifest_symlink_loop",
        "a manifest link that points to itself",
        manifest_case(_special_manifest(_symlink_loop), ("symbolic link loop",)),
    ),
    _case23(
        "formula_cells",
        "valid: cells '=HYPERLINK(...)', '@C', '-CC' written by write_csv (escaped) and read back as they were",
        _formula_cells,
    ),
]


# -- the trainer commands (fit, validate, test, predict) and prepare, through the program's error boundary ---------
# Each case returns the command line and the words its one-message error must hold (the option, file or row at
# fault); every case must exit with ``code`` and print no traceback. ``Trained`` is one tiny fit made once.


@dataclass(frozen=True)
class Trained:
    """A finished tiny ``fit`` of configs/proposed.yaml: its data, runs root and best checkpoint."""

    config: Path
    manifest: Path
    runs: Path
    checkpoint: Path


@dataclass(frozen=True)
class CommandCase:
    name: str
    what: str
    command: str
    build: Callable[[Path, Trained], tuple[list[str], tuple[str, ...]]]
    code: int = 2


# tiny CPU runs in one process: what the paper config becomes on a test machine, stated outright
CPU_TINY = [
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
    "--trainer.precision", "32-true", "--trainer.logger", "false",
    "--data.window", str(WINDOW), "--data.stride", str(STRIDE),
]  # fmt: skip


def trainer_args(command: str, trained: Trained, *extra: str, manifest=None, runs=None, config=None) -> list[str]:
    """``birads-calc <command>`` on the trained run's config, data and runs root, with ``extra`` overrides."""
    from tests.training_helpers import TINY_OVERRIDES

    config = config or trained.config
    manifest = manifest or trained.manifest
    base = [
        command,
        "--config",
        str(config),
        "--data.manifest",
        str(manifest),
        "--runs_root",
        str(runs or trained.runs),
    ]
    return [*base, *TINY_OVERRIDES, *CPU_TINY, *extra]


def corpus_command(name: str, command: str, root: Path, trained: Trained, *extra: str):
    """A manifest case of :data:`CASES` built in ``root`` for a trainer command: the case, the command line (with
    the case's data options) and the words its message must hold (cause, row, file)."""
    built = next(c for c in CASES if c.name == name).build(root)
    options = [f"--data.{key}={value}" for key, value in built.options.items()]
    words = [*built.fragments, *([f"row {built.row}"] if built.row is not None else []), str(built.file)]
    return built, trainer_args(command, trained, *options, *extra, manifest=built.manifest), tuple(words)


def _corpus(name: str, command: str, *extra: str) -> Callable[[Path, Trained], tuple[list[str], tuple[str, ...]]]:
    """A manifest case of :data:`CASES` given to a trainer command: the message must name its row, file and cause."""
    return lambda root, trained: corpus_command(name, command, root, trained, *extra)[1:]


def _option(command: str, option: str, value: str, *words: str):
    """An invalid hyperparameter: refused when the command line is parsed, naming the option and the value."""
    return lambda root, trained: (trainer_args(command, trained, f"--{option}", value), (option, value, *words))


def _ckpt(command: str, write: Callable[[Path, Trained], Path], *words: str):
    """``--ckpt_path`` naming what ``write`` made; the message names that path."""

    def build(root: Path, trained: Trained) -> tuple[list[str], tuple[str, ...]]:
        path = write(root, trained)
        return trainer_args(command, trained, "--ckpt_path", str(path)), (str(path), *words)

    return build


def _text_ckpt(root: Path, trained: Trained) -> Path:
    path = root / "model.ckpt"
    path.write_text("epoch,loss\n1,0.5\n")
    return path


def _truncated_ckpt(root: Path, trained: Trained) -> Path:
    """What a full disk left behind: the first half of a real checkpoint."""
    path = root / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    data = trained.checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _ckpt_folder(root: Path, trained: Trained) -> Path:
    return trained.checkpoint.parent


def _missing_ckpt(root: Path, trained: Trained) -> Path:
    return root / "runs" / "best.ckpt"


def _under_a_file(command: str, option: str):
    """An output folder (``--runs_root``, ``--predict_dir``) that cannot be made, a part of it being a file."""

    def build(root: Path, trained: Trained) -> tuple[list[str], tuple[str, ...]]:
        (root / "afile").write_text("not a folder\n")
        out = root / "afile" / "out"
        extra = [] if command == "fit" else ["--ckpt_path", str(trained.checkpoint)]
        args = trainer_args(command, trained, *extra, f"--{option}", str(out))
        return args, (str(root / "afile"), "Not a directory")

    return build


def _other_method(command: str, config: str, *extra: str, words: tuple[str, ...]):
    """The trained (proposed) checkpoint given to another method's config or scale: refused, naming each setting."""

    def build(root: Path, trained: Trained) -> tuple[list[str], tuple[str, ...]]:
        other = trained.config.parent / config
        args = trainer_args(command, trained, "--ckpt_path", str(trained.checkpoint), *extra, config=other)
        return args, (str(trained.checkpoint), *words)

    return build


def _no_run_yet(command: str):
    def build(root: Path, trained: Trained) -> tuple[list[str], tuple[str, ...]]:
        words = ("checkpoint of config 'proposed'", "birads-calc fit")
        return trainer_args(command, trained, runs=root / "runs"), words

    return build


def _predict_without_masks(root: Path, trained: Trained) -> tuple[list[str], tuple[str, ...]]:
    built = cell_case((), mask="")(root)
    args = trainer_args("predict", trained, "--ckpt_path", str(trained.checkpoint), manifest=built.manifest)
    return args, ("row 3", "mask", str(built.manifest))


def _prepare(*args: str, words: tuple[str, ...]):
    def build(root: Path, trained: Trained) -> tuple[list[str], tuple[str, ...]]:
        return ["prepare", str(trained.manifest), f"--cache_dir={root / 'cache'}", *args], words

    return build


COMMAND_CASES: list[CommandCase] = [
    # the data, as every trainer command meets it
    CommandCase("fit_no_manifest", "fit with no data/manifest.csv", "fit", _corpus("manifest_missing", "fit")),
    CommandCase("fit_truncated_dicom", "fit: a truncated DICOM", "fit", _corpus("truncated_dicom", "fit")),
    CommandCase("fit_semicolon_csv", "fit: a ';'-separated manifest", "fit", _corpus("semicolon_csv", "fit")),
    CommandCase("fit_label_garbage", "fit: free text as label", "fit", _corpus("label_garbage", "fit")),
    CommandCase("fit_mask_other_size", "fit: mask of another size", "fit", _corpus("mask_other_size", "fit")),
    CommandCase("fit_latin1", "fit: Latin-1 manifest", "fit", _corpus("latin1_manifest", "fit")),
    CommandCase("fit_two_splits", "fit: a patient in two splits", "fit", _corpus("patient_in_two_splits", "fit")),
    CommandCase("fit_xlsx", "fit: a workbook named .csv", "fit", _corpus("xlsx_as_csv", "fit")),
    CommandCase("fit_window_comma", "fit: WindowCenter '8412,2'", "fit", _corpus("window_centre_decimal_comma", "fit")),
    CommandCase("test_not_a_dicom", "test: a text file named .dcm", "test", _corpus("not_a_dicom", "test")),
    CommandCase("test_header_only", "test: a manifest without rows", "test", _corpus("header_only", "test")),
    CommandCase("validate_empty_mask", "validate: an empty mask", "validate", _corpus("empty_mask", "validate")),
    CommandCase(
        "predict_truncated_dicom", "predict: truncated DICOM", "predict", _corpus("truncated_dicom", "predict")
    ),
    CommandCase("predict_no_masks", "predict: rows without masks", "predict", _predict_without_masks),
    # hyperparameters: refused when parsed, before anything is built or written
    CommandCase("fit_alpha_0", "--model.alpha 0", "fit", _option("fit", "model.alpha", "0")),
    CommandCase("fit_alpha_above_1", "--model.alpha 1.5", "fit", _option("fit", "model.alpha", "1.5")),
    CommandCase("fit_batch_size_0", "--data.batch_size 0", "fit", _option("fit", "data.batch_size", "0")),
    CommandCase("fit_window_negative", "--data.window -3", "fit", _option("fit", "data.window", "-3")),
    CommandCase("fit_stride_0", "--data.stride 0", "fit", _option("fit", "data.stride", "0")),
    CommandCase("fit_num_classes_5", "--data.num_classes 5", "fit", _option("fit", "data.num_classes", "5")),
    CommandCase("fit_voi_unknown", "--data.voi bogus", "fit", _option("fit", "data.voi", "bogus")),
    CommandCase(
        "fit_unknown_backbone",
        "--model.backbone resnet19",
        "fit",
        _option("fit", "model.backbone", "resnet19", "unknown timm backbone"),
    ),
    CommandCase("fit_workers_negative", "--data.num_workers -1", "fit", _option("fit", "data.num_workers", "-1")),
    CommandCase("test_resamples_0", "--bootstrap_resamples 0", "test", _option("test", "bootstrap_resamples", "0")),
    CommandCase("predict_overlay_size_0", "--overlay_size 0", "predict", _option("predict", "overlay_size", "0")),
    # checkpoints
    CommandCase("test_ckpt_missing", "--ckpt_path names no file", "test", _ckpt("test", _missing_ckpt, "not found")),
    CommandCase(
        "test_ckpt_text", "--ckpt_path names a text file", "test", _ckpt("test", _text_ckpt, "not a PyTorch checkpoint")
    ),
    CommandCase(
        "test_ckpt_truncated",
        "--ckpt_path names a checkpoint cut short by a full disk",
        "test",
        _ckpt("test", _truncated_ckpt, "cut short"),
    ),
    CommandCase("test_ckpt_folder", "--ckpt_path names a folder", "test", _ckpt("test", _ckpt_folder, "is a folder")),
    CommandCase(
        "predict_ckpt_text",
        "predict --ckpt_path: a text file",
        "predict",
        _ckpt("predict", _text_ckpt, "not a PyTorch"),
    ),
    CommandCase("fit_resume_missing", "fit --ckpt_path: no such file", "fit", _ckpt("fit", _missing_ckpt, "not found")),
    CommandCase(
        "test_ckpt_other_method",
        "test --config mse.yaml with the proposed method's checkpoint",
        "test",
        _other_method("test", "mse.yaml", words=("model.loss: config mse, checkpoint mamse", "data.attention")),
    ),
    CommandCase(
        "predict_ckpt_other_scale",
        "a six-class checkpoint on four-class data",
        "predict",
        _other_method("predict", "proposed.yaml", "--data.num_classes", "4", words=("data.num_classes: config 4",)),
    ),
    CommandCase(
        "validate_ckpt_other_window",
        "a checkpoint trained on other windows",
        "validate",
        _other_method("validate", "proposed.yaml", "--data.window", "48", words=("data.window: config 48",)),
    ),
    CommandCase("test_no_run_yet", "test before any fit", "test", _no_run_yet("test")),
    CommandCase("predict_no_run_yet", "predict before any fit", "predict", _no_run_yet("predict")),
    # run folders
    CommandCase("fit_runs_root_unusable", "--runs_root under a file", "fit", _under_a_file("fit", "runs_root")),
    CommandCase(
        "predict_dir_unusable", "--predict_dir under a file", "predict", _under_a_file("predict", "predict_dir")
    ),
    CommandCase(
        "fit_stride_above_window",
        "--data.stride larger than --data.window",
        "fit",
        _option("fit", "data.stride", "48", "stride 48 is larger than window 32"),
    ),
    # prepare's own options
    CommandCase(
        "prepare_stride_above_window",
        "prepare --stride 64 --window 32",
        "prepare",
        _prepare("--window=32", "--stride=64", words=("stride 64 is larger than window 32",)),
    ),
    CommandCase("prepare_stride_0", "prepare --stride 0", "prepare", _prepare("--stride=0", words=("stride", "0"))),
    CommandCase(
        "prepare_num_classes_5",
        "prepare --num_classes 5",
        "prepare",
        _prepare("--num_classes=5", words=("num_classes",)),
    ),
]


# -- issue 23: the data tools and the trainer commands meet what the data layer refuses ------------------------------
# A build may return a third item, ``check(text)``: what must hold after the command besides its exit code and words
# (nothing overwritten or half-written; for a case that used to pass silently, its refusal or warning).
ISSUE_23_COMMANDS: list[str] = []


def _command23(name: str, what: str, command: str, build: Callable, code: int = 2) -> CommandCase:
    ISSUE_23_COMMANDS.append(name)
    return CommandCase(name, what, command, build, code)


def unchanged(*paths: Path) -> Callable[[str], None]:
    """A check that every path still holds what it held when the case was built (bytes, or still absent)."""
    before = {path: _content(path) for path in paths}

    def check(text: str) -> None:
        for path, content in before.items():
            assert _content(path) == content, f"{path} was changed, created or removed"

    return check


def _content(path: Path) -> bytes | dict[str, bytes] | None:
    """A file's bytes, a folder's files (an empty folder counts as absent: nothing was written), or None."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()} or None
    return path.read_bytes() if path.is_file() else None


def _tool(command: str, *args: str, words: tuple[str, ...] = (), keep: tuple[str, ...] = ()):
    """``birads-calc COMMAND ARGS`` where ``{root}`` in an argument is the case's folder; ``keep``: paths under it
    that must be left as they were (created by ``_plant`` first when named ``file``/``manifest.csv``)."""

    def build(root: Path, trained: Trained):
        _plant(root)
        argv = [command, *(a.format(root=root, manifest=trained.manifest) for a in args)]
        return argv, tuple(w.format(root=root) for w in words), unchanged(*(root / k for k in keep), root / "out")

    return build


def _plant(root: Path) -> None:
    """What the tool cases point at: a plain file (``file``) and an existing dataset folder (``data``)."""
    (root / "file").write_text("a file, not a folder\n")


def _manifest_case(command: str, name: str, *extra: str, code_words: tuple[str, ...] = ()):
    """A case of :data:`CASES` given to ``check-data`` or ``prepare``: its row, file and words must be named, and
    the manifest and its files left as they were."""

    def build(root: Path, trained: Trained):
        built = next(c for c in CASES if c.name == name).build(root)
        words = [*built.fragments, *code_words, *([f"row {built.row}"] if built.row is not None else [])]
        words.append(str(built.file))
        cache = (
            [f"--cache_dir={root / 'cache'}", f"--window={WINDOW}", f"--stride={STRIDE}"]
            if command == "prepare"
            else []
        )
        check = unchanged(*(p for p in (built.manifest, root / "images", root / "masks") if not _special(p)))
        return [command, str(built.manifest), *cache, *extra], tuple(words), check

    return build


def _special(path: Path) -> bool:
    return not path.exists() or not (path.is_file() or path.is_dir())


def _trainer_case(command: str, name: str, *extra: str):
    """A case of :data:`CASES` given to a trainer command (with the trained checkpoint where one is needed)."""

    def build(root: Path, trained: Trained):
        built = next(c for c in CASES if c.name == name).build(root)
        ckpt = [] if command == "fit" else ["--ckpt_path", str(trained.checkpoint)]
        args = trainer_args(command, trained, *ckpt, *extra, manifest=built.manifest, runs=root / "runs")
        words = (*built.fragments, f"row {built.row}", str(built.file))
        return args, words, unchanged(trained.checkpoint.parent.parent)

    return build


def _mias_source(root: Path, calcification: bool = True) -> Path:
    """A one-image mini-MIAS folder: Info.txt and a 128 x 128 PGM with three bright specks in the circle."""
    src = root / "mias"
    src.mkdir()
    pixels = np.clip(np.random.default_rng(0).normal(120, 4, (128, 128)), 0, 255)
    pixels[:, :10] = 0
    for r, c in [(60, 60), (66, 70), (58, 72)]:
        pixels[r : r + 2, c : c + 2] = 250
    Image.fromarray(pixels.astype(np.uint8)).save(src / "mdb001.pgm")
    line = "mdb001 G CALC B 66 64 15" if calcification else "mdb001 G NORM"
    (src / "Info.txt").write_text(f"mini-MIAS\n{line}\n")
    return src


def _convert_source(root: Path, fmt: str) -> Path:
    """A one-case source of ``fmt`` that converts cleanly, so a bad option is the only thing wrong."""
    from tests.adapters_fixtures import (
        write_cbis_csv,
        write_inbreast_csv,
        write_inbreast_plist,
        write_tcia_case,
        write_vindr_csv,
    )

    if fmt == "mini-mias":
        return _mias_source(root)
    src = root / fmt
    src.mkdir()
    if fmt == "cbis-ddsm":
        from birads_calc.data.adapters.cbis_ddsm import TRAIN_CSV

        case = dict(n=1, patient="P_00001", folder="Calc-Training_P_00001_LEFT_CC", abn=1, assessment=4,
                    pathology="MALIGNANT")  # fmt: skip
        write_cbis_csv(src / TRAIN_CSV, [case])
        write_tcia_case(src, case, "csv")
        return src
    pixels = np.clip(np.random.default_rng(0).normal(1500, 8, (96, 96)), 0, 4095)
    for r, c in [(30, 30), (36, 40), (28, 44)]:
        pixels[r : r + 2, c : c + 2] += 900
    if fmt == "inbreast":
        write_dicom(src / "AllDICOMs" / "22678622_6c613a14b80a8591_MG_R_CC_ANON.dcm", pixels, bits_stored=12,
                    pixel_spacing=(0.07, 0.07))  # fmt: skip
        write_inbreast_plist(src / "AllXML" / "22678622.xml", [("Calcification", [(30.0, 31.0)])])
        write_inbreast_csv(src / "INbreast.csv", [("R", "CC", "22678622", "4a")])
        return src
    write_dicom(src / "images" / "st1" / "img1.dicom", pixels, bits_stored=12, pixel_spacing=None)  # vindr-mammo
    row = dict(study_id="st1", image_id="img1", laterality="L", view_position="CC", height=96, width=96,
               finding_categories="['Suspicious Calcification']", finding_birads="BI-RADS 4", xmin=20, ymin=20,
               xmax=50, ymax=50, split="training")  # fmt: skip
    write_vindr_csv(src / "finding_annotations.csv", [row])
    return src


def _convert_option(fmt: str, option: str, value: str, *extra: str):
    """``convert FMT`` of a source that converts, with one option out of its range: refused naming the option,
    nothing written."""

    def build(root: Path, trained: Trained):
        src = _convert_source(root, fmt)
        args = ["convert", fmt, "--src", str(src), "--out", str(root / "out" / "manifest.csv"), *extra,
                f"--{option}={value}"]  # fmt: skip
        return args, (option, value), unchanged(root / "out")

    return build


def _convert_over_existing(*extra: str, calcification: bool = True):
    """``convert mini-mias`` onto an existing manifest (with masks of its own): refused without --overwrite, kept
    when nothing converts; the previous set (manifest, its masks) must be left exactly as it was."""

    def build(root: Path, trained: Trained):
        src = _mias_source(root, calcification)
        out = root / "data" / "manifest.csv"
        write_mask(root / "data" / "masks" / "mini-mias" / "old.png", LESION)
        out.write_text("patient_id,image,mask\nold,/x.pgm,masks/mini-mias/old.png\n")
        args = ["convert", "mini-mias", "--src", str(src), "--out", str(out), *extra]
        words = (str(out), "--overwrite true") if not extra else (str(out), "left as they were")
        return args, words, unchanged(root / "data")

    return build


def _splits_all_test(root: Path, trained: Trained):
    """``--data.splits`` naming every patient of the manifest as a test patient: nothing to train on."""
    from birads_calc.data.manifest import read_manifest
    from birads_calc.io import write_csv

    patients = sorted({x.patient_id for x in read_manifest(trained.manifest, check_files=False)})
    rows = [{"patient_id": p, "split": "test"} for p in patients]
    splits = write_csv(root / "splits.csv", rows, ["patient_id", "split"])
    args = trainer_args("fit", trained, "--data.splits", str(splits), runs=root / "runs")
    return args, ("split file", str(splits), "no patient of the manifest in the train and val split"), None


def _test_patients_removed(root: Path, trained: Trained):
    """``test`` of the run on a manifest without the run's test patients: its pinned test split is empty."""
    from birads_calc.io import write_csv

    run = trained.checkpoint.parent.parent
    gone = {r["patient_id"] for r in _rows(run / "splits.csv") if r["split"] == "test"}
    columns, rows = list(_rows(trained.manifest)[0]), _rows(trained.manifest)
    for row in rows:  # absolute paths: the edited manifest lives in this case's folder
        row["image"], row["mask"] = (str(trained.manifest.parent / row[c]) for c in ("image", "mask"))
    manifest = write_csv(root / "manifest.csv", [r for r in rows if r["patient_id"] not in gone], columns)
    args = trainer_args("test", trained, "--ckpt_path", str(trained.checkpoint), manifest=manifest)
    words = (str(run / "splits.csv"), "no patient of the manifest in the test split")
    return args, words, unchanged(run)


def _rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV, read with the csv module alone (cells as they are in the file)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _relabelled(root: Path, labels: dict[str, str], splits: dict[str, str] | None = None) -> Path:
    """A tiny dataset (8 patients, 2 lesions each, classes cycling) with some lesions relabelled and, optionally,
    a split column: the data of the cases whose training split misses or thins classes."""
    from tests.factories import make_tiny_dataset

    manifest = make_tiny_dataset(root / "data", patients=8, size=96)
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["birads"] = labels.get(row["lesion_id"], labels.get(row["birads"], row["birads"]))
        row["split"] = (splits or {}).get(row["patient_id"], "")
    return write_manifest(manifest, rows)


def _fit_warns(manifest_of: Callable[[Path], Path], *extra: str, words: tuple[str, ...]):
    """A ``fit`` that runs (exit 0) and must say what it warned about."""

    def build(root: Path, trained: Trained):
        return trainer_args("fit", trained, *extra, manifest=manifest_of(root), runs=root / "runs"), words, None

    return build


def _cache_dir_is_file(root: Path, trained: Trained):
    _plant(root)
    args = trainer_args("fit", trained, "--data.cache_dir", str(root / "file"), runs=root / "runs")
    return args, (str(root / "file"), "is a file, not a folder"), unchanged(root / "file")


def _checkpoint_file(write: Callable[[Path, Trained], Path], command: str, *words: str):
    def build(root: Path, trained: Trained):
        path = write(root, trained)
        args = trainer_args(command, trained, "--ckpt_path", str(path), runs=root / "runs")
        return args, (str(path), *words), unchanged(trained.checkpoint.parent.parent)

    return build


def _foreign_zip(root: Path, trained: Trained) -> Path:
    import zipfile

    with zipfile.ZipFile(root / "model.ckpt", "w") as archive:  # a zip, but of a report, not of a checkpoint
        archive.writestr("report/summary.txt", "QWK 0.7\n")
    return root / "model.ckpt"


def _bare_weights(root: Path, trained: Trained) -> Path:
    import torch

    weights = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    torch.save(weights, root / "weights.ckpt")  # torch.save(model.state_dict()): no method, scale or window
    return root / "weights.ckpt"


def _garbage_pickle(root: Path, trained: Trained) -> Path:
    """A zip laid out like a checkpoint whose pickle is not one (a copy corrupted inside the archive)."""
    import zipfile

    with zipfile.ZipFile(root / "corrupt.ckpt", "w") as archive:
        archive.writestr("corrupt/data.pkl", b"garbage that is no pickle")
        archive.writestr("corrupt/version", "3\n")
    return root / "corrupt.ckpt"


def _fifo_ckpt(root: Path, trained: Trained) -> Path:
    os.mkfifo(root / "pipe.ckpt")
    return root / "pipe.ckpt"


def _predict_formula_cells(root: Path, trained: Trained):
    """``predict`` on lesion ids a spreadsheet would run as formulas: predictions.csv holds them escaped (a leading
    apostrophe), and birads_calc.io.read_csv gives them back as they were."""
    from birads_calc.io import write_csv

    rows = _rows(trained.manifest)
    columns = list(rows[0])
    for k, row in enumerate(rows):
        row["image"], row["mask"] = (str(trained.manifest.parent / row[c]) for c in ("image", "mask"))
        row["lesion_id"] = ("=1+2", "+SUM(A1)", "-2+3", '@HYPERLINK("x")')[k % 4] + f"_{k}"
    manifest = write_csv(root / "manifest.csv", rows, columns)
    out = root / "predicted"
    args = trainer_args("predict", trained, "--ckpt_path", str(trained.checkpoint), "--predict_dir", str(out),
                        "--overlays", "false", manifest=manifest)  # fmt: skip

    def check(text: str) -> None:
        raw = _rows(out / "predictions.csv")
        assert raw and all(r["lesion_id"].startswith("'") for r in raw), [r["lesion_id"] for r in raw]
        assert sorted(r["lesion_id"][1:] for r in raw) == sorted(r["lesion_id"] for r in rows)  # one apostrophe
        texts = [v for r in raw for v in r.values()]
        assert not any(v.startswith(("=", "+", "@")) for v in texts), texts  # numbers may start with '-'

    return args, (), check


COMMAND_CASES += [
    # check-data: one image under two patients, not a mammogram, files that are not files, encodings, classes
    _command23("check_data_image_two_patients", "an image under patients A and C", "check-data",
               _manifest_case("check-data", "image_of_two_patients")),
    _command23("check_data_image_copy", "A's image re-exported as C's", "check-data",
               _manifest_case("check-data", "image_copy_of_two_patients")),
    _command23("check_data_ct_slice", "a CT slice", "check-data", _manifest_case("check-data", "ct_slice")),
    _command23("check_data_dx_chest", "a chest radiograph", "check-data", _manifest_case("check-data", "dx_chest")),
    _command23("check_data_zero_spacing", "PixelSpacing 0", "check-data",
               _manifest_case("check-data", "zero_spacing")),
    _command23("check_data_absurd_spacing", "PixelSpacing 85", "check-data",
               _manifest_case("check-data", "absurd_spacing")),
    _command23("check_data_utf16", "a UTF-16 manifest", "check-data", _manifest_case("check-data", "utf16_manifest")),
    _command23("check_data_manifest_fifo", "a FIFO as manifest", "check-data",
               _manifest_case("check-data", "manifest_fifo")),
    _command23("check_data_manifest_dev_null", "/dev/null as manifest", "check-data",
               _manifest_case("check-data", "manifest_dev_null")),
    _command23("check_data_manifest_loop", "a link loop as manifest", "check-data",
               _manifest_case("check-data", "manifest_symlink_loop")),
    _command23("check_data_image_fifo", "a FIFO as image", "check-data", _manifest_case("check-data", "image_fifo")),
    _command23("check_data_image_dev_null", "/dev/null as image", "check-data",
               _manifest_case("check-data", "image_dev_null")),
    _command23("check_data_mask_loop", "a link loop as mask", "check-data",
               _manifest_case("check-data", "mask_symlink_loop")),
    _command23(
        "check_data_classes_2_and_3",
        "a manifest with classes 2 and 3 only: warned, naming the missing classes",
        "check-data",
        lambda root, trained: (["check-data", str(_relabelled(root, {"4A": "2", "4B": "3", "4C": "2", "5": "3"}))],
                               ("warning: the manifest has no lesion of BI-RADS 4A, 4B, 4C, 5",), None),
        code=0,
    ),
    # prepare: the cache folder, sizes against the image, spacings, pixels that are no mammogram
    _command23("prepare_cache_dir_is_file", "prepare --cache_dir FILE", "prepare",
               _tool("prepare", "{manifest}", "--cache_dir={root}/file",
                     words=("{root}/file", "is a file, not a folder"),
                     keep=("file",))),
    _command23("prepare_window_100000", "prepare --window 100000", "prepare",
               _tool("prepare", "{manifest}", "--window=100000", "--stride=100000", "--cache_dir={root}/out",
                     words=("window 100000 px is larger than every image", "at most 96 px", "--window"))),
    _command23("prepare_spacing_0_001", "prepare --pixel_spacing_mm 0.001", "prepare",
               _tool("prepare", "{manifest}", "--pixel_spacing_mm=0.001", "--cache_dir={root}/out",
                     words=("pixel_spacing_mm", "0.001"))),
    _command23("prepare_spacing_nan", "prepare --pixel_spacing_mm nan", "prepare",
               _tool("prepare", "{manifest}", "--pixel_spacing_mm=nan", "--cache_dir={root}/out",
                     words=("pixel_spacing_mm", "nan"))),
    _command23("prepare_resample_too_large", "a 2 mm header resampled to 0.01 mm", "prepare",
               _manifest_case("prepare", "resample_to_huge", "--pixel_spacing_mm=0.01")),
    _command23("prepare_zero_spacing", "PixelSpacing 0 with resampling", "prepare",
               _manifest_case("prepare", "zero_spacing", "--pixel_spacing_mm=0.2")),
    _command23("prepare_blank_dicom", "an all-zero DICOM", "prepare", _manifest_case("prepare", "blank_dicom")),
    _command23("prepare_constant_png", "a one-value PNG", "prepare", _manifest_case("prepare", "constant_png")),
    _command23("prepare_ct_slice", "a CT slice", "prepare", _manifest_case("prepare", "ct_slice")),
    _command23("prepare_image_copy", "A's image as C's", "prepare",
               _manifest_case("prepare", "image_copy_of_two_patients")),
    # synth: every option typed
    _command23("synth_seed_negative", "synth --seed -1", "synth",
               _tool("synth", "--out={root}/out", "--seed=-1", words=("seed", "-1"))),
    _command23("synth_seed_2_32", "synth --seed 4294967296", "synth",
               _tool("synth", "--out={root}/out", "--seed=4294967296", words=("seed", "4294967296"))),
    _command23("synth_patients_0", "synth --patients 0", "synth",
               _tool("synth", "--out={root}/out", "--patients=0", words=("patients", "0"))),
    _command23("synth_image_size_huge", "synth --image_size 100000 100000", "synth",
               _tool("synth", "--out={root}/out", "--image_size", "100000", "100000", words=("image_size", "100000"))),
    _command23("synth_spacing_85", "synth --pixel_spacing 85 (micrometres)", "synth",
               _tool("synth", "--out={root}/out", "--pixel_spacing=85", words=("pixel_spacing", "85"))),
    _command23("synth_workers_0", "synth --workers 0", "synth",
               _tool("synth", "--out={root}/out", "--workers=0", words=("workers", "0"))),
    _command23("synth_num_classes_5", "synth --num_classes 5", "synth",
               _tool("synth", "--out={root}/out", "--num_classes=5", words=("num_classes", "5"))),
    # convert: an existing manifest is never replaced without --overwrite; typed options
    _command23("convert_existing_manifest", "convert onto an existing manifest", "convert", _convert_over_existing()),
    _command23("convert_overwrite_nothing_converts", "--overwrite true, but nothing converts", "convert",
               _convert_over_existing("--overwrite", "true", calcification=False), code=1),
    _command23("convert_seed_negative", "convert cbis-ddsm --seed -1", "convert",
               _convert_option("cbis-ddsm", "seed", "-1")),
    _command23("convert_val_fraction_1", "convert vindr-mammo --val_fraction 1", "convert",
               _convert_option("vindr-mammo", "val_fraction", "1")),
    _command23("convert_spacing_85", "convert vindr-mammo --pixel_spacing_mm 85 (micrometres)", "convert",
               _convert_option("vindr-mammo", "pixel_spacing_mm", "85")),
    _command23("convert_point_radius_0", "convert inbreast --point_radius 0", "convert",
               _convert_option("inbreast", "point_radius", "0")),
    _command23("convert_speck_1000mm", "convert mini-mias --detector.max_speck_mm 1000", "convert",
               _convert_option("mini-mias", "detector.max_speck_mm", "1000")),
    # fit / validate / test / predict: splits, batch, classes, cache folder, windows, what is not a mammogram
    _command23("fit_splits_all_test", "--data.splits with every patient in test", "fit", _splits_all_test),
    _command23("fit_split_ratios_0_0_1", "--data.split_ratios [0,0,1]", "fit",
               lambda root, trained: (trainer_args("fit", trained, "--data.split_ratios=[0,0,1]", runs=root / "runs"),
                                      ("--data.split_ratios [0.0, 0.0, 1.0]", "no patient of the manifest in the "
                                       "train and val split"), None)),
    _command23("fit_split_ratios_negative", "--data.split_ratios [-1,1,1]", "fit",
               lambda root, trained: (trainer_args("fit", trained, "--data.split_ratios=[-1,1,1]", runs=root / "runs"),
                                      ("--data.split_ratios [-1.0, 1.0, 1.0]", "non-negative"), None)),
    _command23("fit_split_seed_negative", "--data.split_seed -1", "fit", _option("fit", "data.split_seed", "-1")),
    _command23("fit_pixel_spacing_85", "--data.pixel_spacing_mm 85", "fit",
               _option("fit", "data.pixel_spacing_mm", "85")),
    _command23("test_test_patients_removed", "test after the run's test patients left the manifest", "test",
               _test_patients_removed),
    _command23("fit_batch_above_windows", "--data.batch_size 4096 on a few hundred windows", "fit",
               lambda root, trained: (trainer_args("fit", trained, "--data.batch_size", "4096", runs=root / "runs"),
                                      ("--data.batch_size 4096 is larger than the", "training windows"), None)),
    _command23(
        "fit_classes_2_and_3",
        "a training split of classes 2 and 3 only: warned, naming the missing classes",
        "fit",
        _fit_warns(lambda root: _relabelled(root, {"4A": "2", "4B": "3", "4C": "2", "5": "3"}),
                   words=("has no lesion of BI-RADS 4A, 4B, 4C, 5",)),
        code=0,
    ),
    _command23(
        "fit_one_lesion_class",
        "a class with one training lesion and class-balanced batches of 12: warned",
        "fit",
        _fit_warns(lambda root: _relabelled(root, {"P003_0_1": "2"}, {**{f"P00{i}": "train" for i in range(6)},
                   "P006": "val", "P007": "test"}), "--data.batch_size", "12",
                   words=("3: 1 lesion(s), each about 2.0 times per batch", "--data.batch_size")),
        code=0,
    ),
    _command23("fit_cache_dir_is_file", "--data.cache_dir FILE", "fit",
               _cache_dir_is_file),
    _command23("fit_window_100000", "--data.window 100000", "fit",
               lambda root, trained: (trainer_args("fit", trained, "--data.window", "100000", "--data.stride",
                                                   "100000", runs=root / "runs"),
                                      ("window 100000 px is larger than every image", "--data.window"), None)),
    _command23("fit_image_two_patients", "fit: an image under two patients", "fit",
               _trainer_case("fit", "image_of_two_patients")),
    _command23("fit_image_copy", "fit: A's image as C's", "fit", _trainer_case("fit", "image_copy_of_two_patients")),
    _command23("predict_ct_slice", "predict: a CT slice", "predict", _trainer_case("predict", "ct_slice")),
    _command23("predict_blank_dicom", "predict: an all-zero DICOM", "predict",
               _trainer_case("predict", "blank_dicom")),
    _command23("test_ckpt_foreign_zip", "--ckpt_path: a zip of something else", "test",
               _checkpoint_file(_foreign_zip, "test", "a zip archive but not a PyTorch checkpoint")),
    _command23("test_ckpt_bare_weights", "--ckpt_path: torch.save(state_dict)", "test",
               _checkpoint_file(_bare_weights, "test", "bare weights", "not a Lightning checkpoint")),
    _command23("test_ckpt_garbage_pickle", "--ckpt_path: a zip whose data.pkl is not a pickle", "test",
               _checkpoint_file(_garbage_pickle, "test", "its data cannot be unpickled")),
    _command23("predict_ckpt_fifo", "--ckpt_path: a FIFO", "predict",
               _checkpoint_file(_fifo_ckpt, "predict", "named pipe (FIFO)")),
    _command23("validate_ckpt_dev_null", "--ckpt_path /dev/null", "validate",
               _checkpoint_file(lambda root, trained: Path("/dev/null"), "validate", "is a device")),
    _command23("predict_formula_lesion_ids", "lesion ids '=1+2', '+SUM(A1)', '@HYPERLINK(...)'", "predict",
               _predict_formula_cells, code=0),
]  # fmt: skip
