"""Class-balanced sampling (§3.2) sharded across DDP ranks, and how Lightning treats the sampler."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from ddp_ports import free_port
from lightning.pytorch.trainer.connectors.data_connector import _DataConnector
from torch.utils.data import DataLoader

from birads_calc.data.sampler import BalancedDistributedSampler
from tests.data_ddp import draw_shard

LABELS = [0] * 900 + [1] * 90 + [2] * 10  # 90 : 9 : 1


def test_balanced_class_frequencies():
    sampler = BalancedDistributedSampler(LABELS, num_samples=30000, num_replicas=1, rank=0)
    drawn = np.asarray(LABELS)[list(sampler)]
    frequencies = np.bincount(drawn, minlength=3) / drawn.size
    # binomial standard deviation of each share: sqrt(1/3 * 2/3 / 30000) = 0.0027
    np.testing.assert_allclose(frequencies, [1 / 3] * 3, atol=0.015)
    assert len(set(np.flatnonzero(np.asarray(LABELS) == 2)) - set(sampler)) == 0  # the rare class is all used


def test_epochs_differ_and_repeat_with_the_seed():
    sampler = BalancedDistributedSampler(LABELS, num_replicas=1, rank=0, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert first != second and list(sampler) == first


def test_ranks_shard_one_shared_draw():
    whole = list(BalancedDistributedSampler(LABELS, num_samples=1001, num_replicas=1, rank=0))
    shards = [list(BalancedDistributedSampler(LABELS, num_samples=1001, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [334] * 3  # padded to a multiple of the world size: equal step counts
    assert shards[0][:5] == whole[0:15:3][:5] and shards[1][:5] == whole[1:15:3]


@pytest.mark.ddp
def test_two_ddp_ranks_see_disjoint_samples(tmp_path):
    mp.spawn(draw_shard, args=(2, free_port(), LABELS, 2, str(tmp_path)), nprocs=2, join=True)
    shards = [torch.load(tmp_path / f"rank{r}.pt").tolist() for r in range(2)]
    reference = BalancedDistributedSampler(LABELS, num_replicas=1, rank=0, seed=7)
    reference.set_epoch(2)
    whole = list(reference)
    assert len(shards[0]) == len(shards[1]) == 500
    # rank r holds positions r, r + 2, ... of the shared draw: disjoint positions that together make the epoch
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]


def test_lightning_keeps_the_sampler_under_ddp():
    connector = _DataConnector.__new__(_DataConnector)
    connector.trainer = SimpleNamespace(
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True, is_distributed=True)
    )
    dataset = list(range(len(LABELS)))
    ours = DataLoader(dataset, sampler=BalancedDistributedSampler(LABELS, num_replicas=2, rank=0))
    assert not connector._requires_distributed_sampler(ours)  # left alone: no DistributedSampler on top
    assert connector._requires_distributed_sampler(DataLoader(dataset, shuffle=True))  # the control case


def test_unlabelled_samples_are_refused():
    with pytest.raises(ValueError, match="unlabelled"):
        BalancedDistributedSampler([0, -1, 1], num_replicas=1, rank=0)
