"""``DataLoader``: iterate over a dataset in (shuffled) batches, as ``torch.utils.data.DataLoader`` does.

Batches are fetched in the calling process. ``num_workers > 0`` is accepted
for compatibility with PyTorch code and runs in-process too (no worker
processes are started; NumPy's fancy indexing already does the heavy lifting
of a vectorised fetch).

Devices: batches of host data are CPU tensors, as in PyTorch; the training
loop moves them to its device (``Trainer`` does, or ``x.to('cuda')``). A
:class:`~forgeml.data.TensorDataset` of CUDA tensors yields CUDA batches.
``pin_memory`` is accepted and has no effect (see :class:`DataLoader`).
"""

from __future__ import annotations

from ..backend.random import Generator
from .collate import default_collate, default_convert
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = ["DataLoader"]

_FROZEN = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")


class _DataLoaderIter:
    """One pass over a :class:`DataLoader` (one epoch)."""

    def __init__(self, loader: DataLoader) -> None:
        self._loader = loader
        self._length = len(loader) if hasattr(loader._index_sampler, "__len__") else None
        self._indices = iter(loader._index_sampler)

    def __iter__(self) -> _DataLoaderIter:
        return self

    def __next__(self):
        return self._loader._fetch(next(self._indices))

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("this DataLoader's sampler has no length")
        return self._length


class DataLoader:
    """Combines a dataset and a sampler, and yields batches of samples.

    Args:
        dataset: a map-style dataset (``__getitem__`` and ``__len__``).
        batch_size: samples per batch (default 1). ``None`` turns automatic batching off:
            each sample is yielded on its own, through ``collate_fn`` (default :func:`default_convert`).
        shuffle: visit the samples in a new random order each epoch (a :class:`RandomSampler`
            drawing from ``generator``, or the default generator, so :func:`forgeml.manual_seed`
            makes the order reproducible).
        sampler: the order of the indices; mutually exclusive with ``shuffle``.
        batch_sampler: yields lists of indices; mutually exclusive with ``batch_size``,
            ``shuffle``, ``sampler`` and ``drop_last``.
        num_workers: accepted for PyTorch compatibility; loading always runs in the calling
            process, whatever the value (no worker processes are started).
        collate_fn: merges a list of samples into a batch (default :func:`default_collate`).
        pin_memory: accepted; no effect. PyTorch copies batches into page-locked host memory
            so that ``.to('cuda', non_blocking=True)`` can overlap the copy with compute; ForgeML's
            batches stay in ordinary NumPy memory and CuPy copies them to the GPU from there, so
            the result is the same, without the overlap. ``pin_memory_device`` is accepted too.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        timeout, worker_init_fn, prefetch_factor, persistent_workers: accepted and
            validated as PyTorch does; they concern worker processes, so have no effect.
        generator: the :class:`forgeml.Generator` that ``shuffle=True`` draws from.

    Vectorised batching: with the default collation, a dataset that offers
    ``get_batch(indices)`` (:class:`TensorDataset`, :class:`Subset` of one,
    :class:`~forgeml.data.datasets.MNIST`, :class:`~forgeml.data.datasets.CSVDataset`)
    builds each batch with one NumPy fancy index per tensor instead of fetching
    and stacking the samples one by one. The batch is the same either way. With a
    custom ``collate_fn``, samples come from ``dataset.__getitems__(indices)`` when the
    dataset has it, else from ``dataset[i]`` one at a time.
    """

    def __init__(
        self,
        dataset,
        batch_size: int | None = 1,
        shuffle: bool | None = False,
        sampler: Sampler | None = None,
        batch_sampler=None,
        num_workers: int = 0,
        collate_fn=None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn=None,
        generator: Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
    ) -> None:
        if not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"DataLoader: dataset must be a map-style dataset (with __getitem__, and __len__ unless a sampler "
                f"or batch_sampler is given), got {type(dataset).__name__}"
            )
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                "prefetch_factor option could only be specified in multiprocessing. "
                "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None."
            )
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if generator is not None and not isinstance(generator, Generator):
            raise TypeError(f"generator must be a forgeml.Generator or None, got {type(generator).__name__}")
        if shuffle not in (None, True, False):
            raise TypeError(f"shuffle should be a boolean value, but got shuffle={shuffle!r}")
        shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
                )
            batch_size = None
            drop_last = False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.generator = generator
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = persistent_workers
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._initialized = True

    def __setattr__(self, name, value) -> None:
        if getattr(self, "_initialized", False) and name in _FROZEN:
            raise ValueError(f"{name} attribute should not be set after {type(self).__name__} is initialized")
        super().__setattr__(name, value)

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def _fetch(self, index):
        """The batch for one element of the index sampler (a list of indices, or one index)."""
        dataset = self.dataset
        if not self._auto_collation:
            return self.collate_fn(dataset[index])
        if self.collate_fn is default_collate:
            get_batch = getattr(dataset, "get_batch", None)
            if get_batch is not None:
                batch = get_batch(index)
                if batch is not NotImplemented:
                    return batch
        getitems = getattr(dataset, "__getitems__", None)
        samples = getitems(index) if getitems is not None else [dataset[i] for i in index]
        return self.collate_fn(samples)

    def __iter__(self) -> _DataLoaderIter:
        return _DataLoaderIter(self)

    def __len__(self) -> int:
        return len(self._index_sampler)

    def __repr__(self) -> str:
        return (
            f"DataLoader(dataset={type(self.dataset).__name__}, batch_size={self.batch_size}, "
            f"sampler={type(self.sampler).__name__}, drop_last={self.drop_last})"
        )
