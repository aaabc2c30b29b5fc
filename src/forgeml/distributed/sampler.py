"""``DistributedSampler``: each rank visits its own shard of a dataset, as ``torch.utils.data.DistributedSampler``.

Every rank builds the same list of indices (a permutation seeded by
``seed + epoch`` when ``shuffle``, else ``0 .. len - 1``), pads it by repeating
indices from its start until it divides evenly among the replicas (or, with
``drop_last``, cuts the tail off), and keeps every ``num_replicas``-th index
starting at its ``rank``. So the shards are disjoint apart from the padding,
together cover the dataset, and have the same length on every rank, which keeps
the ranks' collectives in step. Call :meth:`set_epoch` at the start of each
epoch, or every epoch visits the data in the same order.

>>> sampler = DistributedSampler(range(10), num_replicas=4, rank=1, shuffle=False)
>>> list(sampler)
[1, 5, 9]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import numpy as np

from ..backend.random import Generator
from ..data.sampler import Sampler
from .group import get_rank, get_world_size

__all__ = ["DistributedSampler"]


def _check_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"DistributedSampler: {name} must be an integer, got {type(value).__name__} ({value!r})")
    return int(value)


class DistributedSampler(Sampler):
    """Restricts a :class:`~forgeml.data.DataLoader` to this rank's shard of ``dataset``.

    Args:
        dataset: a sized dataset (anything with ``__len__``); assumed to keep its length and order.
        num_replicas: the number of ranks sharing the data (default: the default group's world size, 1 when
            no group is initialized).
        rank: this process's rank among them (default: the default group's rank, 0 when none is initialized).
        shuffle: visit the indices in a random order, the same on every rank for a given ``seed + epoch``.
        seed: the shuffle's seed; must be the same on every rank.
        drop_last: drop the tail of the data so it divides evenly among the ranks, instead of padding it with
            indices repeated from the start.

    Use it as a DataLoader's ``sampler`` (with ``shuffle=False`` on the loader), and call
    :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if not hasattr(dataset, "__len__"):
            raise TypeError(
                f"DistributedSampler: dataset must have a length (__len__) to be split among ranks, "
                f"got {type(dataset).__name__}"
            )
        num_replicas = get_world_size() if num_replicas is None else _check_int("num_replicas", num_replicas)
        rank = get_rank() if rank is None else _check_int("rank", rank)
        if num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be at least 1, got {num_replicas}")
        if rank >= num_replicas or rank < 0:
            raise ValueError(
                f"DistributedSampler: invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}] "
                f"(num_replicas={num_replicas})"
            )
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = bool(drop_last)
        n = len(dataset)
        if drop_last and n % num_replicas != 0:
            # The largest evenly divisible length below n (PyTorch's formula, kept as it is).
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle = bool(shuffle)
        self.seed = _check_int("seed", seed)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            # The same permutation on every rank: a fresh generator seeded by seed + epoch.
            indices = Generator().manual_seed(self.seed + self.epoch).permutation(n).tolist()
        else:
            indices = list(range(n))
        if n == 0 and self.total_size > 0:
            raise RuntimeError(
                f"DistributedSampler: the dataset is empty now but had samples when the sampler was made "
                f"({self.total_size} indices expected); a dataset must keep its length while sampled"
            )
        if not self.drop_last:
            padding = self.total_size - len(indices)
            if padding <= len(indices):
                indices += indices[:padding]
            else:  # fewer samples than the padding needs: repeat the whole list
                indices += (indices * math.ceil(padding / len(indices)))[:padding]
        else:
            indices = indices[: self.total_size]
        if len(indices) != self.total_size:
            raise RuntimeError(
                f"DistributedSampler: the dataset has {n} samples, which do not make the {self.total_size} indices "
                f"expected when the sampler was made; a dataset must keep its length while sampled"
            )
        return iter(indices[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, so that with ``shuffle`` each epoch visits the data in a new order (the same on
        every rank). Call it before iterating over the DataLoader each epoch."""
        self.epoch = _check_int("epoch", epoch)

    def __repr__(self) -> str:
        return (
            f"DistributedSampler(num_replicas={self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, num_samples={self.num_samples})"
        )
