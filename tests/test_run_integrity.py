"""A run folder belongs to one run, and an evaluation never includes a patient the model saw (issue 23).

Every case goes through the real ``birads-calc`` commands on a tiny generated dataset (CPU, a few batches).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from factories import make_tiny_dataset
from training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.data.splits import read_splits, write_splits
from birads_calc.runs import FitLock, RunFolderError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = ["--trainer.logger", "false"]


def run(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def command(name: str, config: str, manifest: Path, *extra: str) -> list[str]:
    return [name, "--config", str(CONFIGS / config), "--data.manifest", str(manifest), *TINY_OVERRIDES, *QUIET, *extra]


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One mse run, fitted and tested into ``run/``."""
    root = tmp_path_factory.mktemp("integrity")
    manifest = make_tiny_dataset(root / "data", patients=10, size=96)
    run_dir = root / "run"
    assert main(command("fit", "mse.yaml", manifest, "--run_dir", str(run_dir))) == 0
    assert main(command("test", "mse.yaml", manifest, "--run_dir", str(run_dir))) == 0
    return {"root": root, "manifest": manifest, "run": run_dir, "last": run_dir / "checkpoints" / "last.ckpt"}


# --- a folder belongs to one run --------------------------------------------------------------------------------------
def test_fit_of_another_method_into_a_run_folder_is_refused_and_nothing_changes(trained, capsys):
    before = snapshot(trained["run"])
    code, text = run(capsys, *command("fit", "mc.yaml", trained["manifest"], "--run_dir", str(trained["run"])))
    assert code == 2 and "Traceback" not in text
    assert f"run folder {trained['run']} belongs to another run" in text
    assert 'method.loss: "ce" (this fit), "mse" (the folder\'s run)' in text
    after = snapshot(trained["run"])
    assert {k: v for k, v in after.items() if k != ".fit.lock"} == {k: v for k, v in before.items() if k != ".fit.lock"}


def test_fitting_the_same_run_folder_again_is_refused_unless_it_resumes(trained, capsys):
    code, text = run(capsys, *command("fit", "mse.yaml", trained["manifest"], "--run_dir", str(trained["run"])))
    assert code == 2 and "already holds this run's checkpoints: resume it with --ckpt_path" in text
    # another seed is another run
    code, text = run(capsys, *command("fit", "mse.yaml", trained["manifest"], "--run_dir", str(trained["run"]),
                                      "--seed_everything", "5"))  # fmt: skip
    assert code == 2 and "seed: 5 (this fit), 0 (the folder's run)" in text


def test_a_folder_without_a_run_record_is_not_taken_over(trained, tmp_path, capsys):
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "metrics.json").write_text("{}")
    code, text = run(capsys, *command("fit", "mse.yaml", trained["manifest"], "--run_dir", str(old)))
    assert code == 2 and "already holds checkpoints, metrics.json but no run.json" in text
    assert sorted(p.name for p in old.iterdir()) == ["checkpoints", "metrics.json"]


