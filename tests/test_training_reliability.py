"""Training-side reliability (issue #10): resume after SIGKILL, non-finite loss stop, weights-only checkpoints.

The runs go through the real CLI and ``configs/proposed.yaml`` with the tiny overrides of the other training tests
(timm's ``test_resnet``, 64 px windows, 2 batches per epoch) on the CPU in deterministic mode.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from factories import make_tiny_dataset
from training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.data.datamodule import BiradsDataModule
from birads_calc.training.model import BiradsClassifier

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "proposed.yaml"
EPOCHS = 3
CSV_LOGGER = ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", "."]  # the CLI moves it into the run
DETERMINISTIC = ["--trainer.deterministic", "true"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = make_tiny_dataset(tmp_path_factory.mktemp("reliability") / "data", patients=10, size=128)
    BiradsDataModule(path, window=64, stride=32).prepare_data()  # the crop cache, once for every run below
    return path


def fit_args(manifest: Path, runs: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(CONFIG), "--data.manifest", str(manifest), "--runs_root", str(runs),
            *TINY_OVERRIDES, *DETERMINISTIC, "--trainer.max_epochs", str(EPOCHS), *extra]  # fmt: skip


def start_fit(manifest: Path, runs: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "birads_calc", *fit_args(manifest, runs, *extra)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def metrics_rows(run_dir: Path) -> dict[tuple[int, str], dict]:
    """metrics.csv rows keyed by (epoch, 'train' | 'val')."""
    rows = {}
    with (run_dir / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            kind = "train" if row["train_loss"] else "val"
            rows[(int(row["epoch"]), kind)] = row
    return rows


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# --- resume -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fit_killed_mid_run_resumes_with_ckpt_path_last_to_the_uninterrupted_result(manifest, tmp_path):
    reference = start_fit(manifest, tmp_path / "reference", *CSV_LOGGER)
    victim = start_fit(manifest, tmp_path / "killed", *CSV_LOGGER)
    run_dir = tmp_path / "killed" / "proposed" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)  # mid-run: epoch 0 is checkpointed, epoch 1 is under way
    victim_output = victim.communicate()[0]
    assert victim.returncode == -signal.SIGKILL, victim_output
    killed_at = load(last)
    assert killed_at["epoch"] < EPOCHS - 1, "the run finished before the kill; the test proves nothing"

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "birads_calc",
            *fit_args(manifest, tmp_path / "killed", *CSV_LOGGER, "--ckpt_path", "last"),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"fit: --ckpt_path last: {last}" in resumed.stderr
    assert not (tmp_path / "killed" / "proposed" / "version_1").exists()  # continued in the same run folder
    reference_output = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, reference_output[-3000:]

    ref_dir = tmp_path / "reference" / "proposed" / "version_0"
    ref, res = load(ref_dir / "checkpoints" / "last.ckpt"), load(last)
    assert (res["epoch"], res["global_step"]) == (ref["epoch"], ref["global_step"]) == (EPOCHS - 1, EPOCHS)
    for key, value in ref["state_dict"].items():
        assert torch.equal(value, res["state_dict"][key]), key  # bit-identical weights
    ref_momentum = [s["momentum_buffer"] for s in ref["optimizer_states"][0]["state"].values()]
    res_momentum = [s["momentum_buffer"] for s in res["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(ref_momentum, res_momentum, strict=True))
    assert res["lr_schedulers"] == ref["lr_schedulers"]
    # one best.ckpt, the reference's best epoch: a resume replaces it in place, never best-v1.ckpt beside an old one
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert load(last.parent / "best.ckpt")["epoch"] == load(ref_dir / "checkpoints" / "best.ckpt")["epoch"]
    # metrics.csv holds the whole curve once, as the reference logged it: the epochs up to the checkpoint kept from
    # the killed process (not deleted by Lightning's CSV writer), the later ones logged by the resumed process
    with (ref_dir / "metrics.csv").open() as ref_csv, (run_dir / "metrics.csv").open() as res_csv:
        assert list(csv.DictReader(res_csv)) == list(csv.DictReader(ref_csv))
    ref_rows, res_rows = metrics_rows(ref_dir), metrics_rows(run_dir)
    assert res_rows[(EPOCHS - 1, "val")]["val_loss"] == ref_rows[(EPOCHS - 1, "val")]["val_loss"] != ""


def test_ckpt_path_last_without_a_run_says_what_to_do(manifest, tmp_path, capsys):
    assert main(fit_args(manifest, tmp_path / "runs", "--trainer.logger", "false", "--ckpt_path", "last")) == 2
    err = capsys.readouterr().err
    assert "no last checkpoint of config 'proposed'" in err and "birads-calc fit --config proposed" in err


# --- non-finite loss ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_nan_loss_stops_training_names_the_lesions_and_keeps_the_last_good_checkpoint(
    manifest, tmp_path, capsys, monkeypatch
):
    poisoned: dict[str, list[int]] = {}
    good: dict[str, torch.Tensor] = {}
    original_transfer = BiradsDataModule.on_after_batch_transfer
    original_epoch_end = BiradsClassifier.on_train_epoch_end

    def poison(self, batch, dataloader_idx):  # epoch 1, second batch: NaN pixels in the first window
        batch = original_transfer(self, batch, dataloader_idx)
        loop = self.trainer.fit_loop.epoch_loop.batch_progress.current
        if self.trainer.training and self.trainer.current_epoch == 1 and loop.ready == 1:
            batch["image"][0] = float("nan")
            poisoned["index"] = [int(batch["index"][0])]
        return batch

    def remember(self):  # the weights after the last good epoch, taken independently of any checkpoint
        original_epoch_end(self)
        if self.trainer.current_epoch == 0:
            good.update({k: v.detach().clone() for k, v in self.state_dict().items()})

    monkeypatch.setattr(BiradsDataModule, "on_after_batch_transfer", poison)
    monkeypatch.setattr(BiradsClassifier, "on_train_epoch_end", remember)
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(manifest, runs, "--trainer.logger", "false"))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "training stopped: loss nan at epoch 1, batch 1" in err and "the weights were not updated" in err
    lesions = _lesions(manifest)
    bad = lesions[poisoned["index"][0]]
    assert f"lesion_id '{bad.lesion_id}', manifest row {bad.row} ({bad.image}) [non-finite input pixels]" in err

    last = runs / "proposed" / "version_0" / "checkpoints" / "last.ckpt"
    assert f"The last good checkpoint is {last}" in err
    saved = load(last)
    assert saved["epoch"] == 0
    assert set(saved["state_dict"]) == set(good)
    for key, value in saved["state_dict"].items():
        assert torch.isfinite(value.float()).all(), key
        assert torch.equal(value, good[key]), key


def _lesions(manifest: Path):
    module = BiradsDataModule(manifest, window=64, stride=32)
    module.setup("fit")
    return module.lesions


# --- checkpoint safety ----------------------------------------------------------------------------------------------
class Payload:
    """Unpickling this runs code: it writes ``path``."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('code ran')",)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fit", "test", "predict"])
