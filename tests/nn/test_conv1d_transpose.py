"""conv1d, conv_transpose1d/2d and their layers: gradcheck (float64), torch parity (float32), state_dicts, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import forgeml as fm
import forgeml.nn.functional as FF
from forgeml.autograd import gradcheck

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _both(rng, shape):
    """The same float32 values as a ForgeML and a torch leaf that require grad."""
    a = rng.standard_normal(shape).astype(np.float32)
    return fm.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def _close(ours, theirs, rtol=1e-4, atol=1e-5, msg=""):
    assert tuple(ours.shape) == tuple(theirs.shape), msg
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol, err_msg=msg)


def _parity(f_fn, t_fn, x_shape, w_shape, b_size, kwargs, seed=0):
    """Forward values and the gradients of input, weight and bias agree with torch's."""
    rng = np.random.default_rng(seed)
    fx, tx = _both(rng, x_shape)
    fw, tw = _both(rng, w_shape)
    fb, tb = _both(rng, (b_size,)) if b_size else (None, None)
    f_out, t_out = f_fn(fx, fw, fb, **kwargs), t_fn(tx, tw, tb, **kwargs)
    _close(f_out, t_out, msg="forward")
    up = rng.standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(up))
    t_out.backward(torch.tensor(up))
    for name, f, t in (("input", fx, tx), ("weight", fw, tw), ("bias", fb, tb)):
        if f is not None:
            _close(f.grad, t.grad, msg=f"grad of {name}")


# (input shape, weight shape, bias size, kwargs)
CONV1D_CASES = [
    ((2, 3, 9), (4, 3, 3), 4, {}),
    ((2, 3, 9), (4, 3, 3), 0, dict(stride=2, padding=1)),
    ((1, 4, 10), (6, 2, 3), 6, dict(groups=2, dilation=2, padding=2)),
    ((2, 4, 7), (4, 1, 3), 4, dict(groups=4, padding="same")),
    ((2, 3, 8), (5, 3, 4), 5, dict(padding="same", dilation=2)),  # odd total pad: the extra goes right
    ((2, 3, 8), (5, 3, 3), 5, dict(padding="valid", stride=3)),
    ((3, 9), (2, 3, 3), 2, dict(padding=1)),  # unbatched
]

TRANSPOSE2D_CASES = [
    ((2, 4, 5, 6), (4, 3, 3, 3), 3, {}),
    ((2, 4, 5, 6), (4, 3, 3, 3), 3, dict(stride=2, padding=1, output_padding=1)),
    ((1, 4, 4, 5), (4, 2, 3, 2), 4, dict(groups=2, stride=(1, 2), dilation=2)),
    ((2, 3, 4, 4), (3, 2, 3, 3), 0, dict(stride=1, dilation=2, output_padding=(1, 0))),  # padding < dilation
    ((2, 3, 4, 5), (3, 2, 1, 1), 2, dict(stride=2)),
    ((3, 4, 5), (3, 2, 3, 2), 2, dict(stride=(2, 3), padding=(1, 0), output_padding=(0, 2))),  # unbatched
]

TRANSPOSE1D_CASES = [
    ((2, 4, 9), (4, 3, 3), 3, dict(stride=3, padding=1, output_padding=2)),
    ((1, 4, 6), (4, 1, 5), 4, dict(groups=4, dilation=2, padding=3)),
    ((4, 6), (4, 2, 2), 2, dict(stride=2)),  # unbatched
]


@pytest.mark.parametrize("x_shape,w_shape,b,kwargs", CONV1D_CASES)
def test_conv1d_matches_torch(x_shape, w_shape, b, kwargs):
    _parity(FF.conv1d, F.conv1d, x_shape, w_shape, b, kwargs)


@pytest.mark.parametrize("x_shape,w_shape,b,kwargs", TRANSPOSE2D_CASES)
def test_conv_transpose2d_matches_torch(x_shape, w_shape, b, kwargs):
    _parity(FF.conv_transpose2d, F.conv_transpose2d, x_shape, w_shape, b, kwargs)


@pytest.mark.parametrize("x_shape,w_shape,b,kwargs", TRANSPOSE1D_CASES)
def test_conv_transpose1d_matches_torch(x_shape, w_shape, b, kwargs):
    _parity(FF.conv_transpose1d, F.conv_transpose1d, x_shape, w_shape, b, kwargs)


