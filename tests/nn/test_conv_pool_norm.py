"""Conv2d, pooling and batch norm: gradcheck in float64, PyTorch parity in float32, modules, state_dicts, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import forgeml as fm
import forgeml.nn.functional as FF
from forgeml.autograd import gradcheck

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _layout(arr, layout):
    """``arr``'s values in another memory layout (same shape): transposed storage, or every other row of a buffer."""
    if layout == "contiguous":
        return arr
    if layout == "transposed":
        out = np.swapaxes(np.ascontiguousarray(np.swapaxes(arr, -1, -2)), -1, -2)
        assert not out.flags.c_contiguous
        return out
    big = np.full((arr.shape[0] * 2,) + arr.shape[1:], np.nan, dtype=arr.dtype)
    big[::2] = arr  # the NaN rows poison any read of the wrong elements
    return big[::2]


def _f64(rng, shape, layout="contiguous"):
    return fm.from_numpy(_layout(rng.standard_normal(shape), layout)).requires_grad_()


def _pair_tensors(rng, shape, requires_grad=True):
    """The same float32 values as a ForgeML and a torch tensor."""
    a = rng.standard_normal(shape).astype(np.float32)
    return fm.tensor(a, requires_grad=requires_grad), torch.tensor(a, requires_grad=requires_grad)


def _close(ours, theirs, rtol=1e-4, atol=1e-5, msg=""):
    ours = ours.detach().numpy() if hasattr(ours, "detach") else ours
    assert ours.shape == tuple(theirs.shape), msg
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=rtol, atol=atol, err_msg=msg)


def _backward_both(f_out, t_out, seed=7):
    up = np.random.default_rng(seed).standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(up))
    t_out.backward(torch.tensor(up))


# ------------------------------------------------------------------ conv2d
# (input shape, weight shape, bias, kwargs); "wide" cases (unit W stride, a little padding) take the
# junk-column fast path, the others the plain strided one.
CONV_CASES = [
    ((2, 3, 5, 4), (4, 3, 3, 3), True, {}),
    ((2, 3, 5, 4), (4, 3, 3, 2), True, dict(padding=1)),
    ((1, 2, 5, 8), (3, 2, 3, 3), True, dict(padding=1)),  # wide, unit stride
    ((1, 2, 6, 8), (3, 2, 3, 3), False, dict(padding=1, stride=(2, 1))),  # wide, row stride 2
    ((2, 3, 7, 6), (4, 3, 3, 2), True, dict(stride=2, padding=(1, 0))),
    ((1, 3, 7, 7), (2, 3, 3, 3), True, dict(stride=(2, 1), dilation=(1, 2), padding=2)),
    ((2, 4, 5, 5), (6, 2, 3, 3), True, dict(groups=2, padding=1)),
    ((1, 4, 5, 6), (4, 1, 3, 3), False, dict(groups=4, padding="same")),  # depthwise
    ((1, 2, 6, 6), (3, 2, 2, 2), True, dict(padding="same", dilation=2)),
    ((1, 2, 5, 6), (3, 2, 4, 3), True, dict(padding="same")),  # even kernel: the extra row goes at the bottom
    ((2, 3, 4, 4), (4, 3, 1, 1), True, {}),
    ((1, 2, 6, 7), (3, 2, 3, 3), True, dict(padding="valid", stride=3)),
    ((3, 5, 4), (2, 3, 3, 3), True, dict(padding=1)),  # unbatched
]
CONV_IDS = [f"{i}-{'-'.join(f'{k}{v}' for k, v in c[3].items()) or 'plain'}" for i, c in enumerate(CONV_CASES)]


