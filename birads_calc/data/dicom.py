"""Mammograms on disk -> float32 image in [0, 1] (MONOCHROME2: bright = dense/calcified) + pixel spacing.

DICOM handling, in the order the DICOM standard applies it (PS3.4 N.2):

1. **Decode** the stored values with pydicom; compressed transfer syntaxes (RLE, JPEG lossless, JPEG-LS,
   JPEG 2000) go through the pylibjpeg plugins. Multi-frame objects (tomosynthesis), colour images and objects of
   another modality (a CT or MR slice, an ultrasound frame: :data:`MAMMOGRAPHY_MODALITIES`) are refused, and so
   is a pixel spacing that is zero or outside 0.01-2 mm (``data/limits.py``).
2. **Modality LUT** (``apply_modality_lut``: RescaleSlope/Intercept or a Modality LUT Sequence).
3. **VOI**: ``voi="full"`` (the default) keeps the whole range of the modality LUT output, so calcifications,
   the brightest structures, keep their densities. ``voi="window"`` applies the VOI LUT Sequence or the
   linear/sigmoid window (WindowCenter/Width) through ``apply_voi_lut`` when the file carries one: the contrast
   the vendor set for reading, but every value above the window saturates at 1.0 and a window that ends below
   the calcifications flattens their densities into one. Why ``full`` is the default (measured with
   ``bench/measure_voi.py``, docs/data.md): the real CBIS-DDSM DICOMs carry no window (both modes are identical);
   the WG-04 MG1 full-field image's window saturates 54 % of its brightest 0.1 % of breast pixels against 44 %
   without it; synthetic ``synth`` DICOMs (window over the breast's 0.5-99.9 percentiles) lose a median 3.9 %
   (up to 16.5 %) of their calcification pixels to 1.0 under the window and none without it.
4. **Scale to [0, 1] by the true range**: the output range of the window or VOI LUT, else the range that
   BitsStored/PixelRepresentation allow after the modality LUT (a 12-bit image is divided by 4095, not 65535).
5. **MONOCHROME1** (bright = air) is inverted so every image is MONOCHROME2.

PNG/PGM/TIFF (public sets such as mini-MIAS ship those) are scaled by their integer type's range; float TIFFs
are taken as they are when within [0, 1] and min-max scaled otherwise; NaN/inf is refused. A blank image (every
pixel the same value: an empty export, a placeholder) is refused by :func:`read_image`, as it holds no mammogram.

No identifying DICOM field (PatientName, PatientBirthDate, AccessionNumber, ...) is read into the result or any
message: errors name the file only.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from birads_calc.data.limits import spacing_problem
from birads_calc.errors import InputError
from birads_calc.io import not_a_file

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ""})
RASTER_SUFFIXES = frozenset({".png", ".pgm", ".pnm", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"})
VOI_MODES = ("window", "full")
DEFAULT_VOI = "full"  # keeps calcification densities; see the module docstring for the measurements
# header values the pipeline computes with (VOI window, modality rescale, pixel spacing): checked to be numbers
NUMERIC_HEADER = (
    "WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept", "PixelSpacing", "ImagerPixelSpacing"
)  # fmt: skip
SPACING_KEYS = ("PixelSpacing", "ImagerPixelSpacing")
# Modality (0008,0060) values a mammogram is stored under: MG, and the projection-radiography ones older or
# digitised mammograms use (the WG-04 MG1 test image is RG; CBIS-DDSM is MG; film scans may be OT). DX/CR/RG/OT
# objects whose BodyPartExamined names another body part (CHEST, ...) are refused as well.
MAMMOGRAPHY_MODALITIES = frozenset({"MG"})
PROJECTION_MODALITIES = frozenset({"DX", "CR", "RG", "DR", "OT"})
MODALITY_NAMES = {
    "CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound", "PT": "PET", "NM": "nuclear medicine",
    "XA": "X-ray angiography", "RF": "fluoroscopy", "IO": "intra-oral X-ray", "PX": "panoramic X-ray",
    "SR": "structured report", "SEG": "segmentation", "PR": "presentation state", "KO": "key object selection",
    "DOC": "document", "OPT": "ophthalmic tomography", "XC": "photograph",
}  # fmt: skip
PIXEL_SAMPLES = 16  # chunks of the pixel data read by pixel_fingerprint
PIXEL_SAMPLE_BYTES = 4096


class ImageReadError(InputError, ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


class PixelSpacingError(ImageReadError):
    """A pixel spacing in the header that cannot be used (zero, absurd, not two numbers)."""


@dataclass(frozen=True)
class MammogramImage:
    """A decoded mammogram.

    Attributes:
        pixels: float32 ``[H, W]`` in [0, 1], MONOCHROME2 (bright = dense / calcified).
        pixel_spacing: ``(row_mm, col_mm)`` or ``None`` when the file does not say.
    """

    pixels: np.ndarray
    pixel_spacing: tuple[float, float] | None


@dataclass(frozen=True)
class ImageHeader:
    """What can be known about an image without decoding its pixels: size and spacing."""

    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.columns


def read_image(path: str | os.PathLike, voi: str = DEFAULT_VOI, allow_blank: bool = False) -> MammogramImage:
    """Read a DICOM, PNG, PGM or TIFF mammogram as a float32 image in [0, 1].

    Args:
        path: the image file. Files ending in ``.dcm``/``.dicom`` or without suffix are read as DICOM, anything
            else by its raster format (a DICOM under another name is still recognised by its preamble).
        voi: ``"window"`` applies the file's VOI LUT / window when present; ``"full"`` keeps the whole range.
        allow_blank: accept an image whose pixels all have one value (a DICOM holding an empty ROI mask); a
            mammogram never is.

    Raises:
        ImageReadError: naming the file: missing, not an image, truncated, multi-frame, colour, another modality,
            an unusable pixel spacing, no pixel data, non-finite values, blank.

    Example:
        >>> image = read_image("mammogram.dcm")  # doctest: +SKIP
        >>> image.pixels.dtype, float(image.pixels.max()) <= 1.0
        (dtype('float32'), True)
    """
    path = Path(path)
    if voi not in VOI_MODES:
        raise ValueError(f"voi must be one of {VOI_MODES}, got {voi!r}")
    image = _read_dicom(path, voi) if _is_dicom(path) else _read_raster(path)
    if not allow_blank:
        _check_not_blank(path, image.pixels)
    return image


def _check_not_blank(path: Path, pixels: np.ndarray) -> None:
    """A mammogram has contrast; an image of one value (all zero: an empty export or placeholder) is refused."""
    low, high = float(pixels.min()), float(pixels.max())
    if low == high:
        rows, columns = pixels.shape
        raise ImageReadError(
            f"{path}: blank image: all {rows} x {columns} pixels have the same value ({low:g} on the 0-1 scale), "
            "so it holds no mammogram (an empty export or a placeholder?)"
        )


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Size and spacing of an image without decoding its pixels (cheap: used to validate manifests).

    For DICOM this reads the header only (pixel data is skipped, not loaded) and still catches what a header can
    show: multi-frame, colour, missing or truncated pixel data, Rows/Columns that disagree with the pixel data
    (the last two for uncompressed transfer syntaxes). TIFFs are decoded whole (a float TIFF's NaN/inf is in its
    pixels); other rasters are opened header-only.

    Raises:
        ImageReadError: naming the file.
    """
    path = Path(path)
    if not _is_dicom(path):
        _require_file(path)
        if path.suffix.lower() in (".tif", ".tiff"):
            # TIFFs may hold floats, whose NaN/inf only the pixels show; they are rare and small enough to decode
            rows, columns = _read_raster(path).pixels.shape
            return ImageHeader(rows, columns, None)
        try:
            with Image.open(path) as im:
                columns, rows = im.size
                _check_raster_mode(path, im.mode, getattr(im, "n_frames", 1))
        except (OSError, ValueError) as error:
            raise ImageReadError(f"{path}: cannot read image ({_reason(error)})") from None
        return ImageHeader(rows, columns, None)
    # defer_size: large values (PixelData) are left on disk; only their offset and length are recorded.
    ds = _dcmread(path, defer_size=1024)
    _check_dicom_layout(path, ds)
    _check_header_numbers(path, ds)
    _check_spacing(path, ds)
    element = ds.get_item("PixelData", keep_deferred=True)
    if element is None:
        raise ImageReadError(f"{path}: DICOM has no PixelData (not an image object)")
    _check_pixel_length(path, ds, _available_bytes(path, element))
    return ImageHeader(int(ds.Rows), int(ds.Columns), dicom_spacing(ds))


