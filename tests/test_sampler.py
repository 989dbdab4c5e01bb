"""Class-balanced mini-batches (§3.2) sharded across DDP ranks, and how Lightning treats the sampler."""

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

# Table 2 of the paper (BI-RADS 2, 3, 4A, 4B, 4C, 5), a hundredth of it: 32, 18, 3, 2, 8, 9 lesions.
TABLE2 = (3180, 1751, 323, 241, 778, 902)


def lesion_samples(lesions_per_class, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(class, lesion) per sample, lesions with 1 to 16 windows each (400/100 px windows, as in §3.1)."""
    rng = np.random.default_rng(seed)
    labels, lesions, lesion = [], [], 0
    for k, count in enumerate(lesions_per_class):
        for _ in range(count):
            windows = int(rng.integers(1, 17))
            labels += [k] * windows
            lesions += [lesion] * windows
            lesion += 1
    return np.asarray(labels), np.asarray(lesions)


def batches(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


@pytest.mark.parametrize("num_classes", [6, 4])
def test_twenty_batches_of_32_hold_every_class_within_one(num_classes):
    counts = [max(c // 100, 2) for c in TABLE2[:num_classes]]
    labels, lesions = lesion_samples(counts)
    sampler = BalancedDistributedSampler(labels, lesions, batch_size=32, num_batches=20, num_replicas=1, rank=0)
    drawn = batches(list(sampler), 32)
    assert len(drawn) == 20 and all(len(b) == 32 for b in drawn)
    for batch in drawn:
        per_class = np.bincount(labels[batch], minlength=num_classes)
        assert per_class.max() - per_class.min() <= 1, per_class  # 6 classes: 5 or 6 each; 4 classes: 8 each
        if num_classes == 4:
            assert per_class.tolist() == [8, 8, 8, 8]
        assert len(set(batch)) == 32  # no (lesion, window) twice in a batch


def test_lesions_equally_likely_within_a_class_and_windows_uniform():
    # one class: 50 lesions of 1 window, 50 of 15; a window-uniform draw would pick the big ones 15x as often
    lesions = np.asarray([k for k in range(50)] + [50 + k // 15 for k in range(50 * 15)])
    labels = np.zeros(lesions.size, dtype=int)
    sampler = BalancedDistributedSampler(labels, lesions, batch_size=4, num_batches=5000, num_replicas=1, rank=0)
    drawn = np.asarray(list(sampler))
    # binomial sd of a share of 1/2 over 20,000 draws: 0.0035 (skipping a used 1-window lesion lowers it ~0.005)
    assert np.mean(lesions[drawn] < 50) == pytest.approx(0.5, abs=0.02)
    per_lesion = np.bincount(lesions[drawn], minlength=100)
    assert per_lesion.min() > 0.6 * per_lesion.mean()  # no lesion starved
    window_of = np.arange(lesions.size) - 50  # window position within each 15-window lesion
    big = drawn[lesions[drawn] >= 50]
    counts = np.bincount(window_of[big] % 15, minlength=15)
    assert np.all(np.abs(counts - big.size / 15) < 5 * np.sqrt(big.size / 15))  # uniform among a lesion's windows


def test_epochs_differ_and_repeat_with_the_seed():
    labels, lesions = lesion_samples([5, 5, 5])
    sampler = BalancedDistributedSampler(labels, lesions, batch_size=6, num_replicas=1, rank=0, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert first != second and list(sampler) == first
    other = BalancedDistributedSampler(labels, lesions, batch_size=6, num_replicas=1, rank=0, seed=4)
    assert list(other) != first


def test_epoch_length_is_the_sample_count_over_the_global_batch():
    labels, lesions = lesion_samples([5, 5, 5])
    for world in (1, 2, 3):
        sampler = BalancedDistributedSampler(labels, lesions, batch_size=4, num_replicas=world, rank=0)
        assert len(sampler) == max(labels.size // (4 * world), 1) * 4


def test_ranks_shard_one_balanced_global_batch():
    labels, lesions = lesion_samples([30, 20, 4, 3, 8, 9], seed=1)
    shards = [
        batches(list(BalancedDistributedSampler(labels, lesions, 16, 20, num_replicas=2, rank=r, seed=5)), 16)
        for r in range(2)
    ]
    for a, b in zip(*shards, strict=True):
        assert not set(a) & set(b)  # no (lesion, window) on both processes in a step
        per_class = np.bincount(labels[a + b], minlength=6)
        assert per_class.max() - per_class.min() <= 1


@pytest.mark.ddp
@pytest.mark.parametrize("num_classes", [6, 4])
def test_two_gloo_processes_draw_balanced_disjoint_global_batches(num_classes, tmp_path):
    labels, lesions = lesion_samples([max(c // 100, 2) for c in TABLE2[:num_classes]], seed=2)
    args = (2, free_port(), labels.tolist(), lesions.tolist(), 16, 3, str(tmp_path), 20)
    mp.spawn(draw_shard, args=args, nprocs=2, join=True)
    shards = [batches(torch.load(tmp_path / f"rank{r}.pt").tolist(), 16) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 20  # equal step counts on both ranks (DDP needs it)
    for a, b in zip(*shards, strict=True):
        assert len(a) == len(b) == 16 and not set(a) & set(b)
        per_class = np.bincount(labels[a + b], minlength=num_classes)
        assert per_class.max() - per_class.min() <= 1, per_class  # the global batch of 32 is balanced


def test_lightning_keeps_the_sampler_under_ddp():
    connector = _DataConnector.__new__(_DataConnector)
    connector.trainer = SimpleNamespace(
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True, is_distributed=True)
    )
    labels = [0, 1] * 50
    dataset = list(range(len(labels)))
    ours = DataLoader(dataset, sampler=BalancedDistributedSampler(labels, batch_size=4, num_replicas=2, rank=0))
    assert not connector._requires_distributed_sampler(ours)  # left alone: no DistributedSampler on top
    assert connector._requires_distributed_sampler(DataLoader(dataset, shuffle=True))  # the control case


def test_unlabelled_samples_are_refused():
    with pytest.raises(ValueError, match="unlabelled"):
        BalancedDistributedSampler([0, -1, 1], num_replicas=1, rank=0)