def test_conv_cases_cover_both_column_layouts():
    from forgeml.ops.conv import _conv_padding, _ConvGrid

    kinds = set()
    for x_shape, w_shape, _, kwargs in CONV_CASES:
        stride = _two(kwargs.get("stride", 1))
        dilation = _two(kwargs.get("dilation", 1))
        pads = _conv_padding(kwargs.get("padding", 0), w_shape[2:], stride, dilation)
        grid = _ConvGrid(x_shape[-2:], w_shape, stride, pads, dilation)
        kinds.add("wide" if grid.q > grid.ow else "plain")
    assert kinds == {"wide", "plain"}


def _two(v):
    return v if isinstance(v, tuple) else (v, v)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_gradcheck(case, layout):
    x_shape, w_shape, has_bias, kwargs = case
    rng = np.random.default_rng(0)
    x = _f64(rng, x_shape, layout)
    w = _f64(rng, w_shape)
    b = _f64(rng, (w_shape[0],)) if has_bias else None
    inputs = (x, w, b) if has_bias else (x, w)
    assert gradcheck(lambda *a: FF.conv2d(a[0], a[1], a[2] if has_bias else None, **kwargs), inputs)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_matches_torch(case):
    x_shape, w_shape, has_bias, kwargs = case
    rng = np.random.default_rng(1)
    fx, tx = _pair_tensors(rng, x_shape)
    fw, tw = _pair_tensors(rng, w_shape)
    fb, tb = _pair_tensors(rng, (w_shape[0],)) if has_bias else (None, None)
    f_out, t_out = FF.conv2d(fx, fw, fb, **kwargs), F.conv2d(tx, tw, tb, **kwargs)
    assert f_out.dtype == fm.float32
    _close(f_out, t_out, msg="forward")
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad, msg="input grad")
    _close(fw.grad, tw.grad, msg="weight grad")
    if has_bias:
        _close(fb.grad, tb.grad, msg="bias grad")


def test_conv2d_weight_only_and_input_only_gradients():
    rng = np.random.default_rng(2)
    fx, tx = _pair_tensors(rng, (2, 3, 6, 6), requires_grad=False)
    fw, tw = _pair_tensors(rng, (4, 3, 3, 3))
    _backward_both(FF.conv2d(fx, fw, padding=1), F.conv2d(tx, tw, padding=1))
    _close(fw.grad, tw.grad)
    assert fx.grad is None
    fx.requires_grad_()
    tx.requires_grad_()
    fw.requires_grad_(False)
    tw.requires_grad_(False)
    _backward_both(FF.conv2d(fx, fw, stride=2), F.conv2d(tx, tw, stride=2))
    _close(fx.grad, tx.grad)


def test_conv2d_records_nothing_without_grad():
    x = fm.randn(1, 2, 5, 5)
    w = fm.randn(3, 2, 3, 3, requires_grad=True)
    with fm.no_grad():
        out = FF.conv2d(x, w)
    assert not out.requires_grad and out.grad_fn is None
    out = FF.conv2d(x, w.detach())
    assert not out.requires_grad and out.grad_fn is None
    assert FF.conv2d(x, w).grad_fn is not None


@pytest.mark.parametrize("op", ["conv2d", "batch_norm"])
def test_weight_modified_in_place_before_backward_raises_like_torch(op):
    def run(lib, functional):
        x = lib.ones(2, 3, 4, 4, requires_grad=True)
        w = lib.ones(*((5, 3, 3, 3) if op == "conv2d" else (3,)), requires_grad=True)
        if op == "conv2d":
            out = functional.conv2d(x, w)
        else:
            out = functional.batch_norm(x, None, None, w, training=True)
        with lib.no_grad():
            w.mul_(2)
        out.sum().backward()

    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        run(torch, F)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        run(fm, FF)


def test_conv2d_output_is_contiguous_and_viewable():
    out = FF.conv2d(fm.randn(2, 3, 9, 9), fm.randn(4, 3, 3, 3), padding=1)
    assert out.is_contiguous()
    assert out.view(2, -1).shape == (2, 4 * 81)


