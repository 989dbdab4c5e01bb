"""No identifying DICOM value reaches what ``fit`` + ``test`` + ``predict`` write, print or log to W&B (issue #10).

A ``birads-calc synth`` set (DICOMs with the canary identity: ``CANARY_NAME``, PatientID and AccessionNumber with
``CANARY_MARKER``, a fake birth date) goes through the three trainer commands with the configs' own W&B logger
(offline). Every file under the test's folder except the input DICOMs (run folder, checkpoints, W&B offline runs,
W&B cache/config folders, crop cache, predictions, overlays) and everything printed, logged or warned is searched
with ``tests/privacy.py``. W&B must hold no image unless ``wandb_images.max_images`` asks for some.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
from training_helpers import TINY_OVERRIDES, read_wandb_records, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.data.synthetic import CANARY_MARKER, CANARY_NAME
from tests.privacy import find_leaks, identifying_values

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "proposed.yaml"
SYNTH = ["--patients", "6", "--seed", "5", "--image_size", "320", "256", "--pixel_spacing", "0.25", "--workers", "1"]


def media_images(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "wandb").rglob("files/media/images/**/*") if p.is_file())


@pytest.mark.slow
def test_fit_test_predict_write_print_and_log_no_identifier_and_no_image(tmp_path, capsys, caplog, monkeypatch):
    for variable in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home" / variable.lower()))  # scanned too
    caplog.set_level(logging.DEBUG)
    data, runs = tmp_path / "synthetic", tmp_path / "runs"
    manifest = data / "manifest.csv"
    common = ["--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs), *TINY_OVERRIDES]
    texts = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["synth", "--out", str(data), *SYNTH]) == 0
        main(["fit", *common])
        main(["test", *common])
        main(["predict", *common, "--overlay_size", "128"])
        texts += capsys.readouterr()
    texts += [str(w.message) for w in caught] + [caplog.text]

    run_dir = runs / "proposed" / "version_0"
    written = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert {"checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.json", "predictions.csv"} <= written
    assert any(p.startswith("predict/") and p.endswith("predictions.csv") for p in written)
    assert any(p.startswith("predict/") and "/overlays/" in p for p in written)  # overlays drawn from the DICOMs
    assert len(list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))) == 3  # one W&B run per command

    dicoms = sorted(data.rglob("*.dcm"))
    needles = identifying_values(dicoms) | {CANARY_MARKER}
    assert {CANARY_NAME, "CANARY Patient Zq7"} <= needles and any(n.startswith("ACC") for n in needles)
    # positive control: the scanner finds the canary where it is, in the input DICOMs and nowhere else
    assert {f.split(": ")[0] for f in find_leaks(needles, tmp_path)} == {str(p) for p in dicoms}
    assert find_leaks(needles, tmp_path, texts, exclude=["synthetic/images/*"]) == []
    assert media_images(run_dir) == []  # no image went to W&B: the config did not ask


@pytest.mark.slow
def test_wandb_gets_training_images_only_when_the_config_asks(tmp_path):
    manifest = tmp_path / "synthetic" / "manifest.csv"
    assert main(["synth", "--out", str(manifest.parent), *SYNTH]) == 0
    runs = tmp_path / "runs"
    main(["fit", "--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs),
          *TINY_OVERRIDES, "--wandb_images.max_images", "3"])  # fmt: skip
    run_dir = runs / "proposed" / "version_0"
    images = media_images(run_dir)
    assert images and all(p.suffix == ".png" for p in images)  # W&B stores identical images once
    logged = {
        tuple(item.nested_key): json.loads(item.value_json)
        for r in read_wandb_records(next((run_dir / "wandb").glob("offline-run-*/run-*.wandb")))
        if r.WhichOneof("record_type") == "history"
        for item in r.history.item
    }
    assert logged[("train/rois", "count")] == 3 and logged[("train/rois", "_type")] == "images/separated"
    assert all(caption.startswith("index ") for caption in logged[("train/rois", "captions")])
