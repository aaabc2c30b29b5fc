"""``DataLoader``: iterate over a dataset in (shuffled) batches, as ``torch.utils.data.DataLoader`` does.

With ``num_workers=0`` batches are fetched in the calling process; with
``num_workers > 0`` worker processes fetch and collate them, as PyTorch's do
(:mod:`._multiprocessing`; each worker holds a copy of the dataset, and
batches are yielded in order). Map-style datasets and
:class:`~forgeml.data.IterableDataset` streams are both supported.

Devices: batches of host data are CPU tensors, as in PyTorch; the training
loop moves them to its device (``Trainer`` does, or ``x.to('cuda')``). A
:class:`~forgeml.data.TensorDataset` of CUDA tensors yields CUDA batches.
``pin_memory`` is accepted and has no effect (see :class:`DataLoader`).
"""

from __future__ import annotations

import math

from ..backend.random import Generator
from ._worker import fetch_batch, next_stream_batch
from .collate import default_collate, default_convert
from .iterable import IterableDataset
from .sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = ["DataLoader"]

_FROZEN = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")


class _DataLoaderIter:
    """One pass over a :class:`DataLoader` (one epoch), in the calling process."""

    def __init__(self, loader: DataLoader) -> None:
        self._loader = loader
        self._length = loader._length_or_none()
        if loader._is_iterable:
            self._stream = iter(loader.dataset)
        else:
            self._indices = iter(loader._index_sampler)

    def __iter__(self) -> _DataLoaderIter:
        return self

    def __next__(self):
        loader = self._loader
        if loader._is_iterable:
            return next_stream_batch(self._stream, loader.batch_size, loader.drop_last, loader.collate_fn)
        return loader._fetch(next(self._indices))

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("this DataLoader's sampler has no length")
        return self._length


class DataLoader:
    """Combines a dataset and a sampler, and yields batches of samples.

    Args:
        dataset: a map-style dataset (``__getitem__`` and ``__len__``) or an
            :class:`~forgeml.data.IterableDataset` (a stream: no sampler, no shuffle).
        batch_size: samples per batch (default 1). ``None`` turns automatic batching off:
            each sample is yielded on its own, through ``collate_fn`` (default :func:`default_convert`).
        shuffle: visit the samples in a new random order each epoch (a :class:`RandomSampler`
            drawing from ``generator``, or the default generator, so :func:`forgeml.manual_seed`
            makes the order reproducible).
        sampler: the order of the indices; mutually exclusive with ``shuffle``.
        batch_sampler: yields lists of indices; mutually exclusive with ``batch_size``,
            ``shuffle``, ``sampler`` and ``drop_last``.
        num_workers: how many worker processes load batches (0: load in the calling process).
            Each worker gets a copy of the dataset, seeds Python's ``random``, NumPy's global
            RNG and ForgeML's default generator with ``base_seed + worker_id`` (see
            :func:`~forgeml.data.get_worker_info`), fetches and collates whole batches; batches
            are yielded in sampler order. An exception in a worker is raised again here, naming
            the worker and carrying its traceback; a worker that dies raises a RuntimeError.
        collate_fn: merges a list of samples into a batch (default :func:`default_collate`).
        pin_memory: accepted; no effect. PyTorch copies batches into page-locked host memory
            so that ``.to('cuda', non_blocking=True)`` can overlap the copy with compute; ForgeML's
            batches stay in ordinary NumPy memory and CuPy copies them to the GPU from there, so
            the result is the same, without the overlap. ``pin_memory_device`` is accepted too.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        timeout: seconds to wait for a batch from the workers before raising (0: no limit).
        worker_init_fn: called as ``worker_init_fn(worker_id)`` in each worker after seeding.
        multiprocessing_context: a start method (``'fork'``, ``'spawn'``, ``'forkserver'``)
            or a ``multiprocessing`` context; default: Python's default.
        generator: the :class:`forgeml.Generator` that ``shuffle=True`` draws from.
        prefetch_factor: batches loaded in advance per worker (default 2 with workers).
        persistent_workers: keep the workers (and their dataset copies) alive between epochs.
        in_order: accepted; batches are always yielded in order.

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
        shuffle: bool | None = None,
        sampler: Sampler | None = None,
        batch_sampler=None,
        num_workers: int = 0,
        collate_fn=None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn=None,
        multiprocessing_context=None,
        generator: Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
    ) -> None:
        iterable = isinstance(dataset, IterableDataset)
        if not iterable and not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"DataLoader: dataset must be a map-style dataset (with __getitem__, and __len__ unless a sampler "
                f"or batch_sampler is given) or an IterableDataset, got {type(dataset).__name__}"
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
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        if prefetch_factor is not None and (not isinstance(prefetch_factor, int) or prefetch_factor < 1):
            raise ValueError(f"prefetch_factor option should be a positive integer, got {prefetch_factor!r}")
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"worker_init_fn should be callable, got {type(worker_init_fn).__name__}")
        if multiprocessing_context is not None and num_workers > 0:
            from ._multiprocessing import _context

            multiprocessing_context = _context(multiprocessing_context)
        if generator is not None and not isinstance(generator, Generator):
            raise TypeError(f"generator must be a forgeml.Generator or None, got {type(generator).__name__}")
        if shuffle not in (None, True, False):
            raise TypeError(f"shuffle should be a boolean value, but got shuffle={shuffle!r}")
        shuffle = bool(shuffle)
        if iterable:
            for name, value in (("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)):
                if value:
                    raise ValueError(
                        f"DataLoader with IterableDataset: expected unspecified {name} option, but got {name}={value!r}"
                    )
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
        if iterable:
            sampler = None  # the stream is its own order; batches are cut in _DataLoaderIter and the workers
        else:
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
        self.multiprocessing_context = multiprocessing_context
        self.in_order = in_order
        self._is_iterable = iterable
        self._iterator = None
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
        if self._is_iterable:
            return self.batch_size is not None
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def _fetch(self, index):
        """The batch for one element of the index sampler (a list of indices, or one index)."""
        return fetch_batch(self.dataset, index, self._auto_collation, self.collate_fn)

    def __iter__(self):
        """A new pass over the data (with ``persistent_workers``, the same workers start a new epoch)."""
        if self.num_workers == 0:
            return _DataLoaderIter(self)
        from ._multiprocessing import MultiProcessingIter

        if not self.persistent_workers:
            return MultiProcessingIter(self)
        if self._iterator is None or self._iterator._shutdown:
            self._iterator = MultiProcessingIter(self)
        else:
            self._iterator.reset(self)
        return self._iterator

    def _length_or_none(self):
        try:
            return len(self)
        except TypeError:
            return None

    def __len__(self) -> int:
        if self._is_iterable:
            n = len(self.dataset)  # TypeError when the stream has no length, as in PyTorch
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return len(self._index_sampler)

    def __repr__(self) -> str:
        return (
            f"DataLoader(dataset={type(self.dataset).__name__}, batch_size={self.batch_size}, "
            f"sampler={type(self.sampler).__name__}, drop_last={self.drop_last})"
        )
