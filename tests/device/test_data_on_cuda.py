"""The data layer and CUDA: host batches stay CPU tensors, CUDA tensors in a TensorDataset are indexed there."""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
from forgeml.data import (
    DataLoader,
    Subset,
    TensorDataset,
    WeightedRandomSampler,
    default_collate,
    default_convert,
    random_split,
)

CPU = fm.device("cpu")
CUDA = fm.device("cuda")


def _xy(n=10):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64) % 3
    return x, y


def test_host_batches_are_cpu_tensors_even_when_cuda_is_there(cuda_device):
    x, y = _xy()
    for batch in DataLoader(TensorDataset(x, y), batch_size=4, pin_memory=True):
        assert all(t.device == CPU for t in batch)
    batch = default_collate([{"a": np.ones(2), "b": 1.0, "c": 2}] * 3)
    assert all(v.device == CPU for v in batch.values())


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_tensor_dataset_of_cuda_tensors_yields_cuda_batches(cuda_device, shuffle):
    x, y = _xy()
    host = TensorDataset(x, y)
    device = TensorDataset(fm.tensor(x).to(cuda_device), fm.tensor(y).to(cuda_device))
    fm.manual_seed(3)
    expected = [[t.numpy().copy() for t in b] for b in DataLoader(host, batch_size=4, shuffle=shuffle)]
    fm.manual_seed(3)
    got = list(DataLoader(device, batch_size=4, shuffle=shuffle))
    assert len(got) == len(expected) == 3
    for batch, want in zip(got, expected):
        for t, w in zip(batch, want):
            assert t.device == CUDA
            np.testing.assert_array_equal(t.cpu().numpy(), w)


def test_cuda_samples_subsets_and_custom_collate(cuda_device):
    x, y = _xy()
    ds = TensorDataset(fm.tensor(x).to(cuda_device), fm.tensor(y).to(cuda_device))
    xi, yi = ds[7]
    assert xi.device == CUDA and yi.item() == 1
    np.testing.assert_array_equal(xi.cpu().numpy(), x[7])
    sub = Subset(ds, [9, 2, 5])
    bx, _ = next(iter(DataLoader(sub, batch_size=3)))
    assert bx.device == CUDA
    np.testing.assert_array_equal(bx.cpu().numpy(), x[[9, 2, 5]])
    # a custom collate_fn: samples fetched one by one (__getitems__), stacked on the device
    (cx, cy) = next(iter(DataLoader(ds, batch_size=4, collate_fn=lambda s: default_collate(list(s)))))
    assert cx.device == CUDA and cy.device == CUDA
    np.testing.assert_array_equal(cy.cpu().numpy(), y[:4])
    # an index tensor on the device works too
    gx, _ = ds.get_batch(fm.tensor([1, 0]).to(cuda_device))
    np.testing.assert_array_equal(gx.cpu().numpy(), x[[1, 0]])
    parts = random_split(ds, [0.5, 0.5])
    assert sum(len(p) for p in parts) == 10 and next(iter(DataLoader(parts[0], batch_size=5)))[0].device == CUDA


def test_requires_grad_tensors_keep_their_graph_on_the_device(cuda_device):
    x, y = _xy(6)
    w = fm.tensor(x).to(cuda_device).requires_grad_()
    ds = TensorDataset(w, fm.tensor(y).to(cuda_device))
    bx, _ = ds.get_batch([4, 1])
    assert bx.device == CUDA and bx.requires_grad
    bx.sum().backward()
    grad = w.grad.cpu().numpy()
    assert grad[[4, 1]].sum() == 6 and grad.sum() == 6


def test_raw_device_arrays_and_cuda_weights(cuda_device):
    from forgeml.backend.device import array_module

    xp = array_module("cuda")
    ds = TensorDataset(xp.asarray(np.ones((4, 2), np.float32)))
    assert ds[0][0].device == CUDA
    batch = default_collate([xp.asarray(np.ones(2)), xp.asarray(np.zeros(2))])
    assert batch.device == CUDA and batch.shape == (2, 2)
    assert default_convert(xp.asarray(np.ones(2))).device == CUDA
    sampler = WeightedRandomSampler(fm.tensor([0.0, 1.0, 0.0]).to(cuda_device), num_samples=5)
    assert list(sampler) == [1] * 5


def test_pin_memory_is_accepted_and_documented():
    x, y = _xy()
    loader = DataLoader(TensorDataset(x, y), batch_size=5, pin_memory=True, pin_memory_device="cuda")
    assert loader.pin_memory and loader.pin_memory_device == "cuda"
    assert "pin_memory" in DataLoader.__doc__ and "no effect" in DataLoader.__doc__
    assert all(t.device == CPU for b in loader for t in b)
