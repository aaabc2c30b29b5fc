"""The nn ops on ``device='cuda'`` against PyTorch on the CPU, and their autocast dtypes against ``torch.autocast``.

Softmax, linear, dropout, the class losses and the losses of
``nn.functional``, LayerNorm, RMSNorm, embedding and scaled dot-product
attention run with their inputs on the CUDA device (the checked CuPy stand-in
of ``tests/checked_cuda.py`` on a CPU machine, CuPy with
``FORGEML_TEST_REAL_CUDA=1`` on a GPU); values and gradients must match
PyTorch, float64 gradients pass ``gradcheck``. Masks, targets, class weights
and indices given as lists or NumPy arrays are moved to the input's device.
The autocast tests compare result dtypes (and values, loosely) with
``torch.autocast('cpu', dtype=torch.bfloat16)`` on the CPU, and check
PyTorch's CUDA autocast rules on the CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
from forgeml.autograd import gradcheck
from forgeml.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

CUDA = fm.device("cuda")


def _cuda(a, grad=True):
    t = fm.tensor(a).to("cuda")
    return t.requires_grad_() if grad else t


def _torch(a, grad=True):
    return torch.tensor(a, requires_grad=grad)


def _np(t):
    return t.detach().cpu().numpy()


def _compare(f_out, t_out, f_inputs, t_inputs, rtol=1e-5, atol=1e-6, grad_rtol=1e-4, grad_atol=1e-5):
    """Values, then gradients for one random upstream gradient; every ForgeML tensor must be on the device."""
    assert f_out.device == CUDA
    assert f_out.shape == tuple(t_out.shape)
    assert f_out.dtype.name == str(t_out.dtype).removeprefix("torch.")
    np.testing.assert_allclose(_np(f_out), t_out.detach().numpy(), rtol=rtol, atol=atol)
    upstream = np.random.default_rng(7).standard_normal(tuple(t_out.shape)).astype(_np(f_out).dtype)
    f_out.backward(fm.tensor(upstream).to("cuda"))
    t_out.backward(torch.tensor(upstream))
    for i, (f, t) in enumerate(zip(f_inputs, t_inputs)):
        assert f.grad is not None, f"input {i} got no gradient"
        assert f.grad.device == CUDA
        np.testing.assert_allclose(_np(f.grad), t.grad.numpy(), rtol=grad_rtol, atol=grad_atol, err_msg=f"input {i}")


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ softmax
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax(cuda_device, fn, dim):
    x = _rng().standard_normal((3, 4, 5)).astype(np.float32) * 4
    fx, tx = _cuda(x), _torch(x)
    _compare(getattr(F, fn)(fx, dim), getattr(TF, fn)(tx, dim), [fx], [tx])


def test_softmax_gradcheck_and_dtype_argument(cuda_device):
    x = _cuda(_rng(1).standard_normal((3, 6)))
    assert gradcheck(lambda a: F.softmax(a, -1), (x,))
    assert gradcheck(lambda a: F.log_softmax(a, 0), (x,))
    out = F.softmax(_cuda(np.ones((2, 3), np.float32), grad=False), -1, dtype=fm.float64)
    assert out.dtype == fm.float64 and out.device == CUDA


# ------------------------------------------------------------------- linear
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(cuda_device, shape, bias):
    rng = _rng(2)
    x, w, b = rng.standard_normal(shape), rng.standard_normal((3, 4)), rng.standard_normal(3)
    arrays = [a.astype(np.float32) for a in ((x, w, b) if bias else (x, w))]
    fs, ts = [_cuda(a) for a in arrays], [_torch(a) for a in arrays]
    _compare(F.linear(*fs), TF.linear(*ts), fs, ts)


def test_linear_gradcheck(cuda_device):
    rng = _rng(3)
    x, w, b = (_cuda(rng.standard_normal(s)) for s in ((2, 3, 4), (5, 4), (5,)))
    assert gradcheck(F.linear, (x, w, b))


def test_linear_refuses_a_weight_on_another_device(cuda_device):
    with pytest.raises(RuntimeError, match="same device"):
        F.linear(_cuda(np.ones((2, 3), np.float32)), fm.ones(4, 3))


# ------------------------------------------------------------------ dropout
def test_dropout_masks_scales_and_backpropagates_the_same_mask(cuda_device):
    x = fm.ones(200, 300).to("cuda").requires_grad_()
    y = F.dropout(x, 0.25)
    assert y.device == CUDA
    values = _np(y)
    np.testing.assert_allclose(np.unique(values), [0.0, 1 / 0.75], rtol=1e-7)
    assert abs((values != 0).mean() - 0.75) < 0.01
    y.sum().backward()
    np.testing.assert_array_equal(_np(x.grad), values)


def test_dropout_eval_edges_and_reproducibility(cuda_device):
    x = _cuda(np.ones((20, 20), np.float32), grad=False)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert np.all(_np(F.dropout(x, 1.0)) == 0)
    fm.manual_seed(11)
    a = _np(F.dropout(x, 0.5))
    fm.manual_seed(11)
    b = _np(F.dropout(x, 0.5))
    np.testing.assert_array_equal(a, b)
    g1, g2 = fm.Generator("cuda").manual_seed(3), fm.Generator("cuda").manual_seed(3)
    np.testing.assert_array_equal(_np(F.dropout(x, 0.3, generator=g1)), _np(F.dropout(x, 0.3, generator=g2)))
    with pytest.raises(RuntimeError, match="'cuda' device type for generator"):
        F.dropout(x, 0.3, generator=fm.Generator("cpu"))


def test_dropout_module_on_cuda(cuda_device):
    layer = fm.nn.Dropout(0.4).to("cuda")
    x = _cuda(np.full((50, 40), 2.0, np.float32), grad=False)
    out = _np(layer(x))
    np.testing.assert_allclose(np.unique(out), [0.0, 2.0 / 0.6], rtol=1e-6)
    layer.eval()
    assert layer(x) is x


# ----------------------------------------------------------- class losses
def _class_problem(seed, shape=(6, 5)):
    rng = _rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    y.reshape(-1)[1] = -100
    w = (rng.random(shape[1]) + 0.1).astype(np.float32)
    return x, y, w


CE_OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.2},
    {"weight": True},
    {"weight": True, "label_smoothing": 0.1, "reduction": "none"},
    {"weight": True, "reduction": "sum", "ignore_index": 2},
    {"weight": True, "label_smoothing": 0.3},
]


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 3)])
@pytest.mark.parametrize("opts", CE_OPTIONS, ids=str)
def test_cross_entropy_class_indices(cuda_device, shape, opts):
    x, y, w = _class_problem(0, shape)
    opts = dict(opts)
    if "ignore_index" in opts:
        y[y == -100] = opts["ignore_index"]
    f_kw, t_kw = dict(opts), dict(opts)
    if opts.pop("weight", False):
        f_kw["weight"], t_kw["weight"] = _cuda(w, grad=False), torch.tensor(w)
    fx, tx = _cuda(x), _torch(x)
    f_out = F.cross_entropy(fx, _cuda(y, grad=False), **f_kw)
    _compare(f_out, TF.cross_entropy(tx, torch.tensor(y), **t_kw), [fx], [tx])


def test_cross_entropy_takes_list_and_numpy_targets_and_weights(cuda_device):
    x, y, w = _class_problem(1)
    fx, tx = _cuda(x), _torch(x)
    f_out = F.cross_entropy(fx, y.tolist(), weight=w, label_smoothing=0.1)  # host data: copied to the device
    _compare(f_out, TF.cross_entropy(tx, torch.tensor(y), weight=torch.tensor(w), label_smoothing=0.1), [fx], [tx])


def test_cross_entropy_one_dim_input(cuda_device):
    x = _rng(2).standard_normal(5).astype(np.float32)
    fx, tx = _cuda(x), _torch(x)
    _compare(F.cross_entropy(fx, fm.tensor(3).to("cuda")), TF.cross_entropy(tx, torch.tensor(3)), [fx], [tx])


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_probability_targets(cuda_device, smoothing):
    rng = _rng(4)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    t = rng.random((5, 4)).astype(np.float32)
    t /= t.sum(1, keepdims=True)
    w = (rng.random(4) + 0.5).astype(np.float32)
    fx, tx = _cuda(x), _torch(x)
    f_out = F.cross_entropy(fx, _cuda(t, grad=False), weight=_cuda(w, grad=False), label_smoothing=smoothing)
    t_out = TF.cross_entropy(tx, torch.tensor(t), weight=torch.tensor(w), label_smoothing=smoothing)
    _compare(f_out, t_out, [fx], [tx])


def test_cross_entropy_gradcheck_and_all_ignored(cuda_device):
    x, y, w = _class_problem(5)
    fx = _cuda(x.astype(np.float64))
    target, weight = _cuda(y, grad=False), _cuda(w.astype(np.float64), grad=False)
    assert gradcheck(lambda a: F.cross_entropy(a, target, weight=weight, label_smoothing=0.1), (fx,))
    assert gradcheck(lambda a: F.cross_entropy(a, target, reduction="none"), (fx,))
    fx, tx = _cuda(x[:2]), _torch(x[:2])
    loss = F.cross_entropy(fx, _cuda(np.array([-100, -100]), grad=False))
    theirs = TF.cross_entropy(tx, torch.tensor([-100, -100]))
    assert np.isnan(loss.item()) and np.isnan(theirs.item())
    loss.backward()
    theirs.backward()
    np.testing.assert_array_equal(_np(fx.grad), tx.grad.numpy())  # zeros


def test_cross_entropy_errors_on_device(cuda_device):
    x = _cuda(np.zeros((3, 4), np.float32))
    with pytest.raises(IndexError, match="Target 7 is out of bounds"):
        F.cross_entropy(x, [0, 7, 1])
    with pytest.raises(RuntimeError, match="target is on cpu and the input on cuda:0"):
        F.cross_entropy(x, fm.tensor([0, 1, 2]))
    with pytest.raises(RuntimeError, match="weight is on cpu"):
        F.cross_entropy(x, [0, 1, 2], weight=fm.ones(4))


@pytest.mark.parametrize("opts", [{}, {"weight": True}, {"reduction": "sum"}, {"reduction": "none", "weight": True}])
def test_nll_loss(cuda_device, opts):
    x, y, w = _class_problem(6, (4, 3, 2))
    logp = np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True)).astype(np.float32)
    f_kw, t_kw = dict(opts), dict(opts)
    if f_kw.pop("weight", False):
        f_kw["weight"], t_kw["weight"] = _cuda(w, grad=False), torch.tensor(w)
    fx, tx = _cuda(logp), _torch(logp)
    _compare(F.nll_loss(fx, _cuda(y, grad=False), **f_kw), TF.nll_loss(tx, torch.tensor(y), **t_kw), [fx], [tx])


def test_one_hot(cuda_device):
    out = F.one_hot(_cuda(np.array([[0, 3], [2, 1]]), grad=False))
    assert out.device == CUDA and out.dtype == fm.int64
    np.testing.assert_array_equal(_np(out), TF.one_hot(torch.tensor([[0, 3], [2, 1]])).numpy())
    assert F.one_hot(_cuda(np.array([1]), grad=False), 4).shape == (1, 4)


# ------------------------------------------------- losses of nn.functional
def _pairwise(seed, shape=(4, 5), low=None):
    rng = _rng(seed)
    if low is None:
        return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    return rng.uniform(low, 1 - low, shape).astype(np.float32), rng.random(shape).astype(np.float32)


REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "name, kwargs",
    [("mse_loss", {}), ("l1_loss", {}), ("smooth_l1_loss", {}), ("smooth_l1_loss", {"beta": 0.5})],
    ids=str,
)
def test_regression_losses(cuda_device, name, kwargs, reduction):
    a, b = _pairwise(8)
    fa, fb, ta, tb = _cuda(a), _cuda(b), _torch(a), _torch(b)
    f_out = getattr(F, name)(fa, fb, reduction=reduction, **kwargs)
    t_out = getattr(TF, name)(ta, tb, reduction=reduction, **kwargs)
    _compare(f_out, t_out, [fa, fb], [ta, tb])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy(cuda_device, reduction, weighted):
    p, t = _pairwise(9, low=0.05)
    w = _rng(10).random(5).astype(np.float32)
    fp, ft, tp, tt = _cuda(p), _cuda(t), _torch(p), _torch(t)
    fw, tw = (_cuda(w, grad=False), torch.tensor(w)) if weighted else (None, None)
    f_out = F.binary_cross_entropy(fp, ft, weight=fw, reduction=reduction)
    t_out = TF.binary_cross_entropy(tp, tt, weight=tw, reduction=reduction)
    _compare(f_out, t_out, [fp, ft], [tp, tt])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", ["plain", "weight", "pos_weight"])
def test_binary_cross_entropy_with_logits(cuda_device, reduction, options):
    x, t = _pairwise(11)
    t = (t > 0).astype(np.float32)
    w = _rng(12).random(5).astype(np.float32) + 0.5
    fx, ft, tx, tt = _cuda(x), _cuda(t), _torch(x), _torch(t)
    f_kw, t_kw = {}, {}
    if options != "plain":
        f_kw[options], t_kw[options] = _cuda(w, grad=False), torch.tensor(w)
    f_out = F.binary_cross_entropy_with_logits(fx, ft, reduction=reduction, **f_kw)
    t_out = TF.binary_cross_entropy_with_logits(tx, tt, reduction=reduction, **t_kw)
    _compare(f_out, t_out, [fx, ft], [tx, tt])


def test_loss_modules_on_cuda(cuda_device):
    x, y, w = _class_problem(13)
    crit = fm.nn.CrossEntropyLoss(weight=fm.tensor(w), label_smoothing=0.1).to("cuda")
    fx, tx = _cuda(x), _torch(x)
    t_out = torch.nn.CrossEntropyLoss(weight=torch.tensor(w), label_smoothing=0.1)(tx, torch.tensor(y))
    _compare(crit(fx, _cuda(y, grad=False)), t_out, [fx], [tx])


# -------------------------------------------------------- normalisation
@pytest.mark.parametrize("shape, normalized", [((4, 6), (6,)), ((2, 3, 4), (3, 4)), ((3, 300), (300,))])
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_layer_norm(cuda_device, shape, normalized, affine):
    rng = _rng(14)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    params = [
        rng.standard_normal(normalized).astype(np.float32) for _ in range({"both": 2, "weight": 1}.get(affine, 0))
    ]
    fs, ts = [_cuda(x)] + [_cuda(p) for p in params], [_torch(x)] + [_torch(p) for p in params]
    _compare(F.layer_norm(fs[0], normalized, *fs[1:]), TF.layer_norm(ts[0], normalized, *ts[1:]), fs, ts)


def test_layer_norm_and_rms_norm_gradcheck(cuda_device):
    rng = _rng(15)
    x, w, b = (_cuda(rng.standard_normal(s)) for s in ((2, 3, 4), (3, 4), (3, 4)))
    assert gradcheck(lambda a, ww, bb: F.layer_norm(a, (3, 4), ww, bb), (x, w, b))
    w1 = _cuda(rng.standard_normal(4))
    assert gradcheck(lambda a, ww: F.rms_norm(a, 4, ww, eps=1e-6), (x, w1))


@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("weighted", [True, False])
def test_rms_norm(cuda_device, eps, weighted):
    rng = _rng(16)
    x = (rng.standard_normal((3, 4, 6)) * 2).astype(np.float32)
    w = rng.standard_normal(6).astype(np.float32)
    fs, ts = [_cuda(x)], [_torch(x)]
    if weighted:
        fs.append(_cuda(w))
        ts.append(_torch(w))
    f_out = F.rms_norm(fs[0], (6,), fs[1] if weighted else None, eps=eps)
    t_out = TF.rms_norm(ts[0], (6,), ts[1] if weighted else None, eps=eps)
    _compare(f_out, t_out, fs, ts)


# ----------------------------------------------------------------- embedding
@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding_with_repeated_indices_and_padding(cuda_device, padding_idx):
    table = _rng(17).standard_normal((10, 4)).astype(np.float32)
    ids = np.array([[1, 2, 0, 2], [9, 0, 2, 1]])
    ft, tt = _cuda(table), _torch(table)
    f_out = F.embedding(_cuda(ids, grad=False), ft, padding_idx=padding_idx)
    _compare(f_out, TF.embedding(torch.tensor(ids), tt, padding_idx=padding_idx), [ft], [tt])
    if padding_idx is not None:
        assert np.all(_np(ft.grad)[padding_idx] == 0)


def test_embedding_takes_host_indices_and_checks_them(cuda_device):
    table = _cuda(_rng(18).standard_normal((5, 3)))
    out = F.embedding([[0, 4, 4]], table)  # a list: copied to the device
    assert out.device == CUDA
    out.sum().backward()
    np.testing.assert_array_equal(_np(table.grad)[:, 0], [1, 0, 0, 0, 2])
    assert gradcheck(lambda t: F.embedding(np.array([[0, 2, 2], [4, 0, 1]]), t), (table,))
    with pytest.raises(IndexError, match="out of range"):
        F.embedding([5], table)
    with pytest.raises(RuntimeError, match="same device"):
        F.embedding(fm.tensor([0, 1]), table)
    layer = fm.nn.Embedding(6, 2, padding_idx=1).to("cuda")
    layer(_cuda(np.array([1, 2, 1]), grad=False)).sum().backward()
    assert np.all(_np(layer.weight.grad)[1] == 0) and np.all(_np(layer.weight.grad)[2] == 1)


# ------------------------------------------------------------------ attention
def _attention_problem(seed, causal=False):
    rng = _rng(seed)
    shapes = ((2, 4, 7, 8), (2, 4, 7 if causal else 9, 8), (2, 4, 7 if causal else 9, 8))
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("mask_kind", ["none", "bool", "bool_numpy", "float", "float_list", "causal", "masked_row"])
def test_scaled_dot_product_attention(cuda_device, mask_kind):
    arrays = _attention_problem(19, causal=mask_kind == "causal")
    rng = _rng(20)
    fs, ts = [_cuda(a) for a in arrays], [_torch(a) for a in arrays]
    f_mask = t_mask = None
    if mask_kind.startswith("bool") or mask_kind == "masked_row":
        m = rng.random((7, 9)) > 0.4
        m[:, 0] = True
        if mask_kind == "masked_row":
            m[3] = False  # a query with no key: zeros, as in PyTorch
        f_mask, t_mask = (m if mask_kind == "bool_numpy" else _cuda(m, grad=False)), torch.tensor(m)
    elif mask_kind.startswith("float"):
        m = rng.standard_normal((2, 1, 7, 9)).astype(np.float32)
        f_mask, t_mask = (m.tolist() if mask_kind == "float_list" else _cuda(m, grad=False)), torch.tensor(m)
    causal = mask_kind == "causal"
    f_out = F.scaled_dot_product_attention(*fs, attn_mask=f_mask, is_causal=causal, scale=0.3)
    t_out = TF.scaled_dot_product_attention(*ts, attn_mask=t_mask, is_causal=causal, scale=0.3)
    _compare(f_out, t_out, fs, ts, rtol=2e-5, atol=2e-5)
    if mask_kind == "masked_row":
        assert np.all(_np(f_out)[:, :, 3] == 0)


def test_scaled_dot_product_attention_broadcast_gradcheck_and_dropout(cuda_device):
    rng = _rng(21)
    q = _cuda(rng.standard_normal((2, 3, 4, 5)))
    k = _cuda(rng.standard_normal((1, 3, 6, 5)))  # broadcast over the batch: its gradient is summed back
    v = _cuda(rng.standard_normal((2, 3, 6, 2)))
    mask = rng.random((4, 6)) > 0.3
    mask[:, 0] = True
    assert gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), (q, k, v))
    assert gradcheck(
        lambda a, b, c: F.scaled_dot_product_attention(
            a, b, c, dropout_p=0.3, generator=fm.Generator("cuda").manual_seed(4)
        ),
        (q, k, v),
    )
    fm.manual_seed(5)
    a = _np(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5))
    fm.manual_seed(5)
    b = _np(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="attn_mask is on cpu"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=fm.tensor(mask))


# ------------------------------------------------------------------ autocast
def _bf16_pair(a, grad=True):
    return fm.tensor(a, requires_grad=grad), torch.tensor(a, requires_grad=grad)


def _same_dtype(f, t):
    assert f.dtype.name == str(t.dtype).removeprefix("torch."), (f.dtype, t.dtype)


def _autocast_cases():
    rng = _rng(22)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    w = rng.standard_normal((3, 6)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    p = rng.uniform(0.1, 0.9, (4, 6)).astype(np.float32)
    ln_w = rng.standard_normal(6).astype(np.float32)
    return {
        "linear": (lambda lib, F_, a: F_.linear(a, lib.tensor(w), lib.tensor(b)), x),
        "sdpa": (lambda lib, F_, a: F_.scaled_dot_product_attention(a[None], a[None], a[None]), x),
        "softmax": (lambda lib, F_, a: F_.softmax(a, -1), x),
        "log_softmax": (lambda lib, F_, a: F_.log_softmax(a, 0), x),
        "layer_norm": (lambda lib, F_, a: F_.layer_norm(a, (6,), lib.tensor(ln_w), lib.tensor(ln_w)), x),
        "rms_norm": (lambda lib, F_, a: F_.rms_norm(a, (6,), lib.tensor(ln_w)), x),
        "cross_entropy": (lambda lib, F_, a: F_.cross_entropy(a, lib.tensor(y)), x),
        "cross_entropy_smoothed": (
            lambda lib, F_, a: F_.cross_entropy(a, lib.tensor(y), weight=lib.tensor(ln_w**2), label_smoothing=0.1),
            x,
        ),
        "nll_loss": (lambda lib, F_, a: F_.nll_loss(a, lib.tensor(y)), x),
        "mse_loss": (lambda lib, F_, a: F_.mse_loss(a, lib.tensor(p)), x),
        "l1_loss": (lambda lib, F_, a: F_.l1_loss(a, lib.tensor(p)), x),
        "smooth_l1_loss": (lambda lib, F_, a: F_.smooth_l1_loss(a, lib.tensor(p)), x),
        "bce_with_logits": (lambda lib, F_, a: F_.binary_cross_entropy_with_logits(a, lib.tensor(p)), x),
        "binary_cross_entropy": (lambda lib, F_, a: F_.binary_cross_entropy(a, lib.tensor(p)), p),
        "dropout": (lambda lib, F_, a: F_.dropout(a, 0.0), x),
        "embedding": (lambda lib, F_, a: F_.embedding(lib.tensor([[0, 3]]), a), x),
    }


AUTOCAST_CASES = _autocast_cases()


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # torch's rms_norm, bfloat16 input
@pytest.mark.parametrize("low_input", [False, True], ids=["float32_input", "bfloat16_input"])
@pytest.mark.parametrize("name", sorted(AUTOCAST_CASES))
def test_cpu_autocast_dtypes_match_torch(name, low_input):
    fn, a = AUTOCAST_CASES[name]
    fa, ta = _bf16_pair(a)
    if low_input:
        fa, ta = fa.to(fm.bfloat16), ta.to(torch.bfloat16)
    with fm.autocast("cpu", dtype=fm.bfloat16):
        f_out = fn(fm, F, fa)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t_out = fn(torch, TF, ta)
    _same_dtype(f_out, t_out)
    tol = 3e-2 if "bfloat16" in (f_out.dtype.name, fa.dtype.name) or name in ("linear", "sdpa") else 1e-5
    np.testing.assert_allclose(
        f_out.detach().float().numpy(), t_out.detach().float().numpy(), rtol=tol, atol=tol, err_msg=name
    )
    f_out.float().sum().backward()
    t_out.float().sum().backward()
    if not low_input:  # the float32 leaf gets a float32 gradient through the casts, as in PyTorch
        assert fa.grad.dtype == fm.float32 and ta.grad.dtype == torch.float32


def test_cpu_autocast_keeps_float32_master_gradients_through_a_small_model():
    rng = _rng(23)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    w1, w2 = rng.standard_normal((5, 6)).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    grads = {}
    for lib, F_ in ((fm, F), (torch, TF)):
        params = [lib.tensor(w1, requires_grad=True), lib.tensor(w2, requires_grad=True)]
        with lib.autocast("cpu", dtype=lib.bfloat16):
            h = F_.layer_norm(F_.relu(F_.linear(lib.tensor(x), params[0])), (5,))
            loss = F_.cross_entropy(F_.linear(h, params[1]), lib.tensor(y))
        assert str(loss.dtype).endswith("float32")
        loss.backward()
        grads[lib.__name__] = [p.grad for p in params]
    for f, t in zip(grads["forgeml"], grads["torch"]):
        assert f.dtype == fm.float32
        np.testing.assert_allclose(f.numpy(), t.numpy(), rtol=5e-2, atol=5e-2)


def test_cuda_autocast_rules(cuda_device):
    """PyTorch's CUDA lists: softmax, log_softmax and layer_norm run in float32 there (not on the CPU)."""
    x = _cuda(_rng(24).standard_normal((4, 6)).astype(np.float32))
    w = _cuda(_rng(25).standard_normal((3, 6)).astype(np.float32))
    with fm.autocast("cuda"):
        h = F.linear(x, w)
        assert h.dtype == fm.float16 and h.device == CUDA
        assert F.softmax(h, -1).dtype == fm.float32
        assert F.log_softmax(h, -1).dtype == fm.float32
        assert F.softmax(h, -1, dtype=fm.float16).dtype == fm.float16  # an explicit dtype wins
        assert F.layer_norm(h, (3,)).dtype == fm.float32
        assert F.rms_norm(h, (3,)).dtype == fm.float16  # in neither list
        assert F.cross_entropy(h, [0, 1, 2, 0]).dtype == fm.float32
        assert F.mse_loss(h, h.detach()).dtype == fm.float32
        assert F.scaled_dot_product_attention(h[None], h[None], h[None]).dtype == fm.float16
        with pytest.raises(RuntimeError, match=r"binary_cross_entropy and forgeml\.nn\.BCELoss are unsafe to autocast"):
            F.binary_cross_entropy(F.sigmoid(h), F.sigmoid(h).detach())
        loss = F.cross_entropy(h, [0, 1, 2, 0])
    loss.backward()
    assert x.grad.dtype == fm.float32 and w.grad.dtype == fm.float32 and w.grad.device == CUDA
