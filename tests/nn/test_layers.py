"""Layers, losses, init and utils: parity with PyTorch (forward and gradients) and gradcheck."""

import math

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.autograd import gradcheck
from forgeml.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _pair(arr, requires_grad=True):
    return fm.tensor(arr, requires_grad=requires_grad), torch.tensor(arr, requires_grad=requires_grad)


# ------------------------------------------------------------------ Linear
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(shape, bias):
    ours = nn.Linear(4, 3, bias=bias)
    theirs = torch.nn.Linear(4, 3, bias=bias)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    fx, tx = _pair(x)
    fo, to = ours(fx), theirs(tx)
    np.testing.assert_allclose(fo.detach().numpy(), to.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = np.random.default_rng(1).standard_normal(to.shape).astype(np.float32)
    fo.backward(fm.tensor(g))
    to.backward(torch.tensor(g))
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-5, atol=1e-5)
    if bias:
        np.testing.assert_allclose(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_linear_gradcheck_and_pytorch_default_init():
    x = fm.randn(3, 2, 4, dtype=fm.float64, requires_grad=True)
    w = fm.randn(5, 4, dtype=fm.float64, requires_grad=True)
    b = fm.randn(5, dtype=fm.float64, requires_grad=True)
    assert gradcheck(F.linear, (x, w, b))
    fm.manual_seed(3)
    layer = nn.Linear(600, 400)  # PyTorch's default: weight and bias from U(-1/sqrt(600), 1/sqrt(600))
    bound = 1 / math.sqrt(600)
    weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.999 * bound
    assert abs(weight.std() / (bound / math.sqrt(3)) - 1) < 0.02
    assert abs(weight.mean()) < 3 * bound / math.sqrt(3 * 600 * 400)
    assert np.abs(bias).max() <= bound and bias.std() > bound / 3
    nn.init.xavier_normal_(layer.weight)  # the seed's scheme, one explicit line
    std = math.sqrt(2.0 / (600 + 400))
    assert abs(layer.weight.detach().numpy().std() / std - 1) < 0.02


def test_linear_shape_errors_name_the_sizes():
    with pytest.raises(RuntimeError, match=r"input has 5 features, the weight expects 4"):
        nn.Linear(4, 3)(fm.zeros(2, 5))


# ------------------------------------------------------------- activations
ACTIVATIONS = [
    (nn.ReLU(), torch.nn.ReLU()),
    (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    (nn.ELU(0.5), torch.nn.ELU(0.5)),
    (nn.GELU(), torch.nn.GELU()),
    (nn.GELU("tanh"), torch.nn.GELU("tanh")),
    (nn.SiLU(), torch.nn.SiLU()),
    (nn.Sigmoid(), torch.nn.Sigmoid()),
    (nn.Tanh(), torch.nn.Tanh()),
    (nn.Softplus(2.0, 5.0), torch.nn.Softplus(2.0, 5.0)),
    (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)),
    (nn.LogSoftmax(dim=0), torch.nn.LogSoftmax(dim=0)),
    (nn.Identity(), torch.nn.Identity()),
    (nn.Flatten(), torch.nn.Flatten()),
    (nn.Unflatten(1, (2, 3)), torch.nn.Unflatten(1, (2, 3))),
]


@pytest.mark.parametrize("pair", ACTIVATIONS, ids=lambda p: repr(p[0]))
def test_activation_modules_match_torch(pair):
    ours, theirs = pair
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    fx, tx = _pair(x)
    fo, to = ours(fx), theirs(tx)
    np.testing.assert_allclose(fo.detach().numpy(), to.detach().numpy(), rtol=1e-5, atol=1e-6)
    fo.sum().backward() if fo.requires_grad else None
    to.sum().backward()
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert repr(ours) == repr(theirs)


# ------------------------------------------------------------------ Dropout
def test_dropout_scales_survivors_and_is_identity_in_eval():
    drop = nn.Dropout(0.25)
    x = fm.ones(200, 500, requires_grad=True)
    y = drop(x)
    values = np.unique(y.detach().numpy())
    np.testing.assert_allclose(values, [0.0, 1 / 0.75])
    kept = (y.detach().numpy() != 0).mean()
    assert abs(kept - 0.75) < 0.01
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.detach().numpy())  # the same mask forward and back
    drop.eval()
    assert drop(x) is x
    assert F.dropout(x, 0.5, training=False) is x