@pytest.mark.parametrize(
    "fn,x_shape,w_shape,b,kwargs",
    [
        (FF.conv1d, (2, 2, 6), (3, 2, 3), 3, dict(stride=2, padding=1)),
        (FF.conv1d, (1, 4, 6), (4, 2, 2), 4, dict(groups=2, padding="same", dilation=2)),
        (FF.conv_transpose2d, (2, 2, 3, 4), (2, 3, 3, 2), 3, dict(stride=2, padding=1, output_padding=1)),
        (FF.conv_transpose2d, (1, 4, 3, 3), (4, 1, 2, 3), 2, dict(groups=2, dilation=(2, 1), stride=(1, 2))),
        (FF.conv_transpose1d, (2, 2, 5), (2, 2, 3), 2, dict(stride=2, output_padding=1)),
    ],
)
def test_gradcheck_float64(fn, x_shape, w_shape, b, kwargs):
    rng = np.random.default_rng(1)
    x = fm.from_numpy(rng.standard_normal(x_shape)).requires_grad_()
    w = fm.from_numpy(rng.standard_normal(w_shape)).requires_grad_()
    bias = fm.from_numpy(rng.standard_normal(b)).requires_grad_()
    assert gradcheck(lambda x, w, bias: fn(x, w, bias, **kwargs), (x, w, bias))


def test_conv_transpose2d_is_the_input_gradient_of_conv2d():
    # <conv2d(y, W), x> == <y, conv_transpose2d(x, W)> for every y: the defining adjoint property
    rng = np.random.default_rng(2)
    w = fm.tensor(rng.standard_normal((4, 3, 3, 3)))
    y = fm.tensor(rng.standard_normal((2, 3, 9, 8)))
    x = fm.tensor(rng.standard_normal((2, 4, 5, 4)))
    lhs = float((FF.conv2d(y, w, stride=2, padding=1) * x).sum().item())
    rhs = float((y * FF.conv_transpose2d(x, w, stride=2, padding=1, output_padding=(0, 1))).sum().item())
    assert math.isclose(lhs, rhs, rel_tol=1e-10)


# ------------------------------------------------------------------ layers
def _to_torch(f_mod, t_mod):
    t_mod.load_state_dict({k: torch.tensor(np.array(v.numpy())) for k, v in f_mod.state_dict().items()})


def _to_forgeml(t_mod, f_mod):
    f_mod.load_state_dict({k: fm.tensor(v.detach().numpy().copy()) for k, v in t_mod.state_dict().items()})


LAYERS = [
    ("Conv1d", (3, 4, 3), dict(stride=2, padding=1), (2, 3, 9)),
    ("Conv1d", (4, 6, 3), dict(groups=2, padding="same", bias=False), (2, 4, 7)),
    ("Conv1d", (3, 4, 3), dict(padding=2, padding_mode="circular"), (2, 3, 8)),
    ("Conv1d", (3, 4, 4), dict(padding="same", padding_mode="reflect", dilation=2), (2, 3, 9)),
    ("Conv1d", (3, 4, 3), dict(padding=1, padding_mode="replicate"), (3, 8)),
    ("ConvTranspose2d", (4, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=2), (2, 4, 5, 5)),
    ("ConvTranspose2d", (3, 2, (2, 3)), dict(bias=False, dilation=2), (3, 4, 4)),
    ("ConvTranspose1d", (3, 4, 3), dict(stride=2, padding=1), (2, 3, 6)),
]