def test_conv2d_inf_in_input_keeps_weight_gradient_like_torch():
    # The fast path computes junk columns that read real pixels; an inf there must not leak into grad_weight
    # entries that no real window connects to it (torch keeps those finite).
    a = np.random.default_rng(3).standard_normal((1, 1, 6, 10)).astype(np.float32)
    a[0, 0, 2, 0] = np.inf
    fx, tx = fm.tensor(a), torch.tensor(a)
    fw, tw = _pair_tensors(np.random.default_rng(4), (2, 1, 3, 3))
    _backward_both(FF.conv2d(fx, fw, padding=1), F.conv2d(tx, tw, padding=1))
    finite = np.isfinite(tw.grad.numpy())
    assert finite.any() and not finite.all()
    _close(fw.grad, tw.grad)


# ------------------------------------------------------------------ max pool
MAX_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), ceil_mode=True),
    dict(kernel_size=2, stride=1, dilation=2),
    dict(kernel_size=(3, 2), stride=2, dilation=(2, 1), padding=1),
    dict(kernel_size=2, stride=3, ceil_mode=True),
]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("kwargs", MAX_CASES, ids=str)
def test_max_pool2d_gradcheck(kwargs, layout):
    x = _f64(np.random.default_rng(0), (2, 2, 7, 6), layout)
    assert gradcheck(lambda a: FF.max_pool2d(a, **kwargs), (x,))


@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("kwargs", MAX_CASES, ids=str)
def test_max_pool2d_matches_torch(kwargs, unbatched):
    shape = (3, 7, 6) if unbatched else (2, 3, 7, 6)
    fx, tx = _pair_tensors(np.random.default_rng(1), shape)
    (f_out, f_idx), (t_out, t_idx) = (
        FF.max_pool2d(fx, return_indices=True, **kwargs),
        F.max_pool2d(tx, return_indices=True, **kwargs),
    )
    _close(f_out, t_out, rtol=0, atol=0)
    assert f_idx.dtype == fm.int64 and not f_idx.requires_grad
    np.testing.assert_array_equal(f_idx.numpy(), t_idx.numpy())
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)], ids=str)
def test_max_pool2d_ties_and_nan_route_like_torch(kwargs):
    a = np.array([[[[1, 1, 2, 2], [1, 1, 2, 2], [0, 3, 3, np.nan], [3, 3, np.nan, 1]]]], dtype=np.float64)
    fx, tx = fm.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    (f_out, f_idx), (t_out, t_idx) = (
        FF.max_pool2d(fx, return_indices=True, **kwargs),
        F.max_pool2d(tx, return_indices=True, **kwargs),
    )
    np.testing.assert_array_equal(f_out.detach().numpy(), t_out.detach().numpy())
    np.testing.assert_array_equal(f_idx.numpy(), t_idx.numpy())
    f_out.sum().backward()
    t_out.sum().backward()
    np.testing.assert_array_equal(fx.grad.numpy(), tx.grad.numpy())


def test_max_pool2d_gradient_accumulates_where_windows_overlap():
    x = fm.tensor([[[[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]]], requires_grad=True)
    FF.max_pool2d(x, 2, stride=1).sum().backward()
    assert x.grad.numpy()[0, 0, 1, 1] == 4.0
    assert x.grad.numpy().sum() == 4.0


def test_max_pool2d_on_integers_matches_torch():
    a = np.random.default_rng(2).integers(-50, 50, (2, 3, 5, 6))
    f_out = FF.max_pool2d(fm.tensor(a), 3, stride=2, padding=1)
    t_out = F.max_pool2d(torch.tensor(a), 3, stride=2, padding=1)
    assert f_out.dtype == fm.int64
    np.testing.assert_array_equal(f_out.numpy(), t_out.numpy())


@pytest.mark.parametrize(
    "name, args",
    [("conv2d", ()), ("max_pool2d", (2,)), ("avg_pool2d", (2,)), ("adaptive_avg_pool2d", (3,))],
)
def test_empty_batch_gives_empty_output_like_torch(name, args):
    x = np.zeros((0, 3, 6, 6), dtype=np.float32)
    w = np.ones((4, 3, 3, 3), dtype=np.float32)
    extra_f, extra_t = ((fm.tensor(w),), (torch.tensor(w),)) if name == "conv2d" else ((), ())
    f_out = getattr(FF, name)(fm.tensor(x), *extra_f, *args)
    t_out = getattr(F, name)(torch.tensor(x), *extra_t, *args)
    assert f_out.shape == tuple(t_out.shape)


# ------------------------------------------------------------------ avg pool
AVG_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), ceil_mode=True),
    dict(kernel_size=2, stride=3, ceil_mode=True),
    dict(kernel_size=(3, 2), padding=1, divisor_override=3),
]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("kwargs", AVG_CASES, ids=str)
def test_avg_pool2d_gradcheck(kwargs, layout):
    x = _f64(np.random.default_rng(0), (2, 2, 7, 6), layout)
    assert gradcheck(lambda a: FF.avg_pool2d(a, **kwargs), (x,))


