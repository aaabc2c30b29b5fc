"""The DataLoader's multi-process iterator: worker processes fetch batches, the main process yields them in order.

Tasks go round-robin to the workers, at most ``prefetch_factor`` waiting per
worker. Each batch comes back through one shared result queue; batches that
arrive early wait in a buffer until their turn. A worker that dies makes the
iterator raise (it never waits on a dead worker), ``timeout`` bounds each
wait, and the workers end when the iterator is exhausted, deleted or garbage
collected (with ``persistent_workers`` they live as long as the DataLoader).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import queue
import time

import numpy as np

from . import _worker

__all__ = ["MultiProcessingIter"]

CHECK_S = 1.0  # how often a waiting main process checks that its workers are alive
JOIN_S = 1.0  # how long shutdown waits for the workers to exit before terminating them (results are not needed)


def _context(value):
    if value is None:
        return multiprocessing.get_context()
    if isinstance(value, str):
        return multiprocessing.get_context(value)
    if hasattr(value, "Process") and hasattr(value, "Queue"):
        return value
    raise TypeError(
        "multiprocessing_context option should be a valid context object or a string specifying the start method "
        f"('fork', 'spawn' or 'forkserver'), but got multiprocessing_context={value!r}"
    )


def base_seed(generator) -> int:
    """The workers' base seed for this epoch: drawn from the state of ``generator`` (the default one when None).

    It is derived without advancing the generator, so a shuffled order is the
    same with and without workers, and it is reproducible under ``manual_seed``.
    """
    from ..backend.random import numpy_generator

    state = numpy_generator(generator).bit_generator.state["state"]
    words = [int(state["state"]) & (2**64 - 1), int(state["state"]) >> 64, int(state["inc"]) & (2**64 - 1)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


class MultiProcessingIter:
    """One pass (or, with persistent workers, every pass) over a DataLoader, with worker processes."""

    def __init__(self, loader) -> None:
        self._dataset = loader.dataset
        self._iterable = loader._is_iterable
        self._index_sampler = loader._index_sampler
        self._num_workers = loader.num_workers
        self._prefetch = loader.prefetch_factor
        self._timeout = loader.timeout
        self._persistent = loader.persistent_workers
        self._length = loader._length_or_none()
        self._epoch = 0
        self._shutdown = False
        ctx = _context(loader.multiprocessing_context)
        self._done_event = ctx.Event()
        self._result_queue = ctx.Queue()
        self._index_queues, self._workers = [], []
        seed = base_seed(loader.generator)
        for worker_id in range(self._num_workers):
            index_queue = ctx.Queue()
            index_queue.cancel_join_thread()
            process = ctx.Process(
                target=_worker.worker_loop,
                args=(
                    self._dataset,
                    self._iterable,
                    index_queue,
                    self._result_queue,
                    self._done_event,
                    loader._auto_collation,
                    loader.batch_size,
                    loader.drop_last,
                    loader.collate_fn,
                    seed,
                    loader.worker_init_fn,
                    worker_id,
                    self._num_workers,
                    os.getpid(),
                ),
                daemon=True,
            )
            process.start()
            self._index_queues.append(index_queue)
            self._workers.append(process)
        self._start_epoch()

    # -- epochs ---------------------------------------------------------------
    def _start_epoch(self) -> None:
        self._sampler_iter = iter(self._index_sampler) if not self._iterable else None
        self._send_idx = 0
        self._rcvd_idx = 0
        self._task_info: dict = {}  # batch number -> [worker id] or [worker id, payload]
        self._active = [True] * self._num_workers
        self._next_worker = itertools.cycle(range(self._num_workers))
        self._sampler_done = False
        for _ in range(self._prefetch * self._num_workers):
            self._try_put_index()

    def reset(self, loader) -> None:
        """Start a new epoch on the same (persistent) workers."""
        self._index_sampler = loader._index_sampler
        self._length = loader._length_or_none()
        self._epoch += 1
        for index_queue in self._index_queues:
            index_queue.put(_worker.Reset(self._epoch))
        self._start_epoch()

    def _try_put_index(self) -> None:
        if self._sampler_done or not any(self._active):
            return
        if self._iterable:
            index = None
        else:
            try:
                index = next(self._sampler_iter)
            except StopIteration:
                self._sampler_done = True
                return
        for _ in range(self._num_workers):
            worker_id = next(self._next_worker)
            if self._active[worker_id]:
                break
        self._index_queues[worker_id].put((self._epoch, self._send_idx, index))
        self._task_info[self._send_idx] = [worker_id]
        self._send_idx += 1

    # -- results ----------------------------------------------------------------
    def __iter__(self) -> MultiProcessingIter:
        return self

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("this DataLoader has no length (its sampler or iterable dataset has none)")
        return self._length

    def __next__(self):
        if self._shutdown:
            raise StopIteration
        while True:
            while self._rcvd_idx < self._send_idx:
                info = self._task_info[self._rcvd_idx]
                if len(info) == 2 or self._active[info[0]]:
                    break
                del self._task_info[self._rcvd_idx]  # its worker's stream has ended: nothing will come
                self._rcvd_idx += 1
            else:
                if not self._persistent:
                    self._shutdown_workers()
                raise StopIteration
            info = self._task_info[self._rcvd_idx]
            if len(info) == 2:
                del self._task_info[self._rcvd_idx]
                self._rcvd_idx += 1
                return self._process(info[1])
            n, data = self._get_data()
            if isinstance(data, _worker.StreamEnd):
                self._active[data.worker_id] = False  # its pending tasks are skipped above
                continue
            if n != self._rcvd_idx:
                if n in self._task_info:
                    self._task_info[n].append(data)
                continue
            del self._task_info[n]
            self._rcvd_idx += 1
            return self._process(data)

    def _process(self, data):
        self._try_put_index()
        if isinstance(data, _worker.ExceptionWrapper):
            data.reraise()
        return data

    def _get_data(self):
        """The next ``(batch number, data)`` of this epoch from any worker; raises on timeout or a dead worker."""
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            wait = CHECK_S if deadline is None else max(0.0, min(CHECK_S, deadline - time.monotonic()))
            try:
                epoch, n, payload = self._result_queue.get(timeout=wait)
            except queue.Empty:
                self._check_workers()
                if deadline is not None and time.monotonic() >= deadline:
                    raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds") from None
                continue
            if epoch != self._epoch:
                continue  # a leftover of an epoch that was not run to the end
            return n, pickle.loads(payload)

    def _check_workers(self) -> None:
        dead = [(w.pid, w.exitcode) for w in self._workers if not w.is_alive()]
        if dead:
            self._shutdown_workers(graceful=False)
            detail = ", ".join(f"pid {pid} (exit code {code})" for pid, code in dead)
            raise RuntimeError(
                f"DataLoader worker(s) exited unexpectedly: {detail}. A worker may have been killed (for example "
                "by the out-of-memory killer) or crashed; run with num_workers=0 to see the error in-process."
            )

    # -- shutdown ---------------------------------------------------------------
    def _shutdown_workers(self, graceful: bool = True) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        try:
            self._done_event.set()
            for index_queue in self._index_queues:
                try:
                    index_queue.put(None)
                except (OSError, ValueError):
                    pass
            deadline = time.monotonic() + (JOIN_S if graceful else 0.0)
            for w in self._workers:
                w.join(timeout=max(0.0, deadline - time.monotonic()))
            for w in self._workers:
                if w.is_alive():
                    w.terminate()
                    w.join(timeout=1.0)
            for q in [*self._index_queues, self._result_queue]:
                q.cancel_join_thread()
                q.close()
        except Exception:  # noqa: BLE001 - during interpreter shutdown modules may already be gone
            pass

    def __del__(self) -> None:
        self._shutdown_workers()
