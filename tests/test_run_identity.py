"""A run knows what it is (issue #16): its folder is named after the method's config, a checkpoint is used only
with the config it was trained with, the chosen checkpoint is announced (epochs, validation QWK, cut-short runs),
and checkpoints are written atomically in their own folder."""

from __future__ import annotations

import csv
import errno
import re
from pathlib import Path

import pytest
import torch
from factories import make_tiny_dataset
from training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.runs import config_name
from birads_calc.training import checkpoints as checkpoints_module
from birads_calc.training.checkpoints import AtomicCheckpointIO, cut_short, describe_checkpoint, validation_qwk

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# an overlay like configs/demo.yaml: it must not name the run folder
OVERLAY = """trainer:
  accelerator: cpu
  devices: 1
  strategy: auto
  precision: 32-true
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args:
      save_dir: runs
"""


def run(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def mse_run(tmp_path_factory):
    """``fit --config mse.yaml --config overlay.yaml`` (1 epoch of 2 batches), every checkpoint write recorded."""
    root = tmp_path_factory.mktemp("identity")
    manifest = make_tiny_dataset(root / "data", patients=6, size=96)
    overlay = root / "overlay.yaml"
    overlay.write_text(OVERLAY)
    runs = root / "runs"
    written, atomic = [], checkpoints_module.atomic_path

    def recording(path):
        written.append(Path(path))
        return atomic(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoints_module, "atomic_path", recording)
        common = ["--data.manifest", str(manifest), "--runs_root", str(runs), *TINY_OVERRIDES]
        args = ["fit", "--config", str(CONFIGS / "mse.yaml"), "--config", str(overlay), *common]
        assert main(args) == 0
    return {"root": root, "manifest": manifest, "overlay": overlay, "runs": runs, "written": written}


def evaluation(command: str, config: str, setup: dict, *extra: str) -> list[str]:
    configs = ["--config", str(CONFIGS / config), "--config", str(setup["overlay"])]
    common = ["--data.manifest", str(setup["manifest"]), "--runs_root", str(setup["runs"]), *TINY_OVERRIDES]
    return [command, *configs, *common, *extra]


def test_config_name_is_the_first_config_of_the_command_line():
    demo = ["fit", "--config", "configs/mse.yaml", "--config", "configs/demo.yaml", "--trainer.max_epochs", "2"]
    assert config_name(["base/paper.yaml", "configs/mse.yaml", "configs/demo.yaml"], demo) == "mse"
    assert config_name([], ["test", "--config=configs/alpha/alpha_0.3.yaml", "-c", "configs/demo.yaml"]) == "alpha_0.3"
    assert config_name([], ["fit", "-c", "configs/mc.yaml"]) == "mc"
    assert config_name(["base/paper.yaml", "configs/mc.yaml"]) == "mc"  # no command line: the last file parsed


def test_the_overlay_does_not_name_the_run_and_checkpoints_are_written_atomically(mse_run):
    runs = mse_run["runs"]
    assert sorted(p.name for p in runs.iterdir()) == ["mse"]
    checkpoints = runs / "mse" / "version_0" / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"best.ckpt", "last.ckpt"}  # no temporary file left
    assert {checkpoints / "best.ckpt", checkpoints / "last.ckpt"} <= set(mse_run["written"])


def test_another_method_never_picks_this_run(mse_run, capsys):
    code, text = run(capsys, *evaluation("test", "proposed.yaml", mse_run))
    assert code == 2 and "Traceback" not in text
    assert "checkpoint of config 'proposed'" in text and str(mse_run["runs"] / "proposed") in text


def test_test_announces_the_checkpoint_and_warns_that_its_run_was_cut_short(mse_run, capsys):
    run_dir = mse_run["runs"] / "mse" / "version_0"
    code, text = run(capsys, *evaluation("test", "mse.yaml", mse_run))
    assert code == 0, text
    with (run_dir / "metrics.csv").open() as f:  # the fit's own log of its validation QWK (CSVLogger)
        logged = [float(r["val_qwk"]) for r in csv.DictReader(f) if r.get("val_qwk")]
    steps = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"]
    announced = re.search(
        r"test: checkpoint (\S+) \(after epoch (\d+), global step (\d+), validation QWK ([-\d.]+)\)", text
    )
    assert announced, text
    assert announced.group(1) == str(run_dir / "checkpoints" / "last.ckpt")
    assert (int(announced.group(2)), int(announced.group(3))) == (1, steps)
    assert float(announced.group(4)) == pytest.approx(logged[-1], abs=1e-4)
    assert "warning: this checkpoint's run was cut short: limit_train_batches was 2 (not the whole split)" in text


def test_a_checkpoint_of_another_method_is_refused_and_its_outputs_stay(mse_run, capsys):
    run_dir = mse_run["runs"] / "mse" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    before = {p: p.read_bytes() for p in run_dir.glob("*.json")}
    code, text = run(capsys, *evaluation("test", "mse_attention.yaml", mse_run, "--ckpt_path", str(last)))
    assert code == 2 and "Traceback" not in text
    assert f"checkpoint {last} was trained with other settings" in text
    assert "data.attention: config true, checkpoint false" in text
    assert {p: p.read_bytes() for p in run_dir.glob("*.json")} == before


def test_cut_short_reasons():
    assert cut_short({"max_epochs": 10, "limit_train_batches": 1.0}, 10) == []
    assert cut_short({"fast_dev_run": True}, 1) == ["fast_dev_run was True (a smoke test, not a training)"]
    assert cut_short({"max_epochs": 50}, 12) == ["it stopped after 12 of max_epochs 50 (stopped early or interrupted)"]


def test_a_full_disk_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """The write fails half-way (ENOSPC): the old file is intact under its name, and no partial file stays."""
    path = tmp_path / "checkpoints" / "best.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "weights": torch.arange(4)}, path)
    good = path.read_bytes()

    def disk_full(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(checkpoints_module.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "weights": torch.arange(8)}, path)
    assert path.read_bytes() == good and [p.name for p in path.parent.iterdir()] == ["best.ckpt"]


def test_the_announced_validation_qwk_is_the_checkpoints_own_epoch():
    # the review's case: last.ckpt after epoch 10 (val QWK 0.6025) while the best epoch 9 had 0.7955; Lightning's
    # val_qwk ModelCheckpoint state holds the best score, the run's own record this epoch's
    best_state = {"monitor": "val_qwk", "current_score": 0.7955}
    last = {"epoch": 9, "global_step": 340, "birads_calc": {"val_qwk": 0.6025}, "callbacks": {"best": best_state}}
    assert validation_qwk(last) == 0.6025
    announced = describe_checkpoint("last.ckpt", last)
    assert announced == "last.ckpt (after epoch 10, global step 340, validation QWK 0.6025)"
    del last["birads_calc"]  # an older checkpoint: the callback's score is all there is
    assert validation_qwk(last) == 0.7955