def test_a_second_concurrent_fit_is_stopped_by_the_lock(trained, tmp_path, capsys):
    folder = tmp_path / "busy"
    folder.mkdir()
    # another process holds the folder's lock, as a running fit does
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from birads_calc.runs import FitLock; "
         f"lock = FitLock({str(folder)!r}); lock.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        code, text = run(capsys, *command("fit", "mse.yaml", trained["manifest"], "--run_dir", str(folder)))
        assert code == 2 and f"run folder {folder} is being written by another fit (pid {holder.pid})" in text
        assert not (folder / "run.json").exists() and not (folder / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    lock = FitLock(folder)  # released with the process that held it
    lock.acquire()
    lock.release()
    with pytest.raises(RunFolderError, match="being written by another fit"):
        first, second = FitLock(folder), FitLock(folder)
        first.acquire()
        try:
            second.acquire()
        finally:
            first.release()


def test_a_resume_must_be_the_same_run_and_fit_its_checkpoint(trained, tmp_path, capsys):
    folder = tmp_path / "resumed"
    shutil.copytree(trained["run"], folder)
    last = folder / "checkpoints" / "last.ckpt"
    code, text = run(capsys, *command("fit", "mse.yaml", trained["manifest"], "--ckpt_path", str(last),
                                      "--trainer.max_epochs", "2"))  # fmt: skip
    assert code == 2 and "recipe.max_epochs: 2 (this fit), 1 (the folder's run)" in text  # a longer run is another
    code, text = run(capsys, *command("fit", "mse.yaml", trained["manifest"], "--ckpt_path", str(last)))
    assert code == 0, text
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    # a resume checks its checkpoint against the config like test does
    code, text = run(capsys, *command("fit", "mse_attention.yaml", trained["manifest"], "--ckpt_path", str(last)))
    assert code == 2 and "data.attention: config true, checkpoint false" in text


def test_the_checkpoint_and_run_json_carry_the_identity(trained):
    record = json.loads((trained["run"] / "run.json").read_text())
    saved = torch.load(trained["last"], weights_only=True, map_location="cpu")["birads_calc"]
    assert saved["identity"] == record["identity"]
    assert record["identity"]["method"] == {"loss": "mse", "attention": False, "alpha": None, "num_classes": 6}
    assert record["identity"]["data"]["split_sha256"] == saved["split"]["sha256"]
    pinned = read_splits(trained["run"] / "splits.csv")
    assert len(saved["split"]["train"]) == sum(s == "train" for s in pinned.values())
    assert not set(pinned) & set(saved["split"]["train"])  # hashes, never the ids themselves
    metrics = json.loads((trained["run"] / "metrics.json").read_text())
    recipe = metrics["identity"]["recipe"]
    assert recipe["epochs_trained"] == 1 and recipe["checkpoint_selection"] == "last"
    assert recipe["optimizer"].startswith("torch.optim.SGD(") and recipe["window"] == 64 and recipe["global_batch"] == 8
    assert len(metrics["identity"]["data"]["test_set_sha256"]) == 64


# --- evaluation on the run's own split --------------------------------------------------------------------------------
def test_test_with_run_dir_elsewhere_still_uses_the_checkpoints_split(trained, tmp_path, capsys):
    pinned = read_splits(trained["run"] / "splits.csv")
    test_patients = {p for p, s in pinned.items() if s == "test"}
    # drop a training patient: a recomputed 3:1:1 split would deal other patients into test
    dropped = sorted(p for p, s in pinned.items() if s == "train")[0]
    edited = trained["manifest"].parent / "without_one.csv"
    kept = [r for r in rows(trained["manifest"]) if r["patient_id"] != dropped]
    with edited.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(kept[0]))
        writer.writeheader()
        writer.writerows(kept)
    elsewhere = tmp_path / "elsewhere"
    code, text = run(capsys, *command("test", "mse.yaml", edited, "--ckpt_path", str(trained["last"]),
                                      "--run_dir", str(elsewhere)))  # fmt: skip
    assert code == 0, text
    assert {r["patient_id"] for r in rows(elsewhere / "predictions.csv")} == test_patients


def test_an_explicit_split_with_training_patients_in_test_is_refused(trained, tmp_path, capsys):
    pinned = read_splits(trained["run"] / "splits.csv")
    leaked = sorted(p for p, s in pinned.items() if s == "train")[:2]
    other = write_splits(tmp_path / "other.csv", {p: ("test" if p in leaked else s) for p, s in pinned.items()})
    before = snapshot(trained["run"])
    code, text = run(capsys, *command("test", "mse.yaml", trained["manifest"], "--ckpt_path", str(trained["last"]),
                                      "--data.splits", str(other)))  # fmt: skip
    assert code == 2 and "Traceback" not in text
    assert f"2 patient(s) of the test split ({other}) were used to train or validate this checkpoint" in text
    assert all(p in text for p in leaked)
    assert snapshot(trained["run"]) == before  # the run's own metrics untouched


def test_an_external_split_of_unseen_patients_goes_to_its_own_folder(trained, tmp_path, capsys):
    pinned = read_splits(trained["run"] / "splits.csv")
    kept_test = sorted(p for p, s in pinned.items() if s == "test")[:1]
    subset = write_splits(tmp_path / "subset.csv", {p: ("test" if p in kept_test else "train") for p in pinned})
    before = (trained["run"] / "metrics.json").read_bytes()
    code, text = run(capsys, *command("test", "mse.yaml", trained["manifest"], "--ckpt_path", str(trained["last"]),
                                      "--data.splits", str(subset)))  # fmt: skip
    assert code == 0, text
    (written,) = (trained["run"] / "evaluations").glob("subset-*/metrics.json")
    assert {r["patient_id"] for r in rows(written.parent / "predictions.csv")} == set(kept_test)
    assert (trained["run"] / "metrics.json").read_bytes() == before