@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("kwargs", AVG_CASES, ids=str)
def test_avg_pool2d_matches_torch(kwargs, unbatched):
    shape = (3, 7, 6) if unbatched else (2, 3, 7, 6)
    fx, tx = _pair_tensors(np.random.default_rng(1), shape)
    f_out, t_out = FF.avg_pool2d(fx, **kwargs), F.avg_pool2d(tx, **kwargs)
    _close(f_out, t_out, rtol=1e-5, atol=1e-6)
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ adaptive avg pool
ADAPTIVE_SIZES = [1, (3, 4), (None, 4), (5, 3), (7, 2), (4, None)]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_avg_pool2d_gradcheck(size, layout):
    x = _f64(np.random.default_rng(0), (2, 2, 7, 6), layout)
    assert gradcheck(lambda a: FF.adaptive_avg_pool2d(a, size), (x,))


@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_avg_pool2d_matches_torch(size, unbatched):
    shape = (3, 7, 6) if unbatched else (2, 3, 7, 6)
    fx, tx = _pair_tensors(np.random.default_rng(1), shape)
    f_out, t_out = FF.adaptive_avg_pool2d(fx, size), F.adaptive_avg_pool2d(tx, size)
    _close(f_out, t_out, rtol=1e-5, atol=1e-6)
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ batch norm (functional)
BN_SHAPES = [(6, 3), (4, 3, 5), (3, 3, 4, 2)]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_gradcheck(shape, affine, training):
    rng = np.random.default_rng(0)
    x = _f64(rng, shape, "sliced")
    w, b = _f64(rng, (3,)), _f64(rng, (3,))
    rm = fm.from_numpy(rng.standard_normal(3))
    rv = fm.from_numpy(rng.random(3) + 0.5)
    if affine:
        assert gradcheck(lambda a, ww, bb: FF.batch_norm(a, rm, rv, ww, bb, training=training), (x, w, b))
    else:
        assert gradcheck(lambda a: FF.batch_norm(a, rm, rv, training=training), (x,))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_matches_torch_including_running_stats(shape, training):
    rng = np.random.default_rng(1)
    fx, tx = _pair_tensors(rng, shape)
    fw, tw = _pair_tensors(rng, (3,))
    fb, tb = _pair_tensors(rng, (3,))
    stats = [rng.standard_normal(3).astype(np.float32), (rng.random(3) + 0.5).astype(np.float32)]
    f_rm, f_rv = (fm.tensor(s) for s in stats)
    t_rm, t_rv = (torch.tensor(s) for s in stats)
    f_out = FF.batch_norm(fx, f_rm, f_rv, fw, fb, training=training, momentum=0.3, eps=1e-3)
    t_out = F.batch_norm(tx, t_rm, t_rv, tw, tb, training=training, momentum=0.3, eps=1e-3)
    _close(f_out, t_out)
    _close(f_rm, t_rm, rtol=1e-6, atol=1e-6, msg="running_mean")
    _close(f_rv, t_rv, rtol=1e-6, atol=1e-6, msg="running_var")
    _backward_both(f_out, t_out)
    for name, f, t in (("input", fx, tx), ("weight", fw, tw), ("bias", fb, tb)):
        _close(f.grad, t.grad, msg=f"{name} grad")


