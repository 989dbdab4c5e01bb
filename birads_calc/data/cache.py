"""The lesion crop cache: decode every mammogram once, train for 50 epochs from memory-mapped crops (DESIGN §4).

For each lesion the cache holds its *context crop*: the smallest box covering all of its training windows and
its centred window, as a uint16 image crop (the [0, 1] image times 65535) and one uint8 mask plane (bit 0 = all
calcifications of the image, bit 1 = this lesion). Every window a data loader needs is a slice of one crop, so
an epoch never decodes a DICOM, and the cache grows with the number of lesions, not of windows.

Layout: ``<cache_dir>/<manifest stem>-<fingerprint>/`` with ``pixels.u16`` and ``masks.u8`` (all crops, flat,
memory-mapped read-only), ``entries.npz`` (per-lesion row, origin, shape, offset, windows; no pickles) and
``index.json`` (settings, fingerprint, counts). The fingerprint hashes the manifest's bytes, the size and
modification time of every file it names, and every setting that changes the crops (window, stride, spacing,
VOI mode, scale, skip_bad_rows). A matching folder is reused; anything else is rebuilt. A build writes into a
temporary folder (``.<name>.<random>.partial``, holding an ``owner`` file with host and process id) and renames
it into place when complete, so an interrupted build is never taken for a cache; the next build on that host
removes the partial folders whose process is gone (a killed build would otherwise leave gigabytes behind).

``birads-calc prepare MANIFEST`` builds it ahead of training; ``BiradsDataModule.prepare_data`` does the same on
first use (local rank 0 of each node; the other ranks wait).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from jsonargparse.typing import PositiveInt

from birads_calc.data.dicom import DEFAULT_VOI, VOI_MODES, ImageReadError, read_header, read_image
from birads_calc.data.limits import MAX_PIXELS, PixelSpacingMm, spacing_problem
from birads_calc.data.manifest import (
    Lesion,
    ManifestError,
    Problem,
    manifest_files,
    read_manifest,
    require_manifest_file,
    without_path,
)
from birads_calc.data.masks import read_mask
from birads_calc.data.roi import (
    bounding_box,
    centred_window,
    check_grid,
    context_box,
    crop,
    grid_windows,
    oversized_lesions,
    pack_masks,
    to_pixels,
)
from birads_calc.errors import InputError
from birads_calc.io import write_json
from birads_calc.progress import track

log = logging.getLogger(__name__)

CACHE_VERSION = 1
DEFAULT_DIRNAME = ".birads_cache"
PARTIAL_SUFFIX = ".partial"
OWNER_FILE = "owner"


class ScaleWarning(UserWarning):
    """Images at another physical scale than the model's training images (the warning names them)."""


class LesionSizeWarning(UserWarning):
    """Lesions larger than the window: the window cuts them (the warning gives the numbers)."""


@dataclass(frozen=True)
class CacheSettings:
    """Everything that changes the cached crops (part of the fingerprint)."""

    window: int = 400
    stride: int = 100
    pixel_spacing_mm: float | None = None
    voi: str = DEFAULT_VOI
    num_classes: int = 6
    skip_bad_rows: bool = False
    fallback_spacing_mm: float | None = None  # spacing of images that record none (predict --pixel_spacing)

    def __post_init__(self):
        check_grid(self.window, self.stride)
        problem = None if self.pixel_spacing_mm is None else spacing_problem(self.pixel_spacing_mm)
        if problem:
            raise InputError(f"pixel_spacing_mm {self.pixel_spacing_mm}: {problem}")


