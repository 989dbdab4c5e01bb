"""Shared pieces of the training tests: one torch thread, a tiny dataset, and the CLI overrides that keep runs small."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Tiny runs through the real configs: timm's 0.4 M-parameter test network, 64 px windows, a few batches.
TINY_OVERRIDES = [
    "--model.backbone", "test_resnet",
    "--model.pretrained", "false",
    "--data.window", "64",
    "--data.stride", "32",
    "--data.batch_size", "4",
    "--data.num_workers", "0",
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "2",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--bootstrap_resamples", "200",
]  # fmt: skip


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Tiny models on a shared 2-core machine: intra-op threads only fight each other (10x slower steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``).

    The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, version), then 32 KiB blocks of chunks, each
    ``crc32c (4) | length (2, LE) | type (1: full, 2: first, 3: middle, 4: last) | data``. wandb no longer ships a
    Python reader, so the tests read it here to check what an offline run recorded.
    """
    from wandb.proto import wandb_internal_pb2

    data, block, records, pending = path.read_bytes(), 32768, [], b""
    pos = 7
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # block trailer too small for a header: skipped
            pos += room
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records