def test_dropout_is_reproducible_under_manual_seed_and_edge_probabilities():
    x = fm.ones(10, 10)
    fm.manual_seed(7)
    a = nn.Dropout(0.5)(x)
    fm.manual_seed(7)
    b = nn.Dropout(0.5)(x)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.all(nn.Dropout(1.0)(x).numpy() == 0)
    assert nn.Dropout(0.0)(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


# ------------------------------------------------------------------- losses
def _class_problem(seed, shape=(6, 5), ignore=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    n_classes = shape[1]
    target_shape = (shape[0],) + shape[2:]
    y = rng.integers(0, n_classes, target_shape)
    if ignore:
        y.reshape(-1)[1] = -100
    w = rng.random(n_classes) + 0.1
    return x, y, w


CE_OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.2},
    {"weight": True},
    {"weight": True, "label_smoothing": 0.1, "reduction": "none"},
    {"weight": True, "reduction": "sum", "ignore_index": 2},
]


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 3)])
@pytest.mark.parametrize("opts", CE_OPTIONS, ids=str)
def test_cross_entropy_class_indices_matches_torch(shape, opts):
    x, y, w = _class_problem(0, shape)
    opts = dict(opts)
    if "ignore_index" in opts:
        y[y == -100] = opts["ignore_index"]
    f_kw, t_kw = dict(opts), dict(opts)
    if opts.pop("weight", False):
        f_kw["weight"], t_kw["weight"] = fm.tensor(w), torch.tensor(w)
    fx, tx = _pair(x)
    fo = F.cross_entropy(fx, fm.tensor(y), **f_kw)
    to = TF.cross_entropy(tx, torch.tensor(y), **t_kw)
    np.testing.assert_allclose(fo.detach().numpy(), to.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(9).standard_normal(to.shape)
    fo.backward(fm.tensor(g))
    to.backward(torch.tensor(g))
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_probability_targets_matches_torch(smoothing):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4))
    t = rng.random((5, 4))
    t /= t.sum(1, keepdims=True)
    w = rng.random(4) + 0.5
    fx, tx = _pair(x)
    fo = F.cross_entropy(fx, fm.tensor(t), weight=fm.tensor(w), label_smoothing=smoothing)
    to = TF.cross_entropy(tx, torch.tensor(t), weight=torch.tensor(w), label_smoothing=smoothing)
    np.testing.assert_allclose(fo.item(), to.item(), rtol=1e-12)
    fo.backward()
    to.backward()
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_cross_entropy_gradcheck_and_module_and_float32():
    x, y, w = _class_problem(5)
    fx = fm.tensor(x, requires_grad=True)
    assert gradcheck(lambda a: F.cross_entropy(a, fm.tensor(y), weight=fm.tensor(w), label_smoothing=0.1), (fx,))
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    x32 = x.astype(np.float32)
    y_clean = np.abs(y) % 5
    out = loss(fm.tensor(x32), fm.tensor(y_clean))
    assert out.dtype == fm.float32
    ref = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(torch.tensor(x32), torch.tensor(y_clean))
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-6)


def test_cross_entropy_errors_name_the_problem():
    x = fm.randn(3, 4)
    with pytest.raises(IndexError, match="Target 7 is out of bounds"):
        F.cross_entropy(x, fm.tensor([0, 7, 1]))
    with pytest.raises(RuntimeError, match=r"expected target of shape \[3\]"):
        F.cross_entropy(x, fm.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, fm.tensor([0, 1, 2]), reduction="avg")


