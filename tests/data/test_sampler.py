"""Samplers: order, length, reproducibility under manual_seed and Generators, validation."""

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import (
    BatchSampler,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)


def test_sequential():
    s = SequentialSampler(range(5))
    assert list(s) == [0, 1, 2, 3, 4] and len(s) == 5


def test_random_sampler_is_a_permutation_each_epoch():
    s = RandomSampler(range(50))
    first, second = list(s), list(s)
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second  # a new order each epoch
    assert len(s) == 50


def test_random_sampler_reproducible_with_manual_seed_and_generator():
    fm.manual_seed(7)
    a = list(RandomSampler(range(30)))
    fm.manual_seed(7)
    b = list(RandomSampler(range(30)))
    fm.manual_seed(8)
    c = list(RandomSampler(range(30)))
    assert a == b and a != c
    g1, g2 = fm.Generator().manual_seed(1), fm.Generator().manual_seed(1)
    assert list(RandomSampler(range(30), generator=g1)) == list(RandomSampler(range(30), generator=g2))
    # a sampler with its own generator leaves the default stream alone
    fm.manual_seed(7)
    list(RandomSampler(range(30), generator=fm.Generator().manual_seed(5)))
    assert list(RandomSampler(range(30))) == a


def test_random_sampler_num_samples_beyond_length_without_replacement():
    s = RandomSampler(range(4), num_samples=10)
    out = list(s)
    assert len(out) == len(s) == 10
    assert sorted(out[:4]) == sorted(out[4:8]) == [0, 1, 2, 3]
    assert len(set(out[8:])) == 2


def test_random_sampler_with_replacement():
    out = list(RandomSampler(range(3), replacement=True, num_samples=300))
    assert len(out) == 300 and set(out) == {0, 1, 2}
    assert max(np.bincount(out)) < 150


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"replacement": 1}, TypeError, "replacement should be a boolean value"),
        ({"num_samples": 0}, ValueError, "num_samples should be a positive integer value, but got num_samples=0"),
        ({"num_samples": 2.5}, ValueError, "num_samples should be a positive integer"),
        ({"generator": np.random.default_rng()}, TypeError, "forgeml.Generator"),
    ],
)
def test_random_sampler_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        RandomSampler(range(3), **kwargs)
    with pytest.raises(ValueError, match="num_samples=0"):
        RandomSampler([])


def test_subset_random_sampler():
    s = SubsetRandomSampler([10, 20, 30, 40], generator=fm.Generator().manual_seed(0))
    out = list(s)
    assert sorted(out) == [10, 20, 30, 40] and len(s) == 4


def test_weighted_random_sampler():
    s = WeightedRandomSampler([0.0, 1.0, 3.0], num_samples=400)
    out = np.array(list(s))
    assert len(out) == len(s) == 400
    counts = np.bincount(out, minlength=3)
    assert counts[0] == 0 and 200 < counts[2] < 400 and counts[1] > 50
    no_repeat = list(WeightedRandomSampler([1.0, 1.0, 0.0], num_samples=2, replacement=False))
    assert sorted(no_repeat) == [0, 1]
    with pytest.raises(ValueError, match="without replacement from 2 non-zero weights"):
        WeightedRandomSampler([1.0, 1.0, 0.0], num_samples=3, replacement=False)
    with pytest.raises(ValueError, match="non-negative"):
        WeightedRandomSampler([1.0, -1.0], num_samples=3)


@pytest.mark.parametrize(
    ("drop_last", "expected"), [(False, [[0, 1, 2], [3, 4, 5], [6]]), (True, [[0, 1, 2], [3, 4, 5]])]
)
def test_batch_sampler(drop_last, expected):
    s = BatchSampler(SequentialSampler(range(7)), batch_size=3, drop_last=drop_last)
    assert list(s) == expected and len(s) == len(expected)


def test_batch_sampler_takes_any_iterable_and_matches_torch():
    torch = pytest.importorskip("torch")
    for n, bs, drop in [(10, 3, False), (10, 3, True), (9, 3, True), (2, 5, False), (2, 5, True)]:
        ours = BatchSampler(list(range(n)), bs, drop)
        theirs = torch.utils.data.BatchSampler(list(range(n)), bs, drop)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "match"),
    [
        (0, False, "batch_size should be a positive integer value, but got batch_size=0"),
        (True, False, "batch_size"),
        (2, 1, "drop_last should be a boolean"),
    ],
)
def test_batch_sampler_errors(batch_size, drop_last, match):
    with pytest.raises(ValueError, match=match):
        BatchSampler(range(4), batch_size, drop_last)
