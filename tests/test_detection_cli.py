"""`birads-calc detect` and `predict --detect` end to end on small generated mammograms (real files, real CLI)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from detection_fixtures import SPACING, phantom, small_ranker
from factories import disc, make_tiny_dataset, write_dicom, write_manifest
from factories import write_mask as write_truth_mask
from PIL import Image
from training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.data.manifest import read_manifest
from birads_calc.data.masks import read_mask
from birads_calc.detection.tool import DETECTION_COLUMNS, REPORT_COLUMNS

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "proposed.yaml"
CLUSTERS = ((150.0, 90.0, 6), (260.0, 120.0, 5))


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def studies(root: Path, labelled: bool = False) -> Path:
    """Two mammograms with two clusters each and one without calcifications, as DICOMs and a manifest.

    With ``labelled``, each cluster is outlined (a 4 mm disc) with a BI-RADS label, as a research set would be.
    """
    rows = []
    for k, clusters in enumerate((CLUSTERS, CLUSTERS, ())):
        pixels, _, _, _ = phantom(clusters=clusters, seed=k)
        image = write_dicom(root / f"img{k}.dcm", np.round(pixels * 4095), bits_stored=12, pixel_spacing=(SPACING,) * 2)
        if not labelled:
            rows.append({"patient_id": f"P{k}", "image": image.name, "view": "CC"})
        for j, (r, c, _) in enumerate(clusters if labelled else ()):
            mask = write_truth_mask(root / f"img{k}_{j}.png", disc(pixels.shape, (r, c), 4 / SPACING))
            rows.append({"patient_id": f"P{k}", "image": image.name, "mask": mask.name, "birads": ["2", "4B"][j]})
    columns = ["patient_id", "image", "mask", "birads"] if labelled else ["patient_id", "image", "view"]
    return write_manifest(root / "studies.csv", rows, columns)


def test_detect_writes_masks_detections_report_and_a_manifest_check_data_accepts(tmp_path, capsys):
    manifest = studies(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["detect", str(manifest), "--out", str(out)]) == 0

    columns, detections = read_csv(out / "detections.csv")
    assert columns == list(DETECTION_COLUMNS)
    assert sorted(d["image"] for d in detections) == ["img0.dcm", "img0.dcm", "img1.dcm", "img1.dcm"]  # as given
    for d in detections:
        mask = read_mask(out / d["mask"])
        r0, c0, r1, c1 = (int(v) for v in d["bbox"].split())
        rows, cols = np.nonzero(mask)
        assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (r0, c0, r1, c1)
        assert float(d["centroid_row"]) == pytest.approx(rows.mean(), abs=0.01)
        assert float(d["area_mm2"]) == pytest.approx(mask.sum() * SPACING**2, rel=1e-3)
        assert min(np.hypot(float(d["centroid_row"]) - r, float(d["centroid_col"]) - c) for r, c, _ in CLUSTERS) < 15
    columns, report = read_csv(out / "report.csv")
    assert columns == list(REPORT_COLUMNS)
    assert [(r["image"], r["status"]) for r in report] == [
        ("img0.dcm", "regions"),
        ("img1.dcm", "regions"),
        ("img2.dcm", "no calcification found"),
    ]
    assert report[2]["reason"].startswith("no calcification found")

    lesions = read_manifest(out / "manifest.csv", require_labels=False)
    assert not (out / "labelled.csv").exists()  # nothing was outlined in the input
    assert len(lesions) == 4 and {x.patient_id for x in lesions} == {"P0", "P1"} and {x.view for x in lesions} == {"CC"}
    capsys.readouterr()
    assert main(["check-data", str(out / "manifest.csv"), "--labels", "optional"]) == 0
    assert "4 / 2 / 2" in capsys.readouterr().out


def test_labels_of_outlined_calcifications_carry_over_so_test_can_use_the_manifest(tmp_path):
    manifest = studies(tmp_path / "in", labelled=True)
    out = tmp_path / "out"
    assert main(["detect", str(manifest), "--out", str(out)]) == 0
    assert read_csv(out / "labelled.csv")[1] == read_csv(out / "manifest.csv")[1]  # every region hit a cluster
    lesions = read_manifest(out / "labelled.csv")  # labels required, as for fit/test
    upper = sorted((bool(read_mask(x.mask).nonzero()[0].mean() < 200), x.label) for x in lesions)
    assert upper == [(False, 3), (False, 3), (True, 0), (True, 0)]  # the row-150 cluster is BI-RADS 2, row 260 4B


def test_png_needs_pixel_spacing_and_unreadable_images_are_reported(tmp_path, capsys):
    pixels, _, _, _ = phantom()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "broken.dcm").write_bytes(b"DICM but not really")
    out = tmp_path / "out"
    assert main(["detect", "--images", str(tmp_path / "a.png"), "--out", str(out)]) == 2
    assert "--pixel_spacing" in capsys.readouterr().err and not out.exists()

    code = main(["detect", "--images", str(tmp_path), "--out", str(out), "--pixel_spacing", str(SPACING)])
    assert code == 2  # one image could not be used; the others are still written
    _, report = read_csv(out / "report.csv")
    status = {Path(r["image"]).name: r["status"] for r in report}
    assert status == {"a.png": "regions", "broken.dcm": "unreadable"}
    assert len(read_csv(out / "detections.csv")[1]) == 2


def test_detect_refuses_both_or_neither_input(tmp_path, capsys):
    assert main(["detect", "--out", str(tmp_path / "o")]) == 2
    assert "either a MANIFEST or --images" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_detect_rates_every_region_with_its_detection_score(tmp_path, capsys):
    runs = tmp_path / "runs"
    train = make_tiny_dataset(tmp_path / "train", patients=6, size=128)
    main(["fit", "--config", str(CONFIG), "--data.manifest", str(train), "--runs_root", str(runs),
          *TINY_OVERRIDES, "--trainer.logger", "false", "--trainer.limit_val_batches", "1"])  # fmt: skip
    manifest = studies(tmp_path / "new")
    folder = tmp_path / "predicted"
    code = main(["predict", "--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs),
                 *TINY_OVERRIDES, "--trainer.logger", "false", "--overlay_size", "96", "--detect",
                 "--predict_dir", str(folder)])  # fmt: skip
    assert code == 0
    columns, predictions = read_csv(folder / "predictions.csv")
    assert columns[columns.index("birads_pred") + 1] == "detection_score"
    _, detections = read_csv(folder / "detections.csv")
    assert {p["lesion_id"]: p["detection_score"] for p in predictions} == {
        d["lesion_id"]: d["score"] for d in detections
    }
    assert len(predictions) == 4 and (folder / "breasts.csv").is_file() and any((folder / "overlays").iterdir())

    # --detect_weights: the ranker detect-train wrote, used as `detect --weights` uses it; a wrong file is refused
    ranker = small_ranker(tmp_path)
    base = ["predict", "--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs),
            *TINY_OVERRIDES, "--trainer.logger", "false", "--overlay_size", "96"]  # fmt: skip
    assert main([*base, "--detect", "--detect_weights", str(ranker), "--predict_dir", str(tmp_path / "own")]) == 0
    assert main(["detect", str(manifest), "--out", str(tmp_path / "alone"), "--weights", str(ranker)]) == 0
    key = ("image", "centroid_row", "centroid_col")
    scores = [{tuple(d[k] for k in key): d["score"] for d in read_csv(f / "detections.csv")[1]}
              for f in (tmp_path / "own", tmp_path / "alone", folder)]  # fmt: skip
    assert scores[0] == scores[1] != scores[2]
    (tmp_path / "wrong.pt").write_bytes(b"nonsense")
    for extra, named in ((["--detect", "--detect_weights", str(tmp_path / "wrong.pt")], "wrong.pt"),
                         (["--detect_weights", str(ranker)], "needs --detect"),
                         (["--detect", "--detect_weights"], "needs a ranker FILE")):  # fmt: skip
        assert main([*base, *extra, "--predict_dir", str(tmp_path / "no")]) == 2
        assert named in capsys.readouterr().err and not (tmp_path / "no" / "predictions.csv").exists()


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # the 'inf' header we write on purpose
def test_bad_pixel_spacings_are_report_rows_and_the_batch_goes_on(tmp_path, capsys):
    """Header spacings outside 0.02-1.0 mm, infinite, zero or NaN: a row naming the image and its value each,
    exit code 2, and the good image is still detected and written."""
    pixels, _, _, _ = phantom()
    stored = np.round(pixels * 4095)
    folder = tmp_path / "in"
    write_dicom(folder / "good.dcm", stored, bits_stored=12, pixel_spacing=(SPACING, SPACING))
    bad = {"tiny.dcm": (1e-5, 1e-5), "huge.dcm": (1000.0, 1000.0), "inf.dcm": ("inf", "inf"), "zero.dcm": (0.0, 0.0)}
    for name, spacing in bad.items():
        write_dicom(folder / name, stored, bits_stored=12, pixel_spacing=spacing)
    out = tmp_path / "out"
    assert main(["detect", "--images", str(folder), "--out", str(out), "--pixel_spacing", "0.2"]) == 2
    _, report = read_csv(out / "report.csv")
    rows = {Path(r["image"]).name: r for r in report}
    assert rows["good.dcm"]["status"] == "regions" and int(rows["good.dcm"]["n_regions"]) >= 2
    for name, value in {"tiny.dcm": "1e-05", "huge.dcm": "1000", "inf.dcm": "inf", "zero.dcm": "0"}.items():
        assert rows[name]["status"] == "bad pixel spacing" and name in rows[name]["reason"], rows[name]
        assert value in rows[name]["reason"], rows[name]
    _, detections = read_csv(out / "detections.csv")
    assert {Path(d["image"]).name for d in detections} == {"good.dcm"}
    assert "could not be used" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "abc", "0", "-0.1", "1e-5", "1000"])
def test_a_bad_pixel_spacing_option_is_one_message_naming_it(tmp_path, capsys, value):
    pixels, _, _, _ = phantom()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["detect", "--images", str(tmp_path / "a.png"), "--out", str(out), "--pixel_spacing", value]) == 2
    err = capsys.readouterr().err
    assert "--pixel_spacing" in err and value in err and "Traceback" not in err and not out.exists()


def test_detect_crop_finds_the_cluster_on_a_60_pixel_patch(tmp_path):
    pixels, _, _, _ = phantom()
    patch = pixels[120:180, 60:120]  # 12 x 12 mm around the first cluster (row 150, col 90)
    Image.fromarray(np.round(patch * 65535).astype(np.uint16)).save(tmp_path / "patch.png")
    for extra in (["--crop"], []):  # told, or decided from the image
        out = tmp_path / f"out{len(extra)}"
        code = main(["detect", "--images", str(tmp_path / "patch.png"), "--out", str(out), "--pixel_spacing", "0.2",
                     *extra])  # fmt: skip
        assert code == 0
        _, detections = read_csv(out / "detections.csv")
        assert len(detections) == 1
        assert np.hypot(float(detections[0]["centroid_row"]) - 30, float(detections[0]["centroid_col"]) - 30) < 15


@pytest.mark.slow
def test_detect_train_is_reproducible_from_its_seed_and_detect_uses_its_weights(tmp_path, capsys):
    """A test-sized detect-train on two generated backgrounds: the same seed gives the same weights, the file
    loads with weights_only, records the recipe, and ``detect --weights`` uses it; a wrong file is refused."""
    import torch

    backgrounds = []
    for k in range(2):
        pixels, _, _, _ = phantom(shape=(480, 400), clusters=(), seed=10 + k, label=False)
        backgrounds.append(write_dicom(tmp_path / f"bg{k}.dcm", np.round(pixels * 4095), bits_stored=12,
                                       pixel_spacing=(0.1, 0.1)))  # fmt: skip
    common = ["detect-train", "--backgrounds", *map(str, backgrounds), "--passes", "1", "--lesions", "4",
              "--epochs", "3", "--resolutions", "0.1", "--validation", "1", "--seed", "3"]  # fmt: skip
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main([*common, "--out", str(first)]) == 0
    assert main([*common, "--out", str(second)]) == 0
    assert "validation AUROC" in capsys.readouterr().out
    a, b = (torch.load(p, map_location="cpu", weights_only=True) for p in (first, second))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["recipe"]["seed"] == 3 and a["recipe"]["backgrounds"] == ["bg0.dcm", "bg1.dcm"]
    manifest = studies(tmp_path / "new")
    assert main(["detect", str(manifest), "--out", str(tmp_path / "out"), "--weights", str(first)]) == 0
    (tmp_path / "wrong.pt").write_bytes(b"nonsense")
    assert main(["detect", str(manifest), "--out", str(tmp_path / "o2"), "--weights", str(tmp_path / "wrong.pt")]) == 2
    assert "wrong.pt" in capsys.readouterr().err and not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_detect_train_learns_from_real_outlines_and_holds_some_out(tmp_path, capsys):
    """--outlined: a candidate on an outline is a positive (checked against the clusters' known centres), the
    rest of the image gives negatives, held-out outlined images give their own AUROC; a missing manifest or
    too many held out is one clear message and exit code 2."""
    import torch

    from birads_calc.detection.train import Outlined, collect, held_out_patients, outlined_images

    manifest = studies(tmp_path / "in", labelled=True)  # 2 images, each with 2 clusters outlined by 4 mm discs
    outlined = outlined_images(manifest)
    found = [(o.image.name, len(o.masks), o.rows) for o in outlined]
    assert found == [("img0.dcm", 2, [1, 2]), ("img1.dcm", 2, [3, 4])]
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # img1 is in the test split: it must not train the detector
        row["split"] = "test" if row["image"] == "img1.dcm" else "train"
    split = write_manifest(manifest.with_name("split.csv"), rows, [*rows[0]])
    assert [o.image.name for o in outlined_images(split)] == ["img0.dcm"]
    views = [Outlined(Path(f"{p}{v}.dcm"), p, [], []) for p in "ABC" for v in ("CC", "MLO")]
    held = held_out_patients(views, 3, 0)  # whole patients: both views of each, so 4 images for "at least 3"
    assert len(held) == 4 and len({views[i].patient_id for i in held}) == 2 and held == held_out_patients(views, 3, 0)
    assert "2 row(s) of the test split left out" in capsys.readouterr().err
    pixels, _, _, _ = phantom(clusters=(), seed=10, label=False)
    background = write_dicom(tmp_path / "bg.dcm", np.round(pixels * 4095), bits_stored=12,
                             pixel_spacing=(SPACING, SPACING))  # fmt: skip
    examples = collect([background], SPACING, [SPACING], 1, 2, 0, outlined=outlined)
    for image in (1, 2):  # the outlined images come after the one background
        mine = examples.backgrounds == image
        distance = np.min([np.hypot(*(examples.points_mm[mine] / SPACING - (r, c)).T) for r, c, _ in CLUSTERS], 0)
        kinds = examples.kinds[mine]
        assert (kinds == 1).sum() >= 3 and (kinds == 0).any(), np.bincount(kinds + 1)
        assert distance[kinds == 1].max() <= 4 / SPACING + 1.5  # on a disc of radius 4 mm
        assert distance[kinds == 0].min() > 4 / SPACING  # off every disc (those within 2 mm of one are neither)

    out = tmp_path / "ranker.pt"
    common = ["detect-train", "--backgrounds", str(background), "--outlined", str(manifest), "--passes", "1",
              "--lesions", "2", "--epochs", "3", "--resolutions", str(SPACING), "--validation", "0"]  # fmt: skip
    assert main([*common, "--validation_outlined", "1", "--out", str(out)]) == 0
    assert "held-out outlined images" in capsys.readouterr().out
    recipe = torch.load(out, map_location="cpu", weights_only=True)["recipe"]
    assert recipe["outlined_images"] == 2 and recipe["validation_outlined"] == 1
    assert 0.0 <= recipe["validation_auroc_outlined"] <= 1.0
    assert "img0" not in str(recipe) and "img1" not in str(recipe)  # counts only, no image names
    for bad, named in ((["--outlined", str(tmp_path / "none.csv")], "none.csv"),
                       (["--validation_outlined", "2"], "--validation_outlined")):  # fmt: skip
        assert main([*common, *bad, "--out", str(tmp_path / "bad.pt")]) == 2
        assert named in capsys.readouterr().err and not (tmp_path / "bad.pt").exists()
