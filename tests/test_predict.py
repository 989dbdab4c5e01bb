"""`birads-calc predict` through the real CLI on generated studies without labels (tiny model, CPU)."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ddp_ports import ddp_subprocess_env
from factories import CANARY_NAME, MANIFEST_COLUMNS, make_tiny_dataset, write_manifest
from PIL import Image
from training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.categories import SIX_CLASS
from birads_calc.cli import main
from birads_calc.cli.trainer import predict_dir
from birads_calc.data.cache import CacheSettings
from birads_calc.data.manifest import read_manifest
from birads_calc.data.masks import read_mask
from birads_calc.data.roi import bounding_box
from birads_calc.inference.study import predict_lesions
from birads_calc.reporting.overlays import CATEGORY_COLOURS, LEGEND_WIDTH, MIN_MARKER_RADIUS, overlay_scale
from birads_calc.reporting.reports import BREAST_COLUMNS, PREDICT_COLUMNS
from birads_calc.training.model import BiradsClassifier

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "proposed.yaml"
SIZE, OVERLAY = 128, 96
IDENTIFYING = (CANARY_NAME.encode(), b"ACC-CANARY-1", b"19700101")  # name, accession number, birth date


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model fitted once: (runs root, best checkpoint)."""
    root = tmp_path_factory.mktemp("predict")
    manifest = make_tiny_dataset(root / "train", patients=6, size=SIZE)
    runs = root / "runs"
    main(["fit", "--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs),
          *TINY_OVERRIDES, "--trainer.logger", "false", "--trainer.limit_val_batches", "1"])  # fmt: skip
    return runs, runs / "proposed" / "version_0" / "checkpoints" / "best.ckpt"


def unlabelled_study(root: Path) -> Path:
    """New studies: a manifest without birads/pathology columns; patient P001 has no laterality."""
    labelled = make_tiny_dataset(root, patients=3, images_per_patient=2, size=SIZE, labels=False, seed=3)
    with labelled.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["patient_id"] == "P001":
            row["laterality"] = ""
    columns = [c for c in MANIFEST_COLUMNS if c not in ("birads", "pathology", "split")]
    return write_manifest(root / "new.csv", rows, columns)


def predict(runs: Path, manifest: Path, *extra: str) -> None:
    main(["predict", "--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs),
          *TINY_OVERRIDES, "--trainer.logger", "false", "--overlay_size", str(OVERLAY), *extra])  # fmt: skip


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open() as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


@pytest.mark.slow
def test_predict_on_new_studies_writes_predictions_breasts_and_overlays(trained, tmp_path, capfd):
    runs, best = trained
    manifest = unlabelled_study(tmp_path / "new")
    predict(runs, manifest, "--trainer.precision", "32")
    out = predict_dir(best.parent.parent, manifest)
    captured = capfd.readouterr()
    assert f"predict: wrote {out / 'overlays'}, {out / 'predictions.csv'}, {out / 'breasts.csv'}" in captured.out
    assert "predict: wrote" not in captured.err  # the closing line is the result: stdout; messages: stderr

    columns, rows = read_csv(out / "predictions.csv")
    assert columns == list(PREDICT_COLUMNS)
    lesions = read_manifest(manifest, require_labels=False)
    assert sorted(int(r["row"]) for r in rows) == [x.row for x in lesions]  # every calcification once
    by_row = {x.row: x for x in lesions}
    for row in rows:
        lesion = by_row[int(row["row"])]
        assert row["image"] == lesion.image.relative_to(manifest.parent).as_posix()  # as the manifest gives it
        assert (row["patient_id"], row["lesion_id"]) == (lesion.patient_id, lesion.lesion_id)
        assert row["birads_true"] == "" and row["pathology"] == "" and row["birads_pred"] in SIX_CLASS
        assert 0.0 <= float(row["risk"]) <= 1.0

    # breasts.csv: per (patient, laterality), or per image where laterality is missing
    columns, breasts = read_csv(out / "breasts.csv")
    assert columns == list(BREAST_COLUMNS)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["patient_id"], row["laterality"], "" if row["laterality"] else row["image"])
        groups.setdefault(key, []).append(row)
    assert len(breasts) == len(groups)
    for breast in breasts:
        members = groups[(breast["patient_id"], breast["laterality"], breast["image"])]
        top = max(SIX_CLASS.index(r["birads_pred"]) for r in members)
        assert SIX_CLASS.index(breast["birads_max"]) == top and int(breast["n_lesions"]) == len(members)
        winner = next(r for r in members if r["lesion_id"] == breast["lesion_id"])
        assert winner["birads_pred"] == breast["birads_max"]
        assert float(winner["risk"]) == max(
            float(r["risk"]) for r in members if r["birads_pred"] == winner["birads_pred"]
        )
    assert sum(1 for b in breasts if b["image"]) == 2  # P001's two images, each its own group

    # overlays: one per image, downsampled, the category colour at each lesion
    for row in rows:
        path = out / row["overlay"]
        with Image.open(path) as png:
            image = np.asarray(png.convert("RGB"))
        factor = overlay_scale((SIZE, SIZE), OVERLAY)
        assert image.shape[1] == OVERLAY + LEGEND_WIDTH and image.shape[0] >= OVERLAY
        top, left, bottom, right = bounding_box(read_mask(by_row[int(row["row"])].mask))
        reach = MIN_MARKER_RADIUS + 3
        r0, r1 = int(top * factor) - reach, int(bottom * factor) + reach
        c0, c1 = int(left * factor) - reach, int(right * factor) + reach
        near = image[max(r0, 0) : r1, max(c0, 0) : min(c1, OVERLAY)]
        assert np.all(near == CATEGORY_COLOURS[row["birads_pred"]], axis=-1).any(), row
    assert len(list((out / "overlays").glob("*.png"))) == len({r["image"] for r in rows})

    # the direct one-study path gives the same predictions as the CLI (same windows, same weights)
    model = BiradsClassifier.load_from_checkpoint(best, map_location="cpu")
    direct = predict_lesions(model, lesions, CacheSettings(window=64, stride=32))
    risk = dict(zip((lesions[i].row for i in direct["index"].tolist()), direct["risk"].tolist(), strict=True))
    for row in rows:
        assert float(row["risk"]) == pytest.approx(risk[int(row["row"])], abs=1e-5)


