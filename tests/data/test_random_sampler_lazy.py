"""RandomSampler with replacement draws lazily, in chunks, so a huge num_samples costs nothing up front."""

import itertools
import tracemalloc

import numpy as np

import forgeml as fm
from forgeml.data import DataLoader, RandomSampler, TensorDataset


def test_huge_num_samples_is_drawn_lazily():
    ds = TensorDataset(fm.arange(10))
    sampler = RandomSampler(ds, replacement=True, num_samples=int(1e10), generator=fm.Generator().manual_seed(0))
    assert len(sampler) == int(1e10)
    tracemalloc.start()
    try:
        first = list(itertools.islice(iter(sampler), 100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # 1e10 int64 draws would be 80 GB
    assert len(first) == 100 and set(first) <= set(range(10)) and len(set(first)) > 5
    loader = DataLoader(ds, batch_size=16, sampler=sampler)
    assert len(loader) == 625_000_000
    assert next(iter(loader))[0].shape == (16,)


def test_chunked_draws_are_reproducible_and_complete():
    ds = range(7)
    for n in (1, 31, 32, 33, 100):
        a = list(RandomSampler(ds, replacement=True, num_samples=n, generator=fm.Generator().manual_seed(4)))
        b = list(RandomSampler(ds, replacement=True, num_samples=n, generator=fm.Generator().manual_seed(4)))
        assert a == b and len(a) == n and all(0 <= i < 7 for i in a)
    counts = np.bincount(list(RandomSampler(ds, replacement=True, num_samples=7000)), minlength=7)
    assert counts.min() > 800  # uniform
