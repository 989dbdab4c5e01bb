"""Mask files: binary in any common encoding, refused otherwise with the file named."""

import numpy as np
import pytest
from PIL import Image

from birads_calc.data.masks import MaskError, read_mask, write_mask


def test_round_trip_png(tmp_path):
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:20] = True
    path = write_mask(tmp_path / "m.png", mask)
    assert np.asarray(Image.open(path)).max() == 255
    np.testing.assert_array_equal(read_mask(path), mask)


@pytest.mark.parametrize(
    ("suffix", "dtype", "on"), [(".png", np.uint8, 1), (".tif", np.uint16, 65535), (".pgm", np.uint8, 255)]
)
def test_reads_binary_encodings(tmp_path, suffix, dtype, on):
    array = np.zeros((8, 8), dtype)
    array[2:4, 2:5] = on
    Image.fromarray(array).save(tmp_path / f"m{suffix}")
    assert read_mask(tmp_path / f"m{suffix}").sum() == 6


def test_reads_npy_and_all_zero(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((4, 4), np.uint8))
    assert read_mask(tmp_path / "m.npy").sum() == 0  # emptiness is the manifest check's business, not the reader's


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.arange(64, dtype=np.uint8).reshape(8, 8), "not binary"),
        (np.full((8, 8), 7, np.uint8) + np.eye(8, dtype=np.uint8), "not binary"),
        (np.dstack([np.eye(8, dtype=np.uint8) * 255, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)]), "2-D"),
    ],
)
def test_refuses_non_binary(tmp_path, array, fragment):
    Image.fromarray(array).save(tmp_path / "bad.png")
    with pytest.raises(MaskError, match=fragment) as info:
        read_mask(tmp_path / "bad.png")
    assert "bad.png" in str(info.value)


def test_unreadable_file_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(MaskError, match="broken.png"):
        read_mask(tmp_path / "broken.png")
