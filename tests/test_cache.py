"""The lesion crop cache: contents equal a direct decode, reuse, rebuild, atomic builds, size, ``prepare``."""

from __future__ import annotations

import os

import numpy as np
import pytest

from birads_calc.cli import main as cli_main
from birads_calc.data import cache as cache_module
from birads_calc.data.cache import CacheSettings, ensure_cache
from birads_calc.data.dicom import read_image
from birads_calc.data.manifest import ManifestError, read_manifest
from birads_calc.data.masks import read_mask
from birads_calc.data.roi import BIT_ALL, BIT_LESION, bounding_box, crop, grid_windows, to_pixels
from tests.factories import make_tiny_dataset

SETTINGS = CacheSettings(window=64, stride=16)


@pytest.fixture
def dataset(tmp_path):
    return make_tiny_dataset(tmp_path, patients=3, lesions_per_image=2, size=256)


def test_cached_windows_equal_a_direct_decode(dataset):
    cache = ensure_cache(dataset, SETTINGS)
    lesions = read_manifest(dataset)
    assert cache.root.parent == dataset.parent / ".birads_cache" and len(cache) == len(lesions)
    entry_of = cache.entry_of_row()
    for lesion in lesions:
        image = to_pixels(read_image(lesion.image).pixels)
        mask = read_mask(lesion.mask)
        mask_all = np.logical_or.reduce([read_mask(x.mask) for x in lesions if x.image == lesion.image])
        entry = entry_of[lesion.row]
        windows = [tuple(w) for w in cache.windows(entry)]
        assert windows == grid_windows(bounding_box(mask), mask.shape, 64, 16)
        for top, left in [*windows, tuple(cache.centres[entry])]:
            pixels, masks = cache.crop_window(entry, top, left)
            box = (top, left, top + 64, left + 64)
            np.testing.assert_array_equal(pixels, crop(image, box))
            np.testing.assert_array_equal((masks & BIT_ALL) > 0, crop(mask_all, box))
            np.testing.assert_array_equal((masks & BIT_LESION) > 0, crop(mask, box))


def test_reused_when_unchanged_rebuilt_when_changed(dataset, monkeypatch):
    first = ensure_cache(dataset, SETTINGS)
    builds = []
    original = cache_module.build_cache
    monkeypatch.setattr(cache_module, "build_cache", lambda *a, **k: builds.append(a) or original(*a, **k))
    assert ensure_cache(dataset, SETTINGS).root == first.root and builds == []
    other = ensure_cache(dataset, CacheSettings(window=64, stride=32))  # a setting changed
    assert other.root != first.root and len(builds) == 1
    mask = read_manifest(dataset)[0].mask
    stat = mask.stat()
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an input file changed
    rebuilt = ensure_cache(dataset, SETTINGS)
    assert rebuilt.root != first.root and len(builds) == 2
    assert not first.root.exists()  # the outdated cache of this manifest is pruned


def test_interrupted_build_leaves_nothing_that_looks_complete(dataset, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "_write_crops", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_cache(dataset, SETTINGS)
    folder = dataset.parent / ".birads_cache"
    assert list(folder.iterdir()) == []  # the temporary build folder is removed, nothing was published
    monkeypatch.undo()
    assert len(ensure_cache(dataset, SETTINGS)) == 6


def test_size_grows_with_lesions_not_windows(tmp_path):
    small = make_tiny_dataset(tmp_path / "a", patients=2, size=256)
    large = make_tiny_dataset(tmp_path / "b", patients=4, size=256)
    dense = CacheSettings(window=64, stride=4)  # ~16x the windows of stride 16
    sizes = {}
    for name, manifest in (("small", small), ("large", large)):
        for label, settings in (("sparse", SETTINGS), ("dense", dense)):
            cache = ensure_cache(manifest, settings)
            windows = sum(len(cache.windows(i)) for i in range(len(cache)))
            sizes[name, label] = ((cache.root / "pixels.u16").stat().st_size, windows)
    assert sizes["large", "dense"][1] > 8 * sizes["large", "sparse"][1]  # many more windows ...
    assert sizes["large", "dense"][0] <= 1.5 * sizes["large", "sparse"][0]  # ... about the same bytes
    ratio = sizes["large", "sparse"][0] / sizes["small", "sparse"][0]
    assert 1.5 < ratio < 2.5  # twice the lesions, about twice the bytes


def test_resampling_to_a_pixel_spacing(dataset):
    native = ensure_cache(dataset, SETTINGS)
    coarse = ensure_cache(dataset, CacheSettings(window=32, stride=8, pixel_spacing_mm=0.2))  # images are 0.1 mm
    lesion = read_manifest(dataset)[0]
    box = np.asarray(bounding_box(read_mask(lesion.mask)))
    centre_native = native.centres[native.entry_of_row()[lesion.row]] + 32
    centre_coarse = coarse.centres[coarse.entry_of_row()[lesion.row]] + 16
    assert np.abs(centre_coarse * 2 - centre_native).max() <= 2
    assert np.abs(centre_native - (box[:2] + box[2:]) // 2).max() <= 1


def test_bad_manifest_is_refused_before_building(tmp_path):
    manifest = make_tiny_dataset(tmp_path, patients=2, size=64)
    read_manifest(manifest)[0].mask.unlink()
    with pytest.raises(ManifestError, match="row 1"):
        ensure_cache(manifest, SETTINGS)
    assert not any((tmp_path / ".birads_cache").glob("*/index.json"))


def test_prepare_command(dataset, capsys):
    assert cli_main(["prepare", str(dataset), "--window", "64", "--stride", "16"]) == 0
    out = capsys.readouterr().out
    assert "6 lesions" in out and ".birads_cache" in out
    assert cli_main(["prepare", str(dataset.parent / "absent.csv")]) == 2
