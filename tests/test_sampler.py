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


def assert_windows_distinct_where_possible(batch: list[int], lesions: np.ndarray) -> None:
    """Each lesion drawn c times in a step has min(c, its windows) distinct windows: a (lesion, window) pair repeats
    (and may then sit on two processes) only when the lesion was dealt more often than it has windows."""
    windows = np.bincount(lesions)
    for lesion in set(lesions[batch].tolist()):
        mine = [i for i in batch if lesions[i] == lesion]
        assert len(set(mine)) == min(len(mine), windows[lesion]), (lesion, mine)


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
        assert_windows_distinct_where_possible(batch, lesions)


def test_lesions_equally_likely_within_a_class_and_windows_uniform():
    # one class: 50 lesions of 1 window, 50 of 15; a window-uniform draw would pick the big ones 15x as often
    lesions = np.asarray([k for k in range(50)] + [50 + k // 15 for k in range(50 * 15)])
    labels = np.zeros(lesions.size, dtype=int)
    sampler = BalancedDistributedSampler(labels, lesions, batch_size=4, num_batches=5000, num_replicas=1, rank=0)
    drawn = np.asarray(list(sampler))
    # lesions are dealt from a shuffled deck: over 20,000 draws every lesion is drawn 200 times exactly
    assert np.mean(lesions[drawn] < 50) == pytest.approx(0.5, abs=1e-9)
    per_lesion = np.bincount(lesions[drawn], minlength=100)
    assert per_lesion.min() == per_lesion.max() == 200
    window_of = np.arange(lesions.size) - 50  # window position within each 15-window lesion
    big = drawn[lesions[drawn] >= 50]
    counts = np.bincount(window_of[big] % 15, minlength=15)
    assert np.all(np.abs(counts - big.size / 15) < 5 * np.sqrt(big.size / 15))  # uniform among a lesion's windows


def test_a_one_window_lesion_is_drawn_as_often_as_a_four_window_lesion_of_its_class():
    # the review's case: a small class whose share of the batch exceeds its lesions (5 or 6 of 32 from 2 lesions);
    # dealing lesions without regard to their windows must not favour the lesion with more windows (was 78%)
    lesions = np.asarray([0, 1, 1, 1, 1] + [2 + k for k in range(40)])
    labels = np.asarray([0] * 5 + [1, 2, 3, 4, 5] * 8)
    sampler = BalancedDistributedSampler(labels, lesions, batch_size=32, num_batches=500, num_replicas=1, rank=0)
    drawn = np.asarray(list(sampler))
    small = lesions[drawn][labels[drawn] == 0]
    share = np.mean(small == 0)
    # 500 batches x 5.33 draws: the deck deals them alternately, so the share is 1/2 up to one draw
    assert share == pytest.approx(0.5, abs=1 / small.size + 1e-9), share


@pytest.mark.parametrize(("world", "accumulate", "batch_size"), [(1, 2, 16), (2, 2, 8), (1, 4, 8)])
def test_accumulated_micro_batches_make_one_balanced_step(world, accumulate, batch_size):
    # the CPU fallback of a 2-GPU config: 2 micro-batches of 16 per optimizer step; the step's 32 are balanced,
    # and so is each micro-batch (within one per class)
    labels, lesions = lesion_samples([30, 20, 4, 3, 8, 9], seed=3)
    per_rank = [
        batches(list(BalancedDistributedSampler(labels, lesions, batch_size, 20, world, r, 5, accumulate)), batch_size)
        for r in range(world)
    ]
    assert all(len(b) == 20 * accumulate for b in per_rank)
    for step in range(20):
        micro = [per_rank[r][step * accumulate + m] for r in range(world) for m in range(accumulate)]
        whole = [i for b in micro for i in b]
        assert len(whole) == 32
        assert_windows_distinct_where_possible(whole, lesions)
        per_class = np.bincount(labels[whole], minlength=6)
        assert per_class.max() - per_class.min() <= 1, per_class
        for b in micro:
            counts = np.bincount(labels[b], minlength=6)
            assert counts.max() - counts.min() <= 1, counts


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
        assert_windows_distinct_where_possible(a + b, lesions)  # on both processes only when unavoidable
        per_class = np.bincount(labels[a + b], minlength=6)
        assert per_class.max() - per_class.min() <= 1


@pytest.mark.ddp
@pytest.mark.parametrize(("num_classes", "accumulate"), [(6, 1), (4, 1), (6, 2)])
def test_two_gloo_processes_draw_balanced_disjoint_global_batches(num_classes, accumulate, tmp_path):
    labels, lesions = lesion_samples([max(c // 100, 2) for c in TABLE2[:num_classes]], seed=2)
    size = 16 // accumulate  # 2 processes x accumulate micro-batches x size = the global batch of 32
    args = (2, free_port(), labels.tolist(), lesions.tolist(), size, 3, str(tmp_path), 20, accumulate)
    mp.spawn(draw_shard, args=args, nprocs=2, join=True)
    shards = [batches(torch.load(tmp_path / f"rank{r}.pt").tolist(), size) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 20 * accumulate  # equal step counts on both ranks (DDP needs it)
    for step in range(20):
        micro = [shards[r][step * accumulate + m] for r in range(2) for m in range(accumulate)]
        whole = [i for b in micro for i in b]
        assert len(whole) == 32
        assert_windows_distinct_where_possible(whole, lesions)  # so on two processes only when unavoidable
        per_class = np.bincount(labels[whole], minlength=num_classes)
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


def test_a_cpu_run_accumulating_two_micro_batches_steps_on_balanced_32(tmp_path):
    # the paper config on a CPU: data.batch_size 16 x accumulate_grad_batches 2 = one optimizer step of 32
    import lightning as L

    from birads_calc.data.datamodule import BiradsDataModule
    from tests.factories import make_tiny_dataset

    manifest = make_tiny_dataset(tmp_path, patients=30, lesions_per_image=4, size=128)
    data = BiradsDataModule(manifest=manifest, window=64, stride=16, batch_size=16, num_workers=0)

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.targets: list[list[int]] = []

        def training_step(self, batch, batch_idx):
            self.targets.append(batch["target"].tolist())
            return (self.weight * batch["image"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Recorder()
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, accumulate_grad_batches=2, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert len(model.targets) >= 4 and len(model.targets) % 2 == 0
    assert trainer.global_step == len(model.targets) // 2  # one optimizer step per pair of micro-batches
    for first, second in zip(model.targets[::2], model.targets[1::2], strict=True):
        counts = np.bincount(first + second, minlength=6)
        assert len(first) == len(second) == 16 and counts.max() - counts.min() <= 1, counts
