"""Map-style datasets: ``Dataset``, ``TensorDataset``, ``ConcatDataset``, ``Subset``, ``random_split``.

A map-style dataset answers ``len(ds)`` and ``ds[i]`` for ``0 <= i < len(ds)``,
as ``torch.utils.data`` datasets do.

Batched fetch. Besides ``__getitem__``, a dataset may offer

* ``__getitems__(indices)``: the list ``[ds[i] for i in indices]``, fetched
  together (PyTorch's name and contract; the :class:`~forgeml.data.DataLoader`
  uses it when a custom ``collate_fn`` is set), and
* ``get_batch(indices)``: the batch ``default_collate([ds[i] for i in indices])``
  would build, computed with one NumPy fancy index per tensor, or
  ``NotImplemented`` when the dataset cannot do that (say, a per-item transform
  is set). The DataLoader uses it whenever the default collation is in effect.

:class:`TensorDataset`, :class:`Subset` of such a dataset, and the bundled
datasets (:class:`~forgeml.data.datasets.MNIST`,
:class:`~forgeml.data.datasets.CSVDataset`) implement both. A subclass that
overrides ``__getitem__`` gets the per-item path automatically, so its own
``__getitem__`` is never bypassed.

Devices. Indices are host-side (Python ints and NumPy arrays). A
:class:`TensorDataset` may hold CUDA tensors, as PyTorch allows with
``num_workers=0``: its samples and batches are then indexed on their device
(the index array is copied there once per batch) and stay there.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import warnings
from collections.abc import Sequence

import numpy as np

from ..backend.device import HOST_ARRAY, is_array, to_device, to_host
from ..backend.random import Generator
from ..ops.creation import from_numpy, randperm
from ..tensor import Tensor

__all__ = ["ConcatDataset", "Dataset", "Subset", "TensorDataset", "random_split"]


class Dataset:
    """An abstract map-style dataset: subclasses define ``__getitem__`` and ``__len__``.

    ``ds1 + ds2`` is ``ConcatDataset([ds1, ds2])``.
    """

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__(index)")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__()")

    def __add__(self, other: Dataset) -> ConcatDataset:
        return ConcatDataset([self, other])


def index_array(indices) -> np.ndarray:
    """``indices`` (a list, tuple, range, NumPy array or integer tensor) as a 1-D ``intp`` array."""
    if isinstance(indices, np.ndarray) and indices.dtype == np.intp and indices.ndim == 1:
        return indices
    if isinstance(indices, range):
        return np.arange(indices.start, indices.stop, indices.step, dtype=np.intp)
    if isinstance(indices, Tensor):
        indices = indices._data
    arr = to_host(indices) if is_array(indices) else np.asarray(indices)  # a CUDA index tensor comes to the host
    if arr.ndim != 1:
        raise IndexError(f"batch indices must be a 1-D sequence of integers, got shape {list(arr.shape)}")
    if arr.size == 0:
        return np.empty(0, dtype=np.intp)
    if arr.dtype.kind not in "iu":
        raise IndexError(f"batch indices must be integers, got dtype {arr.dtype}")
    return arr.astype(np.intp, copy=False)


def _check_in_range(idx: np.ndarray, n: int, name: str) -> None:
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx[(idx < -n) | (idx >= n)][0]
        raise IndexError(f"index {int(bad)} is out of range for {name} of length {n}")


def _overrides_getitem(obj, cls) -> bool:
    """True when ``obj``'s class replaces ``cls.__getitem__`` (then batched fetch must not bypass it)."""
    return type(obj).__getitem__ is not cls.__getitem__


def batch_to_samples(batch) -> list:
    """Split a collated batch (a list of tensors, stacked along dim 0) into its samples, as tuples."""
    return list(zip(*(t.unbind(0) for t in batch)))


