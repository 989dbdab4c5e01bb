"""Under DDP (2 CPU processes, gloo) the metric classes give exactly the single-process value."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_ports import free_port

from birads_calc.metrics import MalignancyAdjustedQWK, MalignancyAUROC, QuadraticWeightedKappa

WORLD_SIZE = 2


def data():
    """Same data in every process; rank r takes uneven batches of its own shard."""
    generator = torch.Generator().manual_seed(11)
    n = 257
    target = torch.randint(6, (n,), generator=generator)
    preds = (target + torch.randint(-2, 3, (n,), generator=generator)).clamp(0, 5)
    malignancy = torch.tensor([0.0, 0.5, 1.0])[torch.randint(3, (n,), generator=generator)]
    risk = (target + torch.rand(n, generator=generator)) / 6
    return preds, target, malignancy, risk


def metrics():
    return {
        "qwk": QuadraticWeightedKappa(6),
        "maqwk_m": MalignancyAdjustedQWK(6, "malignant"),
        "maqwk_b": MalignancyAdjustedQWK(6, "benign"),
        "auroc": MalignancyAUROC(),
    }


def update(metric_set, preds, target, malignancy, risk, batch: int) -> None:
    for part in torch.arange(preds.numel()).split(batch):
        for name, metric in metric_set.items():
            if name == "auroc":
                metric.update(risk[part], malignancy[part])
            elif name == "qwk":
                metric.update(preds[part], target[part])
            else:
                metric.update(preds[part], target[part], malignancy[part])


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=datetime.timedelta(seconds=60))
    try:
        preds, target, malignancy, risk = data()
        shard = slice(0, 100) if rank == 0 else slice(100, None)  # unequal shards
        metric_set = metrics()
        update(metric_set, preds[shard], target[shard], malignancy[shard], risk[shard], batch=17 + 5 * rank)
        values = {name: metric.compute() for name, metric in metric_set.items()}
        torch.save(values, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.timeout(300)
def test_ddp_two_processes_equal_single_process(tmp_path):
    # spawn, not fork: a child forked after the parent ran torch's OpenMP pool (earlier tests) can hang in it
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    single = metrics()
    update(single, *data(), batch=32)
    expected = {name: metric.compute() for name, metric in single.items()}
    for rank in range(WORLD_SIZE):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name in ("qwk", "maqwk_m", "maqwk_b"):
            assert torch.equal(got[name], expected[name]), (rank, name)  # summed integer counts: bit-identical
        assert float(got["auroc"]) == pytest.approx(float(expected["auroc"]), abs=1e-7)