@pytest.mark.slow
def test_no_identifying_dicom_field_reaches_any_output_or_log(trained, tmp_path, capfd):
    runs, _ = trained
    manifest = make_tiny_dataset(tmp_path / "new", patients=2, size=SIZE, labels=False, seed=5)
    dicoms = list((tmp_path / "new").rglob("*.dcm"))
    assert dicoms and all(CANARY_NAME.encode() in p.read_bytes() for p in dicoms)  # the inputs do hold them
    capfd.readouterr()
    predict(runs, manifest, "--predict_dir", str(tmp_path / "out"))
    logs = capfd.readouterr()
    written = [p for p in [*runs.rglob("*"), *tmp_path.rglob("*")] if p.is_file() and p.suffix != ".dcm"]
    assert any(p.suffix == ".png" for p in written) and (tmp_path / "out" / "predictions.csv").is_file()
    for path in written:
        data = path.read_bytes()
        assert not any(field in data for field in IDENTIFYING), path
    assert not any(field.decode() in logs.out + logs.err for field in IDENTIFYING)


@pytest.mark.slow
def test_predict_without_overlays_writes_only_the_tables(trained, tmp_path):
    runs, _ = trained
    manifest = make_tiny_dataset(tmp_path / "new", patients=2, size=SIZE, labels=True, seed=7)
    predict(runs, manifest, "--overlays", "false", "--predict_dir", str(tmp_path / "out"))
    _, rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert not (tmp_path / "out" / "overlays").exists() and all(r["overlay"] == "" for r in rows)
    assert all(r["birads_true"] in SIX_CLASS for r in rows)  # labels known: written beside the prediction
    assert {r["pathology"] for r in rows} <= {"malignant", "benign", ""}


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_predict_writes_each_lesion_once(trained, tmp_path):
    runs, best = trained
    manifest = make_tiny_dataset(tmp_path / "new", patients=3, lesions_per_image=3, size=SIZE, labels=False)
    common = ["--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs), "--ckpt_path",
              str(best), *TINY_OVERRIDES, "--trainer.logger", "false", "--trainer.precision", "32", "--overlays",
              "false"]  # fmt: skip
    env = ddp_subprocess_env(PYTHONPATH=str(CONFIG.parents[1]))
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    done = subprocess.run([sys.executable, "-m", "birads_calc", "predict", *common, *ddp, "--predict_dir",
                           str(tmp_path / "ddp")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0 and "MEMBER: 2/2" in done.stdout + done.stderr, done.stderr[-3000:]
    predict(runs, manifest, *common[6:], "--trainer.devices", "1", "--predict_dir", str(tmp_path / "single"))
    _, ddp_rows = read_csv(tmp_path / "ddp" / "predictions.csv")
    _, single_rows = read_csv(tmp_path / "single" / "predictions.csv")
    assert len(ddp_rows) == 9 and sorted(int(r["row"]) for r in ddp_rows) == list(range(1, 10))  # 9 = odd: padded
    assert ddp_rows == single_rows
    assert (tmp_path / "ddp" / "breasts.csv").read_text() == (tmp_path / "single" / "breasts.csv").read_text()