def test_batch_norm_training_without_running_stats_and_version_bump():
    x = fm.randn(4, 3, 2, 2)
    out = FF.batch_norm(x, None, None, training=True)
    t_out = F.batch_norm(torch.tensor(x.numpy()), None, None, training=True)
    _close(out, t_out)
    rm, rv = fm.zeros(3), fm.ones(3)
    before = rm._version
    FF.batch_norm(x, rm, rv, training=True)
    assert rm._version > before  # saved copies of the buffer see it changed
    FF.batch_norm(x, rm, rv, training=False)
    assert rm._version == before + 1


# ------------------------------------------------------------------ modules
def _copy_to_torch(f_module, t_module):
    t_module.load_state_dict({k: torch.tensor(np.array(v.numpy())) for k, v in f_module.state_dict().items()})


def _copy_to_forgeml(t_module, f_module):
    f_module.load_state_dict({k: v.detach().numpy().copy() for k, v in t_module.state_dict().items()})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding=1),
        dict(padding=(2, 1), padding_mode="reflect"),
        dict(padding=1, padding_mode="replicate", stride=2),
        dict(padding=(1, 2), padding_mode="circular"),
        dict(padding="same", padding_mode="reflect", kernel_size=4),
        dict(groups=2, bias=False, dilation=2, padding=2),
    ],
    ids=str,
)
def test_conv2d_module_matches_torch(kwargs):
    kwargs = dict(kwargs)
    kernel = kwargs.pop("kernel_size", 3)
    f_conv, t_conv = fm.nn.Conv2d(4, 6, kernel, **kwargs), torch.nn.Conv2d(4, 6, kernel, **kwargs)
    _copy_to_forgeml(t_conv, f_conv)
    fx, tx = _pair_tensors(np.random.default_rng(5), (2, 4, 6, 7))
    f_out, t_out = f_conv(fx), t_conv(tx)
    _close(f_out, t_out)
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad)
    for (name, p), tp in zip(f_conv.named_parameters(), t_conv.parameters()):
        _close(p.grad, tp.grad, msg=name)
    # unbatched input through the module
    _close(f_conv(fx[0]), t_conv(tx[0]))


def test_conv2d_module_default_init_follows_torch():
    conv = fm.nn.Conv2d(8, 64, 5, groups=2)
    fan_in = 4 * 5 * 5
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) gives exactly this bound
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    assert conv.weight.shape == (64, 4, 5, 5) and conv.bias.shape == (64,)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert np.abs(b).max() <= bound and b.std() > 0.3 * bound
    assert [n for n, _ in conv.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in fm.nn.Conv2d(1, 2, 3, bias=False).named_parameters()] == ["weight"]


REPRS = [
    ("Conv2d", (1, 8, 3), {}),
    ("Conv2d", (4, 8, (3, 5)), dict(stride=2, padding=1, dilation=2, groups=2, bias=False, padding_mode="reflect")),
    ("Conv2d", (1, 8, 3), dict(padding="same")),
    ("Conv2d", (2, 4, 2), dict(padding="valid", stride=(2, 1))),
    ("MaxPool2d", (2,), {}),
    ("MaxPool2d", ((2, 3),), dict(stride=1, padding=1, dilation=2, ceil_mode=True)),
    ("AvgPool2d", (3,), {}),
    ("AvgPool2d", (3,), dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False, divisor_override=2)),
    ("AdaptiveAvgPool2d", ((None, 3),), {}),
    ("AdaptiveAvgPool2d", (1,), {}),
    ("BatchNorm2d", (4,), {}),
    ("BatchNorm1d", (4,), dict(eps=1e-3, momentum=None, affine=False, track_running_stats=False)),
    ("BatchNorm2d", (4,), dict(bias=False)),
]


