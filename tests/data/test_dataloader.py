"""DataLoader: batching, drop_last, samplers, shuffling determinism, the vectorised path."""

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    default_collate,
)


def per_item_collate(batch):
    """default_collate under another name: forces the per-item fetch path."""
    return default_collate(batch)


class Spy(Dataset):
    """Counts how it is read; offers get_batch and __getitems__ like the vectorised datasets."""

    def __init__(self, n, batch_ok=True):
        self.x = np.arange(n, dtype=np.float32) * 2
        self.calls = {"getitem": 0, "get_batch": 0, "getitems": 0}
        self.batch_ok = batch_ok

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.calls["getitem"] += 1
        return fm.tensor(self.x[i]), i

    def get_batch(self, indices):
        self.calls["get_batch"] += 1
        if not self.batch_ok:
            return NotImplemented
        idx = np.asarray(indices)
        return [fm.from_numpy(self.x[idx]), fm.from_numpy(idx.astype(np.int64))]


class SpyItems(Spy):
    """Spy with PyTorch's batched fetch of samples, __getitems__."""

    def __getitems__(self, indices):
        self.calls["getitems"] += 1
        return [(fm.tensor(self.x[i]), i) for i in indices]


def epoch(loader):
    return [[t.numpy().copy() for t in batch] for batch in loader]


def order(loader):
    """The sample indices in the order an epoch visits them (the dataset's last tensor is arange)."""
    return np.concatenate([batch[-1].numpy() for batch in loader]).tolist()


def test_batches_shapes_and_dtypes():
    x = fm.randn(10, 3, 2)
    y = fm.arange(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [tuple(b[0].shape) for b in batches] == [(4, 3, 2), (4, 3, 2), (2, 3, 2)]
    assert all(isinstance(b, list) and b[0].dtype == fm.float32 and b[1].dtype == fm.int64 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), x.numpy())
    assert order(loader) == list(range(10))
    assert len(iter(loader)) == 3


@pytest.mark.parametrize(
    ("n", "bs", "drop_last", "sizes"),
    [(10, 4, True, [4, 4]), (8, 4, True, [4, 4]), (10, 4, False, [4, 4, 2]), (3, 5, True, [])],
)
def test_drop_last(n, bs, drop_last, sizes):
    loader = DataLoader(TensorDataset(fm.arange(n)), batch_size=bs, drop_last=drop_last)
    assert [len(b[0]) for b in loader] == sizes and len(loader) == len(sizes)


def test_batch_size_none_yields_converted_samples():
    ds = Spy(3)
    out = list(DataLoader(ds, batch_size=None))
    assert len(out) == 3 and ds.calls["get_batch"] == 0
    assert isinstance(out[1], list) and out[1][0].item() == 2.0 and out[1][1] == 1


def test_custom_sampler_and_batch_sampler():
    ds = TensorDataset(fm.arange(6))
    loader = DataLoader(ds, batch_size=2, sampler=[5, 4, 3, 2, 1, 0])
    assert order(loader) == [5, 4, 3, 2, 1, 0]
    loader = DataLoader(ds, batch_sampler=[[0, 5], [1], [2, 3, 4]])
    assert [b[0].tolist() for b in loader] == [[0, 5], [1], [2, 3, 4]] and len(loader) == 3
    loader = DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 4, drop_last=True))
    assert [b[0].tolist() for b in loader] == [[0, 1, 2, 3]]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sampler": [0, 1], "shuffle": True}, ValueError, "sampler option is mutually exclusive with shuffle"),
        ({"batch_sampler": [[0]], "batch_size": 2}, ValueError, "batch_sampler option is mutually exclusive"),
        ({"batch_sampler": [[0]], "drop_last": True}, ValueError, "batch_sampler option is mutually exclusive"),
        ({"batch_sampler": [[0]], "shuffle": True}, ValueError, "batch_sampler option is mutually exclusive"),
        ({"batch_size": None, "drop_last": True}, ValueError, "mutually exclusive with drop_last"),
        ({"batch_size": 0}, ValueError, "batch_size should be a positive integer value"),
        ({"num_workers": -1}, ValueError, "num_workers option should be non-negative"),
        ({"prefetch_factor": 2}, ValueError, "prefetch_factor option could only be specified in multiprocessing"),
        ({"persistent_workers": True}, ValueError, "persistent_workers option needs num_workers > 0"),
        ({"generator": 3}, TypeError, "forgeml.Generator"),
        ({"shuffle": "yes"}, TypeError, "shuffle should be a boolean"),
    ],
)
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        DataLoader(TensorDataset(fm.arange(4)), **kwargs)


def test_not_a_dataset():
    with pytest.raises(TypeError, match="map-style dataset"):
        DataLoader(iter([1, 2]))


def test_dataset_without_len_works_with_a_sampler():
    class Unsized(Dataset):
        def __getitem__(self, i):
            return float(i)

    loader = DataLoader(Unsized(), batch_size=2, sampler=[3, 1, 4])
    assert [b.tolist() for b in loader] == [[3.0, 1.0], [4.0]]
    assert "DataLoader(dataset=Unsized, batch_size=2" in repr(loader)


def test_attributes_frozen_after_init():
    loader = DataLoader(TensorDataset(fm.arange(4)), batch_size=2)
    with pytest.raises(ValueError, match="batch_size attribute should not be set after DataLoader is initialized"):
        loader.batch_size = 3
    loader.collate_fn = per_item_collate  # allowed, as in PyTorch
    assert len(list(loader)) == 2


