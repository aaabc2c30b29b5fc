"""DataLoader with worker processes: the same batches as in-process, seeding, errors, lifetimes, timeouts."""

import gc
import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import DataLoader, Dataset, IterableDataset, TensorDataset, get_worker_info


def batches(loader):
    return [[np.array(t.numpy(), copy=True) for t in b] if isinstance(b, (list, tuple)) else b for b in loader]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


class Squares(Dataset):
    """Per-item dataset (no get_batch): the fetch really happens in the worker."""

    def __len__(self):
        return 23

    def __getitem__(self, i):
        return np.full(3, i * i, dtype=np.float32), i


class WhoAmI(Dataset):
    """Each sample says which worker made it and what that worker's RNGs produce."""

    def __init__(self, n=8):
        self.n = n
        self.tag = "main"

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        info = get_worker_info()
        return {
            "i": i,
            "pid": os.getpid(),
            "id": -1 if info is None else info.id,
            "num_workers": -1 if info is None else info.num_workers,
            "seed": -1 if info is None else info.seed,
            "same_dataset": info is not None and info.dataset is self,
            "tag": self.tag,
            "py": random.random(),
            "np": float(np.random.rand()),
            "fm": float(fm.rand(1).item()),
        }


def no_collate(batch):
    return batch


def test_same_batches_as_in_process():
    ds = TensorDataset(fm.arange(50), fm.randn(50, 3))
    for kwargs in ({"batch_size": 7}, {"batch_size": 7, "drop_last": True}, {"batch_size": 4}):
        assert_same(batches(DataLoader(ds, num_workers=2, **kwargs)), batches(DataLoader(ds, **kwargs)))
    assert_same(
        batches(DataLoader(Squares(), batch_size=5, num_workers=3)), batches(DataLoader(Squares(), batch_size=5))
    )


def test_shuffle_with_a_seeded_generator_gives_the_in_process_order():
    ds = TensorDataset(fm.arange(64))

    def run(workers, seed):
        loader = DataLoader(
            ds, batch_size=6, shuffle=True, num_workers=workers, generator=fm.Generator().manual_seed(seed)
        )
        return [b[0].tolist() for epoch in range(2) for b in loader]

    assert run(2, 5) == run(0, 5)
    assert run(2, 5) != run(2, 6)


def test_no_auto_batching_and_custom_collate():
    got = [s for s in DataLoader(Squares(), batch_size=None, num_workers=2)]
    assert [s[1] for s in got] == list(range(23))
    loader = DataLoader(Squares(), batch_size=4, num_workers=2, collate_fn=lambda b: [s[1] for s in b])
    assert [i for b in loader for i in b] == list(range(23))


def test_worker_info_and_per_worker_seeds():
    assert get_worker_info() is None
    fm.manual_seed(3)
    samples = [s for b in DataLoader(WhoAmI(), batch_size=2, num_workers=2, collate_fn=no_collate) for s in b]
    assert [s["i"] for s in samples] == list(range(8))
    assert [s["id"] for s in samples] == [0, 0, 1, 1, 0, 0, 1, 1]  # batches go round-robin
    assert {s["num_workers"] for s in samples} == {2}
    assert all(s["same_dataset"] for s in samples)  # info.dataset is the worker's own copy
    by_worker = {s["id"]: s for s in samples}
    assert by_worker[1]["seed"] == by_worker[0]["seed"] + 1
    assert len({s["pid"] for s in samples}) == 2 and os.getpid() not in {s["pid"] for s in samples}
    for key in ("py", "np", "fm"):
        assert by_worker[0][key] != by_worker[1][key], key
    fm.manual_seed(3)
    again = [s for b in DataLoader(WhoAmI(), batch_size=2, num_workers=2, collate_fn=no_collate) for s in b]
    for key in ("seed", "py", "np", "fm"):  # reproducible under manual_seed
        assert [s[key] for s in again] == [s[key] for s in samples], key


def test_worker_init_fn_runs_in_each_worker():
    def init(worker_id):
        get_worker_info().dataset.tag = f"w{worker_id}"

    loader = DataLoader(WhoAmI(), batch_size=2, num_workers=2, worker_init_fn=init, collate_fn=no_collate)
    assert {(s["id"], s["tag"]) for b in loader for s in b} == {(0, "w0"), (1, "w1")}


