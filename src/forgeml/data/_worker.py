"""The DataLoader's worker processes: the loop each one runs, ``WorkerInfo`` and ``get_worker_info()``.

A worker holds its own copy of the dataset (inherited through ``fork`` or
pickled for ``spawn``), fetches and collates whole batches, and sends each
batch back pickled with protocol 5 (NumPy arrays travel as one raw buffer,
without a per-element encoding). Tasks and results are tagged with the epoch
and the batch number, so the main process can put batches back in order and
drop leftovers of an abandoned epoch.
"""

from __future__ import annotations

import os
import pickle
import queue
import random
import sys
import traceback

import numpy as np

__all__ = ["WorkerInfo", "get_worker_info"]

_worker_info = None
POLL_S = 1.0  # how often an idle worker checks that its parent is still alive


class WorkerInfo:
    """What a DataLoader worker process knows about itself (``torch.utils.data.get_worker_info()``).

    Attributes:
        id: this worker's number, in ``[0, num_workers)``.
        num_workers: how many workers the DataLoader runs.
        seed: the seed of this worker's random generators (``base_seed + id``).
        dataset: this worker's copy of the dataset.
    """

    __slots__ = ("dataset", "id", "num_workers", "seed")

    def __init__(self, id: int, num_workers: int, seed: int, dataset) -> None:
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "num_workers", num_workers)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "dataset", dataset)

    def __setattr__(self, name, value) -> None:
        raise RuntimeError(f"Cannot assign attributes to {type(self).__name__} objects")

    def __repr__(self) -> str:
        return f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed}, dataset={self.dataset!r})"


def get_worker_info() -> WorkerInfo | None:
    """Inside a DataLoader worker process, its :class:`WorkerInfo`; in the main process, None."""
    return _worker_info


class ExceptionWrapper:
    """An exception raised in a worker, carried to the main process with its traceback as text."""

    def __init__(self, exc_type: type, message: str) -> None:
        self.exc_type = exc_type
        self.message = message

    def reraise(self):
        """Raise the exception again in this process; its message names the worker and holds the traceback."""
        try:
            exc = self.exc_type(self.message)
        except Exception:  # noqa: BLE001 - an exception class whose constructor wants other arguments
            exc = RuntimeError(self.message)
        raise exc


class StreamEnd:
    """Sent by a worker whose copy of an iterable dataset is exhausted."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id


class Reset:
    """Sent to persistent workers at the start of an epoch: restart the iterable dataset's iterator."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch


def _seed_everything(seed: int, base_seed: int, worker_id: int) -> None:
    from ..backend.random import manual_seed

    random.seed(seed)
    manual_seed(seed)
    # NumPy's legacy global RNG gets a well-mixed state of (worker_id, base_seed), as PyTorch does
    np.random.seed(np.random.SeedSequence([worker_id, base_seed]).generate_state(4))


def fetch_batch(dataset, index, auto_collation: bool, collate_fn):
    """The batch of a map-style dataset for one element of the index sampler (shared with the main process)."""
    from .collate import default_collate

    if not auto_collation:
        return collate_fn(dataset[index])
    if collate_fn is default_collate:
        get_batch = getattr(dataset, "get_batch", None)
        if get_batch is not None:
            batch = get_batch(index)
            if batch is not NotImplemented:
                return batch
    getitems = getattr(dataset, "__getitems__", None)
    samples = getitems(index) if getitems is not None else [dataset[i] for i in index]
    return collate_fn(samples)


def next_stream_batch(iterator, batch_size, drop_last: bool, collate_fn):
    """The next batch of an iterable dataset's ``iterator`` (StopIteration when there is none)."""
    if batch_size is None:
        return collate_fn(next(iterator))
    samples = []
    for sample in iterator:
        samples.append(sample)
        if len(samples) == batch_size:
            break
    if not samples or (drop_last and len(samples) < batch_size):
        raise StopIteration
    return collate_fn(samples)


def worker_loop(
    dataset,
    iterable: bool,
    index_queue,
    result_queue,
    done_event,
    auto_collation: bool,
    batch_size,
    drop_last: bool,
    collate_fn,
    base_seed: int,
    init_fn,
    worker_id: int,
    num_workers: int,
    parent_pid: int,
) -> None:
    """The body of worker ``worker_id``: take ``(epoch, n, index)`` tasks, send back ``(epoch, n, pickled batch)``."""
    global _worker_info
    try:
        seed = base_seed + worker_id
        _seed_everything(seed, base_seed, worker_id)
        _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
        init_error = None
        try:
            if init_fn is not None:
                init_fn(worker_id)
        except Exception:  # noqa: BLE001 - the user's error, carried to the main process
            init_error = _wrap(worker_id, "worker_init_fn")
        stream = None
        exhausted = False
        while True:
            try:
                task = index_queue.get(timeout=POLL_S)
            except queue.Empty:
                if os.getppid() != parent_pid or done_event.is_set():
                    break
                continue
            if task is None or done_event.is_set():
                break
            if isinstance(task, Reset):
                stream, exhausted = None, False
                continue
            epoch, n, index = task
            if init_error is not None:
                data = init_error
            elif iterable:
                if exhausted:
                    data = StreamEnd(worker_id)
                else:
                    try:
                        if stream is None:
                            stream = iter(dataset)
                        data = next_stream_batch(stream, batch_size, drop_last, collate_fn)
                    except StopIteration:
                        data, exhausted = StreamEnd(worker_id), True
                    except Exception:  # noqa: BLE001 - the user's error, carried to the main process
                        data = _wrap(worker_id)
            else:
                try:
                    data = fetch_batch(dataset, index, auto_collation, collate_fn)
                except Exception:  # noqa: BLE001 - the user's error, carried to the main process
                    data = _wrap(worker_id)
            try:
                payload = pickle.dumps(data, protocol=5)
            except Exception:  # noqa: BLE001 - an unpicklable batch is reported, not a dead worker
                payload = pickle.dumps(_wrap(worker_id, "pickling the batch"), protocol=5)
            result_queue.put((epoch, n, payload))
            del data, payload
    except KeyboardInterrupt:
        pass
    result_queue.cancel_join_thread()  # never block this process's exit on results nobody will read


def _wrap(worker_id: int, where: str = "") -> ExceptionWrapper:
    exc_type, exc, _ = sys.exc_info()
    what = f" in {where}" if where else ""
    message = (
        f"Caught {exc_type.__name__}{what} in DataLoader worker process {worker_id}.\n"
        f"Original {''.join(traceback.format_exception(exc_type, exc, exc.__traceback__))}"
    )
    return ExceptionWrapper(exc_type, message)