def test_a_checkpoint_away_from_its_run_refuses_its_training_patients(trained, tmp_path, capsys):
    lone = tmp_path / "model.ckpt"
    shutil.copy(trained["last"], lone)
    # another split seed deals training patients into test: the checkpoint's hashes catch them
    code, text = run(capsys, *command("test", "mse.yaml", trained["manifest"], "--ckpt_path", str(lone),
                                      "--data.split_seed", "7", "--run_dir", str(tmp_path / "out")))  # fmt: skip
    assert code == 2 and "were used to train or validate this checkpoint" in text
    # the run's own rule gives the run's own test patients: accepted
    code, text = run(capsys, *command("test", "mse.yaml", trained["manifest"], "--ckpt_path", str(lone),
                                      "--run_dir", str(tmp_path / "out")))  # fmt: skip
    assert code == 0, text


def test_an_empty_evaluated_split_is_a_clear_error(trained, tmp_path, capsys):
    pinned = read_splits(trained["run"] / "splits.csv")
    no_test = trained["manifest"].parent / "no_test.csv"
    kept = [r for r in rows(trained["manifest"]) if pinned[r["patient_id"]] != "test"]
    with no_test.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(kept[0]))
        writer.writeheader()
        writer.writerows(kept)
    code, text = run(capsys, *command("test", "mse.yaml", no_test, "--ckpt_path", str(trained["last"]),
                                      "--run_dir", str(tmp_path / "out")))  # fmt: skip
    assert code == 2 and "leaves no patient of the manifest in the test split" in text and "test 0" in text
    assert "Traceback" not in text


def test_an_interrupted_retest_leaves_the_previous_outputs_whole(trained, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "retest"
    shutil.copytree(trained["run"], folder)
    before = snapshot(folder)
    from birads_calc.reporting import reports

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reports, "write_text", interrupted)  # report.md is written last
    code, text = run(capsys, *command("test", "mse.yaml", trained["manifest"], "--ckpt_path",
                                      str(folder / "checkpoints" / "last.ckpt")))  # fmt: skip
    assert code == 130 and "no metrics were written" in text
    after = snapshot(folder)
    assert {k: v for k, v in after.items() if not k.startswith("test")} == {
        k: v for k, v in before.items() if not k.startswith("test")
    }
    assert not list(tmp_path.glob(".*partial*")) and not list(folder.glob(".*partial*"))


def test_sigterm_during_test_exits_143_with_a_message_and_leaves_the_outputs_whole(trained, tmp_path):
    folder = tmp_path / "terminated"
    shutil.copytree(trained["run"], folder)
    before = snapshot(folder)
    args = command("test", "mse.yaml", trained["manifest"], "--ckpt_path", str(folder / "checkpoints" / "last.ckpt"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen([sys.executable, "-m", "birads_calc", *args], stderr=subprocess.PIPE, text=True, env=env)
    for line in victim.stderr:  # the checkpoint is announced before any output is made
        if "test: checkpoint" in line:
            victim.send_signal(signal.SIGTERM)
            break
    err = victim.stderr.read()
    assert victim.wait(timeout=120) == 143, err
    assert "birads-calc test: terminated (SIGTERM); no metrics were written" in err and "Traceback" not in err
    after = snapshot(folder)
    assert {k: v for k, v in after.items() if not k.startswith("test")} == {
        k: v for k, v in before.items() if not k.startswith("test")
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed_everything", "-1"], "--seed_everything -1: a seed must be a whole number from 0 to 4294967295"),
        (["--seed_everything", str(2**32)], "a seed must be a whole number from 0 to 4294967295"),
        (["--trainer.max_epochs", "0"], "--trainer.max_epochs 0: nothing to train"),
    ],
)
def test_fit_refuses_seeds_out_of_range_and_zero_epochs(trained, tmp_path, capsys, extra, message):
    code, text = run(capsys, *command("fit", "mse.yaml", trained["manifest"], "--run_dir", str(tmp_path / "r"), *extra))
    assert code == 2 and message in text and "Traceback" not in text
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_alone_brings_its_settings_and_an_explicit_conflict_is_refused(trained, tmp_path, capsys):
    # as a Lightning user types it: no config, the checkpoint holds the model and data settings
    out = tmp_path / "ckpt_only"
    args = ["test", "--ckpt_path", str(trained["last"]), "--data.manifest", str(trained["manifest"]),
            "--run_dir", str(out), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    code, text = run(capsys, *args)
    assert code == 0, text
    assert "data.window 64 from the checkpoint" in text and "data.attention False from the checkpoint" in text
    ours = json.loads((trained["run"] / "metrics.json").read_text())
    theirs = json.loads((out / "metrics.json").read_text())
    assert theirs["metrics"]["qwk"] == ours["metrics"]["qwk"] and theirs["loss"] == "mse"
    code, text = run(capsys, *args, "--data.window", "96")  # an explicit conflicting option: refused, naming both
    assert code == 2 and "data.window: config 96, checkpoint 64" in text