class Faulty(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i == 6:
            raise_deep(i)
        return i


def raise_deep(i):
    raise ValueError(f"sample {i} is corrupt")


def test_worker_exception_is_reraised_with_the_worker_and_traceback():
    loader = DataLoader(Faulty(), batch_size=2, num_workers=2)
    it = iter(loader)
    assert next(it).tolist() == [0, 1]
    assert next(it).tolist() == [2, 3]
    assert next(it).tolist() == [4, 5]
    with pytest.raises(ValueError) as info:
        next(it)
    message = str(info.value)
    assert "DataLoader worker process 1" in message and "sample 6 is corrupt" in message
    assert "Original Traceback" in message and "raise_deep" in message
    assert next(it).tolist() == [8, 9]  # the iterator goes on, as PyTorch's does
    with pytest.raises(ZeroDivisionError, match="in worker_init_fn in DataLoader worker process 0"):
        list(DataLoader(Squares(), num_workers=1, worker_init_fn=lambda w: 1 / 0))


def test_persistent_workers_are_reused_across_epochs():
    pids = lambda loader: {s["pid"] for b in loader for s in b}  # noqa: E731
    persistent = DataLoader(WhoAmI(), batch_size=2, num_workers=2, persistent_workers=True, collate_fn=no_collate)
    first = pids(persistent)
    assert pids(persistent) == first and len(first) == 2
    fresh = DataLoader(WhoAmI(), batch_size=2, num_workers=2, collate_fn=no_collate)
    assert pids(fresh).isdisjoint(pids(fresh))
    # an epoch abandoned half-way does not leak its batches into the next one
    it = iter(persistent)
    next(it)
    assert [s["i"] for b in persistent for s in b] == list(range(8))
    workers = persistent._iterator._workers
    del persistent, it
    gc.collect()
    assert not any(w.is_alive() for w in workers)  # the loader's garbage collection ends them


def test_workers_end_when_the_iterator_is_exhausted_or_deleted():
    loader = DataLoader(TensorDataset(fm.arange(40)), batch_size=4, num_workers=2)
    it = iter(loader)
    workers = it._workers
    assert all(w.is_alive() for w in workers)
    list(it)
    assert not any(w.is_alive() for w in workers)
    it = iter(loader)
    next(it)
    workers = it._workers
    del it
    gc.collect()
    assert not any(w.is_alive() for w in workers)
    assert multiprocessing.active_children() == []


class Slow(Dataset):
    def __init__(self, delay):
        self.delay = delay

    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(self.delay)
        return i


def test_timeout():
    it = iter(DataLoader(Slow(3.0), batch_size=1, num_workers=1, timeout=0.3))
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"timed out after 0\.3 seconds"):
        next(it)
    assert time.monotonic() - start < 2.5
    del it
    assert [b.item() for b in DataLoader(Slow(0.01), num_workers=1, timeout=5)] == [0, 1, 2, 3]


def test_a_killed_worker_raises_instead_of_hanging():
    it = iter(DataLoader(Slow(30.0), batch_size=1, num_workers=2))
    time.sleep(0.2)
    os.kill(it._workers[0].pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exited unexpectedly: pid \d+ \(exit code -9\)"):
        next(it)
    assert time.monotonic() - start < 10
    assert not any(w.is_alive() for w in it._workers)


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))

    def __len__(self):
        return self.n


def test_iterable_dataset_sharded_with_worker_info():
    assert [b.tolist() for b in DataLoader(Stream(10), batch_size=4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    got = [b.tolist() for b in DataLoader(Stream(23), batch_size=4, num_workers=3)]
    # worker w yields w, w+3, ...: batches come round-robin, and a worker that runs out drops out
    assert got == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11], [12, 15, 18, 21], [13, 16, 19, 22], [14, 17, 20]]
    got = [b.tolist() for b in DataLoader(Stream(23), batch_size=4, num_workers=3, drop_last=True)]
    assert got == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11], [12, 15, 18, 21], [13, 16, 19, 22]]
    persistent = DataLoader(Stream(9), batch_size=2, num_workers=2, persistent_workers=True)
    assert [b.tolist() for b in persistent] == [b.tolist() for b in persistent] == [[0, 2], [1, 3], [4, 6], [5, 7], [8]]
    assert len(DataLoader(Stream(9), batch_size=2)) == 5
    with pytest.raises(ValueError, match="expected unspecified shuffle option"):
        DataLoader(Stream(3), shuffle=True)


def test_options():
    loader = DataLoader(Squares(), batch_size=4, num_workers=2, pin_memory=True)
    assert loader.prefetch_factor == 2
    loader = DataLoader(
        Squares(), batch_size=4, num_workers=1, prefetch_factor=1, multiprocessing_context="spawn", timeout=60
    )
    assert [b[1].tolist() for b in loader][:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="prefetch_factor"):
        DataLoader(Squares(), num_workers=1, prefetch_factor=0)
    with pytest.raises(TypeError, match="multiprocessing_context"):
        DataLoader(Squares(), num_workers=1, multiprocessing_context=3)
