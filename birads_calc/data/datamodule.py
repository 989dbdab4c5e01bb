"""``BiradsDataModule``: manifest -> attention-ROI batches (paper §2.2, §3.1; DESIGN §3-4).

``prepare_data`` (local rank 0 of each node) validates the manifest and builds the crop cache when it is missing
or out of date; ``setup`` (every rank) reads the manifest, opens the cache and splits by patient. Loaders ship
compact arrays; :meth:`BiradsDataModule.on_after_batch_transfer` assembles the float ROIs on the device.

Batches before transfer: ``pixels`` uint16 ``[B, W, W]``, ``masks`` uint8 ``[B, W, W]`` (bit 0 = all
calcifications, bit 1 = this lesion), ``target`` int64, ``malignancy`` float32, ``index`` int64. After transfer:
``image`` float32 ``[B, 3, W, W]`` in [0, 1], ``target``, ``malignancy``, ``index`` (docs/architecture.md).
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch.utils.data import DataLoader, Dataset, default_collate

from birads_calc.categories import label_name
from birads_calc.data.cache import CacheSettings, LesionCache, ScaleWarning, ensure_cache, find_cache, scale_mismatches
from birads_calc.data.dicom import read_header
from birads_calc.data.limits import PixelSpacingMm, Seed
from birads_calc.data.manifest import (
    ClassCoverageWarning,
    Lesion,
    ManifestError,
    Problem,
    coverage_problem,
    read_manifest,
)
from birads_calc.data.roi import assemble
from birads_calc.data.sampler import BalancedDistributedSampler
from birads_calc.data.splits import (
    SplitError,
    assignment_of,
    pinned_split,
    read_splits,
    require_splits,
    split_by_patient,
    write_splits,
)
from birads_calc.errors import InputError

__all__ = ["BiradsDataModule", "WindowDataset", "split_by_patient", "to_model_batch", "training_seed"]


AUGMENTATION_STREAM = 1  # keeps the augmentation's draws independent of the sampler's, which use the same seed
NEEDED_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}


class BatchShareWarning(UserWarning):
    """A class with fewer training lesions than its share of a class-balanced batch: they repeat in every batch."""


class WindowDataset(Dataset):
    """(window, lesion) samples read from the cache.

    Args:
        cache: the opened crop cache.
        samples: int64 ``[S, 4]``: position in the lesion list, cache entry, window top, window left.
        targets: int64 class index per lesion position (-1 unlabelled).
        malignancy: float32 per lesion position.
    """

    def __init__(self, cache: LesionCache, samples: np.ndarray, targets: np.ndarray, malignancy: np.ndarray):
        self.cache = cache
        self.samples = samples
        self.targets = targets
        self.malignancy = malignancy

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        position, entry, top, left = (int(v) for v in self.samples[i])
        pixels, masks = self.cache.crop_window(entry, top, left)
        return {
            "pixels": torch.from_numpy(pixels),
            "masks": torch.from_numpy(masks),
            "target": torch.tensor(self.targets[position], dtype=torch.int64),
            "malignancy": torch.tensor(self.malignancy[position], dtype=torch.float32),
            "index": torch.tensor(position, dtype=torch.int64),
        }

    def __getitems__(self, indices: Sequence[int]) -> dict:
        """A whole batch at once, written straight into its arrays (no per-sample tensors, no stacking copy)."""
        size = self.cache.settings.window
        pixels = np.empty((len(indices), size, size), dtype=np.uint16)
        masks = np.empty((len(indices), size, size), dtype=np.uint8)
        rows = self.samples[np.asarray(indices, dtype=np.int64)]
        for k, (_, entry, top, left) in enumerate(rows.tolist()):
            pixels[k], masks[k] = self.cache.crop_window(entry, top, left)
        positions = rows[:, 0]
        return {
            "pixels": torch.from_numpy(pixels),
            "masks": torch.from_numpy(masks),
            "target": torch.from_numpy(self.targets[positions]),
            "malignancy": torch.from_numpy(self.malignancy[positions]),
            "index": torch.from_numpy(positions.copy()),
        }

    @property
    def sample_labels(self) -> np.ndarray:
        """Class index of each sample (its lesion's)."""
        return self.targets[self.samples[:, 0]]


class BiradsDataModule(L.LightningDataModule):
    """Attention-ROI windows of the calcifications of a manifest, split 3:1:1 by patient.

    Args:
        manifest: the manifest CSV (DESIGN §3).
        num_classes: 6 (BI-RADS 5th edition) or 4 (older standard).
        split_seed: seed of the random patient split, and of nothing else (ignored when the manifest has a
            ``split`` column or a split is pinned). Every random stream of training (sampler order, window
            choice, augmentation; initialisation and dropout through torch) follows Lightning's global seed
            (``seed_everything``) instead: see :func:`training_seed`.
        split_ratios: train:val:test proportions of patients.
        window: window size in pixels (paper: 400).
        stride: grid stride in pixels (paper: 100).
        attention: ``[x, x*M_all, x*M_lesion]`` when True, the gray patch repeated 3 times otherwise.
        batch_size: per process.
        num_workers: loader worker processes.
        balanced_sampling: class-balanced mini-batches (§3.2, ``data/sampler.py``); otherwise plain shuffling.
        augment: random flips / 90-degree rotations on training batches (on the device); the paper uses none.
        cache_dir: crop cache folder (default ``<manifest folder>/.birads_cache``).
        pixel_spacing_mm: resample every image to this spacing first (None: keep the native pixels).
        skip_bad_rows: leave bad manifest rows out (each reported) instead of refusing the manifest.
        pin_memory: pinned host memory for faster host-to-GPU copies.
        voi: DICOM VOI handling, ``"full"`` (whole range: calcification densities kept; the default) or
            ``"window"`` (the file's window/VOI LUT, which saturates what lies above it; data/dicom.py).
        splits: a ``splits.csv`` (``patient_id,split``) to use instead of computing the split; the manifest must
            fit it (``data/splits.py``). The CLI passes the run's own ``splits.csv`` when it has one.

    Attributes:
        record_splits: where ``setup("fit")`` writes the split it used (the CLI sets ``<run>/splits.csv``).
    """

    def __init__(
        self,
        manifest: Path | None = None,
        num_classes: Literal[6, 4] = 6,
        split_seed: Seed = 0,
        split_ratios: Sequence[float] = (3, 1, 1),
        window: PositiveInt = 400,
        stride: PositiveInt = 100,
        attention: bool = True,
        batch_size: PositiveInt = 32,
        num_workers: NonNegativeInt = 2,
        balanced_sampling: bool = True,
        augment: bool = True,
        cache_dir: Path | None = None,
        pixel_spacing_mm: PixelSpacingMm | None = None,
        skip_bad_rows: bool = False,
        pin_memory: bool = True,
        voi: Literal["window", "full"] = "full",
        splits: Path | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        ratios = list(split_ratios)
        if len(ratios) != 3 or not all(math.isfinite(r) and r >= 0 for r in ratios) or sum(ratios) <= 0:
            raise SplitError(
                f"--data.split_ratios {ratios}: give three non-negative numbers (train, val, test), not all zero, "
                "e.g. [3, 1, 1]"
            )
        self.manifest = Path(manifest) if manifest is not None else None
        self.settings = CacheSettings(window, stride, pixel_spacing_mm, voi, num_classes, skip_bad_rows)
        self.lesions: list[Lesion] = []
        self.splits: dict[str, list[int]] = {}
        self.cache: LesionCache | None = None
        self.datasets: dict[str, WindowDataset] = {}
        self.record_splits: Path | None = None
        # called with (splits, lesions, stage) once the split is made: the CLI refuses an evaluation that would
        # include patients the model trained or was validated on (cli/run_integrity.py)
        self.split_guard: Callable[[dict[str, list[int]], list[Lesion], str], None] | None = None
        self.scale_reference: dict | None = None  # predict: the checkpoint's training_spacing, checked in setup

    # -- preparation ---------------------------------------------------------------------------------------------

    def _manifest(self) -> Path:
        if self.manifest is None:
            raise ValueError("BiradsDataModule needs a manifest (data.manifest: path/to/manifest.csv)")
        return self.manifest

    def prepare_data(self) -> None:
        """Validate the manifest and build the crop cache if needed (local rank 0 of each node)."""
        ensure_cache(self._manifest(), self.settings, self.hparams.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, open the cache, split by patient and build the datasets of ``stage``."""
        manifest = self._manifest()
        labelled = stage in ("fit", "validate", "test", None)
        self.lesions = read_manifest(
            manifest,
            self.hparams.num_classes,
            require_labels=labelled,
            skip_bad_rows=self.hparams.skip_bad_rows,
            check_files=False,  # the files were checked when the cache (keyed by their size/mtime) was built
        )
        self.cache = find_cache(manifest, self.settings, self.hparams.cache_dir) or ensure_cache(
            manifest, self.settings, self.hparams.cache_dir
        )
        entry_of = self.cache.entry_of_row()
        if self.hparams.skip_bad_rows:
            self.lesions = [x for x in self.lesions if x.row in entry_of]
        missing = [x for x in self.lesions if x.row not in entry_of]
        if missing:
            problems = [Problem(x.row, "row is missing from the crop cache", file=x.image) for x in missing]
            raise ManifestError(manifest, problems)
        self._entries = np.asarray([entry_of[x.row] for x in self.lesions], dtype=np.int64)
        self._targets = np.asarray([-1 if x.label is None else x.label for x in self.lesions], dtype=np.int64)
        self._malignancy = np.asarray([x.malignancy for x in self.lesions], dtype=np.float32)
        if stage == "predict" and self.scale_reference is not None:
            self._check_scale()
        self.splits = {} if stage == "predict" else self._split()  # predict uses every row
        if stage in NEEDED_SPLITS:
            needed = NEEDED_SPLITS[stage]
            if stage == "fit" and getattr(self.trainer, "limit_val_batches", None) == 0:
                needed = ("train",)  # a fit that never validates (--trainer.limit_val_batches 0)
            require_splits(self.splits, self.lesions, needed, self._split_source())
        if self.split_guard is not None and stage is not None:
            self.split_guard(self.splits, self.lesions, stage)
        if stage == "fit" and self.record_splits is not None and (self.trainer is None or self.trainer.is_global_zero):
            write_splits(self.record_splits, assignment_of(self.splits, self.lesions))
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for name in wanted.get(stage, ("train", "val", "test")):
            self.datasets[name] = self._dataset(name)

    def _split(self) -> dict[str, list[int]]:
        """The pinned split (``splits``) when given, otherwise the manifest's column or the seeded 3:1:1 split."""
        if self.hparams.splits is None:
            return split_by_patient(self.lesions, self.hparams.split_ratios, self.hparams.split_seed)
        return pinned_split(self.lesions, read_splits(self.hparams.splits), self.hparams.splits)

    def use_fallback_spacing(self, mm: float | None) -> None:
        """Spacing for images whose files record none (``predict --pixel_spacing``); set before ``setup``."""
        self.settings = replace(self.settings, fallback_spacing_mm=mm)

    def image_spacings(self, lesions: Sequence[Lesion] | None = None) -> dict[str, tuple[float, float] | None]:
        """Native spacing (mm) of each image of ``lesions`` (default: all), as the cache recorded it."""
        recorded = self.cache.image_spacings() if self.cache is not None else {}
        spacings = {}
        for image in sorted({str(x.image) for x in (self.lesions if lesions is None else lesions)}):
            spacings[image] = recorded[image] if image in recorded else read_header(image).pixel_spacing
        return spacings

    def _check_scale(self) -> None:
        """The scale rule of predict (docs/clinical.md): an image without spacing is refused (give
        ``--pixel_spacing``); one more than 10 % off the training images' median spacing is named in a warning."""
        spacings = self.image_spacings()
        fallback = self.settings.fallback_spacing_mm
        spacings = {k: v or ((fallback, fallback) if fallback else None) for k, v in spacings.items()}
        missing, off = scale_mismatches(self.scale_reference, spacings)
        if missing:
            problems = [
                Problem(x.row, "the image records no pixel spacing: give it with --pixel_spacing MM", "image", x.image)
                for x in self.lesions
                if str(x.image) in missing
            ]
            raise ManifestError(self._manifest(), problems)
        if off:
            median = self.scale_reference["training_mm"]["median"]
            warnings.warn(
                f"{len(off)} image(s) differ by more than 10 % from the {median:.3g} mm per pixel of the model's "
                f"training images, so the model sees their calcifications at another size: {', '.join(off)}",
                ScaleWarning,
                stacklevel=2,
            )

    def training_spacing(self) -> dict:
        """The physical scale of training (``checkpoint["birads_calc"]["spacing"]``): the fixed resampling spacing
        (or ``None``) and the spread of the training split's native spacings (row spacing, mm)."""
        train = [self.lesions[p] for p in self.splits.get("train", [])]
        values = [s[0] for s in self.image_spacings(train).values() if s is not None] if train else []
        images = len({x.image for x in train})
        summary = {
            "median": float(np.median(values)) if values else None,
            "min": float(min(values)) if values else None,
            "max": float(max(values)) if values else None,
            "n_images": images,
            "n_without_spacing": images - len(values),
        }
        return {"pixel_spacing_mm": self.hparams.pixel_spacing_mm, "training_mm": summary}

    def _split_source(self) -> str:
        """Where the split came from, as a message names it (the split file, the manifest's column, the ratios)."""
        if self.hparams.splits is not None:
            return f"the split file {self.hparams.splits}"
        if any(x.split for x in self.lesions):
            return f"the split column of {self.manifest}"
        ratios = list(self.hparams.split_ratios)
        patients = len({x.patient_id for x in self.lesions})
        return f"--data.split_ratios {ratios} (on {patients} patient(s), --data.split_seed {self.hparams.split_seed})"

    def _check_training_set(self) -> None:
        """What the training split and the batch size must allow, checked when training asks for its loader:
        refused when a batch would exceed the training windows; warned about when classes of the scale are missing
        or too few lesions fill a class's share."""
        train = self.datasets["train"]
        world = int(getattr(self.trainer, "world_size", 1) or 1)
        batch = self.hparams.batch_size * world
        if batch > len(train):
            per = f" ({self.hparams.batch_size} per process x {world} processes)" if world > 1 else ""
            raise InputError(
                f"--data.batch_size {self.hparams.batch_size}{per} is larger than the {len(train)} training windows "
                f"of {self.manifest} (window {self.hparams.window}, stride {self.hparams.stride}): every batch would "
                f"repeat windows. Use --data.batch_size {max(len(train) // world, 1)} or less, or more data"
            )
        lesions = [self.lesions[i] for i in self.splits["train"]]
        problem = coverage_problem(lesions, self.hparams.num_classes, f"the training split of {self.manifest}")
        if problem:
            warnings.warn(problem, ClassCoverageWarning, stacklevel=2)
        if self.hparams.balanced_sampling:
            self._warn_small_classes(lesions, batch)

    def _warn_small_classes(self, lesions: list[Lesion], batch: int) -> None:
        """Class-balanced batches give each class present an equal share: a class with fewer lesions than its
        share repeats the same lesions in every batch (a single lesion of one of six classes: 1/6 of each batch)."""
        counts = Counter(x.label for x in lesions)
        share = math.ceil(batch / len(counts))
        small = {k: n for k, n in sorted(counts.items()) if n < share}
        if small:
            names = "; ".join(
                f"{label_name(k, self.hparams.num_classes)}: {n} lesion(s), each about {share / n:.1f} times per batch"
                for k, n in small.items()
            )
            warnings.warn(
                f"class-balanced batches of {batch} give each of the {len(counts)} classes of the training split of "
                f"{self.manifest} about {share} samples, more than these classes have lesions ({names}): the same "
                "lesions repeat in every batch. Add lesions of those classes, lower --data.batch_size, or set "
                "--data.balanced_sampling false",
                BatchShareWarning,
                stacklevel=3,
            )

    def patient_splits(self) -> dict[str, str]:
        """Patient -> split of the pinned split file (``{}`` without one); ``predict`` marks its rows with it."""
        return read_splits(self.hparams.splits) if self.hparams.splits is not None else {}

    def _dataset(self, name: str) -> WindowDataset:
        positions = range(len(self.lesions)) if name == "predict" else self.splits[name]
        samples = []
        for position in positions:
            entry = int(self._entries[position])
            windows = self.cache.windows(entry) if name == "train" else self.cache.centres[entry : entry + 1]
            for top, left in windows:
                samples.append((position, entry, int(top), int(left)))
        samples = np.asarray(samples, dtype=np.int64).reshape(-1, 4)
        return WindowDataset(self.cache, samples, self._targets, self._malignancy)

    # -- loaders -------------------------------------------------------------------------------------------------

    def _loader(self, name: str, **kwargs) -> DataLoader:
        if name not in self.datasets:
            raise RuntimeError(f"no {name} data: call setup() with the matching stage first")
        dataset = self.datasets[name]
        if len(dataset) == 0:
            raise SplitError(f"the {name} split of {self.manifest} is empty (too few patients for the split ratios?)")
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.hparams.pin_memory and torch.cuda.is_available(),
            collate_fn=_collate,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """(window, lesion) pairs of the training patients: class-balanced mini-batches sharded per DDP rank."""
        dataset = self.datasets.get("train")
        if dataset is not None and len(dataset):
            self._check_training_set()
        if dataset is not None and self.hparams.balanced_sampling and len(dataset):
            sampler = BalancedDistributedSampler(
                dataset.sample_labels,
                dataset.samples[:, 0],
                self.hparams.batch_size,
                seed=training_seed(),
                accumulate=int(getattr(self.trainer, "accumulate_grad_batches", 1) or 1),  # balance the whole step
            )
            return self._loader("train", sampler=sampler)
        return self._loader(
            "train", shuffle=True, drop_last=dataset is not None and len(dataset) > self.hparams.batch_size
        )

    def val_dataloader(self) -> DataLoader:
        """One centred window per validation lesion."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """One centred window per test lesion."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """One centred window per manifest row (labels optional)."""
        return self._loader("predict")

    # -- on the device -------------------------------------------------------------------------------------------

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Assemble the float ROIs on the device; random flips/rotations while training only."""
        augment = self.trainer is not None and self.trainer.training and self.hparams.augment
        generator = self._augmentation_generator(batch["pixels"].device) if augment and "pixels" in batch else None
        return to_model_batch(batch, self.hparams.attention, augment=augment, generator=generator)

    def _augmentation_generator(self, device: torch.device) -> torch.Generator | None:
        """A generator seeded by (training seed, epoch, batch, rank), like the sampler is by seed and epoch.

        The draws then depend on nothing a checkpoint does not restore: a run resumed from ``last.ckpt`` flips
        and rotates exactly the windows an uninterrupted run does, on the CPU and on a GPU alike. Without a
        Lightning fit loop (a stand-in trainer) it is ``None``: torch's global generator.
        """
        trainer = self.trainer
        if not hasattr(trainer, "fit_loop"):
            return None
        batch = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # this batch's index within the epoch
        key = [training_seed(), trainer.current_epoch, batch, trainer.global_rank, AUGMENTATION_STREAM]
        seed = int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        return torch.Generator(device=device).manual_seed(seed)


def training_seed() -> int:
    """Lightning's global seed (``seed_everything`` sets ``PL_GLOBAL_SEED``; 0 when never called).

    The sampler and the augmentation derive their generators from it, so ``seed_everything(s)`` is all a script
    needs to get another run, and the same seed gives the same run.
    """
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def _collate(batch):
    """Batches come whole from ``WindowDataset.__getitems__``; anything else goes through the default collation."""
    return batch if isinstance(batch, dict) else default_collate(batch)


def to_model_batch(batch: dict, attention: bool = True, augment: bool = False, generator=None) -> dict:
    """A loader batch (compact arrays) -> the model's batch (``image``, ``target``, ``malignancy``, ``index``).

    A plain function so a bare PyTorch loop gets exactly the batches Lightning does.
    """
    if "image" in batch:  # already assembled
        return batch
    image = assemble(batch["pixels"], batch["masks"], attention=attention, augment=augment, generator=generator)
    return {"image": image, "target": batch["target"], "malignancy": batch["malignancy"], "index": batch["index"]}