@pytest.mark.parametrize("name, args, kwargs", REPRS, ids=[f"{r[0]}{i}" for i, r in enumerate(REPRS)])
def test_module_repr_matches_torch(name, args, kwargs):
    assert repr(getattr(fm.nn, name)(*args, **kwargs)) == repr(getattr(torch.nn, name)(*args, **kwargs))


def test_sequential_repr_matches_torch():
    def build(nn):
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))

    assert repr(build(fm.nn)) == repr(build(torch.nn))


def test_pool_modules_match_torch():
    fx, tx = _pair_tensors(np.random.default_rng(6), (2, 3, 9, 8))
    pairs = [
        (fm.nn.MaxPool2d(3, 2, 1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
        (fm.nn.AvgPool2d(2, count_include_pad=False), torch.nn.AvgPool2d(2, count_include_pad=False)),
        (fm.nn.AdaptiveAvgPool2d((2, None)), torch.nn.AdaptiveAvgPool2d((2, None))),
    ]
    for f_mod, t_mod in pairs:
        _close(f_mod(fx), t_mod(tx), msg=repr(f_mod))
    f_out, f_idx = fm.nn.MaxPool2d(2, return_indices=True)(fx)
    t_out, t_idx = torch.nn.MaxPool2d(2, return_indices=True)(tx)
    _close(f_out, t_out)
    np.testing.assert_array_equal(f_idx.numpy(), t_idx.numpy())


@pytest.mark.parametrize(
    "name, shape, kwargs",
    [
        ("BatchNorm2d", (8, 3, 4, 5), {}),
        ("BatchNorm2d", (8, 3, 4, 5), dict(momentum=None)),
        ("BatchNorm1d", (10, 3), dict(momentum=0.3, eps=1e-3)),
        ("BatchNorm1d", (6, 3, 7), dict(affine=False)),
        ("BatchNorm2d", (4, 3, 2, 2), dict(bias=False)),
    ],
    ids=str,
)
def test_batchnorm_module_train_steps_and_eval_match_torch(name, shape, kwargs):
    f_bn, t_bn = getattr(fm.nn, name)(3, **kwargs), getattr(torch.nn, name)(3, **kwargs)
    rng = np.random.default_rng(8)
    if f_bn.weight is not None:
        with fm.no_grad(), torch.no_grad():
            w = rng.standard_normal(3).astype(np.float32)
            f_bn.weight._data[...] = w
            t_bn.weight.copy_(torch.tensor(w))
    for step in range(4):
        fx, tx = _pair_tensors(rng, shape)
        fx_scaled, tx_scaled = fx * 2 + 1, tx * 2 + 1
        f_out, t_out = f_bn(fx_scaled), t_bn(tx_scaled)
        _close(f_out, t_out, msg=f"train output, step {step}")
        _backward_both(f_out, t_out, seed=step)
        _close(fx.grad, tx.grad, msg=f"input grad, step {step}")
    for key, t_value in t_bn.state_dict().items():
        f_value = f_bn.state_dict()[key]
        np.testing.assert_allclose(f_value.numpy(), t_value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    assert f_bn.num_batches_tracked.item() == 4 and f_bn.num_batches_tracked.dtype == fm.int64
    if f_bn.weight is not None:
        _close(f_bn.weight.grad, t_bn.weight.grad)
    f_bn.eval()
    t_bn.eval()
    fx, tx = _pair_tensors(rng, shape)
    before = f_bn.running_mean.numpy().copy()
    _close(f_bn(fx), t_bn(tx), msg="eval output")
    np.testing.assert_array_equal(f_bn.running_mean.numpy(), before)
    assert f_bn.num_batches_tracked.item() == 4


def test_batchnorm_without_running_stats_uses_batch_stats_in_eval():
    f_bn = fm.nn.BatchNorm2d(3, track_running_stats=False).eval()
    t_bn = torch.nn.BatchNorm2d(3, track_running_stats=False).eval()
    assert list(f_bn.state_dict()) == list(t_bn.state_dict()) == ["weight", "bias"]
    fx, tx = _pair_tensors(np.random.default_rng(9), (4, 3, 2, 3))
    _close(f_bn(fx), t_bn(tx))


@pytest.mark.parametrize(
    "build",
    [
        lambda nn: nn.BatchNorm2d(5),
        lambda nn: nn.BatchNorm1d(5, affine=False),
        lambda nn: nn.Conv2d(3, 4, 3),
        lambda nn: nn.Conv2d(3, 4, 3, bias=False),
        lambda nn: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2)),
    ],
)
def test_state_dict_keys_match_torch_and_load_both_ways(build):
    f_mod, t_mod = build(fm.nn), build(torch.nn)
    assert list(f_mod.state_dict()) == list(t_mod.state_dict())
    for key, value in f_mod.state_dict().items():
        assert value.shape == tuple(t_mod.state_dict()[key].shape), key
        assert value.dtype.name == str(t_mod.state_dict()[key].dtype).removeprefix("torch."), key
    # torch -> forgeml, after torch has trained a step (non-default running stats and counters)
    t_mod.train()
    shape = (4, 1, 6, 6) if isinstance(t_mod, torch.nn.Sequential) else (4, 5) if "1d" in repr(t_mod) else None
    shape = shape or ((4, 5, 3, 3) if isinstance(t_mod, torch.nn.BatchNorm2d) else (2, 3, 5, 5))
    t_mod(torch.randn(shape))
    _copy_to_forgeml(t_mod, f_mod)
    for key, value in t_mod.state_dict().items():
        np.testing.assert_array_equal(f_mod.state_dict()[key].numpy(), value.numpy(), err_msg=key)
    # forgeml -> torch
    f_mod.train()
    f_mod(fm.randn(*shape))
    fresh = build(torch.nn)
    _copy_to_torch(f_mod, fresh)
    for key, value in f_mod.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_small_cnn_end_to_end_matches_torch():
    def build(nn):
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
            nn.AvgPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(6, 3),
        )

    f_net, t_net = build(fm.nn), build(torch.nn)
    _copy_to_forgeml(t_net, f_net)
    fx, tx = _pair_tensors(np.random.default_rng(10), (5, 1, 12, 11))
    f_out, t_out = f_net(fx), t_net(tx)
    _close(f_out, t_out)
    target = np.array([0, 2, 1, 1, 0])
    fm.nn.functional.cross_entropy(f_out, fm.tensor(target)).backward()
    F.cross_entropy(t_out, torch.tensor(target)).backward()
    _close(fx.grad, tx.grad)
    for (name, p), tp in zip(f_net.named_parameters(), t_net.parameters()):
        _close(p.grad, tp.grad, msg=name)