def test_cross_entropy_all_ignored_gives_nan_like_torch():
    x = np.zeros((2, 3))
    ours = F.cross_entropy(fm.tensor(x), fm.tensor([-100, -100])).item()
    theirs = TF.cross_entropy(torch.tensor(x), torch.tensor([-100, -100])).item()
    assert math.isnan(ours) and math.isnan(theirs)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_torch(reduction, weighted):
    x, y, w = _class_problem(6)
    fx, tx = _pair(x)
    kw_f = {"weight": fm.tensor(w)} if weighted else {}
    kw_t = {"weight": torch.tensor(w)} if weighted else {}
    fo = F.nll_loss(fx.log_softmax(1), fm.tensor(y), reduction=reduction, **kw_f)
    to = TF.nll_loss(tx.log_softmax(1), torch.tensor(y), reduction=reduction, **kw_t)
    np.testing.assert_allclose(fo.detach().numpy(), to.detach().numpy(), rtol=1e-10)
    fo.sum().backward()
    to.sum().backward()
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


REGRESSION_LOSSES = [
    ("mse", lambda a, b, lib, r: (F.mse_loss if lib is fm else TF.mse_loss)(a, b, reduction=r)),
    ("l1", lambda a, b, lib, r: (F.l1_loss if lib is fm else TF.l1_loss)(a, b, reduction=r)),
    ("smooth_l1", lambda a, b, lib, r: (F.smooth_l1_loss if lib is fm else TF.smooth_l1_loss)(a, b, reduction=r)),
    (
        "smooth_l1_beta",
        lambda a, b, lib, r: (F.smooth_l1_loss if lib is fm else TF.smooth_l1_loss)(a, b, reduction=r, beta=0.3),
    ),
    (
        "bce",
        lambda a, b, lib, r: (F.binary_cross_entropy if lib is fm else TF.binary_cross_entropy)(
            a.sigmoid(), (b > 0).to(a.dtype), reduction=r
        ),
    ),
    (
        "bce_weight",
        lambda a, b, lib, r: (F.binary_cross_entropy if lib is fm else TF.binary_cross_entropy)(
            a.sigmoid(), (b > 0).to(a.dtype), weight=b.abs().detach(), reduction=r
        ),
    ),
    (
        "bce_logits",
        lambda a, b, lib, r: (F.binary_cross_entropy_with_logits if lib is fm else TF.binary_cross_entropy_with_logits)(
            a * 20, (b > 0).to(a.dtype), reduction=r
        ),
    ),
    (
        "bce_logits_weights",
        lambda a, b, lib, r: (F.binary_cross_entropy_with_logits if lib is fm else TF.binary_cross_entropy_with_logits)(
            a * 3, b.sigmoid().detach(), weight=b.abs().detach(), pos_weight=(b[0].abs() + 0.5).detach(), reduction=r
        ),
    ),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", REGRESSION_LOSSES, ids=lambda c: c[0])
def test_regression_and_binary_losses_match_torch(case, reduction):
    _, fn = case
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    fa, ta = _pair(a)
    fb, tb = _pair(b)
    fo, to = fn(fa, fb, fm, reduction), fn(ta, tb, torch, reduction)
    np.testing.assert_allclose(fo.detach().numpy(), to.detach().numpy(), rtol=1e-10, atol=1e-12)
    fo.sum().backward()
    to.sum().backward()
    np.testing.assert_allclose(fa.grad.numpy(), ta.grad.numpy(), rtol=1e-9, atol=1e-12)
    if tb.grad is not None:
        np.testing.assert_allclose(fb.grad.numpy(), tb.grad.numpy(), rtol=1e-9, atol=1e-12)
    if reduction == "mean":
        fa2, fb2 = fm.tensor(a, requires_grad=True), fm.tensor(b)
        assert gradcheck(lambda x: fn(x, fb2, fm, "mean"), (fa2,))


def test_loss_modules_match_functional():
    x, y = fm.randn(4, 3), fm.randn(4, 3)
    assert nn.MSELoss()(x, y).item() == F.mse_loss(x, y).item()
    assert nn.L1Loss(reduction="sum")(x, y).item() == F.l1_loss(x, y, reduction="sum").item()
    assert nn.SmoothL1Loss(beta=0.5)(x, y).item() == F.smooth_l1_loss(x, y, beta=0.5).item()
    pw = fm.ones(3) * 2
    assert (
        nn.BCEWithLogitsLoss(pos_weight=pw)(x, y.sigmoid()).item()
        == F.binary_cross_entropy_with_logits(x, y.sigmoid(), pos_weight=pw).item()
    )
    with pytest.raises(ValueError, match="target size"):
        nn.MSELoss()(x, fm.randn(3, 4))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        nn.BCELoss()(x, y)


# --------------------------------------------------------------- init/utils
@pytest.mark.parametrize(
    "name, param",
    [("linear", None), ("relu", None), ("tanh", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)],
)
def test_calculate_gain_matches_torch(name, param):
    assert nn.init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))


