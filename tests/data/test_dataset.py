"""Dataset, TensorDataset, ConcatDataset, Subset, random_split."""

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import ConcatDataset, Dataset, Subset, TensorDataset, random_split


class Squares(Dataset):
    def __init__(self, n):
        self.n = n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return i * i

    def __len__(self):
        return self.n


def test_tensor_dataset_items_and_len():
    x, y = fm.randn(5, 3), fm.arange(5)
    ds = TensorDataset(x, y)
    assert len(ds) == 5
    xi, yi = ds[2]
    np.testing.assert_array_equal(xi.numpy(), x.numpy()[2])
    assert yi.item() == 2 and yi.shape == ()


def test_tensor_dataset_accepts_numpy_arrays_without_copy():
    a = np.arange(6.0).reshape(3, 2)
    ds = TensorDataset(a)
    assert ds.tensors[0].numpy() is a


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((), ValueError, "at least one tensor"),
        ((fm.zeros(3), fm.zeros(4)), ValueError, r"Size mismatch.*\[3\], \[4\]"),
        ((fm.zeros(3), [1, 2, 3]), TypeError, "argument 1 must be a Tensor"),
        ((fm.tensor(1.0),), ValueError, "0-d"),
    ],
)
def test_tensor_dataset_errors(args, error, match):
    with pytest.raises(error, match=match):
        TensorDataset(*args)


def test_get_batch_is_one_fancy_index_and_equals_items():
    x, y = fm.randn(10, 2, 3), fm.arange(10) * 7
    ds = TensorDataset(x, y)
    idx = [9, 0, 3, 3, -1]
    bx, by = ds.get_batch(idx)
    assert bx.shape == (5, 2, 3) and by.dtype == fm.int64
    np.testing.assert_array_equal(bx.numpy(), x.numpy()[idx])
    np.testing.assert_array_equal(by.numpy(), y.numpy()[idx])
    items = ds.__getitems__(idx)
    assert len(items) == 5 and all(isinstance(s, tuple) and len(s) == 2 for s in items)
    for (xi, yi), i in zip(items, idx):
        np.testing.assert_array_equal(xi.numpy(), x.numpy()[i])
        assert yi.item() == y.numpy()[i]


def test_get_batch_out_of_range_names_the_index():
    ds = TensorDataset(fm.zeros(4))
    with pytest.raises(IndexError, match="index 4 is out of range for TensorDataset of length 4"):
        ds.get_batch([0, 4])


def test_get_batch_keeps_the_graph_of_tensors_that_require_grad():
    w = fm.randn(4, 2, requires_grad=True)
    ds = TensorDataset(w)
    (b,) = ds.get_batch([1, 1, 3])
    b.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy()[:, 0], [0, 2, 0, 1])


def test_subclass_overriding_getitem_is_not_bypassed():
    class Doubled(TensorDataset):
        def __getitem__(self, i):
            (x,) = super().__getitem__(i)
            return (x * 2,)

    ds = Doubled(fm.arange(4.0))
    assert ds.get_batch([1]) is NotImplemented
    assert Subset(ds, [0, 1]).get_batch([1]) is NotImplemented


def test_concat_dataset_and_add():
    a, b = Squares(3), Squares(2)
    ds = a + b
    assert isinstance(ds, ConcatDataset)
    assert len(ds) == 5 and ds.cumulative_sizes == [3, 5]
    assert [ds[i] for i in range(5)] == [0, 1, 4, 0, 1]
    assert ds[-1] == 1 and ds[-5] == 0
    with pytest.raises(ValueError, match="absolute value of index"):
        ds[-6]
    with pytest.raises(IndexError, match="out of range"):
        ds[5]
    with pytest.raises(ValueError, match="empty iterable"):
        ConcatDataset([])
    with pytest.raises(TypeError, match="dataset 1"):
        ConcatDataset([a, iter([1])])


def test_subset_maps_indices():
    ds = Squares(10)
    sub = Subset(ds, [7, 2, 5])
    assert len(sub) == 3
    assert [sub[i] for i in range(3)] == [49, 4, 25]
    assert sub.get_batch([0]) is NotImplemented  # Squares has no batched fetch
    assert sub.__getitems__([2, 0]) == [25, 49]


def test_subset_of_tensor_dataset_is_vectorised_and_follows_new_indices():
    x = fm.arange(10.0) * 10
    sub = Subset(TensorDataset(x), np.array([9, 8, 7, 1]))
    (b,) = sub.get_batch([0, 3, -1])
    np.testing.assert_array_equal(b.numpy(), [90, 10, 10])
    sub.indices = [0, 2]
    (b,) = sub.get_batch([1, 0])
    np.testing.assert_array_equal(b.numpy(), [20, 0])
    assert [s[0].item() for s in sub.__getitems__([1, 0])] == [20, 0]
    with pytest.raises(IndexError, match="out of range for Subset of length 2"):
        sub.get_batch([2])


def test_random_split_sizes_disjoint_and_complete():
    ds = Squares(10)
    parts = random_split(ds, [3, 7])
    assert [len(p) for p in parts] == [3, 7]
    all_indices = [i for p in parts for i in p.indices]
    assert sorted(all_indices) == list(range(10))


@pytest.mark.parametrize(
    ("n", "fractions", "sizes"),
    [(10, [0.3, 0.7], [3, 7]), (11, [0.5, 0.5], [6, 5]), (10, [0.33, 0.33, 0.34], [4, 3, 3]), (3, [1.0], [3])],
)
def test_random_split_fractions_follow_pytorchs_rounding(n, fractions, sizes):
    assert [len(p) for p in random_split(Squares(n), fractions)] == sizes


def test_random_split_fraction_sizes_match_torch():
    torch = pytest.importorskip("torch")
    for n, fractions in [(10, [0.33, 0.33, 0.34]), (101, [0.8, 0.1, 0.1]), (7, [0.5, 0.25, 0.25])]:
        theirs = [len(p) for p in torch.utils.data.random_split(range(n), fractions)]
        assert [len(p) for p in random_split(Squares(n), fractions)] == theirs


def test_random_split_is_reproducible():
    ds = Squares(20)
    fm.manual_seed(3)
    a = [p.indices for p in random_split(ds, [10, 10])]
    fm.manual_seed(3)
    b = [p.indices for p in random_split(ds, [10, 10])]
    c = [p.indices for p in random_split(ds, [10, 10], generator=fm.Generator().manual_seed(4))]
    d = [p.indices for p in random_split(ds, [10, 10], generator=fm.Generator().manual_seed(4))]
    assert a == b and c == d and a != c


def test_random_split_errors():
    with pytest.raises(ValueError, match="Sum of input lengths does not equal"):
        random_split(Squares(5), [2, 2])
    with pytest.raises(ValueError, match="Fraction at index 1 is not between 0 and 1"):
        random_split(Squares(5), [0.5, 1.5, -1.0])
    with pytest.warns(UserWarning, match="Length of split at index 1 is 0"):
        parts = random_split(Squares(1), [0.5, 0.5])
    assert [len(p) for p in parts] == [1, 0]


def test_abstract_dataset_names_what_is_missing():
    with pytest.raises(NotImplementedError, match="__getitem__"):
        Dataset()[0]
    with pytest.raises(NotImplementedError, match="__len__"):
        len(Dataset())
