"""Class-balanced mini-batches for training (paper §3.2: "balance the number of various BI-RADS classes in each
mini-batch"), sharded across DDP processes.

Each training step draws one **global** batch of ``batch_size x world size`` (lesion, window) samples:

* the classes present get counts as equal as the batch allows (32 over 6 classes: 5 or 6 each, the classes that
  get the extra sample drawn at random per batch; 32 over 4 classes: 8 each);
* within a class every lesion is equally likely, whatever its number of windows, and its window is uniform among
  its windows not yet in the batch: no (lesion, window) appears twice in a global batch, hence never on two
  processes in the same step (a lesion whose windows are all in the batch is skipped; only a class with fewer
  (lesion, window) pairs than its share of the batch repeats one);
* the global batch is ordered by class and process ``r`` takes positions ``r, r + world, ...``, so each process's
  share is balanced too (within one per class).

**Epoch length**: ``num_batches`` steps (default: the number of training (lesion, window) samples divided by the
global batch, rounded down, at least one), i.e. as many draws as a plain shuffled epoch with ``drop_last``.

Randomness: a NumPy generator seeded by ``(seed, epoch)``, identical on every process (``seed`` is Lightning's
global seed, so ``seed_everything`` changes the draw; Lightning calls ``set_epoch``). It depends on nothing a
checkpoint does not restore, so a resumed run draws what an uninterrupted one does.

Lightning: the sampler subclasses ``torch.utils.data.DistributedSampler``, so Lightning sees the loader as already
distributed and leaves it alone. It yields this process's indices batch after batch; the loader must use the same
``batch_size`` (and ``drop_last=False``: the length is a whole number of batches).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler


class BalancedDistributedSampler(DistributedSampler):
    """Class-balanced global batches of distinct (lesion, window) samples, sharded across DDP ranks.

    Args:
        labels: class index of each dataset sample.
        lesions: lesion id of each sample (its windows share it); default: every sample is its own lesion.
        batch_size: samples per process and step (the loader's ``batch_size``).
        num_batches: steps per epoch (default: ``len(labels) // (batch_size * world size)``, at least 1).
        num_replicas: world size (default: from ``torch.distributed``, 1 when not initialised).
        rank: this process's rank (default: from ``torch.distributed``, 0 when not initialised).
        seed: shared by all ranks; combined with the epoch.

    Example:
        >>> sampler = BalancedDistributedSampler([0, 0, 0, 1], batch_size=2, num_replicas=2, rank=0, seed=0)
        >>> len(sampler), len(list(sampler))
        (2, 2)
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        lesions: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 32,
        num_batches: int | None = None,
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
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        super().__init__(range(labels.size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        lesions = np.arange(labels.size) if lesions is None else np.asarray(lesions, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.global_batch = self.batch_size * self.num_replicas
        self.num_batches = int(num_batches or max(labels.size // self.global_batch, 1))
        self.num_samples = self.num_batches * self.batch_size
        self.total_size = self.num_samples * self.num_replicas
        self.classes = np.unique(labels)  # classes absent from the data get no share
        # per class: one array of sample indices per lesion (its windows)
        self.windows_of_class = [_group_by(lesions[labels == k], np.flatnonzero(labels == k)) for k in self.classes]

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        shards = [self.global_batch_indices(rng)[self.rank :: self.num_replicas] for _ in range(self.num_batches)]
        return iter(np.concatenate(shards).tolist())

    def __len__(self) -> int:
        return self.num_samples

    def class_counts(self, rng: np.random.Generator) -> np.ndarray:
        """Samples per present class in one global batch: ``global_batch // C`` each, one more for a random
        ``global_batch % C`` of them."""
        counts = np.full(self.classes.size, self.global_batch // self.classes.size, dtype=np.int64)
        counts[rng.choice(self.classes.size, self.global_batch % self.classes.size, replace=False)] += 1
        return counts

    def global_batch_indices(self, rng: np.random.Generator) -> np.ndarray:
        """One global batch of sample indices, ordered by class."""
        batch = []
        for windows, count in zip(self.windows_of_class, self.class_counts(rng), strict=True):
            batch += _draw_class(windows, int(count), rng)
        return np.asarray(batch, dtype=np.int64)


def _group_by(keys: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
    """``values`` split by ``keys`` (one array per distinct key, in key order)."""
    order = np.argsort(keys, kind="stable")
    _, starts = np.unique(keys[order], return_index=True)
    return np.split(values[order], starts[1:])


def _draw_class(windows: list[np.ndarray], count: int, rng: np.random.Generator) -> list[int]:
    """``count`` samples of one class: a lesion uniform among those with a window left, then one of its unused
    windows uniformly; when every window is used (a tiny class) the draw starts afresh."""
    taken: dict[int, set[int]] = {}
    open_lesions = list(range(len(windows)))
    drawn = []
    for _ in range(count):
        if not open_lesions:
            taken, open_lesions = {}, list(range(len(windows)))
        lesion = open_lesions[int(rng.integers(len(open_lesions)))]
        used = taken.setdefault(lesion, set())
        window = int(rng.integers(windows[lesion].size))
        while window in used:  # rejection: uniform among the unused windows (at least one is left)
            window = int(rng.integers(windows[lesion].size))
        used.add(window)
        drawn.append(int(windows[lesion][window]))
        if len(used) == windows[lesion].size:
            open_lesions.remove(lesion)
    return drawn
