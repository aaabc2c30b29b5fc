"""``IterableDataset``: a dataset that is a stream of samples (``torch.utils.data.IterableDataset``).

With ``num_workers > 0`` every worker process iterates its own copy of the
dataset, so a dataset that should not be read twice splits the stream itself
with :func:`forgeml.data.get_worker_info`:

>>> from forgeml.data import IterableDataset, get_worker_info
>>> class Range(IterableDataset):
...     def __init__(self, n):
...         self.n = n
...     def __iter__(self):
...         info = get_worker_info()
...         start, step = (0, 1) if info is None else (info.id, info.num_workers)
...         return iter(range(start, self.n, step))
>>> sorted(Range(5))
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

__all__ = ["IterableDataset"]


class IterableDataset:
    """An abstract stream of samples: subclasses define ``__iter__`` (and optionally ``__len__``)."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__()")