# ------------------------------------------------------------------ errors
def test_conv2d_errors_name_what_is_wrong():
    x = fm.randn(2, 4, 5, 5)
    with pytest.raises(RuntimeError, match=r"to have 3 channels, but got 4 channels"):
        FF.conv2d(x, fm.randn(8, 3, 3, 3))
    with pytest.raises(RuntimeError, match=r"\(5 x 5\).*\(7 x 7\).*can't be greater than actual input size"):
        FF.conv2d(x, fm.randn(8, 4, 7, 7))
    FF.conv2d(x, fm.randn(8, 4, 7, 7), padding=1)  # fits once padded
    with pytest.raises(RuntimeError, match=r"groups=3.*out_channels \(8.*divisible by groups"):
        FF.conv2d(x, fm.randn(8, 2, 3, 3), groups=3)
    with pytest.raises(RuntimeError, match=r"3D \(unbatched\) or 4D \(batched\).*\[2, 4\]"):
        FF.conv2d(fm.randn(2, 4), fm.randn(8, 4, 3, 3))
    with pytest.raises(RuntimeError, match=r"bias.*8 elements.*\[3\]"):
        FF.conv2d(x, fm.randn(8, 4, 3, 3), fm.randn(3))
    with pytest.raises(RuntimeError, match="strided"):
        FF.conv2d(x, fm.randn(8, 4, 3, 3), stride=2, padding="same")
    with pytest.raises(RuntimeError, match="invalid padding string 'full'"):
        FF.conv2d(x, fm.randn(8, 4, 3, 3), padding="full")
    with pytest.raises(RuntimeError, match="dtype"):
        FF.conv2d(x.double(), fm.randn(8, 4, 3, 3))
    with pytest.raises(RuntimeError, match="stride"):
        FF.conv2d(x, fm.randn(8, 4, 3, 3), stride=0)


