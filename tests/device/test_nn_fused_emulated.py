"""The CUDA halves of the nn ops, fused kernels included, run end to end with the kernels emulated on the CPU.

``kernel_emulator`` compiles the ``RawModule`` and ``ElementwiseKernel``
sources of ``ops._fused_nn`` with g++ and runs each CUDA thread of a block
as a host thread; with ``backend.is_cupy`` answering True the ops take their
CUDA branches exactly as on a GPU (grid, block, argument types), and values
and gradients are compared with PyTorch. A GPU run (``FORGEML_TEST_REAL_CUDA=1``
and ``tests/device/test_nn_ops_on_cuda.py``) is still what checks CUDA's
compiler, math library and memory model.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
from forgeml.autograd import gradcheck
from forgeml.nn import functional as F

from . import kernel_emulator

torch = pytest.importorskip("torch")
TF = torch.nn.functional


@pytest.fixture
def emulated_cuda(monkeypatch):
    """``device='cuda'`` on the checked stand-in, with ``is_cupy`` True and the kernels emulated by g++."""
    if kernel_emulator.GXX is None:
        pytest.skip("g++ (C++20) is not installed, so the CUDA kernels cannot be emulated on the CPU")
    from forgeml import cuda as fm_cuda
    from forgeml.backend import device as backend_device
    from forgeml.backend import random as backend_random

    state = backend_device.use_cuda_namespace(kernel_emulator.namespace, device_count=1)
    backend_random.reset_cuda_generators()
    monkeypatch.setattr(backend_device, "_cuda_is_real", True)
    monkeypatch.setattr(backend_device, "cuda_device_count", lambda: 1)
    kernel_emulator.launches.clear()
    try:
        yield kernel_emulator.namespace
    finally:
        backend_device.restore_cuda_namespace(state)
        backend_random.reset_cuda_generators()
        fm_cuda._peak.peak.clear()


def _cuda(a, grad=True):
    t = fm.tensor(a).to("cuda")
    return t.requires_grad_() if grad else t


def _np(t):
    return t.detach().cpu().numpy()


def _compare(f_out, t_out, f_inputs, t_inputs, tol=1e-5, grad_tol=1e-4):
    assert f_out.device == fm.device("cuda")
    assert f_out.dtype.name == str(t_out.dtype).removeprefix("torch.")
    np.testing.assert_allclose(_np(f_out).astype(np.float64), t_out.detach().double().numpy(), rtol=tol, atol=tol)
    upstream = np.random.default_rng(7).standard_normal(tuple(t_out.shape))
    f_out.backward(fm.tensor(upstream.astype(_np(f_out).dtype)).to("cuda"))
    t_out.backward(torch.tensor(upstream).to(t_out.dtype))
    for i, (f, t) in enumerate(zip(f_inputs, t_inputs)):
        np.testing.assert_allclose(
            _np(f.grad).astype(np.float64), t.grad.double().numpy(), rtol=grad_tol, atol=grad_tol, err_msg=f"input {i}"
        )


def _launched(*names):
    missing = [n for n in names if kernel_emulator.launches[n] == 0]
    assert not missing, f"kernels not launched: {missing} (launched: {dict(kernel_emulator.launches)})"


# ------------------------------------------------------------------ softmax
@pytest.mark.parametrize("n", [7, 300])  # fewer and more columns than threads in a block
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_kernels(emulated_cuda, fn, n, dtype):
    x = (np.random.default_rng(0).standard_normal((3, 2, n)) * 5).astype(dtype)
    fx, tx = _cuda(x), torch.tensor(x, requires_grad=True)
    _compare(getattr(F, fn)(fx, -1), getattr(TF, fn)(tx, -1), [fx], [tx])
    _launched("forgeml_softmax_f32" if dtype == np.float32 else "forgeml_softmax_f64")
    _launched("forgeml_softmax_backward_f32" if dtype == np.float32 else "forgeml_softmax_backward_f64")


def test_softmax_float16_computes_in_float32_and_other_dims_stay_portable(emulated_cuda):
    x = np.random.default_rng(1).standard_normal((4, 9)).astype(np.float16)
    fx, tx = _cuda(x), torch.tensor(x.astype(np.float32), requires_grad=True)
    out = F.softmax(fx, -1)
    assert out.dtype == fm.float16
    np.testing.assert_allclose(_np(out), TF.softmax(tx, -1).detach().numpy(), rtol=2e-3, atol=1e-3)
    kernel_emulator.launches.clear()
    fy, ty = _cuda(x.astype(np.float32)), torch.tensor(x.astype(np.float32), requires_grad=True)
    _compare(F.log_softmax(fy, 0), TF.log_softmax(ty, 0), [fy], [ty])
    assert not kernel_emulator.launches  # softmax over dim 0 keeps the portable body


# ------------------------------------------------------------ cross-entropy
CE_OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.2},
    {"weight": True},
    {"weight": True, "label_smoothing": 0.1, "reduction": "none"},
    {"weight": True, "reduction": "sum", "ignore_index": 2},
    {"weight": True, "label_smoothing": 0.3},
    {"ignore_index": 0, "label_smoothing": 0.1},
]


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 3), (4, 300)])
@pytest.mark.parametrize("opts", CE_OPTIONS, ids=str)
def test_cross_entropy_kernels(emulated_cuda, shape, opts):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    y = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    y.reshape(-1)[1] = opts.get("ignore_index", -100)
    w = (rng.random(shape[1]) + 0.1).astype(np.float32)
    f_kw, t_kw = dict(opts), dict(opts)
    if f_kw.pop("weight", False):
        t_kw.pop("weight")
        f_kw["weight"], t_kw["weight"] = _cuda(w, grad=False), torch.tensor(w)
    fx, tx = _cuda(x), torch.tensor(x, requires_grad=True)
    f_out = F.cross_entropy(fx, _cuda(y, grad=False), **f_kw)
    _compare(f_out, TF.cross_entropy(tx, torch.tensor(y), **t_kw), [fx], [tx])
    _launched("forgeml_cross_entropy_f32", "forgeml_nn_cross_entropy_backward")


def test_cross_entropy_kernels_gradcheck_float64_and_all_ignored(emulated_cuda):
    rng = np.random.default_rng(3)
    x = _cuda(rng.standard_normal((4, 3)))
    y = _cuda(np.array([0, 2, -100, 1]), grad=False)
    w = _cuda(rng.random(3) + 0.5, grad=False)
    assert gradcheck(lambda a: F.cross_entropy(a, y, weight=w, label_smoothing=0.2), (x,))
    assert gradcheck(lambda a: F.cross_entropy(a, y, reduction="none"), (x,))
    _launched("forgeml_cross_entropy_f64")
    loss = F.cross_entropy(x, [-100, -100, -100, -100])
    assert np.isnan(loss.item())
    x.grad = None
    loss.backward()
    assert np.all(_np(x.grad) == 0)  # as in PyTorch: a NaN loss, a zero gradient


def test_cross_entropy_float16_and_probability_targets(emulated_cuda):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4)).astype(np.float16)
    y = np.array([0, 3, 1, 2, 2])
    out = F.cross_entropy(_cuda(x), y)
    assert out.dtype == fm.float16
    ref = TF.cross_entropy(torch.tensor(x.astype(np.float32)), torch.tensor(y))
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-3)
    kernel_emulator.launches.clear()
    t = rng.random((5, 4)).astype(np.float32)
    fx, tx = _cuda(x.astype(np.float32)), torch.tensor(x.astype(np.float32), requires_grad=True)
    _compare(F.cross_entropy(fx, _cuda(t, grad=False)), TF.cross_entropy(tx, torch.tensor(t)), [fx], [tx])
    assert not kernel_emulator.launches  # probability targets keep the portable body


# ------------------------------------------------------------------ layer norm
@pytest.mark.parametrize("shape, normalized", [((4, 6), (6,)), ((2, 3, 4), (3, 4)), ((3, 300), (300,))])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm_kernels(emulated_cuda, shape, normalized, affine):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    w = rng.standard_normal(normalized).astype(np.float32)
    b = rng.standard_normal(normalized).astype(np.float32)
    fs, ts = [_cuda(x)], [torch.tensor(x, requires_grad=True)]
    fw = tw = fb = tb = None
    if affine in ("both", "weight"):
        fw, tw = _cuda(w), torch.tensor(w, requires_grad=True)
        fs.append(fw)
        ts.append(tw)
    if affine in ("both", "bias"):
        fb, tb = _cuda(b), torch.tensor(b, requires_grad=True)
        fs.append(fb)
        ts.append(tb)
    _compare(F.layer_norm(fs[0], normalized, fw, fb), TF.layer_norm(ts[0], normalized, tw, tb), fs, ts)
    _launched("forgeml_layer_norm_f32", "forgeml_layer_norm_backward_f32")


def test_layer_norm_kernels_gradcheck_and_float16(emulated_cuda):
    rng = np.random.default_rng(6)
    x, w, b = (_cuda(rng.standard_normal(s)) for s in ((2, 3, 4), (3, 4), (3, 4)))
    assert gradcheck(lambda a, ww, bb: F.layer_norm(a, (3, 4), ww, bb), (x, w, b))
    _launched("forgeml_layer_norm_f64", "forgeml_layer_norm_backward_f64")
    h = rng.standard_normal((4, 8)).astype(np.float16)
    out = F.layer_norm(_cuda(h), (8,), _cuda(np.ones(8, np.float32)))
    assert out.dtype == fm.float16
    ref = TF.layer_norm(torch.tensor(h.astype(np.float32)), (8,))
    np.testing.assert_allclose(_np(out), ref.numpy(), rtol=3e-3, atol=3e-3)


# ------------------------------------------------------------ dropout, linear
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_kernel(emulated_cuda, dtype):
    x = fm.tensor(np.full((60, 50), 3.0, dtype)).to("cuda").requires_grad_()
    y = F.dropout(x, 0.3)
    values = _np(y)
    np.testing.assert_allclose(np.unique(values), [0.0, 3.0 / 0.7], rtol=1e-6)
    assert abs((values != 0).mean() - 0.7) < 0.03
    y.backward(fm.ones(60, 50, dtype=fm.float32 if dtype == np.float32 else fm.float64).to("cuda"))
    np.testing.assert_allclose(_np(x.grad), values / 3.0, rtol=1e-6)
    _launched("forgeml_nn_dropout", "forgeml_nn_dropout_backward")
    fm.manual_seed(9)
    a = _np(F.dropout(x, 0.5))
    fm.manual_seed(9)
    np.testing.assert_array_equal(a, _np(F.dropout(x, 0.5)))


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)])
def test_linear_bias_kernel(emulated_cuda, shape):
    rng = np.random.default_rng(10)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in (shape, (3, 4), (3,))]
    fs, ts = [_cuda(a) for a in arrays], [torch.tensor(a, requires_grad=True) for a in arrays]
    _compare(F.linear(*fs), TF.linear(*ts), fs, ts)
    _launched("forgeml_nn_bias_add")


# ------------------------------------------------------------------ attention
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "causal", "masked_row"])
def test_attention_softmax_kernels(emulated_cuda, mask_kind):
    rng = np.random.default_rng(11)
    S = 7 if mask_kind == "causal" else 9
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 7, 8), (2, 3, S, 8), (2, 3, S, 4))]
    fs, ts = [_cuda(a) for a in arrays], [torch.tensor(a, requires_grad=True) for a in arrays]
    f_mask = t_mask = None
    if mask_kind in ("bool", "masked_row"):
        m = rng.random((7, 9)) > 0.4
        m[:, 0] = True
        if mask_kind == "masked_row":
            m[2] = False
        f_mask, t_mask = m, torch.tensor(m)
    elif mask_kind == "float":
        m = rng.standard_normal((2, 1, 7, 9)).astype(np.float32)
        f_mask, t_mask = m, torch.tensor(m)
    causal = mask_kind == "causal"
    f_out = F.scaled_dot_product_attention(*fs, attn_mask=f_mask, is_causal=causal)
    t_out = TF.scaled_dot_product_attention(*ts, attn_mask=t_mask, is_causal=causal)
    _compare(f_out, t_out, fs, ts, tol=2e-5)
    _launched("forgeml_softmax_f32", "forgeml_softmax_backward_f32")
    if mask_kind == "masked_row":
        assert np.all(_np(f_out)[:, :, 2] == 0)


def test_attention_kernels_gradcheck_with_dropout(emulated_cuda):
    rng = np.random.default_rng(12)
    q, k, v = (_cuda(rng.standard_normal(s)) for s in ((1, 2, 2, 3), (1, 2, 4, 3), (1, 2, 4, 2)))
    assert gradcheck(
        lambda a, b, c: F.scaled_dot_product_attention(
            a, b, c, dropout_p=0.3, generator=fm.Generator("cuda").manual_seed(2)
        ),
        (q, k, v),
    )
    _launched("forgeml_softmax_f64", "forgeml_softmax_backward_f64")


# ------------------------------------------------------- GELU, erfc, linear + activation
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_kernels(emulated_cuda, approximate, dtype):
    x = (np.random.default_rng(11).standard_normal((5, 7)) * 3).astype(dtype)
    fx, tx = _cuda(x), torch.tensor(x, requires_grad=True)
    _compare(F.gelu(fx, approximate=approximate), TF.gelu(tx, approximate=approximate), [fx], [tx])
    _launched(f"forgeml_gelu_{approximate}", f"forgeml_gelu_{approximate}_backward")


def test_erfc64_kernel_gives_the_float64_normal_cdf(emulated_cuda):
    import math

    from forgeml.ops.elementwise import normal_cdf

    x = np.linspace(-30, 8, 97)
    ours = normal_cdf(fm.tensor(x).to("cuda")._data).get()
    exact = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x])  # libm, accurate in the far tail too
    np.testing.assert_allclose(ours, exact, rtol=1e-12, atol=0)  # erfc amplifies the rounding of its argument
    _launched("forgeml_erfc64")


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_linear_with_fused_bias_and_activation(emulated_cuda, activation):
    from forgeml.ops.nn import linear_activation

    rng = np.random.default_rng(12)
    x, w, b = (rng.standard_normal(s).astype(np.float64) for s in [(2, 3, 5), (4, 5), (4,)])
    fx, fw, fb = _cuda(x), _cuda(w), _cuda(b)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    t_pre = TF.linear(tx, tw, tb)
    t_out = {"relu": TF.relu, "gelu": TF.gelu, "gelu_tanh": lambda t: TF.gelu(t, approximate="tanh")}[activation](t_pre)
    _compare(linear_activation(fx, fw, fb, activation), t_out, [fx, fw, fb], [tx, tw, tb], tol=1e-12, grad_tol=1e-12)
    _launched(f"forgeml_linear_bias_{activation}", f"forgeml_linear_{activation}_backward")
    assert gradcheck(lambda a, c, d: linear_activation(a, c, d, activation), [_cuda(x), _cuda(w), _cuda(b)])


def test_encoder_layer_feed_forward_uses_the_fused_epilogue(emulated_cuda):
    fm.manual_seed(0)
    layer = fm.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", batch_first=True)
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", batch_first=True)
    theirs.load_state_dict({k: torch.tensor(v.detach().numpy()) for k, v in layer.state_dict().items()})
    layer.to("cuda")
    x = np.random.default_rng(13).standard_normal((2, 3, 8)).astype(np.float32)
    fx, tx = _cuda(x), torch.tensor(x, requires_grad=True)
    _compare(layer(fx), theirs(tx), [fx], [tx], tol=1e-5, grad_tol=1e-4)
    _launched("forgeml_linear_bias_gelu", "forgeml_linear_gelu_backward")
