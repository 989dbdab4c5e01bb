"""Stop training at the first non-finite loss, naming the batch's lesions (docs/reliability.md).

:func:`check_finite_loss` runs inside ``training_step``, right after the loss and before anything else uses the
batch's outputs (the kappa metrics refuse NaN predictions with a message about class indices, which would hide
the cause). Raising there means the bad batch is neither back-propagated nor stepped, and no checkpoint is written
after it: ``last.ckpt`` keeps the weights of the last finished epoch.
"""

from __future__ import annotations

import lightning as L
import torch

from birads_calc.errors import BiradsError
from birads_calc.training.callbacks import LastCheckpoint

MAX_NAMED_LESIONS = 20  # a message, not a dump: the rest is counted


class NonFiniteLossError(BiradsError, RuntimeError):
    """The training loss became NaN or infinite; training stopped before the weights were touched."""


def check_finite_loss(loss: torch.Tensor, batch: dict[str, torch.Tensor], trainer: L.Trainer | None = None) -> None:
    """Raise :class:`NonFiniteLossError` if ``loss`` is NaN or infinite (on any process, under DDP).

    Reads one scalar on the host per step. Under DDP all processes take the same decision (an all-reduce), so none
    is left waiting in a collective for one that stopped.

    Args:
        loss: the training loss of the batch.
        batch: the model's batch (``image``, ``index``, ...).
        trainer: the trainer running the step (``None`` in a bare loop): gives the epoch, batch number, data
            module (for the lesions' manifest rows) and the last checkpoint.
    """
    finite = bool(torch.isfinite(loss.detach()).all())
    everywhere = trainer.strategy.reduce_boolean_decision(finite, all=True) if trainer is not None else finite
    if everywhere:
        return
    value = f"loss {loss.detach().float().item()}" if not finite else "a NaN/inf loss on another process"
    where, last = "", "none"
    if trainer is not None:
        batch_idx = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
        where = f" at epoch {trainer.current_epoch}, batch {batch_idx} (global step {trainer.global_step})"
        last = last_checkpoint(trainer)
    raise NonFiniteLossError(
        f"training stopped: {value}{where}; the weights were not updated with it. Batch lesions: "
        f"{describe_batch(batch, trainer)}. The last good checkpoint is {last}. Check these rows' images "
        "(birads-calc check-data), lower the learning rate, or resume with --ckpt_path last."
    )


def describe_batch(batch: dict[str, torch.Tensor], trainer: L.Trainer | None = None) -> str:
    """The batch's lesions, each once: lesion_id, manifest row and image, flagged where its input is not finite."""
    if "index" not in batch:
        return "unknown (the batch has no 'index')"
    index = batch["index"].detach().cpu().tolist()
    image = batch.get("image")
    finite = torch.isfinite(image).flatten(1).all(1).cpu().tolist() if image is not None else [True] * len(index)
    datamodule = trainer.datamodule if trainer is not None else None
    lesions = getattr(datamodule, "lesions", None)
    seen, parts = set(), []
    for i, ok in zip(index, finite, strict=True):
        if i in seen:
            continue  # several windows of one lesion
        seen.add(i)
        note = "" if ok else " [non-finite input pixels]"
        if lesions is not None and 0 <= i < len(lesions):
            x = lesions[i]
            name = f"lesion_id '{x.lesion_id}', " if x.lesion_id else ""
            parts.append(f"{name}manifest row {x.row} ({x.image}){note}")
        else:
            parts.append(f"index {i}{note}")
    shown = "; ".join(parts[:MAX_NAMED_LESIONS])
    return shown + (f"; and {len(parts) - MAX_NAMED_LESIONS} more" if len(parts) > MAX_NAMED_LESIONS else "")


def last_checkpoint(trainer: L.Trainer) -> str:
    """The newest end-of-epoch checkpoint this run wrote (``last.ckpt``), or a note that there is none yet."""
    for callback in trainer.checkpoint_callbacks:
        path = callback.best_model_path if isinstance(callback, LastCheckpoint) else callback.last_model_path
        if path:
            return path
    return "none yet (no epoch finished)"
