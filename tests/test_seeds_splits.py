"""Seeds that matter (Lightning's global seed drives training, ``split_seed`` only the split) and pinned splits
(``<run>/splits.csv`` written by fit, honoured by test, a leaking manifest refused)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from factories import make_tiny_dataset
from training_helpers import TINY_OVERRIDES, single_torch_thread  # noqa: F401 (autouse)

from birads_calc.cli import main
from birads_calc.data.datamodule import BiradsDataModule, split_by_patient
from birads_calc.data.manifest import read_manifest
from birads_calc.data.splits import DroppedPatientsWarning, SplitError, pinned_split, read_splits

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "proposed.yaml"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("seeds") / "data", patients=10, size=128)


def fit(manifest: Path, run_dir: Path, *extra: str) -> dict:
    main(["fit", "--config", str(CONFIG), "--data.manifest", str(manifest), "--run_dir", str(run_dir),
          *TINY_OVERRIDES, "--trainer.logger", "false", "--trainer.deterministic", "true", *extra])  # fmt: skip
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, table: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return path


# --- seeds -----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_same_weights_other_seed_other_weights(manifest, tmp_path):
    first = fit(manifest, tmp_path / "a", "--seed_everything", "1")
    again = fit(manifest, tmp_path / "b", "--seed_everything", "1")
    other = fit(manifest, tmp_path / "c", "--seed_everything", "2")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)  # bit-identical on the CPU, deterministic mode
    changed = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], other[k])]
    assert len(changed) > len(first) // 2


def test_global_seed_drives_sampler_and_augmentation_split_seed_only_the_split(manifest):
    def draw(seed: int, split_seed: int = 0):
        L.seed_everything(seed)
        dm = BiradsDataModule(manifest, window=64, stride=32, batch_size=4, num_workers=0, split_seed=split_seed)
        dm.prepare_data()
        dm.setup("fit")
        order = list(dm.train_dataloader().sampler)
        dm.trainer = _FitLoop(epoch=0, batch=3)
        flips = dm._augmentation_generator(torch.device("cpu")).initial_seed()
        return order, flips, dm.splits

    order, flips, splits = draw(1)
    assert draw(1) == (order, flips, splits)
    order2, flips2, splits2 = draw(2)
    assert order2 != order and flips2 != flips and splits2 == splits  # the split does not move with the seed
    _, _, splits3 = draw(1, split_seed=5)
    assert splits3 != splits


class _FitLoop:
    """A stand-in trainer exposing what the augmentation generator reads."""

    def __init__(self, epoch: int, batch: int):
        from types import SimpleNamespace

        progress = SimpleNamespace(current=SimpleNamespace(ready=batch))
        self.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
        self.current_epoch, self.global_rank, self.training, self.is_global_zero = epoch, 0, True, True


# --- balanced batches through the real loader -------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [6, 4])
def test_loader_batches_of_32_hold_every_class_within_one(num_classes, tmp_path):
    manifest = make_tiny_dataset(tmp_path, patients=12, lesions_per_image=4, size=128, num_classes=num_classes)
    L.seed_everything(0)
    dm = BiradsDataModule(manifest, num_classes=num_classes, window=32, stride=8, batch_size=32, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    loader, seen, epoch = dm.train_dataloader(), [], 0
    while len(seen) < 20:
        loader.sampler.set_epoch(epoch)
        seen += [batch["target"] for batch in loader]
        epoch += 1
    for target in seen[:20]:
        per_class = np.bincount(target.numpy(), minlength=num_classes)
        assert len(target) == 32 and per_class.max() - per_class.min() <= 1, per_class


# --- pinned splits ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_split_written_by_fit_honoured_by_test_and_a_leak_refused(manifest, tmp_path, capsys):
    run = tmp_path / "run"
    fit(manifest, run)
    pinned = read_splits(run / "splits.csv")
    lesions = read_manifest(manifest, check_files=False)
    expected = split_by_patient(lesions, (3, 1, 1), seed=0)
    assert pinned == {lesions[i].patient_id: name for name, positions in expected.items() for i in positions}

    # drop a patient whose removal re-deals the recomputed split: without the pin, test would see other patients
    table = rows(manifest)
    test_patients = {p for p, s in pinned.items() if s == "test"}
    dropped = next(p for p in sorted(pinned) if recomputed_test(lesions, p) != test_patients - {p})
    kept = [r for r in table if r["patient_id"] != dropped]
    edited = write_rows(manifest.parent / "edited.csv", kept)
    last = str(run / "checkpoints" / "last.ckpt")
    evaluate = ["test", "--config", str(CONFIG), "--data.manifest", str(edited), "--run_dir", str(run),
                "--ckpt_path", last, *TINY_OVERRIDES, "--trainer.logger", "false"]  # fmt: skip
    with pytest.warns(DroppedPatientsWarning, match=dropped):
        main(evaluate)
    assert "using the run's pinned patient split" in capsys.readouterr().err
    assert {r["patient_id"] for r in rows(run / "predictions.csv")} == test_patients - {dropped}

    # labelled predict on the whole manifest: every row marked with its patient's pinned split
    out = tmp_path / "predicted"
    main(["predict", "--config", str(CONFIG), "--data.manifest", str(manifest), "--run_dir", str(run),
          "--ckpt_path", last, "--predict_dir", str(out), "--overlays", "false", *TINY_OVERRIDES,
          "--trainer.logger", "false"])  # fmt: skip
    assert "predict: marking each row's split from the run's pinned patient split" in capsys.readouterr().err
    predicted = rows(out / "predictions.csv")
    assert len(predicted) == len(table) and all(r["split"] == pinned[r["patient_id"]] for r in predicted)

    # the same edit with a split column that moves a training patient into test: refused, naming the patient
    leaked = sorted(p for p, s in pinned.items() if s == "train")[0]
    for r in kept:
        r["split"] = "test" if r["patient_id"] == leaked else pinned[r["patient_id"]]
    write_rows(edited, kept)
    assert main(evaluate) == 2  # bad input: the error boundary's one message, exit code 2
    err = capsys.readouterr().err
    assert f"{leaked} (train in the split, test in the manifest)" in err and "Traceback" not in err


def recomputed_test(lesions, dropped: str) -> set[str]:
    """The test patients a recomputed split would give once ``dropped`` leaves the manifest."""
    remaining = [x for x in lesions if x.patient_id != dropped]
    return {remaining[i].patient_id for i in split_by_patient(remaining, (3, 1, 1), seed=0)["test"]}


def test_patients_unknown_to_the_pinned_split_are_refused(manifest):
    lesions = read_manifest(manifest, check_files=False)
    assignment = {x.patient_id: "train" for x in lesions}
    newcomer = lesions[-1].patient_id
    del assignment[newcomer]
    with pytest.raises(SplitError, match=f"not in the pinned split.*{newcomer}"):
        pinned_split(lesions, assignment, "splits.csv")
