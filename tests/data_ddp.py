"""Helpers run in spawned processes by the DDP sampler test (must be importable by the children)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from birads_calc.data.sampler import BalancedDistributedSampler


def draw_shard(
    rank: int,
    world_size: int,
    port: int,
    labels: list[int],
    lesions: list[int],
    batch_size: int,
    epoch: int,
    out: str,
    num_batches: int | None = None,
    accumulate: int = 1,
) -> None:
    """Join a gloo group, draw this rank's shard with rank/world size taken from torch.distributed, save it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        sampler = BalancedDistributedSampler(
            labels, lesions, batch_size=batch_size, num_batches=num_batches, seed=7, accumulate=accumulate
        )
        sampler.set_epoch(epoch)
        torch.save(torch.tensor(list(sampler)), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
