"""1-D pooling (max, avg, adaptive avg, adaptive max): gradcheck in float64, PyTorch parity in float32, errors."""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
import forgeml.nn.functional as FF
from forgeml.autograd import gradcheck

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (function name, positional args, kwargs)
CASES = [
    ("max_pool1d", (3,), {}),
    ("max_pool1d", (3,), dict(stride=2, padding=1, ceil_mode=True)),
    ("max_pool1d", (2,), dict(stride=1, dilation=3)),
    ("max_pool1d", (4,), dict(stride=3, padding=2, ceil_mode=True)),
    ("avg_pool1d", (3,), {}),
    ("avg_pool1d", (3,), dict(stride=2, padding=1)),
    ("avg_pool1d", (4,), dict(stride=3, padding=2, ceil_mode=True, count_include_pad=False)),
    ("avg_pool1d", (4,), dict(stride=3, padding=1, ceil_mode=True)),
    ("adaptive_avg_pool1d", (4,), {}),
    ("adaptive_avg_pool1d", (11,), {}),
    ("adaptive_avg_pool1d", (15,), {}),
    ("adaptive_max_pool1d", (4,), {}),
    ("adaptive_max_pool1d", (3,), {}),
    ("adaptive_max_pool1d", (15,), {}),  # more outputs than inputs: overlapping windows
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize("shape", [(2, 3, 11), (3, 11)], ids=["batched", "unbatched"])
@pytest.mark.parametrize("name,args,kwargs", CASES, ids=IDS)
def test_matches_torch(name, args, kwargs, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    x[..., 4] = x[..., 5]  # a tie: the gradient goes to the first maximum, as in torch
    fx, tx = fm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    f_out, t_out = getattr(FF, name)(fx, *args, **kwargs), getattr(F, name)(tx, *args, **kwargs)
    assert tuple(f_out.shape) == tuple(t_out.shape)
    np.testing.assert_allclose(f_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-5, atol=1e-6)
    up = rng.standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(up))
    t_out.backward(torch.tensor(up))
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,args,kwargs", CASES, ids=IDS)
def test_gradcheck_float64(name, args, kwargs):
    rng = np.random.default_rng(1)
    x = fm.from_numpy(rng.permutation(2 * 3 * 11).reshape(2, 3, 11) * 0.1).requires_grad_()  # no ties
    assert gradcheck(lambda x: getattr(FF, name)(x, *args, **kwargs), (x,))


@pytest.mark.parametrize(
    "name,args,kwargs",
    [
        ("max_pool1d", (3,), dict(stride=2, padding=1)),
        ("adaptive_max_pool1d", (4,), {}),
        ("adaptive_max_pool1d", (7,), {}),
    ],
)
def test_return_indices_and_nan(name, args, kwargs):
    x = np.random.default_rng(2).standard_normal((2, 3, 9)).astype(np.float32)
    x[0, 1, 3] = np.nan  # a NaN wins its windows, as in torch
    f_val, f_idx = getattr(FF, name)(fm.tensor(x), *args, return_indices=True, **kwargs)
    t_val, t_idx = getattr(F, name)(torch.tensor(x), *args, return_indices=True, **kwargs)
    np.testing.assert_array_equal(f_idx.numpy(), t_idx.numpy())
    assert f_idx.dtype == fm.int64
    np.testing.assert_array_equal(f_val.numpy(), t_val.numpy())


def test_max_pool1d_integer_input():
    x = np.arange(24).reshape(2, 3, 4)[..., ::-1].copy()
    out = FF.max_pool1d(fm.tensor(x), 2)
    assert out.dtype == fm.int64  # as max_pool2d here (torch's CPU max_pool1d has no integer kernel)
    np.testing.assert_array_equal(out.numpy(), F.max_pool1d(torch.tensor(x, dtype=torch.float64), 2).numpy())


@pytest.mark.parametrize(
    "name,args",
    [
        ("MaxPool1d", (3, 2, 1)),
        ("AvgPool1d", (3, 2, 1, True, False)),
        ("AdaptiveAvgPool1d", (5,)),
        ("AdaptiveMaxPool1d", (5,)),
    ],
)
def test_layers_match_torch(name, args):
    f_mod, t_mod = getattr(fm.nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(f_mod) == repr(t_mod)
    assert list(f_mod.state_dict()) == list(t_mod.state_dict()) == []
    x = np.random.default_rng(3).standard_normal((2, 4, 10)).astype(np.float32)
    np.testing.assert_allclose(f_mod(fm.tensor(x)).numpy(), t_mod(torch.tensor(x)).numpy(), rtol=1e-6)


def test_max_pool1d_layer_return_indices():
    values, indices = fm.nn.MaxPool1d(2, return_indices=True)(fm.tensor([[[1.0, 3.0, 2.0, 0.0]]]))
    assert values.tolist() == [[[3.0, 2.0]]] and indices.tolist() == [[[1, 2]]]


def test_errors_name_the_problem():
    with pytest.raises(RuntimeError, match="expected a 2D \\(unbatched\\) or 3D"):
        FF.max_pool1d(fm.zeros(2, 3, 4, 4), 2)
    with pytest.raises(RuntimeError, match="pad should be between 0 and half of kernel size"):
        FF.avg_pool1d(fm.zeros(2, 3, 8), 2, padding=2)
    with pytest.raises(RuntimeError, match="too small"):
        FF.max_pool1d(fm.zeros(2, 3, 2), 3)
    with pytest.raises(RuntimeError, match="output_size must be positive"):
        FF.adaptive_max_pool1d(fm.zeros(2, 3, 4), 0)
    with pytest.raises(TypeError, match="kernel_size must be an int or a tuple of one int"):
        FF.max_pool1d(fm.zeros(2, 3, 4), (2, 2))
    with pytest.raises(RuntimeError, match="floating point"):
        FF.avg_pool1d(fm.zeros(2, 3, 4, dtype=fm.int64), 2)