def test_a_malicious_checkpoint_is_refused_and_its_code_never_runs(manifest, tmp_path, capsys, command):
    proof = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "hyper_parameters": Payload(proof)}, evil)
    args = fit_args(manifest, tmp_path / "runs", "--trainer.logger", "false", "--ckpt_path", str(evil))
    args[0] = command
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"refusing to load checkpoint {evil}" in err and "GLOBAL exec" in err and "--weights_only false" in err
    assert "Traceback" not in err
    assert not proof.exists()
    if command == "test":  # the payload is real: torch's full unpickler runs it
        torch.load(evil, weights_only=False)
        assert proof.read_text() == "code ran"


def test_our_checkpoints_hold_only_weights_only_types(manifest, tmp_path):
    runs = tmp_path / "runs"
    main(fit_args(manifest, runs, "--trainer.logger", "false", "--trainer.max_epochs", "1"))
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = load(runs / "proposed" / "version_0" / "checkpoints" / name)  # torch's weights-only unpickler
        hparams = checkpoint["hyper_parameters"]
        assert hparams["backbone"] == "test_resnet" and "optimizer" not in hparams
        assert isinstance(checkpoint["datamodule_hyper_parameters"]["manifest"], str)
    main(["test", *fit_args(manifest, runs, "--trainer.logger", "false")[1:]])  # weights-only load, default on
    assert (runs / "proposed" / "version_0" / "metrics.json").is_file()
