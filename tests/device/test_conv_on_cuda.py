"""Convolution, pooling and batch norm on ``device='cuda'``: the portable (CuPy) halves of ``forgeml.ops.conv``.

Inputs live on the CUDA device (the checked CuPy stand-in on a CPU machine, CuPy
with ``FORGEML_TEST_REAL_CUDA=1`` on a GPU); forward values, returned indices,
input gradients and running statistics must match PyTorch on the CPU, outputs
and gradients must stay on the device, and float64 gradients must pass
``gradcheck`` there. Autocast and the float16-input/float32-parameter batch norm
are checked on both devices.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
import forgeml.nn.functional as FF
from forgeml.autograd import gradcheck
from forgeml.ops.conv import mode_pad

torch = pytest.importorskip("torch")
F = torch.nn.functional

CUDA = fm.device("cuda")


def _host(t):
    return t.detach().cpu().numpy()


def _on_cuda(arr, requires_grad=True):
    t = fm.tensor(arr).to("cuda")
    return t.requires_grad_() if requires_grad else t


def _pair(rng, shape, requires_grad=True, dtype=np.float32):
    """The same values as a ForgeML tensor on cuda and a torch tensor on the CPU."""
    a = rng.standard_normal(shape).astype(dtype)
    return _on_cuda(a, requires_grad), torch.tensor(a, requires_grad=requires_grad)


def _close(ours, theirs, rtol=1e-4, atol=1e-5, msg=""):
    assert ours.device == CUDA, f"{msg}: on {ours.device}, expected cuda:0"
    theirs = theirs.detach().numpy()
    assert tuple(ours.shape) == theirs.shape, msg
    np.testing.assert_allclose(_host(ours), theirs, rtol=rtol, atol=atol, err_msg=msg)


def _backward_both(f_out, t_out, seed=7):
    up = np.random.default_rng(seed).standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(up).to("cuda"))
    t_out.backward(torch.tensor(up))


# ------------------------------------------------------------------ conv2d
# (input shape, weight shape, bias, kwargs): "wide" (junk-column) and plain column layouts, strides,
# 'same'/'valid' padding, dilation, groups, depthwise, 1x1, unbatched
CONV_CASES = [
    ((2, 3, 5, 4), (4, 3, 3, 3), True, {}),
    ((1, 2, 5, 8), (3, 2, 3, 3), True, dict(padding=1)),  # wide
    ((1, 2, 6, 8), (3, 2, 3, 3), False, dict(padding=1, stride=(2, 1))),  # wide, row stride 2
    ((2, 3, 7, 6), (4, 3, 3, 2), True, dict(stride=2, padding=(1, 0))),
    ((1, 3, 7, 7), (2, 3, 3, 3), True, dict(stride=(2, 1), dilation=(1, 2), padding=2)),
    ((2, 4, 5, 5), (6, 2, 3, 3), True, dict(groups=2, padding=1)),
    ((1, 4, 5, 6), (4, 1, 3, 3), False, dict(groups=4, padding="same")),  # depthwise
    ((1, 2, 6, 6), (3, 2, 2, 2), True, dict(padding="same", dilation=2)),
    ((1, 2, 5, 6), (3, 2, 4, 3), True, dict(padding="same")),  # even kernel
    ((2, 3, 4, 4), (4, 3, 1, 1), True, {}),
    ((1, 2, 6, 7), (3, 2, 3, 3), True, dict(padding="valid", stride=3)),
    ((3, 5, 4), (2, 3, 3, 3), True, dict(padding=1)),  # unbatched
]
CONV_IDS = [f"{i}-{'-'.join(f'{k}{v}' for k, v in c[3].items()) or 'plain'}" for i, c in enumerate(CONV_CASES)]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_matches_torch_on_cuda(case, cuda_device):
    x_shape, w_shape, has_bias, kwargs = case
    rng = np.random.default_rng(1)
    fx, tx = _pair(rng, x_shape)
    fw, tw = _pair(rng, w_shape)
    fb, tb = _pair(rng, (w_shape[0],)) if has_bias else (None, None)
    f_out, t_out = FF.conv2d(fx, fw, fb, **kwargs), F.conv2d(tx, tw, tb, **kwargs)
    assert f_out.dtype == fm.float32
    _close(f_out, t_out, msg="forward")
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad, msg="input grad")
    _close(fw.grad, tw.grad, msg="weight grad")
    if has_bias:
        _close(fb.grad, tb.grad, msg="bias grad")


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 3, 5, 7, 11)], ids=[CONV_IDS[i] for i in (1, 3, 5, 7, 11)])
def test_conv2d_gradcheck_on_cuda(case, cuda_device):
    x_shape, w_shape, has_bias, kwargs = case
    rng = np.random.default_rng(0)
    x = _on_cuda(rng.standard_normal(x_shape))
    w = _on_cuda(rng.standard_normal(w_shape))
    b = _on_cuda(rng.standard_normal(w_shape[0])) if has_bias else None
    inputs = (x, w, b) if has_bias else (x, w)
    assert gradcheck(lambda *a: FF.conv2d(a[0], a[1], a[2] if has_bias else None, **kwargs), inputs)


def test_conv2d_single_gradients_and_inf_on_cuda(cuda_device):
    # weight-only gradient; an inf pixel read by a junk column must not reach grad_weight (torch keeps it finite)
    a = np.random.default_rng(3).standard_normal((1, 1, 6, 10)).astype(np.float32)
    a[0, 0, 2, 0] = np.inf
    fx, tx = _on_cuda(a, requires_grad=False), torch.tensor(a)
    fw, tw = _pair(np.random.default_rng(4), (2, 1, 3, 3))
    _backward_both(FF.conv2d(fx, fw, padding=1), F.conv2d(tx, tw, padding=1))
    assert fx.grad is None
    finite = np.isfinite(tw.grad.numpy())
    assert finite.any() and not finite.all()
    _close(fw.grad, tw.grad)


# ------------------------------------------------------------------ padding modes
MODE_CASES = [
    ("reflect", (2, 1, 1, 2)),
    ("replicate", (1, 3, 2, 0)),
    ("circular", (2, 2, 1, 3)),
    ("reflect", (0, 0, 2, 2)),
]


@pytest.mark.parametrize("mode, pads", MODE_CASES, ids=str)
def test_mode_padded_conv2d_matches_torch_on_cuda(mode, pads, cuda_device):
    rng = np.random.default_rng(5)
    fx, tx = _pair(rng, (2, 3, 5, 6))
    fw, tw = _pair(rng, (4, 3, 3, 3))
    f_pad, t_pad = mode_pad(fx, pads, mode), F.pad(tx, pads, mode=mode)
    _close(f_pad, t_pad, rtol=0, atol=0, msg="padded")
    f_out, t_out = FF.conv2d(f_pad, fw, stride=(1, 2)), F.conv2d(t_pad, tw, stride=(1, 2))
    _close(f_out, t_out, msg="forward")
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad, msg="input grad")
    _close(fw.grad, tw.grad, msg="weight grad")


@pytest.mark.parametrize("mode, pads", MODE_CASES, ids=str)
def test_mode_pad_gradcheck_on_cuda(mode, pads, cuda_device):
    x = _on_cuda(np.random.default_rng(0).standard_normal((1, 2, 4, 3)))
    assert gradcheck(lambda a: mode_pad(a, pads, mode), (x,))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv2d_module_padding_mode_on_cuda(mode, cuda_device):
    torch.manual_seed(0)
    t_conv = torch.nn.Conv2d(3, 4, 3, padding=(1, 2), padding_mode=mode)
    f_conv = fm.nn.Conv2d(3, 4, 3, padding=(1, 2), padding_mode=mode)
    f_conv.load_state_dict({k: v.detach().numpy().copy() for k, v in t_conv.state_dict().items()})
    f_conv.to("cuda")
    fx, tx = _pair(np.random.default_rng(6), (2, 3, 5, 6))
    f_out, t_out = f_conv(fx), t_conv(tx)
    _close(f_out, t_out, msg="forward")
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad, msg="input grad")
    _close(f_conv.weight.grad, t_conv.weight.grad, msg="weight grad")
    _close(f_conv.bias.grad, t_conv.bias.grad, msg="bias grad")


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


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("kwargs", MAX_CASES, ids=str)
def test_max_pool2d_matches_torch_on_cuda(kwargs, unbatched, cuda_device):
    shape = (3, 7, 6) if unbatched else (2, 3, 7, 6)
    fx, tx = _pair(np.random.default_rng(1), shape)
    (f_out, f_idx), (t_out, t_idx) = (
        FF.max_pool2d(fx, return_indices=True, **kwargs),
        F.max_pool2d(tx, return_indices=True, **kwargs),
    )
    _close(f_out, t_out, rtol=0, atol=0)
    assert f_idx.dtype == fm.int64 and not f_idx.requires_grad and f_idx.device == CUDA
    np.testing.assert_array_equal(_host(f_idx), t_idx.numpy())
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad)


@pytest.mark.parametrize("kwargs", [MAX_CASES[0], MAX_CASES[3], MAX_CASES[6]], ids=str)
def test_max_pool2d_gradcheck_on_cuda(kwargs, cuda_device):
    x = _on_cuda(np.random.default_rng(0).standard_normal((2, 2, 7, 6)))
    assert gradcheck(lambda a: FF.max_pool2d(a, **kwargs), (x,))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)], ids=str)
def test_max_pool2d_ties_and_nan_route_like_torch_on_cuda(kwargs, cuda_device):
    a = np.array([[[[1, 1, 2, 2], [1, 1, 2, 2], [0, 3, 3, np.nan], [3, 3, np.nan, 1]]]], dtype=np.float64)
    fx, tx = _on_cuda(a), torch.tensor(a, requires_grad=True)
    (f_out, f_idx), (t_out, t_idx) = (
        FF.max_pool2d(fx, return_indices=True, **kwargs),
        F.max_pool2d(tx, return_indices=True, **kwargs),
    )
    np.testing.assert_array_equal(_host(f_out), t_out.detach().numpy())
    np.testing.assert_array_equal(_host(f_idx), t_idx.numpy())
    f_out.backward(fm.tensor(np.ones(tuple(t_out.shape))).to("cuda"))
    t_out.sum().backward()
    np.testing.assert_array_equal(_host(fx.grad), tx.grad.numpy())


def test_max_pool2d_overlapping_windows_accumulate_and_inf_gradients_on_cuda(cuda_device):
    x = _on_cuda(np.array([[[[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]]]))
    out = FF.max_pool2d(x, 2, stride=1)
    out.backward(fm.tensor(np.ones((1, 1, 2, 2))).to("cuda"))
    grad = _host(x.grad)
    assert grad[0, 0, 1, 1] == 4.0 and grad.sum() == 4.0
    # an infinite upstream gradient reaches only the maxima (no 0 * inf elsewhere)
    y = _on_cuda(np.arange(16.0).reshape(1, 1, 4, 4))
    FF.max_pool2d(y, 2).backward(fm.tensor(np.full((1, 1, 2, 2), np.inf)).to("cuda"))
    expected = np.zeros((4, 4))
    expected[1::2, 1::2] = np.inf
    np.testing.assert_array_equal(_host(y.grad)[0, 0], expected)


def test_max_pool2d_on_integers_matches_torch_on_cuda(cuda_device):
    a = np.random.default_rng(2).integers(-50, 50, (2, 3, 5, 6))
    f_out = FF.max_pool2d(_on_cuda(a, requires_grad=False), 3, stride=2, padding=1)
    t_out = F.max_pool2d(torch.tensor(a), 3, stride=2, padding=1)
    assert f_out.dtype == fm.int64 and f_out.device == CUDA
    np.testing.assert_array_equal(_host(f_out), t_out.numpy())


# ------------------------------------------------------------------ avg pool
AVG_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), ceil_mode=True),
    dict(kernel_size=(3, 2), padding=1, divisor_override=3),
]


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("kwargs", AVG_CASES, ids=str)
def test_avg_pool2d_matches_torch_on_cuda(kwargs, unbatched, cuda_device):
    shape = (3, 7, 6) if unbatched else (2, 3, 7, 6)
    fx, tx = _pair(np.random.default_rng(1), shape)
    f_out, t_out = FF.avg_pool2d(fx, **kwargs), F.avg_pool2d(tx, **kwargs)
    _close(f_out, t_out, rtol=1e-5, atol=1e-6)
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [AVG_CASES[3], AVG_CASES[6], AVG_CASES[7]], ids=str)
def test_avg_pool2d_gradcheck_on_cuda(kwargs, cuda_device):
    x = _on_cuda(np.random.default_rng(0).standard_normal((2, 2, 7, 6)))
    assert gradcheck(lambda a: FF.avg_pool2d(a, **kwargs), (x,))


# ------------------------------------------------------------------ adaptive avg pool
ADAPTIVE_SIZES = [1, (3, 4), (None, 4), (5, 3), (7, 2)]


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_avg_pool2d_matches_torch_on_cuda(size, unbatched, cuda_device):
    shape = (3, 7, 6) if unbatched else (2, 3, 7, 6)
    fx, tx = _pair(np.random.default_rng(1), shape)
    f_out, t_out = FF.adaptive_avg_pool2d(fx, size), F.adaptive_avg_pool2d(tx, size)
    _close(f_out, t_out, rtol=1e-5, atol=1e-6)
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(3, 4), (7, 2), (5, 3)], ids=str)
def test_adaptive_avg_pool2d_gradcheck_on_cuda(size, cuda_device):
    x = _on_cuda(np.random.default_rng(0).standard_normal((1, 2, 7, 6)))
    assert gradcheck(lambda a: FF.adaptive_avg_pool2d(a, size), (x,))


# ------------------------------------------------------------------ batch norm
BN_SHAPES = [(6, 3), (4, 3, 5), (3, 3, 4, 2)]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_matches_torch_including_running_stats_on_cuda(shape, training, cuda_device):
    rng = np.random.default_rng(1)
    fx, tx = _pair(rng, shape)
    fw, tw = _pair(rng, (3,))
    fb, tb = _pair(rng, (3,))
    stats = [rng.standard_normal(3).astype(np.float32), (rng.random(3) + 0.5).astype(np.float32)]
    f_rm, f_rv = (_on_cuda(s, requires_grad=False) for s in stats)
    t_rm, t_rv = (torch.tensor(s) for s in stats)
    for step in range(2):  # the running stats keep moving on the device
        f_out = FF.batch_norm(fx, f_rm, f_rv, fw, fb, training=training, momentum=0.3, eps=1e-3)
        t_out = F.batch_norm(tx, t_rm, t_rv, tw, tb, training=training, momentum=0.3, eps=1e-3)
        _close(f_out, t_out, msg=f"forward, step {step}")
        _close(f_rm, t_rm, rtol=1e-6, atol=1e-6, msg="running_mean")
        _close(f_rv, t_rv, rtol=1e-6, atol=1e-6, msg="running_var")
    _backward_both(f_out, t_out)
    for name, f, t in (("input", fx, tx), ("weight", fw, tw), ("bias", fb, tb)):
        _close(f.grad, t.grad, msg=f"{name} grad")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batch_norm_gradcheck_on_cuda(affine, training, cuda_device):
    rng = np.random.default_rng(0)
    x = _on_cuda(rng.standard_normal((3, 3, 2, 2)))
    w, b = _on_cuda(rng.standard_normal(3)), _on_cuda(rng.standard_normal(3))
    rm = _on_cuda(rng.standard_normal(3), requires_grad=False)
    rv = _on_cuda(rng.random(3) + 0.5, requires_grad=False)
    if affine:
        assert gradcheck(lambda a, ww, bb: FF.batch_norm(a, rm, rv, ww, bb, training=training), (x, w, b))
    else:
        assert gradcheck(lambda a: FF.batch_norm(a, rm, rv, training=training), (x,))


def test_batchnorm_module_train_and_eval_on_cuda(cuda_device):
    t_bn = torch.nn.BatchNorm2d(3, momentum=0.2)
    f_bn = fm.nn.BatchNorm2d(3, momentum=0.2).to("cuda")
    rng = np.random.default_rng(8)
    for step in range(3):
        fx, tx = _pair(rng, (4, 3, 3, 2))
        _close(f_bn(fx), t_bn(tx), msg=f"train step {step}")
    _close(f_bn.running_mean, t_bn.running_mean, rtol=1e-5, atol=1e-6, msg="running_mean")
    _close(f_bn.running_var, t_bn.running_var, rtol=1e-5, atol=1e-6, msg="running_var")
    f_bn.eval()
    t_bn.eval()
    fx, tx = _pair(rng, (2, 3, 3, 2))
    f_out, t_out = f_bn(fx), t_bn(tx)
    _close(f_out, t_out, msg="eval")
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad, msg="input grad")
    _close(f_bn.weight.grad, t_bn.weight.grad, msg="weight grad")


# ------------------------------------------------------------------ mixed precision, on both devices
@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda":
        request.getfixturevalue("cuda_device")
    return request.param


def _to(arr, device, requires_grad=True):
    t = fm.tensor(arr).to(device)
    return t.requires_grad_() if requires_grad else t


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_float16_input_with_float32_parameters_like_torch(training, device):
    # PyTorch's mixed case: computed in float32, returned in the input's dtype; float32 grads for the parameters
    rng = np.random.default_rng(9)
    a = rng.standard_normal((4, 3, 3, 2)).astype(np.float16)
    params = [rng.standard_normal(3).astype(np.float32) for _ in range(2)]
    stats = [rng.standard_normal(3).astype(np.float32), (rng.random(3) + 0.5).astype(np.float32)]
    fx, tx = _to(a, device), torch.tensor(a, requires_grad=True)
    fw, fb = (_to(p, device) for p in params)
    tw, tb = (torch.tensor(p, requires_grad=True) for p in params)
    f_rm, f_rv = (_to(s, device, requires_grad=False) for s in stats)
    t_rm, t_rv = (torch.tensor(s) for s in stats)
    f_out = FF.batch_norm(fx, f_rm, f_rv, fw, fb, training=training)
    t_out = F.batch_norm(tx, t_rm, t_rv, tw, tb, training=training)
    assert f_out.dtype == fm.float16 and f_rm.dtype == fm.float32 and f_out.device == fm.device(device)
    np.testing.assert_allclose(_host(f_out), t_out.detach().numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(_host(f_rm), t_rm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_host(f_rv), t_rv.numpy(), rtol=1e-5, atol=1e-6)
    up = rng.standard_normal(a.shape).astype(np.float16)
    f_out.backward(fm.tensor(up).to(device))
    t_out.backward(torch.tensor(up))
    assert fx.grad.dtype == fm.float16 and fw.grad.dtype == fm.float32
    np.testing.assert_allclose(_host(fx.grad), tx.grad.numpy(), rtol=5e-3, atol=5e-3)
    np.testing.assert_allclose(_host(fw.grad), tw.grad.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(_host(fb.grad), tb.grad.numpy(), rtol=1e-3, atol=1e-3)


def test_batch_norm_rejects_other_parameter_dtypes_like_torch(device):
    x = _to(np.ones((2, 3, 2, 2), np.float32), device, requires_grad=False)
    w64 = _to(np.ones(3), device, requires_grad=False)
    with pytest.raises(RuntimeError, match=r"weight dtype forgeml\.float64 differs from input dtype"):
        FF.batch_norm(x, None, None, w64, training=True)


def test_conv2d_autocasts_and_batch_norm_keeps_its_input_dtype(device):
    # conv2d is on the lower-precision list; batch_norm on neither (float16 in, float16 out, float32 stats)
    rng = np.random.default_rng(10)
    a = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    wa = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fx, fw = _to(a, device), _to(wa, device)
    f_rm = _to(np.zeros(4, np.float32), device, requires_grad=False)
    f_rv = _to(np.ones(4, np.float32), device, requires_grad=False)
    with fm.autocast(device, dtype=fm.float16):
        y = FF.conv2d(fx, fw, padding=1)
        z = FF.batch_norm(y, f_rm, f_rv, training=True)
    assert y.dtype == fm.float16 and z.dtype == fm.float16 and f_rm.dtype == fm.float32
    tx, tw = torch.tensor(a, requires_grad=True), torch.tensor(wa, requires_grad=True)
    t_rm, t_rv = torch.zeros(4), torch.ones(4)
    t_y = F.conv2d(tx, tw, padding=1)
    t_z = F.batch_norm(t_y, t_rm, t_rv, training=True)
    np.testing.assert_allclose(_host(y), t_y.detach().numpy(), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(_host(z), t_z.detach().numpy(), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(_host(f_rm), t_rm.numpy(), rtol=1e-2, atol=1e-3)
    up = rng.standard_normal(tuple(t_z.shape)).astype(np.float32)
    z.backward(fm.tensor(up.astype(np.float16)).to(device))
    t_z.backward(torch.tensor(up))
    assert fx.grad.dtype == fm.float32 and fw.grad.dtype == fm.float32  # through the casts to the float32 leaves
    np.testing.assert_allclose(_host(fw.grad), tw.grad.numpy(), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(_host(fx.grad), tx.grad.numpy(), rtol=2e-2, atol=2e-2)