@pytest.mark.parametrize("name,args,kwargs,x_shape", LAYERS, ids=[f"{c[0]}-{i}" for i, c in enumerate(LAYERS)])
def test_layer_state_dict_both_ways(name, args, kwargs, x_shape):
    f_mod, t_mod = getattr(fm.nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert list(f_mod.state_dict()) == list(t_mod.state_dict())
    for key, value in f_mod.state_dict().items():
        assert tuple(value.shape) == tuple(t_mod.state_dict()[key].shape), key
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    _to_forgeml(t_mod, f_mod)  # torch -> forgeml
    _close(f_mod(fm.tensor(x)), t_mod(torch.tensor(x)), msg="torch -> forgeml")
    fresh = getattr(torch.nn, name)(*args, **kwargs)
    with fm.no_grad():
        for p in f_mod.parameters():
            p.mul_(1.5)
    _to_torch(f_mod, fresh)  # forgeml -> torch
    _close(f_mod(fm.tensor(x)), fresh(torch.tensor(x)), msg="forgeml -> torch")
    assert repr(f_mod) == repr(t_mod)


@pytest.mark.parametrize(
    "name,args,kwargs",
    [
        ("Conv1d", (6, 8, 5), dict(groups=2)),
        ("ConvTranspose2d", (6, 8, 3), dict(groups=2)),
        ("ConvTranspose1d", (8, 4, 5), {}),
    ],
)
def test_default_init_bounds(name, args, kwargs):
    """kaiming_uniform_(a=sqrt(5)) gives U(+-1/sqrt(fan_in)); fan_in is weight dim 1 times the kernel size."""
    fm.manual_seed(0)
    mod = getattr(fm.nn, name)(*args, **kwargs)
    w = mod.weight.detach().numpy()
    fan_in = w.shape[1] * math.prod(w.shape[2:])
    bound = 1 / math.sqrt(fan_in)
    for t in (w, mod.bias.detach().numpy()):
        assert np.abs(t).max() <= bound
        assert np.abs(t).max() > 0.7 * bound  # spread over the range, not squeezed
    t_mod = getattr(torch.nn, name)(*args, **kwargs)
    assert t_mod.weight.abs().max().item() <= bound  # same fan_in rule as torch


def test_conv_transpose_output_size():
    f_mod, t_mod = (
        fm.nn.ConvTranspose2d(3, 2, 3, stride=3, padding=1),
        torch.nn.ConvTranspose2d(3, 2, 3, stride=3, padding=1),
    )
    _to_forgeml(t_mod, f_mod)
    x = np.random.default_rng(4).standard_normal((1, 3, 4, 4)).astype(np.float32)
    for size in ([10, 12], (1, 2, 11, 10)):
        _close(f_mod(fm.tensor(x), output_size=size), t_mod(torch.tensor(x), output_size=size))
    with pytest.raises(ValueError, match="valid sizes range from"):
        f_mod(fm.tensor(x), output_size=[13, 10])
    f1 = fm.nn.ConvTranspose1d(3, 2, 2, stride=2)
    assert f1(fm.zeros(1, 3, 5), output_size=[11]).shape == (1, 2, 11)


def test_errors_name_the_problem():
    x = fm.zeros(2, 3, 8)
    with pytest.raises(RuntimeError, match="expected 2D \\(unbatched\\) or 3D"):
        FF.conv1d(fm.zeros(2, 3, 4, 4), fm.zeros(4, 3, 3))
    with pytest.raises(RuntimeError, match="3D weight"):
        FF.conv1d(x, fm.zeros(4, 3, 3, 3))
    with pytest.raises(RuntimeError, match="to have 6 channels, but got 3"):
        FF.conv1d(x, fm.zeros(4, 3, 3), groups=2)
    with pytest.raises(RuntimeError, match="strided"):
        FF.conv1d(x, fm.zeros(4, 3, 3), stride=2, padding="same")
    with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
        FF.conv1d(fm.zeros(1, 3, 2), fm.zeros(4, 3, 5))
    with pytest.raises(RuntimeError, match="output padding must be"):
        FF.conv_transpose2d(fm.zeros(1, 3, 4, 4), fm.zeros(3, 2, 3, 3), stride=2, output_padding=2)
    with pytest.raises(RuntimeError, match="to have 4 channels, but got 3"):
        FF.conv_transpose2d(fm.zeros(1, 3, 4, 4), fm.zeros(4, 2, 3, 3))
    with pytest.raises(RuntimeError, match="bias to be 1-dimensional with 4 elements"):
        FF.conv_transpose2d(fm.zeros(1, 4, 4, 4), fm.zeros(4, 2, 3, 3), fm.zeros(2), groups=2)
    with pytest.raises(ValueError, match="zeros"):
        fm.nn.ConvTranspose2d(3, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="divisible by groups"):
        fm.nn.Conv1d(3, 4, 3, groups=2)