def pixel_fingerprint(path: str | os.PathLike, full: bool = False) -> str:
    """A hash of an image's pixel data (the DICOM PixelData element, or a raster file's bytes), to find one
    mammogram listed twice under different names or patient ids.

    Two DICOM copies of one image hash alike even when their headers differ (a re-export under another patient id).
    By default only the length and :data:`PIXEL_SAMPLES` chunks spread over the pixel data are hashed (cheap: a few
    KiB per image); ``full=True`` hashes every byte, to confirm a match.

    Raises:
        ImageReadError: the file cannot be read.
    """
    path = Path(path)
    offset, length, value = _pixel_region(path)
    digest = hashlib.sha256(f"{length};".encode())
    if value is not None:
        digest.update(value)
        return digest.hexdigest()
    chunk = PIXEL_SAMPLE_BYTES
    try:
        with path.open("rb") as f:
            if full or length <= PIXEL_SAMPLES * chunk:
                f.seek(offset)
                for _ in range(0, length, 1 << 20):
                    digest.update(f.read(min(1 << 20, offset + length - f.tell())))
            else:
                for k in range(PIXEL_SAMPLES):
                    f.seek(offset + k * (length - chunk) // (PIXEL_SAMPLES - 1))
                    digest.update(f.read(chunk))
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read ({_reason(error)})") from None
    return digest.hexdigest()


def _pixel_region(path: Path) -> tuple[int, int, bytes | None]:
    """(offset, length, value): where the pixel data lies in the file, or its bytes when pydicom read them."""
    _require_file(path)
    size = path.stat().st_size
    if not _is_dicom(path):
        return 0, size, None
    element = _dcmread(path, defer_size=1024).get_item("PixelData", keep_deferred=True)
    if element is None:
        return 0, size, None
    if getattr(element, "value", None) is not None:
        return 0, len(element.value), bytes(element.value)
    start, length = element.value_tell, element.length
    return start, (size - start if length in (None, 0xFFFFFFFF) else min(length, size - start)), None


def _check_pixel_length(path: Path, ds: pydicom.Dataset, available: int) -> None:
    """Uncompressed pixel data must hold exactly Rows x Columns pixels (plus the one byte of even-length padding).

    Fewer bytes: a truncated copy. More: a header whose Rows/Columns disagree with the pixels, which pydicom would
    trim with a warning and decode as a sheared, wrong image, so it is refused rather than guessed.
    """
    syntax = getattr(ds.get("file_meta"), "TransferSyntaxUID", None)
    bits = int(ds.BitsAllocated)
    if syntax is None or syntax.is_compressed or bits % 8:
        return
    expected = int(ds.Rows) * int(ds.Columns) * (bits // 8)
    if available < expected:
        raise ImageReadError(f"{path}: DICOM is truncated (pixel data needs {expected} bytes, the file holds fewer)")
    if available > expected + 1:
        raise ImageReadError(
            f"{path}: pixel data holds {available} bytes but Rows x Columns ({ds.Rows} x {ds.Columns}) at "
            f"{bits} bits need {expected}: the header does not describe the pixels"
        )


def _available_bytes(path: Path, element) -> int:
    """Bytes of pixel data present: a deferred element is measured against the file's end, a read one directly."""
    value = getattr(element, "value", None)
    if value is not None:
        return len(value)
    start, length = getattr(element, "value_tell", None), getattr(element, "length", None)
    if start is None or length is None:
        return 2**62  # cannot tell without reading; the decoder will say
    return min(length, path.stat().st_size - start)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in RASTER_SUFFIXES:
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:  # unknown suffix: look for the DICOM preamble magic
        with path.open("rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return True  # let the DICOM reader report the missing/unreadable file


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if len(text) < 300 else text[:300] + "..."


def _require_file(path: Path) -> None:
    problem = not_a_file(path)
    if problem == "is a folder, not a file":
        raise ImageReadError(f"{path}: is a folder, not an image file")
    if problem:
        raise ImageReadError(f"{path}: {problem}")


def _dcmread(path: Path, **kwargs) -> pydicom.Dataset:
    _require_file(path)
    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError:
        raise ImageReadError(f"{path}: not a DICOM file (no DICM preamble and no readable header)") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as error:
        raise ImageReadError(f"{path}: unreadable DICOM ({_reason(error)})") from None


def _check_dicom_layout(path: Path, ds: pydicom.Dataset) -> None:
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if k not in ds]
    if missing:
        raise ImageReadError(f"{path}: DICOM is not an image (missing {', '.join(missing)})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(
            f"{path}: multi-frame DICOM ({frames} frames, e.g. tomosynthesis) is not supported; "
            "export 2-D mammograms (one frame per file)"
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise ImageReadError(f"{path}: colour DICOM ({samples} samples per pixel); mammograms must be grayscale")
    _check_modality(path, ds)


def _check_modality(path: Path, ds: pydicom.Dataset) -> None:
    """Refuse an object of another modality (a CT slice would otherwise be rated like a mammogram)."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if not modality or modality in MAMMOGRAPHY_MODALITIES:
        return
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if modality in PROJECTION_MODALITIES and body_part in ("", "BREAST"):
        return
    if modality in PROJECTION_MODALITIES:
        what = f"Modality {modality} with BodyPartExamined {body_part}"
    else:
        what = f"Modality is {modality} ({MODALITY_NAMES.get(modality, 'not mammography')})"
    raise ImageReadError(f"{path}: DICOM {what}: not a mammogram (MG); birads-calc rates 2-D mammograms only")


def _check_spacing(path: Path, ds: pydicom.Dataset) -> None:
    """A pixel spacing the header states must be usable: two numbers, each within 0.01-2 mm (``data/limits.py``).

    A zero (some exports write ``0\\0`` for "unknown") or an absurd value would otherwise be taken for "no spacing"
    or resample the image to millions of pixels per side.
    """
    for key in SPACING_KEYS:
        value = ds.get(key)
        if value is None or value == "":
            continue
        values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        if len(values) != 2:
            raise PixelSpacingError(f"{path}: DICOM {key} has {len(values)} value(s); it needs two (row and column mm)")
        for item in values:
            problem = spacing_problem(float(item))
            if problem:
                shown = "\\".join(str(v) for v in values)
                raise PixelSpacingError(
                    f"{path}: DICOM {key} is {shown}: {problem}; fix the file's header (e.g. dcmodify -m "
                    f"{key}=0.085\\0.085 FILE with the detector's true spacing) or remove the element"
                )


def _check_header_numbers(path: Path, ds: pydicom.Dataset) -> None:
    """The numeric header values the pipeline uses must be numbers: an export with a decimal comma
    (WindowCenter ``8412,2``) would otherwise pass the header check and stop decoding with a bare TypeError."""
    for key in NUMERIC_HEADER:
        with warnings.catch_warnings():  # pydicom warns about the invalid DS and keeps the text
            warnings.simplefilter("ignore")
            value = ds.get(key)
        if value is None:
            continue
        for item in value if isinstance(value, MultiValue | list | tuple) else [value]:
            try:
                float(item)
            except (TypeError, ValueError):
                comma = ", a decimal comma?" if re.fullmatch(r"\s*-?\d+,\d+\s*", str(item)) else ""
                raise ImageReadError(
                    f"{path}: DICOM {key} is not a number ({str(item)!r}{comma}); fix the file's header, "
                    f"e.g. dcmodify -m {key}={str(item).replace(',', '.').strip()} FILE"
                ) from None


def dicom_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """``(row_mm, col_mm)`` at the breast, or ``None`` when the header records no spacing.

    PixelSpacing (calibrated in the patient) wins when present. Mammography detectors usually record only
    ImagerPixelSpacing, measured at the detector: an object between source and detector is magnified on it, so the
    spacing at the breast is ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor (PS3.3 C.8.11.7; about
    1.1 for a contact view, 1.5-2 for a magnification view). A missing or invalid factor counts as 1.
    """
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2:
            row_mm, col_mm = (float(v) for v in value)
            if row_mm > 0 and col_mm > 0:
                factor = _magnification(ds) if key == "ImagerPixelSpacing" else 1.0
                return row_mm / factor, col_mm / factor
    return None


def _magnification(ds: pydicom.Dataset) -> float:
    try:
        factor = float(ds.get("EstimatedRadiographicMagnificationFactor") or 1.0)
    except (TypeError, ValueError):
        return 1.0
    return factor if factor >= 1.0 else 1.0


def _read_dicom(path: Path, voi: str) -> MammogramImage:
    ds = _dcmread(path)
    _check_dicom_layout(path, ds)
    _check_header_numbers(path, ds)
    _check_spacing(path, ds)
    if "PixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM has no PixelData (not an image object)")
    _check_pixel_length(path, ds, len(ds.PixelData))
    try:
        stored = ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, OSError, KeyError, AttributeError) as error:
        raise ImageReadError(f"{path}: cannot decode pixel data ({_reason(error)})") from None
    if stored.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2-D image, decoded shape {stored.shape}")
    values = apply_modality_lut(stored, ds)
    low, high = _modality_range(ds)
    if voi == "window" and (ds.get("VOILUTSequence") or ds.get("WindowCenter") is not None):
        values, (low, high) = _apply_voi(values, ds, (low, high))
    pixels = _unit_range(np.asarray(values, dtype=np.float64), low, high)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        pixels = 1.0 - pixels
    return MammogramImage(pixels.astype(np.float32), dicom_spacing(ds))


def _modality_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The values the modality LUT can output: the true range of the data, not the container's."""
    if ds.get("ModalityLUTSequence"):
        lut = _lut_values(ds.ModalityLUTSequence[0])
        return float(lut.min()), float(lut.max())
    bits = int(ds.get("BitsStored", ds.BitsAllocated))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def _apply_voi(values: np.ndarray, ds: pydicom.Dataset, modality_range: tuple[float, float]):
    """VOI LUT or window through pydicom; returns the values and the range they can take."""
    if ds.get("VOILUTSequence"):
        lut = _lut_values(ds.VOILUTSequence[0])
        out_range = (float(lut.min()), float(lut.max()))
    elif ds.get("ModalityLUTSequence"):
        # pydicom's windowing maps onto the Modality LUT's nominal output range (PS3.3 C.11.1.1.1)
        out_range = (0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    else:
        # ... or onto the rescaled stored range (PS3.3 C.11.2.1.2)
        out_range = modality_range
    return apply_voi_lut(values, ds, prefer_lut=True), out_range


def _lut_values(item: pydicom.Dataset) -> np.ndarray:
    """A LUT's entries as numbers, whether stored as US values or as OW bytes."""
    data = item.LUTData
    if isinstance(data, bytes):
        bits = int(item.LUTDescriptor[2])
        return np.frombuffer(data, dtype=np.uint8 if bits <= 8 else "<u2").astype(np.float64)
    return np.asarray(data if isinstance(data, (list, tuple)) or hasattr(data, "__len__") else [data], np.float64)


def _unit_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _check_raster_mode(path: Path, mode: str, frames: int) -> None:
    if frames > 1:
        raise ImageReadError(f"{path}: multi-page image ({frames} pages) is not supported; one image per file")
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "P", "LAB", "HSV"):
        raise ImageReadError(f"{path}: colour image (mode {mode}); mammograms must be grayscale")


def _read_raster(path: Path) -> MammogramImage:
    _require_file(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            array = np.asarray(tifffile.imread(path))
        else:
            with Image.open(path) as im:
                _check_raster_mode(path, im.mode, getattr(im, "n_frames", 1))
                array = np.asarray(im)
    except ImageReadError:
        raise
    except Exception as error:  # Pillow/tifffile raise many types for corrupt files
        raise ImageReadError(f"{path}: cannot read image ({_reason(error)})") from None
    if array.ndim == 3 and array.shape[-1] in (3, 4) and np.all(array[..., :3] == array[..., :1]):
        array = array[..., 0]  # gray stored as RGB(A)
    if array.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2-D grayscale image, got shape {array.shape}")
    return MammogramImage(_raster_unit_range(path, array), None)


def _raster_unit_range(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        return _unit_range(array.astype(np.float64), info.min, info.max).astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageReadError(f"{path}: unsupported pixel type {array.dtype}")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ImageReadError(f"{path}: image holds {bad} non-finite value(s) (NaN or inf)")
    low, high = float(array.min()), float(array.max())
    if low >= 0.0 and high <= 1.0:
        return array.astype(np.float32)  # already a [0, 1] image: keep its contrast as is
    return _unit_range(array.astype(np.float64), low, high).astype(np.float32)
