"""Callbacks of every trainer command: an every-epoch ``last.ckpt``, and training images for W&B only on request.

* :class:`LastCheckpoint`: Lightning 2.6's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only at a step
  where it also saves a top-k checkpoint, i.e. when the monitored ``val_qwk`` improves; after a plateau
  ``last.ckpt`` is days old and a resumed week-long run would repeat those days. This callback writes
  ``<run>/checkpoints/last.ckpt`` after every epoch (Lightning's own atomic save: a kill mid-write leaves the
  previous file), so ``fit --ckpt_path last`` loses at most the epoch in progress.
* :class:`WandbImages`: training ROIs as W&B images, only when the config asks (``wandb_images.max_images``);
  by default no image leaves the machine.
"""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from birads_calc.runs import CHECKPOINTS


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` (full training state) after every epoch, in ``<trainer.default_root_dir>/checkpoints``.

    Args:
        dirpath: where to write ``last.ckpt`` (default: the run folder's ``checkpoints/``, which the CLI sets as
            ``trainer.default_root_dir``).
    """

    def __init__(self, dirpath: str | os.PathLike | None = None) -> None:
        # monitor=None + save_top_k=1: one checkpoint, replaced at every epoch end (Lightning's own saving path);
        # no version counter, so a resumed run overwrites last.ckpt instead of adding last-v1.ckpt.
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, CHECKPOINTS)
        super().setup(trainer, pl_module, stage)


class WandbImages(Callback):
    """Log the first training batch's attention ROIs to W&B once, when asked (default: never).

    Args:
        max_images: how many ROIs of the first training batch to log as images (``0``: none). The ROIs are crops
            of the mammograms: patient images, which may not leave the hospital. Captions hold only the dataset
            index and class.
    """

    def __init__(self, max_images: int = 0) -> None:
        if max_images < 0:
            raise ValueError(f"wandb_images.max_images must be >= 0, got {max_images}")
        self.max_images = max_images
        self._logged = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loggers = [x for x in trainer.loggers if isinstance(x, WandbLogger)]
        if self.max_images == 0 or self._logged or not loggers or not trainer.is_global_zero:
            return
        images = batch["image"][: self.max_images].detach().float().clamp(0, 1).cpu()
        captions = [f"index {int(i)}, class {int(t)}" for i, t in zip(batch["index"], batch["target"], strict=True)]
        for logger in loggers:
            logger.log_image("train/rois", list(images), step=trainer.global_step, caption=captions[: len(images)])
        self._logged = True
