"""Samplers: the order in which a :class:`~forgeml.data.DataLoader` visits a dataset's indices.

As in ``torch.utils.data``: a sampler is an iterable of indices (or, for a
:class:`BatchSampler`, of lists of indices). Random samplers draw from the
``generator`` they were given, or from the default generator at the moment
iteration starts, so :func:`forgeml.manual_seed` makes every epoch's order
reproducible, and each new epoch (each ``iter()``) draws a new order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence, Sized

import numpy as np

from ..backend.device import is_array, to_host
from ..backend.random import Generator, numpy_generator
from ..tensor import Tensor

__all__ = [
    "BatchSampler",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
]


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, Generator):
        raise TypeError(f"generator must be a forgeml.Generator or None, got {type(generator).__name__}")


def _is_positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


class Sampler:
    """Base class: subclasses define ``__iter__`` (indices) and, when they can, ``__len__``."""

    def __init__(self, data_source: Sized | None = None) -> None:
        pass

    def __iter__(self) -> Iterator:
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__()")


class SequentialSampler(Sampler):
    """``0, 1, ..., len(data_source) - 1``."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """Random indices into ``data_source``.

    Without replacement each epoch is a fresh permutation (several back to back,
    the last cut short, when ``num_samples`` exceeds the dataset's length); with
    replacement, ``num_samples`` independent uniform draws, made lazily in chunks
    of 32 (so ``num_samples=int(1e10)`` costs nothing until iterated).
    """

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: Generator | None = None,
    ) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement}")
        _check_generator(generator)
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not _is_positive_int(self.num_samples):
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={self.num_samples}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        if n == 0:
            raise ValueError("RandomSampler: the data source is empty; there is nothing to sample")
        rng = numpy_generator(self.generator)
        if self.replacement:  # drawn lazily, 32 at a time (as PyTorch does): num_samples may be huge
            full, rest = divmod(self.num_samples, 32)
            for _ in range(full):
                yield from rng.integers(0, n, size=32, dtype=np.int64).tolist()
            if rest:
                yield from rng.integers(0, n, size=rest, dtype=np.int64).tolist()
            return
        full, rest = divmod(self.num_samples, n)
        for _ in range(full):
            yield from rng.permutation(n).tolist()
        if rest:
            yield from rng.permutation(n)[:rest].tolist()

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a random order (a new one each epoch), without replacement."""

    def __init__(self, indices: Sequence[int], generator: Generator | None = None) -> None:
        _check_generator(generator)
        self.indices = indices
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        for i in numpy_generator(self.generator).permutation(len(self.indices)).tolist():
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices in ``[0, len(weights))``, index ``i`` drawn with probability ∝ ``weights[i]``."""

    def __init__(self, weights, num_samples: int, replacement: bool = True, generator: Generator | None = None) -> None:
        if not _is_positive_int(num_samples):
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={num_samples}")
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement should be a boolean value, but got replacement={replacement}")
        _check_generator(generator)
        if isinstance(weights, Tensor):
            weights = weights._data
        w = np.asarray(to_host(weights) if is_array(weights) else weights, dtype=np.float64)  # sampling is host-side
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"weights should be a non-empty 1-D sequence, got shape {list(w.shape)}")
        if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative, and not all zero")
        if not replacement and num_samples > np.count_nonzero(w):
            raise ValueError(
                f"cannot draw {num_samples} samples without replacement from {np.count_nonzero(w)} non-zero weights"
            )
        self.weights = w
        self.num_samples = int(num_samples)
        self.replacement = replacement
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        rng = numpy_generator(self.generator)
        p = self.weights / self.weights.sum()
        return iter(rng.choice(len(p), size=self.num_samples, replace=self.replacement, p=p).tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Group the indices of ``sampler`` (any iterable of indices) into lists of ``batch_size``.

    The last, shorter batch is kept unless ``drop_last``.

    >>> list(BatchSampler(SequentialSampler(range(10)), batch_size=3, drop_last=False))
    [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    """

    def __init__(self, sampler, batch_size: int, drop_last: bool) -> None:
        if not _is_positive_int(batch_size):
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        it = iter(self.sampler)
        size = self.batch_size
        while batch := list(itertools.islice(it, size)):
            if len(batch) < size and self.drop_last:
                return
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