def test_shuffle_visits_every_index_once_per_epoch_in_a_new_order():
    loader = DataLoader(TensorDataset(fm.arange(37)), batch_size=8, shuffle=True)
    a, b = order(loader), order(loader)
    assert sorted(a) == sorted(b) == list(range(37))
    assert a != b and a != list(range(37))


def test_shuffle_reproducible_under_manual_seed():
    ds = TensorDataset(fm.arange(50))
    fm.manual_seed(11)
    a = [order(DataLoader(ds, batch_size=7, shuffle=True)) for _ in range(2)]
    fm.manual_seed(11)
    b = [order(DataLoader(ds, batch_size=7, shuffle=True)) for _ in range(2)]
    fm.manual_seed(12)
    c = order(DataLoader(ds, batch_size=7, shuffle=True))
    assert a == b and a[0] != a[1] and c != a[0]


def test_shuffle_reproducible_with_a_generator():
    ds = TensorDataset(fm.arange(50))

    def two_epochs(seed):
        loader = DataLoader(ds, batch_size=7, shuffle=True, generator=fm.Generator().manual_seed(seed))
        return order(loader), order(loader)

    fm.manual_seed(0)
    a = two_epochs(1)
    fm.manual_seed(99)  # the default generator plays no part
    assert two_epochs(1) == a
    b = two_epochs(2)
    assert b != a
    for epoch_order in (*a, *b):
        assert sorted(epoch_order) == list(range(50))


def test_vectorised_path_is_used_with_the_default_collate():
    ds = SpyItems(10)
    batches = list(DataLoader(ds, batch_size=4))
    assert ds.calls == {"getitem": 0, "get_batch": 3, "getitems": 0}
    assert batches[0][0].tolist() == [0.0, 2.0, 4.0, 6.0]
    assert batches[2][1].tolist() == [8, 9]


def test_custom_collate_gets_samples_from_getitems():
    ds = SpyItems(10)
    seen = []
    list(DataLoader(ds, batch_size=4, collate_fn=seen.append))
    assert ds.calls == {"getitem": 0, "get_batch": 0, "getitems": 3}
    assert [i for _, i in seen[0]] == [0, 1, 2, 3]


def test_falls_back_to_per_item_when_get_batch_declines():
    ds = Spy(10, batch_ok=False)
    batches = list(DataLoader(ds, batch_size=4))
    assert ds.calls["getitem"] == 10 and ds.calls["get_batch"] == 3
    assert batches[0][0].tolist() == [0.0, 2.0, 4.0, 6.0] and batches[0][1].dtype == fm.int64


@pytest.mark.parametrize("wrap", ["tensor", "subset"])
def test_vectorised_path_equals_per_item_path(wrap):
    ds = TensorDataset(fm.randn(23, 2, 2), fm.randint(0, 5, (23,)), fm.arange(23))
    if wrap == "subset":
        ds = Subset(ds, np.random.default_rng(0).permutation(23)[:17].tolist())
    fast = DataLoader(ds, batch_size=5, shuffle=True, generator=fm.Generator().manual_seed(3))
    slow = DataLoader(
        ds, batch_size=5, shuffle=True, generator=fm.Generator().manual_seed(3), collate_fn=per_item_collate
    )
    a, b = epoch(fast), epoch(slow)
    assert len(a) == len(b) == len(fast)
    for ba, bb in zip(a, b):
        for ta, tb in zip(ba, bb):
            assert ta.dtype == tb.dtype and ta.shape == tb.shape
            np.testing.assert_array_equal(ta, tb)


def test_dict_samples_through_the_loader():
    class Records(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"x": np.full(2, i, dtype=np.float32), "meta": {"id": i, "name": f"r{i}"}}

    batch = next(iter(DataLoader(Records(), batch_size=3)))
    assert batch["x"].shape == (3, 2) and batch["x"].dtype == fm.float32
    assert batch["meta"]["id"].tolist() == [0, 1, 2] and batch["meta"]["name"] == ["r0", "r1", "r2"]


def test_num_workers_runs_in_process_with_the_same_batches():
    ds = TensorDataset(fm.arange(9))
    loader = DataLoader(ds, batch_size=4, num_workers=2, pin_memory=True, persistent_workers=True)
    assert [b[0].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


def test_random_sampler_with_replacement_through_loader():
    ds = TensorDataset(fm.arange(5))
    loader = DataLoader(ds, batch_size=4, sampler=RandomSampler(ds, replacement=True, num_samples=12))
    idx = order(loader)
    assert len(idx) == 12 and set(idx) <= set(range(5)) and len(loader) == 3


def test_sequential_batches_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((11, 3)).astype(np.float32)
    y = np.arange(11)
    ours = DataLoader(TensorDataset(fm.tensor(x), fm.tensor(y)), batch_size=4, drop_last=False)
    theirs = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=4, drop_last=False
    )
    assert len(ours) == len(theirs)
    for (ox, oy), (tx, ty) in zip(ours, theirs):
        np.testing.assert_array_equal(ox.numpy(), tx.numpy())
        np.testing.assert_array_equal(oy.numpy(), ty.numpy())
        assert str(tx.dtype) == f"torch.{ox.dtype.name}" and str(ty.dtype) == f"torch.{oy.dtype.name}"