class LesionCache:
    """A built cache, opened read-only. Memory maps are opened lazily so the object pickles into loader workers.

    Attributes:
        root: the cache folder.
        settings: the settings it was built with.
        rows: manifest row number of each entry.
        windows: per entry, its training windows ``[K, 2]`` (top, left) in (resampled) image coordinates.
        centres: per entry, its centred window ``(top, left)``.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        index = json.loads((self.root / "index.json").read_text())
        self.settings = CacheSettings(**index["settings"])
        self.fingerprint: str = index["fingerprint"]
        with np.load(self.root / "entries.npz", allow_pickle=False) as entries:
            self.rows = entries["rows"]
            self.origins = entries["origins"]
            self.shapes = entries["shapes"]
            self.offsets = entries["offsets"]
            self.centres = entries["centres"]
            self._windows = entries["windows"]
            self._window_starts = entries["window_starts"]
        self._pixels: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def image_spacings(self) -> dict[str, tuple[float, float] | None]:
        """Each image's spacing in mm as read when the cache was built (``{}`` for a cache built before 0.2)."""
        index = json.loads((self.root / "index.json").read_text())
        return {k: tuple(v) if v else None for k, v in (index.get("spacings") or {}).items()}

    def __getstate__(self) -> dict:
        # never pickle the mapped data itself (spawned DDP workers would receive a full copy)
        return {**self.__dict__, "_pixels": None, "_masks": None}

    def windows(self, entry: int) -> np.ndarray:
        """Training windows of entry ``entry`` as ``[K, 2]`` (top, left)."""
        return self._windows[self._window_starts[entry] : self._window_starts[entry + 1]]

    def entry_of_row(self) -> dict[int, int]:
        """Manifest row number -> entry position."""
        return {int(r): i for i, r in enumerate(self.rows)}

    def crop_window(self, entry: int, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``window x window`` slice at image position ``(top, left)`` of an entry's context crop.

        Returns:
            uint16 pixels and uint8 packed masks, both ``[W, W]`` (copies, safe to hand to a loader).
        """
        if self._pixels is None:
            self._pixels = np.memmap(self.root / "pixels.u16", dtype=np.uint16, mode="r")
            self._masks = np.memmap(self.root / "masks.u8", dtype=np.uint8, mode="r")
        height, width = (int(v) for v in self.shapes[entry])
        start = int(self.offsets[entry])
        r, c = top - int(self.origins[entry, 0]), left - int(self.origins[entry, 1])
        size = self.settings.window
        if not (0 <= r <= height - size and 0 <= c <= width - size):
            raise IndexError(f"window ({top}, {left}) lies outside the cached crop of entry {entry}")
        pixels = self._pixels[start : start + height * width].reshape(height, width)[r : r + size, c : c + size]
        masks = self._masks[start : start + height * width].reshape(height, width)[r : r + size, c : c + size]
        return np.array(pixels), np.array(masks)

    @property
    def nbytes(self) -> int:
        """Bytes on disk (crops and index)."""
        return sum(f.stat().st_size for f in self.root.iterdir() if f.is_file())


def fingerprint(manifest: str | os.PathLike, settings: CacheSettings) -> str:
    """Hash of the manifest content, the size/mtime of every file it names, and the settings."""
    manifest = Path(manifest)
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_VERSION, **_keyed(settings)}, sort_keys=True).encode())
    digest.update(manifest.read_bytes())
    for path in manifest_files(manifest):
        try:
            stat = path.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns};".encode())
        except (OSError, ValueError):  # ValueError: a path the OS cannot even name; validation reports it
            digest.update(b"missing;")
    return digest.hexdigest()


SCALE_TOLERANCE = 0.10  # an image more than 10 % finer or coarser than the training images' median is named


def scale_mismatches(
    record: Mapping[str, Any] | None, spacings: Mapping[str, tuple[float, float] | None]
) -> tuple[list[str], list[str]]:
    """(images without any spacing, images whose spacing is off the training median by more than 10 %).

    Images are the keys of ``spacings`` (a name for messages). A model trained at a fixed ``pixel_spacing_mm``
    resamples every image, so only the images without spacing are a problem for it; a checkpoint without a record,
    or trained on images without spacing, has no median to compare with.
    """
    missing = [name for name, spacing in spacings.items() if spacing is None]
    median = ((record or {}).get("training_mm") or {}).get("median")
    if (record or {}).get("pixel_spacing_mm") or not median:
        return missing, []
    off = [
        f"{name} ({spacing[0]:.3g} mm)"
        for name, spacing in spacings.items()
        if spacing is not None and abs(spacing[0] - median) > SCALE_TOLERANCE * median
    ]
    return missing, off


def _keyed(settings: CacheSettings) -> dict:
    """The settings that key a cache; an unset fallback spacing is left out (caches built before it stay valid)."""
    keyed = asdict(settings)
    if keyed["fallback_spacing_mm"] is None:
        del keyed["fallback_spacing_mm"]
    return keyed


def default_cache_dir(manifest: str | os.PathLike) -> Path:
    """``<manifest folder>/.birads_cache``."""
    return Path(os.path.abspath(manifest)).parent / DEFAULT_DIRNAME


def ensure_cache(
    manifest: str | os.PathLike, settings: CacheSettings | None = None, cache_dir: str | os.PathLike | None = None
) -> LesionCache:
    """Open the manifest's cache, building it first when missing or out of date.

    Raises:
        ManifestError: the manifest has bad rows (and ``skip_bad_rows`` is off), with every problem listed.
    """
    settings = settings or CacheSettings()
    manifest = Path(manifest)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(manifest)
    require_manifest_file(manifest)
    require_cache_folder(cache_dir)
    key = fingerprint(manifest, settings)
    target = cache_dir / f"{manifest.stem}-{key[:20]}"
    if (target / "index.json").is_file():
        log.info("cache up to date: %s", target)
        return LesionCache(target)
    return build_cache(manifest, settings, cache_dir, key)


def require_cache_folder(cache_dir: Path) -> None:
    """Refuse a cache folder that is an existing file (it would end in a bare ``FileExistsError``)."""
    if cache_dir.exists() and not cache_dir.is_dir():
        raise InputError(
            f"cache_dir {cache_dir} is a file, not a folder; give a folder for the crop cache (prepare --cache_dir, "
            "fit --data.cache_dir), or leave it out for <manifest folder>/.birads_cache"
        )


def find_cache(
    manifest: str | os.PathLike, settings: CacheSettings, cache_dir: str | os.PathLike | None = None
) -> LesionCache | None:
    """The up-to-date cache of a manifest if one exists (never builds)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(manifest)
    target = cache_dir / f"{Path(manifest).stem}-{fingerprint(manifest, settings)[:20]}"
    return LesionCache(target) if (target / "index.json").is_file() else None


def build_cache(manifest: Path, settings: CacheSettings, cache_dir: Path, key: str) -> LesionCache:
    """Validate the manifest, decode each image once and write every lesion's context crop (atomic)."""
    start = time.perf_counter()
    lesions = read_manifest(manifest, settings.num_classes, require_labels=False, skip_bad_rows=settings.skip_bad_rows)
    check_window_fits(lesions, settings)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(cache_dir)
    target = cache_dir / f"{manifest.stem}-{key[:20]}"
    log.info("building the crop cache of %s (%d lesions, decoded once): %s", manifest, len(lesions), target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX, dir=cache_dir))
    (tmp / OWNER_FILE).write_text(_owner())
    try:
        entries, problems, spacings = _write_crops(tmp, lesions, settings)
        if problems and (not settings.skip_bad_rows or not entries["rows"]):
            raise ManifestError(manifest, problems)
        if problems:
            warnings.warn(
                f"{manifest}: skipped {len(problems)} row(s) whose image could not be decoded:\n"
                + "\n".join(f"  {p}" for p in problems),
                stacklevel=2,
            )
        np.savez(tmp / "entries.npz", **{k: np.asarray(v) for k, v in _flatten(entries).items()})
        write_json(
            tmp / "index.json",
            {
                "version": CACHE_VERSION,
                "fingerprint": key,
                "manifest": str(Path(os.path.abspath(manifest))),
                "settings": asdict(settings),
                "lesions": len(entries["rows"]),
                "images": len({x.image for x in lesions}),
                "spacings": spacings,
                "build_seconds": round(time.perf_counter() - start, 3),
            },
        )
        _make_readable(tmp)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (target / OWNER_FILE).unlink(missing_ok=True)  # only after the rename: a partial folder always has its owner
    _prune(cache_dir, manifest, keep=target)
    log.info("built cache %s (%d lesions) in %.1f s", target, len(entries["rows"]), time.perf_counter() - start)
    return LesionCache(target)


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _remove_abandoned_builds(cache_dir: Path) -> None:
    """Delete partial build folders of this host whose process has died (SIGKILL, OOM killer, power loss).

    A build of another host (shared filesystem) or of a live process is left alone: it may still be running.
    """
    host = socket.gethostname()
    for folder in cache_dir.glob(f".*{PARTIAL_SUFFIX}"):
        try:
            owner_host, pid = (folder / OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            continue  # no owner yet (just created) or not ours: never guess
        if owner_host == host and not _alive(int(pid)):
            log.info("removing an interrupted cache build: %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _make_readable(folder: Path) -> None:
    """mkdtemp/mkstemp create owner-only entries; a shared cache must be readable by every training user."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished build into place; another process that finished first wins (same content)."""
    try:
        os.rename(tmp, target)
    except OSError:
        if not (target / "index.json").is_file():
            raise


def _prune(cache_dir: Path, manifest: Path, keep: Path) -> None:
    """Remove this manifest's outdated caches (other manifests sharing the folder are left alone)."""
    for folder in cache_dir.glob(f"{manifest.stem}-*"):
        if folder == keep or not (folder / "index.json").is_file():
            continue
        try:
            if json.loads((folder / "index.json").read_text()).get("manifest") == str(Path(os.path.abspath(manifest))):
                shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            continue


def _write_crops(folder: Path, lesions: Sequence[Lesion], settings: CacheSettings):
    """Write every lesion's context crop; returns (entries, problems, each image's native spacing or None)."""
    spacings: dict[str, list[float] | None] = {}
    entries: dict[str, list] = {k: [] for k in ("rows", "origins", "shapes", "offsets", "centres", "windows")}
    problems: list[Problem] = []
    sizes: list[tuple[int, str, int, int]] = []  # (row, image, height, width) of each lesion's bounding box
    by_image: dict[Path, list[Lesion]] = {}
    for lesion in lesions:
        by_image.setdefault(lesion.image, []).append(lesion)
    offset = 0
    with (folder / "pixels.u16").open("wb") as pixel_file, (folder / "masks.u8").open("wb") as mask_file:
        for image_path, group in track(by_image.items(), "crop cache: decoding", unit="image"):
            try:
                image, masks, spacing = load_image(image_path, group, settings, with_spacing=True)
                spacings[str(image_path)] = list(spacing) if spacing else None
                check_window(image_path, image.shape, settings.window)
            except ImageReadError as error:
                problems += [Problem(x.row, without_path(str(error), x.image), "image", x.image) for x in group]
                continue
            mask_all = np.logical_or.reduce(masks)
            for lesion, mask in zip(group, masks, strict=True):
                box = bounding_box(mask)
                windows = grid_windows(box, image.shape, settings.window, settings.stride)
                centre = centred_window(box, settings.window)
                context = context_box([*windows, centre], settings.window)
                pixel_file.write(crop(image, context).tobytes())
                mask_file.write(pack_masks(crop(mask_all, context), crop(mask, context)).tobytes())
                height, width = context[2] - context[0], context[3] - context[1]
                sizes.append((lesion.row, str(lesion.image), box[2] - box[0], box[3] - box[1]))
                entries["rows"].append(lesion.row)
                entries["origins"].append(context[:2])
                entries["shapes"].append((height, width))
                entries["offsets"].append(offset)
                entries["centres"].append(centre)
                entries["windows"].append(windows)
                offset += height * width
    too_large = oversized_lesions(sizes, settings.window)
    if too_large:
        warnings.warn(too_large, LesionSizeWarning, stacklevel=3)
    return entries, problems, spacings


def check_window_fits(lesions: Sequence[Lesion], settings: CacheSettings) -> None:
    """Refuse, before any image is decoded, a window larger (both ways) than every image of the manifest, as one
    error naming the window option: a setting mistaken by orders of magnitude (``--window 100000``), not a problem
    of some rows. A window that only some images are smaller than is reported per row (:func:`check_window`)."""
    shapes: dict[Path, tuple[int, int]] = {}
    for lesion in lesions:
        if lesion.image not in shapes:
            try:
                header = read_header(lesion.image)
            except ImageReadError:
                return  # reported with its row when the image is decoded
            shapes[lesion.image] = _resampled_shape(header.shape, header.pixel_spacing, settings.pixel_spacing_mm)
    if not shapes or any(settings.window <= max(shape) for shape in shapes.values()):
        return
    largest = max(shapes, key=lambda image: max(shapes[image]))
    rows, columns = shapes[largest]
    raise InputError(
        f"window {settings.window} px is larger than every image of the manifest ({len(shapes)} image(s); the "
        f"largest is {rows} x {columns} px{' after resampling' if settings.pixel_spacing_mm else ''}: {largest}); "
        f"the crops would be padding ({settings.window**2 * 3 / 2**30:.3g} GiB per lesion). Use a window of at most "
        f"{max(rows, columns)} px (prepare --window, fit --data.window; the paper: 400 px at 0.085 mm)"
    )


def _resampled_shape(shape: tuple[int, int], spacing, target: float | None) -> tuple[int, int]:
    if target is None or spacing is None:
        return shape
    return tuple(max(1, round(n * s / target)) for n, s in zip(shape, spacing, strict=True))


def check_window(path: Path, shape: tuple[int, int], window: int) -> None:
    """Refuse a window larger than the image both ways before any crop is allocated: the crops would be mostly
    padding, and an absurd window (``--window 100000``) would allocate gigabytes per lesion."""
    if window > max(shape):
        size = window * window * 3 / 2**30  # uint16 pixels + uint8 masks
        raise ImageReadError(
            f"{path}: image is {shape[0]} x {shape[1]} px (after resampling, if set), smaller than the {window} px "
            f"window both ways; each crop would be mostly padding ({size:.3g} GiB per lesion). Use a window of at "
            f"most {max(shape)} px (prepare --window, fit --data.window)"
        )


def load_image(path: Path, group: Sequence[Lesion], settings: CacheSettings, with_spacing: bool = False):
    """The image as uint16 and its lesions' masks, resampled to the target spacing when one is set.

    The spacing is the file's (at the breast: ``read_image``), else ``settings.fallback_spacing_mm``. With
    ``with_spacing`` the spacing used is returned third (``None`` when neither gives one).
    """
    image = read_image(path, voi=settings.voi)
    masks = [read_mask(x.mask) for x in group]
    pixels = image.pixels
    fallback = settings.fallback_spacing_mm
    spacing = image.pixel_spacing or ((fallback, fallback) if fallback else None)
    if settings.pixel_spacing_mm is not None:
        if spacing is None:
            raise ImageReadError(
                f"{path}: pixel_spacing_mm is set but the file records no pixel spacing (predict: give it with "
                "--pixel_spacing MM)"
            )
        pixels, masks = _resample(pixels, masks, spacing, settings.pixel_spacing_mm)
    return (to_pixels(pixels), masks, spacing) if with_spacing else (to_pixels(pixels), masks)


def _resample(pixels: np.ndarray, masks: list[np.ndarray], spacing: tuple[float, float], target: float):
    """Resample to ``target`` mm per pixel; a mask keeps at least its brightest pixel so no lesion vanishes."""
    from skimage.transform import resize

    shape = _resampled_shape(pixels.shape, spacing, target)
    if shape == pixels.shape:
        return pixels, masks
    if shape[0] * shape[1] > MAX_PIXELS:  # checked before resize allocates it
        raise ImageReadError(
            f"resampling from {spacing[0]:g} x {spacing[1]:g} mm to {target:g} mm per pixel would make the "
            f"{pixels.shape[0]} x {pixels.shape[1]} px image {shape[0]} x {shape[1]} px, more than "
            f"{MAX_PIXELS / 1e6:.0f} Mpx; check pixel_spacing_mm and the file's pixel spacing"
        )
    out = resize(pixels, shape, order=1, anti_aliasing=shape[0] < pixels.shape[0], preserve_range=True)
    resized = []
    for mask in masks:
        soft = resize(mask.astype(np.float32), shape, order=1, anti_aliasing=False, preserve_range=True)
        hard = soft >= 0.5
        resized.append(hard if hard.any() else soft >= soft.max())
    return out.astype(np.float32), resized


def _flatten(entries: dict[str, list]) -> dict[str, np.ndarray]:
    windows = [np.asarray(w, dtype=np.int64).reshape(-1, 2) for w in entries["windows"]]
    starts = np.cumsum([0] + [len(w) for w in windows])
    return {
        "rows": np.asarray(entries["rows"], dtype=np.int64),
        "origins": np.asarray(entries["origins"], dtype=np.int64).reshape(-1, 2),
        "shapes": np.asarray(entries["shapes"], dtype=np.int64).reshape(-1, 2),
        "offsets": np.asarray(entries["offsets"], dtype=np.int64),
        "centres": np.asarray(entries["centres"], dtype=np.int64).reshape(-1, 2),
        "windows": np.concatenate(windows) if windows else np.zeros((0, 2), np.int64),
        "window_starts": starts.astype(np.int64),
    }


def configure_parser(parser) -> None:
    """Options of ``birads-calc prepare`` (use the same values as the data section of the training config)."""
    parser.add_argument("manifest", type=str, help="the manifest CSV")
    parser.add_argument("--window", type=PositiveInt, default=400, help="window size in pixels")
    parser.add_argument("--stride", type=PositiveInt, default=100, help="grid stride in pixels")
    parser.add_argument(
        "--pixel_spacing_mm", type=PixelSpacingMm | None, default=None, help="resample to this spacing (0.01-2 mm)"
    )
    parser.add_argument("--voi", type=str, default=DEFAULT_VOI, choices=list(VOI_MODES), help="DICOM VOI handling")
    parser.add_argument("--num_classes", type=Literal[6, 4], default=6, help="BI-RADS scale: 6 or 4")
    parser.add_argument("--skip_bad_rows", type=bool, default=False, help="leave bad rows out (each reported)")
    parser.add_argument("--cache_dir", type=str | None, default=None, help="default: <manifest folder>/.birads_cache")


def main(cfg) -> int:
    """``birads-calc prepare``: build (or confirm) the crop cache; a bad manifest stops it with every problem."""
    settings = CacheSettings(cfg.window, cfg.stride, cfg.pixel_spacing_mm, cfg.voi, cfg.num_classes, cfg.skip_bad_rows)
    start = time.perf_counter()
    cache = ensure_cache(cfg.manifest, settings, cfg.cache_dir)  # a bad manifest: the CLI's message, exit code 2
    print(
        f"cache {cache.root}: {len(cache)} lesions, {sum(len(cache.windows(i)) for i in range(len(cache)))} "
        f"training windows, {cache.nbytes / 2**20:.1f} MiB ({time.perf_counter() - start:.1f} s)"
    )
    return 0
