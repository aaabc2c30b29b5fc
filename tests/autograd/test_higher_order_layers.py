"""Higher-order gradients of the layers of convolutional and transformer critics (gradient penalties).

Each op is checked two ways in float64: the gradients ``create_graph=True`` gives equal the
first-order ones, and ``gradgradcheck`` compares their derivatives with finite differences.
A WGAN-GP gradient penalty on small conv critics is compared with PyTorch's.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
import forgeml.nn.functional as F
from forgeml import autograd, nn

try:
    import torch
except ImportError:  # pragma: no cover - CI installs torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _t(rng, *shape, requires_grad=True):
    return fm.tensor(rng.standard_normal(shape), dtype=fm.float64, requires_grad=requires_grad)


def _check(fn, inputs):
    """create_graph gradients equal first-order ones, and their derivatives pass gradgradcheck."""
    out = fn(*inputs)
    rng = np.random.default_rng(7)
    v = fm.tensor(rng.standard_normal(tuple(out.shape)), dtype=fm.float64)
    wanted = [t for t in inputs if t.requires_grad]
    first = autograd.grad(fn(*inputs), wanted, grad_outputs=v)
    second = autograd.grad(fn(*inputs), wanted, grad_outputs=v, create_graph=True)
    for a, b in zip(first, second):
        np.testing.assert_allclose(b.detach().numpy(), a.numpy(), rtol=1e-10, atol=1e-12)
    assert autograd.gradgradcheck(fn, tuple(inputs))


IDX = fm.tensor([2, 0, 2, 1])
MASK = fm.tensor(np.array([[True, False, True], [False, False, True]]))
ATTN_MASK = fm.tensor(np.array([[True, False, True], [True, True, True], [False, False, False]]))

# name, fn, input shapes
_CASES = [
    ("conv2d", lambda x, w, b: F.conv2d(x, w, b, padding=1), [(2, 2, 4, 4), (3, 2, 3, 3), (3,)]),
    ("conv2d_tanh", lambda x, w: F.conv2d(x, w).tanh(), [(1, 2, 4, 4), (2, 2, 2, 2)]),
    (
        "conv2d_stride_dilation_groups",
        lambda x, w: F.conv2d(x, w, stride=2, padding=1, dilation=2, groups=2),
        [(2, 4, 6, 7), (4, 2, 2, 3)],
    ),
    ("conv2d_uneven_stride", lambda x, w: F.conv2d(x, w, stride=(2, 3)), [(1, 2, 6, 8), (2, 2, 3, 2)]),
    ("conv2d_same_even_kernel", lambda x, w: F.conv2d(x, w, padding="same"), [(1, 2, 4, 5), (2, 2, 2, 4)]),
    ("conv2d_unbatched", lambda x, w, b: F.conv2d(x, w, b, stride=2), [(2, 5, 5), (3, 2, 3, 3), (3,)]),
    ("conv1d", lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1).tanh(), [(2, 3, 7), (4, 3, 3), (4,)]),
    ("conv1d_same", lambda x, w: F.conv1d(x, w, padding="same", dilation=2), [(2, 2, 6), (2, 2, 2)]),
    (
        "conv_transpose2d",
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
        [(2, 2, 3, 3), (2, 3, 3, 3), (3,)],
    ),
    (
        "conv_transpose2d_groups",
        lambda x, w: F.conv_transpose2d(x, w, groups=2, dilation=2),
        [(1, 4, 3, 2), (4, 1, 2, 2)],
    ),
    ("avg_pool2d", lambda x: F.avg_pool2d(x * x, 2), [(2, 2, 4, 4)]),
    (
        "avg_pool2d_pad_ceil",
        lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False) ** 2,
        [(1, 2, 5, 6)],
    ),
    ("max_pool2d", lambda x: F.max_pool2d(x, 2) ** 2, [(2, 2, 4, 4)]),
    ("max_pool2d_overlap_pad", lambda x: F.max_pool2d(x, 3, stride=1, padding=1).tanh(), [(1, 2, 4, 5)]),
    ("max_pool2d_dilation_unbatched", lambda x: F.max_pool2d(x, 2, stride=2, dilation=2) ** 2, [(2, 6, 6)]),
    ("max_pool2d_indices", lambda x: F.max_pool2d(x, 2, return_indices=True)[0] ** 2, [(1, 2, 4, 4)]),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (2, 3)) ** 2, [(1, 2, 5, 7)]),
    ("adaptive_avg_pool2d_even", lambda x: F.adaptive_avg_pool2d(x, 2).tanh(), [(2, 1, 4, 4)]),
    ("layer_norm", lambda x, w, b: F.layer_norm(x, (3,), w, b), [(2, 3), (3,), (3,)]),
    ("layer_norm_2d_noaffine", lambda x: F.layer_norm(x, (2, 3)) ** 2, [(2, 2, 3)]),
    ("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), [(2, 4, 3), (4,), (4,)]),
    ("group_norm_noaffine", lambda x: F.group_norm(x, 1) ** 2, [(2, 2, 2, 2)]),
    (
        "batch_norm_train",
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        [(3, 2, 2), (2,), (2,)],
    ),
    ("batch_norm_train_noaffine", lambda x: F.batch_norm(x, None, None, training=True) ** 2, [(4, 3)]),
    (
        "batch_norm_eval",
        lambda x, w: F.batch_norm(x, fm.zeros(2, dtype=fm.float64) + 0.3, fm.ones(2, dtype=fm.float64) * 2, w).tanh(),
        [(3, 2), (2,)],
    ),
    ("masked_fill", lambda x: x.masked_fill(MASK, 2.0) ** 2, [(2, 3)]),
    ("masked_fill_tensor_value", lambda x, v: x.masked_fill(MASK, v * v) * x, [(2, 3), ()]),
    ("embedding", lambda w: F.embedding(fm.tensor([[1, 3], [1, 0]]), w) ** 2, [(4, 3)]),
    ("embedding_padding", lambda w: F.embedding(fm.tensor([[1, 3], [1, 0]]), w, padding_idx=1).tanh(), [(4, 3)]),
    ("index_select", lambda x: fm.index_select(x, 1, IDX) ** 2, [(2, 3)]),
    ("gather", lambda x: fm.gather(x, 1, fm.tensor([[0, 0, 2], [1, 2, 1]])) ** 2, [(2, 3)]),
    ("advanced_getitem", lambda x: x[IDX] ** 2, [(3, 2)]),
    ("bool_getitem", lambda x: x[MASK].exp(), [(2, 3)]),
    ("sdpa", F.scaled_dot_product_attention, [(2, 3, 4), (2, 5, 4), (2, 5, 2)]),
    ("sdpa_causal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [(1, 3, 2)] * 3),
    (
        "sdpa_mask_full_row",  # the last query may attend to nothing: its row stays zero
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=ATTN_MASK, scale=0.7).tanh(),
        [(2, 3, 2), (2, 3, 2), (2, 3, 3)],
    ),
    (
        "sdpa_broadcast_kv",
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=fm.tensor([[0.0, -1.0], [0.5, 0.0]])),
        [(2, 2, 2, 3), (1, 2, 3), (2, 3)],
    ),
    (
        "scatter_add",
        lambda x, s: fm.scatter_add(x, 0, fm.tensor([[1, 0], [1, 1]]), s * s) * x,
        [(2, 3), (2, 3)],
    ),
]


@pytest.mark.parametrize("name,fn,shapes", _CASES, ids=[c[0] for c in _CASES])
def test_layer_double_backward(name, fn, shapes):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    _check(fn, [_t(rng, *s) for s in shapes])


def test_conv2d_input_only_and_weight_only():
    rng = np.random.default_rng(3)
    x, w = _t(rng, 1, 2, 5, 5), _t(rng, 3, 2, 3, 3)
    _check(lambda a: F.conv2d(a, w.detach(), stride=2).tanh(), [x])
    _check(lambda b: F.conv2d(x.detach(), b, stride=2).tanh(), [w])


def test_third_order_through_conv2d():
    rng = np.random.default_rng(4)
    x, w = _t(rng, 1, 1, 4, 4), _t(rng, 1, 1, 2, 2)
    (gx,) = autograd.grad(F.conv2d(x, w).pow(3).sum(), x, create_graph=True)
    (gw,) = autograd.grad(gx.pow(2).sum(), w, create_graph=True)  # through the transposed conv's rule
    assert gw.requires_grad
    assert autograd.gradgradcheck(lambda a, b: F.conv_transpose2d(a, b).pow(2), (x, w))


def test_a_wrong_rule_fails_gradgradcheck(monkeypatch):
    from forgeml.autograd.higher_order import DIFFERENTIABLE_BACKWARD
    from forgeml.ops import conv as conv_ops

    rule = DIFFERENTIABLE_BACKWARD[conv_ops.Conv2d]

    def broken(node, saved, g):
        gx, gw, *rest = rule(node, saved, g)
        return (gx, gw.detach() if gw is not None else None, *rest)  # the weight gradient loses its history

    monkeypatch.setitem(DIFFERENTIABLE_BACKWARD, conv_ops.Conv2d, broken)
    rng = np.random.default_rng(5)
    x, w = _t(rng, 1, 1, 3, 3), _t(rng, 1, 1, 2, 2)
    assert not autograd.gradgradcheck(F.conv2d, (x, w), raise_exception=False)


# ------------------------------------------------------------ WGAN-GP parity with torch
def _critics(pool: str, norm: str):
    tn = torch.nn
    t_pool = tn.AvgPool2d(2) if pool == "avg" else tn.MaxPool2d(2)
    f_pool = nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)
    t_norm = tn.LayerNorm([4, 3, 3]) if norm == "layer" else tn.GroupNorm(2, 4)
    f_norm = nn.LayerNorm([4, 3, 3]) if norm == "layer" else nn.GroupNorm(2, 4)
    t_model = tn.Sequential(
        tn.Conv2d(3, 4, 3, padding=1), tn.LeakyReLU(0.2), t_pool, t_norm, tn.Flatten(), tn.Linear(36, 1)
    ).double()
    f_model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.2), f_pool, f_norm, nn.Flatten(), nn.Linear(36, 1)
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in t_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    f_model.to(fm.float64)
    f_model.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in t_model.state_dict().items()})
    return t_model, f_model


def _wgan_gp(lib, model, real, fake, alpha, lam=10.0):
    mix = alpha * real + (1 - alpha) * fake
    mix.requires_grad_(True)
    score = model(mix)
    (grad,) = lib.autograd.grad(score.sum(), mix, create_graph=True)
    gp = ((grad.reshape(grad.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
    loss = model(fake).mean() - model(real).mean() + lam * gp
    loss.backward()
    return loss.detach(), gp.detach()


@needs_torch
@pytest.mark.parametrize("pool,norm", [("avg", "layer"), ("max", "group"), ("avg", "group"), ("max", "layer")])
def test_wgan_gp_matches_torch(pool, norm):
    t_model, f_model = _critics(pool, norm)
    rng = np.random.default_rng(11)
    real, fake = rng.standard_normal((4, 3, 6, 6)), rng.standard_normal((4, 3, 6, 6))
    alpha = rng.uniform(size=(4, 1, 1, 1))
    t_loss, t_gp = _wgan_gp(torch, t_model, *(torch.tensor(a) for a in (real, fake, alpha)))
    f_loss, f_gp = _wgan_gp(fm, f_model, *(fm.tensor(a, dtype=fm.float64) for a in (real, fake, alpha)))
    assert t_gp.item() > 1e-3  # the penalty is not trivially zero
    np.testing.assert_allclose(f_gp.item(), t_gp.item(), rtol=1e-9)
    np.testing.assert_allclose(f_loss.item(), t_loss.item(), rtol=1e-9)
    t_params = dict(t_model.named_parameters())
    for name, p in f_model.named_parameters():
        assert p.grad is not None, name
        np.testing.assert_allclose(p.grad.numpy(), t_params[name].grad.numpy(), rtol=1e-7, atol=1e-10, err_msg=name)


_W = fm.tensor(np.random.default_rng(9).standard_normal((2, 2, 2, 2)))
_THIRD = [
    ("max_pool2d", lambda x: F.max_pool2d(x, 2, stride=1), (1, 2, 3, 3)),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 2, stride=1, padding=1), (1, 2, 3, 3)),
    ("conv2d", lambda x: F.conv2d(x, _W, stride=2, padding=1), (1, 2, 4, 4)),
    ("conv_transpose2d", lambda x: F.conv_transpose2d(x, _W, stride=2), (1, 2, 2, 2)),
    ("embedding", lambda w: F.embedding(fm.tensor([0, 2, 0]), w, padding_idx=2), (3, 2)),
    ("index_select", lambda x: fm.index_select(x, 0, IDX), (3, 2)),
    ("gather", lambda x: fm.gather(x, 0, fm.tensor([[0, 1], [0, 0]])), (2, 2)),
]


@pytest.mark.parametrize("name,fn,in_shape", _THIRD, ids=[c[0] for c in _THIRD])
def test_third_order(name, fn, in_shape):
    """gradgradcheck of a gradient taken with create_graph: the rules of the backward ops themselves."""

    def first_grad(x):
        (g,) = autograd.grad(fn(x).pow(3).sum(), x, create_graph=True)
        return g

    x = _t(np.random.default_rng(abs(hash(name)) % 2**32), *in_shape)
    _check(first_grad, [x])  # second-order values through the backward ops' rules, then their derivatives


def test_window_gather_double_backward():
    from forgeml.ops.double_backward import WindowGather

    flat = np.array([[[0, 7], [9, 9]]])  # positions in a (1, 4, 4) image padded by one row at the top and left
    x = _t(np.random.default_rng(6), 1, 3, 3)
    _check(lambda a: WindowGather.apply(a * a, flat, (1, 0, 1, 0)) ** 2, [x])


class _TransformerCritic:
    """An encoder layer, a mean over the sequence and a linear score (built with torch.nn or forgeml.nn)."""

    @staticmethod
    def build(lib_nn, base):
        class Critic(base):
            def __init__(self):
                super().__init__()
                self.encoder = lib_nn.TransformerEncoderLayer(
                    8, 2, dim_feedforward=16, dropout=0.0, batch_first=True, activation="gelu"
                )
                self.head = lib_nn.Linear(8, 1)

            def forward(self, x):
                return self.head(self.encoder(x).mean(1))

        return Critic()


@needs_torch
def test_wgan_gp_transformer_critic_matches_torch():
    t_model = _TransformerCritic.build(torch.nn, torch.nn.Module).double()
    f_model = _TransformerCritic.build(nn, nn.Module)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in t_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.4)
    f_model.to(fm.float64)
    f_model.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in t_model.state_dict().items()})
    rng = np.random.default_rng(12)
    real, fake = rng.standard_normal((3, 4, 8)), rng.standard_normal((3, 4, 8))
    alpha = rng.uniform(size=(3, 1, 1))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):  # torch's flash kernel on the CPU has no double backward
        t_loss, t_gp = _wgan_gp(torch, t_model, *(torch.tensor(a) for a in (real, fake, alpha)))
    f_loss, f_gp = _wgan_gp(fm, f_model, *(fm.tensor(a, dtype=fm.float64) for a in (real, fake, alpha)))
    assert t_gp.item() > 1e-3
    np.testing.assert_allclose(f_gp.item(), t_gp.item(), rtol=1e-9)
    np.testing.assert_allclose(f_loss.item(), t_loss.item(), rtol=1e-9)
    t_params = dict(t_model.named_parameters())
    for name, p in f_model.named_parameters():
        assert p.grad is not None, name
        np.testing.assert_allclose(p.grad.numpy(), t_params[name].grad.numpy(), rtol=1e-7, atol=1e-10, err_msg=name)
