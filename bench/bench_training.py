"""Training benchmark (DESIGN §8): Lightning's training loop against a bare PyTorch loop, same model and batches.

Figures:
* ``training.lightning_vs_bare``: optimisation steps/s of ``Trainer.fit`` on ``BiradsClassifier`` (its own
  training_step: forward, MAMSE, metric updates, logging) against a hand-written loop doing forward + MAMSE +
  backward + SGD step over the same DataLoader (target ratio >= 0.95). The two alternate several times and each
  keeps its best, so a burst of load from other processes on this shared machine hits both alike.
* ``training.gpu_images_per_s_400``: with CUDA only: 400x400 training images/s of ``BiradsClassifier`` (resnet18)
  under bf16-mixed + channels_last, against fp32 without channels_last in the same run (no target).
* ``training.gpu_loader_busy_share``: with CUDA only: 400x400 bf16 + channels_last training images/s fed by
  ``BiradsDataModule`` (crop cache, loader workers, ROI assembly on the device) against the same model fed from
  batches already on the GPU. The ratio is the share of the GPU's possible throughput the loader sustains
  (1.0 = the loader never starves the GPU).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import figure

from birads_calc.data.datamodule import BiradsDataModule
from birads_calc.training.model import BiradsClassifier


def _batches(count: int, batch: int, size: int, device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.rand(batch, 3, size, size, generator=g).to(device),
            "target": torch.randint(0, 6, (batch,), generator=g).to(device),
            "malignancy": torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (batch,), generator=g)].to(device),
            "index": torch.arange(batch).to(device),
        }
        for _ in range(count)
    ]


def _model(backbone: str, channels_last: bool = False, num_classes: int = 6) -> BiradsClassifier:
    torch.manual_seed(0)
    return BiradsClassifier(
        backbone=backbone, pretrained=False, loss="mamse", channels_last=channels_last, num_classes=num_classes
    )


class _StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch (setup and warm-up excluded)."""

    def __init__(self, warmup: int, sync: bool) -> None:
        self.warmup, self.sync, self.start, self.end = warmup, sync, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            if self.sync:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.sync:
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def _timed_trainer(timer: _StepTimer, accelerator: str, precision: str, **kwargs) -> L.Trainer:
    """One epoch of training only: no validation, logging, checkpoints or progress bar to time besides the steps."""
    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        **kwargs,
    )


def lightning_steps_per_s(
    backbone: str, batches: list, warmup: int, accelerator: str = "cpu", precision: str = "32-true", **model_kw
) -> float:
    """Optimisation steps/s of ``Trainer.fit`` over ``batches`` (one epoch, no validation, no logging to disk)."""
    timer = _StepTimer(warmup, sync=accelerator == "gpu")
    trainer = _timed_trainer(timer, accelerator, precision)
    trainer.fit(_model(backbone, **model_kw), DataLoader(batches, batch_size=None))
    return (len(batches) - warmup) / (timer.end - timer.start)


def bare_steps_per_s(backbone: str, batches: list, warmup: int) -> float:
    """Steps/s of the loop a PyTorch user writes by hand: forward, MAMSE, backward, SGD step (paper settings)."""
    model = _model(backbone)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99)
    start = None
    for i, batch in enumerate(DataLoader(batches, batch_size=None)):
        if i == warmup:
            start = time.perf_counter()
        risk = model(batch["image"]).sigmoid()
        loss = model.criterion(risk, batch["target"], batch["malignancy"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (len(batches) - warmup) / (time.perf_counter() - start)


def gpu_images_per_s(quick: bool) -> dict:
    steps, batch = (15, 16) if quick else (60, 32)
    batches = _batches(steps, batch, 400, device="cpu")
    fast = lightning_steps_per_s("resnet18", batches, 5, "gpu", "bf16-mixed", channels_last=True) * batch
    plain = lightning_steps_per_s("resnet18", batches, 5, "gpu", "32-true") * batch
    return {"training.gpu_images_per_s_400": figure(fast, plain, "images/s (bf16+channels_last vs fp32)", None)}


def loader_fed_images_per_s(
    manifest: Path, window: int, stride: int, steps: int, accelerator: str, precision: str, batch: int = 32
) -> float:
    """Training images/s of ``Trainer.fit`` fed by the real data module (cache, workers, on-device ROI)."""
    workers = min(8, os.cpu_count() or 1)
    dm = BiradsDataModule(
        manifest, num_classes=4, window=window, stride=stride, batch_size=batch, num_workers=workers,
        split_ratios=(1, 0, 0),
    )  # fmt: skip
    dm.prepare_data()  # the cache is built once, before the clock starts
    dm.setup("fit")
    steps = min(steps, len(dm.train_dataloader()))
    warmup = min(5, steps // 2)
    timer = _StepTimer(warmup, sync=accelerator == "gpu")
    trainer = _timed_trainer(timer, accelerator, precision, limit_train_batches=steps)
    trainer.fit(_model("resnet18", channels_last=True, num_classes=4), datamodule=dm)
    return (steps - warmup) * batch / (timer.end - timer.start)


def gpu_loader_busy_share(quick: bool) -> dict:
    from bench.bench_loader import make_dataset

    images, steps, batch = (8, 12, 32) if quick else (32, 50, 32)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_dataset(Path(tmp), images)
        fed = loader_fed_images_per_s(manifest, 400, 100, steps, "gpu", "bf16-mixed", batch)
    batches = _batches(steps, batch, 400, device="cuda")
    resident = lightning_steps_per_s("resnet18", batches, 5, "gpu", "bf16-mixed", channels_last=True) * batch
    return {"training.gpu_loader_busy_share": figure(fed, resident, "images/s (loader-fed vs GPU-resident)", 0.9)}


def run(quick: bool) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread gives stable step times for both loops
    try:
        # resnet18 on 64x64 patches, batch 8: ~50 ms steps, long against Lightning's per-step bookkeeping
        steps, rounds = (25, 2) if quick else (60, 4)
        batches, warmup = _batches(steps, 8, 64), 5
        lightning, bare = 0.0, 0.0
        for _ in range(rounds):  # alternate, keep each side's best
            bare = max(bare, bare_steps_per_s("resnet18", batches, warmup))
            lightning = max(lightning, lightning_steps_per_s("resnet18", batches, warmup))
        results = {"training.lightning_vs_bare": figure(lightning, bare, "steps/s (Lightning vs bare loop)", 0.95)}
    finally:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        results.update(gpu_images_per_s(quick))
        results.update(gpu_loader_busy_share(quick))
    else:
        print("training.gpu_images_per_s_400, training.gpu_loader_busy_share: skipped, no CUDA device")
    return results


if __name__ == "__main__":
    for name, entry in run(quick="--quick" in sys.argv).items():
        print(name, entry)