class TensorDataset(Dataset):
    """Samples are ``tuple(t[i] for t in tensors)``: tensors that share their first dimension.

    NumPy arrays are accepted too and wrapped without a copy. The tensors may
    live on a CUDA device (all on the same one or not): samples and batches are
    then taken on that device.
    """

    def __init__(self, *tensors) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        converted = []
        for i, t in enumerate(tensors):
            if isinstance(t, np.ndarray):
                t = from_numpy(t)
            elif is_array(t):  # a CuPy array: wrapped where it is
                t = Tensor._make(t, False, None)
            elif not isinstance(t, Tensor):
                raise TypeError(
                    f"TensorDataset: argument {i} must be a Tensor or a NumPy array, got {type(t).__name__}"
                )
            if t._data.ndim == 0:
                raise ValueError(f"TensorDataset: argument {i} is a 0-d tensor; each tensor needs a first dimension")
            converted.append(t)
        n = converted[0]._data.shape[0]
        if any(t._data.shape[0] != n for t in converted):
            shapes = ", ".join(str(list(t._data.shape)) for t in converted)
            raise ValueError(
                f"Size mismatch between tensors: every tensor needs the same first dimension, got {shapes}"
            )
        self.tensors = tuple(converted)

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0]._data.shape[0]

    def get_batch(self, indices):
        """``[t[indices] for t in tensors]``: one fancy index per tensor (what default_collate would build)."""
        if _overrides_getitem(self, TensorDataset):
            return NotImplemented
        idx = index_array(indices)
        _check_in_range(idx, len(self), type(self).__name__)
        out = []
        on_device: dict = {}  # the index array copied to each device the tensors live on, once per batch
        for t in self.tensors:
            data = t._data
            if type(data) is HOST_ARRAY:
                index = idx
            else:
                device = t.device
                index = on_device.get(device)
                if index is None:
                    index = on_device[device] = to_device(idx, device)
            if not t.requires_grad:
                out.append(Tensor._make(data[index], False, None))
            else:  # keeps the graph through the indexing op
                out.append(t[index if index is idx else Tensor._make(index, False, None)])
        return out

    def __getitems__(self, indices) -> list:
        batch = self.get_batch(indices)
        if batch is NotImplemented:
            return [self[i] for i in indices]
        return batch_to_samples(batch)

    def __repr__(self) -> str:
        shapes = ", ".join(str(list(t.shape)) for t in self.tensors)
        return f"TensorDataset({shapes})"


class ConcatDataset(Dataset):
    """The datasets one after another: index ``len(datasets[0])`` is the first sample of ``datasets[1]``."""

    def __init__(self, datasets) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("datasets should not be an empty iterable")
        for i, d in enumerate(self.datasets):
            if not hasattr(d, "__len__") or not hasattr(d, "__getitem__"):
                raise TypeError(
                    f"ConcatDataset: dataset {i} ({type(d).__name__}) is not a map-style dataset "
                    "(it needs __len__ and __getitem__)"
                )
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        idx = operator.index(idx)
        if idx < 0:
            if -idx > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            idx = len(self) + idx
        if idx >= len(self):
            raise IndexError(f"index {idx} is out of range for ConcatDataset of length {len(self)}")
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        sample_idx = idx if dataset_idx == 0 else idx - self.cumulative_sizes[dataset_idx - 1]
        return self.datasets[dataset_idx][sample_idx]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    @property
    def indices(self):
        return self._indices

    @indices.setter
    def indices(self, value) -> None:
        self._indices = value
        self._index_cache = None

    def _index_array(self) -> np.ndarray:
        if self._index_cache is None:
            self._index_cache = index_array(self._indices)
        return self._index_cache

    def __getitem__(self, idx):
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __len__(self) -> int:
        return len(self.indices)

    def get_batch(self, indices):
        get_batch = getattr(self.dataset, "get_batch", None)
        if get_batch is None or _overrides_getitem(self, Subset):
            return NotImplemented
        idx = index_array(indices)
        _check_in_range(idx, len(self), "Subset")
        return get_batch(self._index_array()[idx])

    def __getitems__(self, indices) -> list:
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None and not _overrides_getitem(self, Subset):
            return getitems([self.indices[i] for i in indices])
        return [self[i] for i in indices]


def _fraction_lengths(n: int, fractions: Sequence[float]) -> list[int]:
    lengths = []
    for i, frac in enumerate(fractions):
        if frac < 0 or frac > 1:
            raise ValueError(f"Fraction at index {i} is not between 0 and 1")
        lengths.append(math.floor(n * frac))
    for i in range(n - sum(lengths)):  # hand out the remainder round-robin, as PyTorch does
        lengths[i % len(lengths)] += 1
    for i, length in enumerate(lengths):
        if length == 0:
            warnings.warn(f"Length of split at index {i} is 0. This might result in an empty dataset.", stacklevel=3)
    return lengths


def random_split(dataset, lengths: Sequence[int | float], generator: Generator | None = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random :class:`Subset` s of the given lengths.

    ``lengths`` are sizes that add up to ``len(dataset)``, or fractions that add
    up to 1; fractional sizes are floored and the remainder handed out one by
    one from the first split on (PyTorch's rule). The permutation is drawn from
    ``generator``, or the default generator (see :func:`forgeml.manual_seed`).
    """
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths must not be empty")
    total = sum(lengths)
    if math.isclose(total, 1) and total <= 1:
        lengths = _fraction_lengths(len(dataset), lengths)
    for i, length in enumerate(lengths):
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
            raise ValueError(
                f"random_split: lengths must be non-negative integers, or fractions that sum to 1; "
                f"got {length!r} at index {i}"
            )
    if sum(lengths) != len(dataset):
        raise ValueError(
            f"Sum of input lengths does not equal the length of the input dataset! "
            f"(lengths sum to {sum(lengths)}, the dataset has {len(dataset)} samples)"
        )
    perm = randperm(sum(lengths), generator=generator).tolist()
    return [
        Subset(dataset, perm[offset - length : offset])
        for offset, length in zip(itertools.accumulate(lengths), lengths)
    ]
