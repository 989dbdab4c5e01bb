"""Class-balanced mini-batches for training (paper §3.2: "balance the number of various BI-RADS classes in each
mini-batch"), over the whole optimizer step: DDP processes and accumulated micro-batches together.

Each optimizer step draws one **global** batch of ``batch_size x world size x accumulate`` (lesion, window)
samples, where ``accumulate`` is the trainer's ``accumulate_grad_batches`` (the CPU fallback of a 2-GPU config
accumulates two micro-batches of 16 into the paper's 32):

* the classes present get counts as equal as the batch allows (32 over 6 classes: 5 or 6 each, the classes that
  get the extra sample drawn at random per batch; 32 over 4 classes: 8 each);
* within a class every lesion is equally likely, whatever its number of windows: the lesions of a class are
  dealt from a shuffled deck, reshuffled when it runs out, so over an epoch each lesion is drawn as often as any
  other of its class (within one). A lesion's window is uniform among its windows; a lesion drawn several times in
  one global batch gets distinct windows while it has unused ones, so no (lesion, window) appears twice in a
  step (hence never on two processes at once) unless a class has fewer (lesion, window) pairs than its share;
* the global batch is ordered by class and cut into ``world x accumulate`` micro-batches by taking every
  ``world x accumulate``-th position, so every micro-batch of every process is balanced too (within one per
  class); process ``r`` gets micro-batches ``r, r + world, ...`` and yields them in that order.

**Epoch length**: ``num_batches`` optimizer steps (default: the number of training (lesion, window) samples
divided by the global batch, rounded down, at least one), i.e. as many draws as a plain shuffled epoch with
``drop_last``; each process yields ``num_batches x accumulate`` micro-batches.

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
    """Class-balanced global batches of distinct (lesion, window) samples, sharded across DDP ranks and
    accumulated micro-batches.

    Args:
        labels: class index of each dataset sample.
        lesions: lesion id of each sample (its windows share it); default: every sample is its own lesion.
        batch_size: samples per process and micro-batch (the loader's ``batch_size``).
        num_batches: optimizer steps per epoch (default: ``len(labels) // global batch``, at least 1).
        num_replicas: world size (default: from ``torch.distributed``, 1 when not initialised).
        rank: this process's rank (default: from ``torch.distributed``, 0 when not initialised).
        seed: shared by all ranks; combined with the epoch.
        accumulate: micro-batches accumulated into one optimizer step (``accumulate_grad_batches``).

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
        accumulate: int = 1,
    ):
        initialised = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if initialised else 1)
        rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError("BalancedDistributedSampler needs a non-empty 1-D sequence of labels")
        if labels.min() < 0:
            raise ValueError("BalancedDistributedSampler needs a label for every sample (found -1: unlabelled)")
        if batch_size < 1 or accumulate < 1:
            raise ValueError(f"batch_size and accumulate must be at least 1, got {batch_size} and {accumulate}")
        super().__init__(range(labels.size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        lesions = np.arange(labels.size) if lesions is None else np.asarray(lesions, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.accumulate = int(accumulate)
        self.shards = self.num_replicas * self.accumulate  # micro-batches per optimizer step, all processes
        self.global_batch = self.batch_size * self.shards
        self.num_batches = int(num_batches or max(labels.size // self.global_batch, 1))
        self.num_samples = self.num_batches * self.accumulate * self.batch_size
        self.total_size = self.num_samples * self.num_replicas
        self.classes = np.unique(labels)  # classes absent from the data get no share
        # per class: one array of sample indices per lesion (its windows)
        self.windows_of_class = [_group_by(lesions[labels == k], np.flatnonzero(labels == k)) for k in self.classes]

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        decks = [_Deck(len(windows), rng) for windows in self.windows_of_class]
        mine = [m * self.num_replicas + self.rank for m in range(self.accumulate)]  # this process's micro-batches
        steps = []
        for _ in range(self.num_batches):
            batch = self.global_batch_indices(rng, decks)
            steps += [batch[shard :: self.shards] for shard in mine]
        return iter(np.concatenate(steps).tolist())

    def __len__(self) -> int:
        return self.num_samples

    def class_counts(self, rng: np.random.Generator) -> np.ndarray:
        """Samples per present class in one global batch: ``global_batch // C`` each, one more for a random
        ``global_batch % C`` of them."""
        counts = np.full(self.classes.size, self.global_batch // self.classes.size, dtype=np.int64)
        counts[rng.choice(self.classes.size, self.global_batch % self.classes.size, replace=False)] += 1
        return counts

    def global_batch_indices(self, rng: np.random.Generator, decks: list[_Deck] | None = None) -> np.ndarray:
        """One global batch of sample indices, ordered by class (``decks``: the epoch's lesion decks per class)."""
        decks = decks or [_Deck(len(windows), rng) for windows in self.windows_of_class]
        batch = []
        for windows, deck, count in zip(self.windows_of_class, decks, self.class_counts(rng), strict=True):
            batch += _draw_windows(windows, deck.deal(int(count)), rng)
        return np.asarray(batch, dtype=np.int64)


class _Deck:
    """The lesions of one class in shuffled order, reshuffled whenever all have been dealt: every lesion is dealt
    equally often (within one) whatever its number of windows."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.order: list[int] = []

    def deal(self, count: int) -> list[int]:
        dealt = []
        while len(dealt) < count:
            if not self.order:
                self.order = self.rng.permutation(self.size).tolist()
            dealt.append(self.order.pop())
        return dealt


def _group_by(keys: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
    """``values`` split by ``keys`` (one array per distinct key, in key order)."""
    order = np.argsort(keys, kind="stable")
    _, starts = np.unique(keys[order], return_index=True)
    return np.split(values[order], starts[1:])


def _draw_windows(windows: list[np.ndarray], lesions: list[int], rng: np.random.Generator) -> list[int]:
    """One window per dealt lesion, uniform among that lesion's windows not yet drawn in this batch (all of
    them again once every one has been drawn)."""
    unused: dict[int, list[int]] = {}
    drawn = []
    for lesion in lesions:
        if not unused.get(lesion):
            unused[lesion] = rng.permutation(windows[lesion].size).tolist()
        drawn.append(int(windows[lesion][unused[lesion].pop()]))
    return drawn