@pytest.mark.parametrize(
    "fn, expected_std",
    [
        (nn.init.xavier_uniform_, math.sqrt(2 / (300 + 200))),
        (lambda t: nn.init.xavier_normal_(t, gain=2.0), 2 * math.sqrt(2 / (300 + 200))),
        (lambda t: nn.init.kaiming_uniform_(t, nonlinearity="relu"), math.sqrt(2 / 300)),
        (lambda t: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), math.sqrt(2 / 200)),
        (lambda t: nn.init.normal_(t, 0.0, 0.3), 0.3),
        (lambda t: nn.init.uniform_(t, -1, 1), 1 / math.sqrt(3)),
    ],
)
def test_init_distributions_have_the_right_spread(fn, expected_std):
    t = fm.empty(200, 300)
    out = fn(t)
    assert out is t
    assert abs(t.numpy().std() / expected_std - 1) < 0.03


def test_trunc_normal_constant_zeros_ones_and_no_graph():
    w = nn.Parameter(fm.empty(100, 100))
    nn.init.trunc_normal_(w, std=1.0, a=-0.5, b=0.5)
    assert w.detach().numpy().min() >= -0.5 and w.detach().numpy().max() <= 0.5
    assert w.grad_fn is None and w.is_leaf
    nn.init.constant_(w, 0.3)
    assert np.all(w.detach().numpy() == np.float32(0.3))
    assert np.all(nn.init.zeros_(fm.empty(3)).numpy() == 0) and np.all(nn.init.ones_(fm.empty(3)).numpy() == 1)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(fm.empty(3))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_matches_torch(norm_type):
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal((3, 4)) * 5, rng.standard_normal(4)]
    ours = [nn.Parameter(fm.zeros(*g.shape, dtype=fm.float64)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(*g.shape, dtype=torch.float64)) for g in grads]
    for o, t, g in zip(ours, theirs, grads):
        o.grad = fm.tensor(g)
        t.grad = torch.tensor(g)
    n_ours = nn.utils.clip_grad_norm_(ours, 1.5, norm_type)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, 1.5, norm_type)
    assert n_ours.item() == pytest.approx(n_theirs.item(), rel=1e-12)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_clip_grad_value_and_vector_round_trip():
    p = nn.Parameter(fm.zeros(4))
    p.grad = fm.tensor([-3.0, -0.5, 0.5, 3.0])
    nn.utils.clip_grad_value_([p], 1.0)
    assert p.grad.tolist() == [-1.0, -0.5, 0.5, 1.0]
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    vec = nn.utils.parameters_to_vector(net.parameters())
    assert vec.shape == (net.num_parameters(),)
    nn.utils.vector_to_parameters(vec * 0 + 1, net.parameters())
    assert all(np.all(p.detach().numpy() == 1) for p in net.parameters())
    with pytest.raises(ValueError, match="elements"):
        nn.utils.vector_to_parameters(fm.zeros(3), net.parameters())
