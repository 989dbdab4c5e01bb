"""Class-balanced sampling for training (paper §3.2) that still gives each DDP process its own samples.

Every process draws the same balanced sequence for an epoch (a generator seeded with ``seed + epoch``: each
class equally likely, samples uniform within a class, with replacement) and keeps every ``num_replicas``-th
element starting at its rank. The shards are disjoint positions of one sequence, so together the processes see
exactly one epoch's draw, like ``DistributedSampler`` does for uniform shuffling.

Lightning: the sampler subclasses ``torch.utils.data.DistributedSampler``, so with ``use_distributed_sampler``
left at its default Lightning sees that the loader is already distributed and does not replace the sampler; it
still calls ``set_epoch`` at every epoch. With ``use_distributed_sampler: false`` nothing changes either: the
sampler reads rank and world size from ``torch.distributed`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


class BalancedDistributedSampler(DistributedSampler):
    """Draw class-balanced indices with replacement, sharded across DDP ranks.

    Args:
        labels: class index of each dataset sample.
        num_samples: total draws per epoch over all ranks (default: the dataset size).
        num_replicas: world size (default: from ``torch.distributed``, 1 when not initialised).
        rank: this process's rank (default: from ``torch.distributed``, 0 when not initialised).
        seed: shared by all ranks; the epoch is added to it.

    Example:
        >>> sampler = BalancedDistributedSampler([0, 0, 0, 1], num_replicas=2, rank=0, seed=0)
        >>> len(sampler), len(list(sampler))
        (2, 2)
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        num_samples: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ):
        initialised = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if initialised else 1)
        rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError("BalancedDistributedSampler needs a non-empty 1-D sequence of labels")
        if labels.min() < 0:
            raise ValueError("BalancedDistributedSampler needs a label for every sample (found -1: unlabelled)")
        super().__init__(range(labels.size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.labels = labels
        self.total_size = int(num_samples or labels.size)
        self.total_size += (-self.total_size) % self.num_replicas  # every rank gets the same count (DDP needs it)
        self.num_samples = self.total_size // self.num_replicas
        counts = np.bincount(labels)
        # each present class gets the same total weight; classes absent from the data get none
        self.weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator)
        return iter(draws[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
