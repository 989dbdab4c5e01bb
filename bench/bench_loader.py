"""Loader throughput: attention-ROI samples/s from the crop cache vs decoding the DICOM per sample (DESIGN §8).

Both paths deliver the attention ROIs of the same (window, lesion) pairs, in the same run, on
generated 2000x1500 16-bit DICOMs with four calcifications each:

* **cache** (``loader.cache_vs_decode``): ``BiradsDataModule``'s train loader (real ``DataLoader``, 2 workers,
  batch 32), i.e. the compact batches (uint16 crop + packed masks) that training moves to the device, where
  ``on_after_batch_transfer`` builds the float channels. ``loader.cache_cpu_roi_vs_decode`` adds that float
  assembly on this CPU (what a CPU-only run pays per step): output identical to the baseline's (tested);
* **decode** (baseline): ``read_image`` + ``read_mask`` per sample, crop, ``attention_roi``.

Also the cache build time and size at two dataset sizes (growth should be linear in the number of lesions).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import figure
from birads_calc.data.cache import CacheSettings, ensure_cache
from birads_calc.data.datamodule import BiradsDataModule, to_model_batch
from birads_calc.data.dicom import read_image
from birads_calc.data.manifest import read_manifest
from birads_calc.data.masks import read_mask
from birads_calc.data.roi import attention_roi, crop
from tests.factories import disc, write_dicom, write_manifest, write_mask

SHAPE = (2000, 1500)
LESIONS_PER_IMAGE = 4


def make_dataset(root: Path, images: int, seed: int = 0) -> Path:
    """``images`` 16-bit DICOMs with four disc calcifications each, plus masks and a manifest."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(images):
        pixels = rng.normal(20000, 1500, SHAPE)
        for j in range(LESIONS_PER_IMAGE):
            centre = rng.uniform(100, np.asarray(SHAPE) - 100)
            mask = disc(SHAPE, centre, radius=rng.uniform(4, 30))
            pixels[mask] += 20000
            write_mask(root / f"m{i}_{j}.png", mask)
            rows.append({"patient_id": f"P{i}", "image": f"i{i}.dcm", "mask": f"m{i}_{j}.png", "birads": "2345"[j % 4]})
        write_dicom(root / f"i{i}.dcm", np.clip(pixels, 0, 65535), bits_stored=16, patient_id=f"P{i}")
    return write_manifest(root / "manifest.csv", rows)


def cache_samples_per_second(manifest: Path, batches: int, assemble: bool = True) -> float:
    """Training batches from the cache through the real loader; ``assemble``: also build the float ROIs (on the
    CPU here; on a GPU that step runs on the device) so the output equals the baseline's."""
    dm = BiradsDataModule(manifest, num_classes=4, batch_size=32, num_workers=2, split_ratios=(1, 0, 0))
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # workers started
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        count += len(to_model_batch(batch)["image"] if assemble else batch["pixels"])
    return count / (time.perf_counter() - start)


def decode_samples_per_second(manifest: Path, samples: int) -> float:
    """The baseline: everything from the files, per sample."""
    dm = BiradsDataModule(manifest, num_classes=4, split_ratios=(1, 0, 0))
    dm.setup("fit")
    lesions, table = dm.lesions, dm.datasets["train"].samples
    picks = np.random.default_rng(0).choice(len(table), samples, replace=False)
    start = time.perf_counter()
    for i in picks:
        position, _, top, left = (int(v) for v in table[i])
        lesion = lesions[position]
        x = read_image(lesion.image).pixels
        siblings = [read_mask(y.mask) for y in lesions if y.image == lesion.image]
        box = (top, left, top + 400, left + 400)
        roi = attention_roi(crop(x, box), crop(np.logical_or.reduce(siblings), box), crop(read_mask(lesion.mask), box))
        assert roi.shape == (3, 400, 400)
    return samples / (time.perf_counter() - start)


def build(manifest: Path) -> tuple[float, float, int]:
    """Seconds and MiB of a fresh cache build, and its number of lesions."""
    start = time.perf_counter()
    cache = ensure_cache(manifest, CacheSettings(num_classes=4))
    return time.perf_counter() - start, cache.nbytes / 2**20, len(cache)


def run(quick: bool = False) -> dict:
    sizes = (4, 8) if quick else (10, 20)
    with tempfile.TemporaryDirectory() as tmp:
        builds = {}
        for n in sizes:
            manifest = make_dataset(Path(tmp) / f"n{n}", n)
            builds[n] = build(manifest)
        # the larger dataset's cache exists now; read_manifest only warms the OS cache of the masks
        read_manifest(manifest, num_classes=4)
        decode = decode_samples_per_second(manifest, 3 if quick else 8)
        cached = cache_samples_per_second(manifest, 10 if quick else 40)
        loader_only = cache_samples_per_second(manifest, 10 if quick else 40, assemble=False)
    (t_small, mib_small, n_small), (t_large, mib_large, n_large) = builds[sizes[0]], builds[sizes[1]]
    print(f"cache: {cached:.1f} samples/s ({loader_only:.1f} without the CPU assembly), decode: {decode:.2f} samples/s")
    print(
        f"build {n_small} lesions: {t_small:.1f} s {mib_small:.1f} MiB; "
        f"{n_large} lesions: {t_large:.1f} s {mib_large:.1f} MiB"
    )
    growth = n_large / n_small
    return {
        "loader.cache_vs_decode": figure(loader_only, decode, "samples/s (loader batches; ROI built on device)", 50),
        "loader.cache_cpu_roi_vs_decode": figure(cached, decode, "samples/s (plus float ROI assembly on CPU)", None),
        "loader.cache_build_time_growth": figure(
            t_large, t_small, f"s ({n_small} -> {n_large} lesions; linear = {growth:g})", None
        ),
        "loader.cache_size_growth": figure(
            mib_large, mib_small, f"MiB ({n_small} -> {n_large} lesions; linear = {growth:g})", None
        ),
        "loader.cache_mib_per_lesion": figure(mib_large / n_large, None, "MiB/lesion", None),
    }


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
