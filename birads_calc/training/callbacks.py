"""Callbacks of every trainer command: an every-epoch ``last.ckpt``, and training images for W&B only on request.

* :class:`LastCheckpoint`: Lightning 2.6's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only at a step
  where it also saves a top-k checkpoint, i.e. when the monitored ``val_qwk`` improves; after a plateau
  ``last.ckpt`` is days old and a resumed week-long run would repeat those days. This callback writes
  ``<run>/checkpoints/last.ckpt`` after every epoch (Lightning's own atomic save: a kill mid-write leaves the
  previous file), so ``fit --ckpt_path last`` loses at most the epoch in progress.
* :class:`RunRecord`: the run's identity and hashed split in ``run.json`` and in every checkpoint.
* :class:`WandbImages`: training ROIs as W&B images, only when the config asks (``wandb_images.max_images``);
  by default no image leaves the machine.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from birads_calc.data.splits import assignment_of
from birads_calc.io import write_json
from birads_calc.runs import CHECKPOINTS, RUN_RECORD
from birads_calc.training.identity import split_record

VAL_QWK = "val_qwk"


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


class RunRecord(Callback):
    """Keeps the run's identity with its outputs: the realised split's fingerprint in ``<run>/run.json`` once the
    split is made, and the identity plus the salted training/validation patient hashes in every checkpoint
    (``checkpoint["birads_calc"]``), so a checkpoint can refuse an evaluation on patients it saw even away from its
    run folder (training/identity.py).

    Args:
        run_dir: the run folder (its ``run.json`` was written when ``fit`` claimed it).
        identity: the run's identity record.
        salt: the run's salt for the patient hashes (kept in ``run.json``, so a resume hashes alike).
    """

    def __init__(self, run_dir: str | os.PathLike, identity: dict, salt: str) -> None:
        self.run_dir = Path(run_dir)
        self.identity = copy.deepcopy(identity)
        self.salt = salt
        self.split: dict | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        self.split = split_record(assignment_of(datamodule.splits, datamodule.lesions), self.salt)
        self.identity["data"]["split_sha256"] = self.split["sha256"]
        if trainer.is_global_zero:
            path = self.run_dir / RUN_RECORD
            record = json.loads(path.read_text()) if path.is_file() else {"salt": self.salt}
            write_json(path, {**record, "identity": self.identity})

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        record = checkpoint.setdefault("birads_calc", {})
        record.update(identity=copy.deepcopy(self.identity), split=self.split)
        score = trainer.callback_metrics.get(VAL_QWK)  # this epoch's, not the best epoch's (ModelCheckpoint's)
        record["val_qwk"] = float(score) if score is not None else None
