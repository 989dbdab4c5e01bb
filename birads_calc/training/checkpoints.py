"""Checkpoints: read one safely, tell whether it fits the config, describe it, and write it atomically.

* :func:`read_checkpoint` refuses, with the path and what to do, a file that is missing, a folder, or not a whole
  PyTorch checkpoint (a text file, or one cut short by a full disk) before torch or Lightning meet it.
* :func:`checkpoint_mismatches` compares what changes results (loss/head, MAMSE alpha, number of classes,
  attention channels, window, backbone) between a checkpoint and the config it is about to be used with: Lightning
  would otherwise take the model's settings from the checkpoint and the data's from the config without a word.
* :func:`describe_checkpoint` / :func:`cut_short` give the epochs and validation QWK of a checkpoint and whether
  its run was a shortened one (``fast_dev_run``, ``limit_train_batches``, fewer epochs than asked).
* :class:`AtomicCheckpointIO`: Lightning writes a checkpoint to a temporary file in the system temp folder and
  copies it across file systems onto its real name, so a full disk leaves a truncated ``best.ckpt``; this plugin
  writes it to a temporary file in the checkpoint's own folder and renames it (``birads_calc.io.atomic_path``).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from birads_calc.errors import InputError
from birads_calc.io import atomic_path, not_a_file

VAL_QWK = "val_qwk"


class CheckpointError(InputError):
    """A checkpoint that cannot be used (missing, not a checkpoint, cut short, or of another method/scale)."""


def read_checkpoint(path: str | os.PathLike, weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint on the CPU without reading its tensors into memory (``mmap``).

    Raises:
        CheckpointError: the path is missing, a folder, a FIFO or device, not a whole PyTorch checkpoint (a zip
            archive holding ``data.pkl``), or a PyTorch file that is not a Lightning checkpoint (bare weights, a
            list): each named with the path and what to give instead.
        pickle.UnpicklingError: (``weights_only``) the file holds objects other than tensors and plain values;
            the caller refuses it as unsafe.
    """
    path = Path(path)
    problem = not_a_file(path)
    if problem == "is a folder, not a file":
        raise CheckpointError(
            f"--ckpt_path {path}: is a folder; give the .ckpt file (e.g. <run>/checkpoints/last.ckpt)"
        )
    if problem:
        raise CheckpointError(f"--ckpt_path {path}: {problem}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"--ckpt_path {path}: not a PyTorch checkpoint, or one cut short (e.g. by a full disk); give a .ckpt "
            "file written by 'birads-calc fit'"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except pickle.UnpicklingError as error:
        if weights_only and "Unsupported global" in str(error):
            raise  # it names code to run: refused as unsafe by the caller, with that reason
        detail = next((line.strip() for line in str(error).splitlines() if "Unsupported" in line), "")
        reason = detail or (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise CheckpointError(
            f"--ckpt_path {path}: a zip archive but not a PyTorch checkpoint: its data cannot be unpickled ({reason}); "
            "give a .ckpt file written by 'birads-calc fit'"
        ) from None
    except (RuntimeError, ValueError, EOFError, KeyError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        reason = reason.split("  (Could this error message be improved?")[0]  # torch's own appeal, not the cause
        raise CheckpointError(
            f"--ckpt_path {path}: a zip archive but not a PyTorch checkpoint ({reason[:200]}); give a .ckpt file "
            "written by 'birads-calc fit'"
        ) from None
    _require_lightning_checkpoint(path, checkpoint)
    return checkpoint


def _require_lightning_checkpoint(path: Path, checkpoint: Any) -> None:
    """A birads-calc checkpoint is Lightning's: a dict with the weights (``state_dict``) and the model's settings
    (``hyper_parameters``). Bare weights (``torch.save(model.state_dict())``) carry no method, scale or window."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"--ckpt_path {path}: a PyTorch file holding a {type(checkpoint).__name__}, not a Lightning checkpoint; "
            "give a .ckpt file written by 'birads-calc fit'"
        )
    if "state_dict" not in checkpoint:
        tensors = sum(isinstance(v, torch.Tensor) for v in checkpoint.values())
        what = f"bare weights (a state_dict of {tensors} tensors)" if tensors else "a dict without weights"
        raise CheckpointError(
            f"--ckpt_path {path}: holds {what}, not a Lightning checkpoint: it does not say which method, scale and "
            "window the weights belong to. Give a .ckpt file written by 'birads-calc fit'"
        )
    if not isinstance(checkpoint.get("hyper_parameters"), Mapping):
        raise CheckpointError(
            f"--ckpt_path {path}: a Lightning checkpoint without the model's hyperparameters, so not one of "
            "birads-calc's; give a .ckpt file written by 'birads-calc fit'"
        )


def checkpoint_settings(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a checkpoint that change results, as ``{"model.loss": ..., "data.window": ...}``."""
    model = checkpoint.get("hyper_parameters") or {}
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    return result_settings(model, data)


def result_settings(model: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that change results, from model and data module arguments (absent ones are left out)."""
    settings = {
        "model.loss": model.get("loss"),
        "model.alpha": model.get("alpha") if model.get("loss") == "mamse" else None,
        "model.backbone": model.get("backbone"),
        "data.num_classes": data.get("num_classes", model.get("num_classes")),
        "data.attention": data.get("attention"),
        "data.window": data.get("window"),
    }
    return {key: value for key, value in settings.items() if value is not None}


def checkpoint_mismatches(config: Mapping[str, Any], checkpoint: Mapping[str, Any]) -> list[str]:
    """``"data.attention: config false, checkpoint true"`` for each setting in both that differs."""
    found = []
    for key, value in config.items():
        saved = checkpoint.get(key)
        if saved is not None and not _same(value, saved):
            found.append(f"{key}: config {_show(value)}, checkpoint {_show(saved)}")
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def training_spacing(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The physical scale a checkpoint was trained at, or ``None`` for a checkpoint that does not record it.

    ``{"pixel_spacing_mm": fixed resampling spacing or None, "training_mm": {"median", "min", "max", "n_images",
    "n_without_spacing"}}`` (mm per pixel of the training split's images, as their files record it).
    """
    record = (checkpoint.get("birads_calc") or {}).get("spacing")
    return dict(record) if isinstance(record, Mapping) else None


def validation_qwk(checkpoint: Mapping[str, Any]) -> float | None:
    """The validation QWK measured at the epoch the checkpoint was saved: recorded by the run itself
    (``checkpoint["birads_calc"]["val_qwk"]``); for older checkpoints the val_qwk checkpoint callback's score, which
    is the best epoch's, not necessarily this one's."""
    own = (checkpoint.get("birads_calc") or {}).get(VAL_QWK)
    if own is not None:
        return float(own)
    for state in (checkpoint.get("callbacks") or {}).values():
        if isinstance(state, Mapping) and state.get("monitor") == VAL_QWK and state.get("current_score") is not None:
            return float(state["current_score"])
    return None


def epochs_trained(checkpoint: Mapping[str, Any]) -> int:
    """Finished epochs when the checkpoint was written (Lightning saves at epoch end, before counting it)."""
    return int(checkpoint.get("epoch", -1)) + 1


def describe_checkpoint(path: str | os.PathLike, checkpoint: Mapping[str, Any]) -> str:
    """``<path> (after epoch 10, global step 480, validation QWK 0.7293)``."""
    qwk = validation_qwk(checkpoint)
    score = f", validation QWK {qwk:.4f}" if qwk is not None else ", no validation QWK recorded"
    return f"{path} (after epoch {epochs_trained(checkpoint)}, global step {checkpoint.get('global_step', '?')}{score})"


def cut_short(trainer: Mapping[str, Any], epochs_run: int | None) -> list[str]:
    """Why a run's checkpoints are not a full training, from the run's ``fit`` trainer settings.

    Args:
        trainer: the ``trainer`` section of the run's saved ``config.yaml``.
        epochs_run: epochs the run finished (its ``last.ckpt``), ``None`` when unknown.
    """
    reasons = []
    if trainer.get("fast_dev_run"):
        reasons.append(f"fast_dev_run was {trainer['fast_dev_run']} (a smoke test, not a training)")
    for key in ("limit_train_batches", "limit_val_batches"):
        value = trainer.get(key)
        if value is not None and value != 1.0:  # 2 and 2.0 alike: jsonargparse may give either for int | float
            shown = f"{value:g}" if isinstance(value, int | float) else value
            reasons.append(f"{key} was {shown} (not the whole split)")
    max_epochs = trainer.get("max_epochs")
    if epochs_run is not None and max_epochs not in (None, -1) and epochs_run < int(max_epochs):
        reasons.append(f"it stopped after {epochs_run} of max_epochs {max_epochs} (stopped early or interrupted)")
    return reasons


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, but each file is written beside its final name and renamed into place.

    A full disk or a kill mid-write leaves the previous good checkpoint (or none), never a truncated file under the
    real name. Remote paths (``s3://``...) keep Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if not _is_local_file_protocol(str(path)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        return None