def test_conv2d_module_errors():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        fm.nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        fm.nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="padding_mode"):
        fm.nn.Conv2d(4, 6, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="strided"):
        fm.nn.Conv2d(4, 6, 3, stride=2, padding="same")
    with pytest.raises(RuntimeError, match=r"to have 4 channels, but got 3 channels"):
        fm.nn.Conv2d(4, 6, 3)(fm.randn(1, 3, 5, 5))
    with pytest.raises(RuntimeError, match=r"reflect padding of \(3, 3\).*size 3"):
        fm.nn.Conv2d(1, 1, 3, padding=3, padding_mode="reflect")(fm.randn(1, 1, 3, 3))


def test_pool_errors():
    x = fm.randn(2, 4, 5, 5)
    with pytest.raises(RuntimeError, match=r"\(4x5x5\).*\(4x0x0\). Output size is too small"):
        FF.max_pool2d(x, 7)
    with pytest.raises(RuntimeError, match="Output size is too small"):
        FF.avg_pool2d(x, 6)
    with pytest.raises(RuntimeError, match="half of kernel size"):
        FF.max_pool2d(x, 3, padding=2)
    with pytest.raises(RuntimeError, match="stride must be greater than zero"):
        FF.max_pool2d(x, 2, stride=0)
    with pytest.raises(RuntimeError, match=r"3D \(unbatched\) or 4D \(batched\)"):
        FF.max_pool2d(fm.randn(4, 5), 2)
    with pytest.raises(RuntimeError, match="divisor_override"):
        FF.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(RuntimeError, match=r"3D \(unbatched\) or 4D \(batched\).*got \[9\]"):
        FF.adaptive_avg_pool2d(fm.randn(9), 3)
    with pytest.raises(RuntimeError, match="2 entries"):
        FF.adaptive_avg_pool2d(x, (3,))


def test_batch_norm_errors():
    x = fm.randn(2, 4, 5, 5)
    with pytest.raises(RuntimeError, match=r"running_mean should have 4 elements.*\[2, 4, 5, 5\].*\[3\]"):
        FF.batch_norm(x, fm.zeros(3), fm.ones(3), training=True)
    with pytest.raises(RuntimeError, match=r"weight should have 4 elements.*\[3\]"):
        FF.batch_norm(x, fm.zeros(4), fm.ones(4), weight=fm.ones(3))
    with pytest.raises(RuntimeError, match="must be defined in evaluation mode"):
        FF.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\[1, 4\]"):
        FF.batch_norm(fm.randn(1, 4), None, None, training=True)
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input"):
        fm.nn.BatchNorm2d(4)(fm.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input"):
        fm.nn.BatchNorm1d(4)(fm.randn(2, 4, 3, 3))
    with pytest.raises(RuntimeError, match=r"running_mean should have 4 elements.*\[2, 4, 5, 5\].*\[3\]"):
        fm.nn.BatchNorm2d(3)(x)
