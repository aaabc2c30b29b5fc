"""Higher-order gradients: ``create_graph=True``, ``gradgradcheck`` and ``autograd.functional``."""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
import forgeml.nn.functional as F
from forgeml import autograd
from forgeml.autograd import functional as AF

try:
    import torch
except ImportError:  # pragma: no cover - CI installs torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _t(rng, *shape, positive=False, requires_grad=True):
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return fm.tensor(a, dtype=fm.float64, requires_grad=requires_grad)


# name, fn, input shapes (positive inputs where the op needs them)
_CASES = [
    ("add", lambda a, b: a + b, [(2, 3), (3,)], False),
    ("sub", lambda a, b: a - b, [(2, 3), (2, 1)], False),
    ("mul", lambda a, b: a * b, [(2, 3), (2, 3)], False),
    ("mul_broadcast", lambda a, b: a * b * a, [(2, 3), (1, 3)], False),
    ("div", lambda a, b: a / b, [(2, 3), (3,)], True),
    ("neg", lambda a: -a * a, [(2, 3)], False),
    ("pow_scalar", lambda a: a**3, [(2, 3)], True),
    ("pow_tensor", lambda a, b: a**b, [(2, 3), (2, 3)], True),
    ("rpow_scalar_base", lambda a: 2.0**a, [(2, 3)], False),
    ("scalar_ops", lambda a: (2.0 - a) * 3.0 / (a + 4.0), [(2, 3)], True),
    ("exp", lambda a: a.exp(), [(2, 3)], False),
    ("log", lambda a: a.log(), [(2, 3)], True),
    ("sqrt", lambda a: a.sqrt(), [(2, 3)], True),
    ("rsqrt", lambda a: a.rsqrt(), [(2, 3)], True),
    ("tanh", lambda a: a.tanh(), [(2, 3)], False),
    ("sigmoid", lambda a: a.sigmoid(), [(2, 3)], False),
    ("relu", lambda a: a.relu() * a, [(2, 3)], False),
    ("gelu", F.gelu, [(2, 3)], False),
    ("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"), [(2, 3)], False),
    ("softplus", lambda a: F.softplus(a, beta=2.0), [(2, 3)], False),
    ("silu", F.silu, [(2, 3)], False),
    ("leaky_relu", lambda a: F.leaky_relu(a, 0.2) * a, [(2, 3)], False),
    ("elu", F.elu, [(2, 3)], False),
    ("abs", lambda a: a.abs() * a, [(2, 3)], False),
    ("square", fm.square, [(2, 3)], False),
    ("sin_cos", lambda a: a.sin() * a.cos(), [(2, 3)], False),
    ("sum_dim", lambda a: (a * a).sum(1), [(2, 3)], False),
    ("sum_keepdim", lambda a: (a * a).sum(0, keepdim=True) * a, [(2, 3)], False),
    ("mean", lambda a: (a * a).mean(), [(2, 3)], False),
    ("mean_dims", lambda a: (a.exp()).mean((0, 2)), [(2, 3, 2)], False),
    ("matmul", lambda a, b: (a @ b).tanh(), [(2, 3), (3, 4)], False),
    ("matmul_batched", lambda a, b: (a @ b) ** 2, [(2, 2, 3), (3, 2)], False),
    ("matmul_vector", lambda a, b: (a @ b).exp(), [(2, 3), (3,)], False),
    ("linear", lambda x, w, b: F.linear(x, w, b).tanh(), [(2, 3), (4, 3), (4,)], False),
    ("linear_nobias_3d", lambda x, w: F.linear(x, w) ** 2, [(2, 2, 3), (4, 3)], False),
    ("reshape_view", lambda a: (a.reshape(3, 2) ** 2).view(6), [(2, 3)], False),
    ("transpose_permute", lambda a: (a.transpose(0, 1) ** 2).permute(1, 0), [(2, 3)], False),
    ("expand", lambda a: a.expand(2, 3) ** 2, [(1, 3)], False),
    ("squeeze_unsqueeze", lambda a: (a.unsqueeze(0) ** 2).squeeze(0), [(2, 3)], False),
    ("getitem", lambda a: a[0, 1:] ** 2 + a[:, ::2].sum(), [(2, 3)], False),
    ("softmax", lambda a: a.softmax(-1), [(2, 3)], False),
    ("log_softmax", lambda a: F.log_softmax(a, dim=0), [(2, 3)], False),
    ("mse_loss", lambda a, b: F.mse_loss(a.tanh(), b), [(2, 3), (2, 3)], False),
    ("maximum", lambda a, b: fm.maximum(a, b) * a, [(2, 3), (2, 3)], False),
    ("minimum", lambda a, b: fm.minimum(a, b) * b, [(2, 3), (2, 3)], False),
    ("clamp", lambda a: a.clamp(-0.5, 0.5) * a, [(2, 3)], False),
    ("cat", lambda a, b: fm.cat([a, b * a], 0) ** 2, [(2, 3), (2, 3)], False),
    ("stack", lambda a, b: fm.stack([a, b], 1).exp(), [(2, 3), (2, 3)], False),
    ("where", lambda a, b: fm.where(a > 0, a * a, b * a), [(2, 3), (2, 3)], False),
    ("logsumexp", lambda a: fm.logsumexp(a, 1), [(2, 3)], False),
    ("norm", lambda a: a.norm(dim=1), [(2, 3)], False),
    ("var_std", lambda a: a.var(1, keepdim=True) * a.std(0), [(2, 3)], False),
    ("amax", lambda a: a.amax(1) * a.sum(1), [(2, 3)], False),
]


@pytest.mark.parametrize("name,fn,shapes,positive", _CASES, ids=[c[0] for c in _CASES])
def test_gradgradcheck_ops(name, fn, shapes, positive):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    inputs = tuple(_t(rng, *s, positive=positive) for s in shapes)
    assert autograd.gradgradcheck(fn, inputs)


def test_gradgradcheck_cross_entropy():
    rng = np.random.default_rng(1)
    logits = _t(rng, 4, 3)
    target = fm.tensor([0, 2, 1, 2])
    assert autograd.gradgradcheck(lambda x: F.cross_entropy(x * x, target), (logits,))
    assert autograd.gradgradcheck(lambda x: F.cross_entropy(x, target, reduction="none"), (logits,))
    probs = fm.tensor(rng.dirichlet(np.ones(3), size=4))
    assert autograd.gradgradcheck(lambda x: F.cross_entropy(x.sin(), probs, label_smoothing=0.1), (logits,))


def test_gradgradcheck_detects_a_wrong_second_derivative():
    class Square(autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2 * x  # differentiable: its second derivative is right

    class WrongDerivative(autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x.detach() ** 2  # first order right, second order lost (detached)

    rng = np.random.default_rng(2)
    x = _t(rng, 3)
    assert autograd.gradcheck(WrongDerivative.apply, (x,))
    assert autograd.gradgradcheck(Square.apply, (x,))
    assert not autograd.gradgradcheck(WrongDerivative.apply, (x,), raise_exception=False)
    with pytest.raises(autograd.GradcheckError):
        autograd.gradgradcheck(WrongDerivative.apply, (x,))


def test_user_function_double_backward():
    class Cube(autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x * x

    class Exp(autograd.Function):  # saves its output: the second derivative goes through it
        @staticmethod
        def forward(ctx, x):
            out = x.exp()
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return g * out

    x = fm.tensor([1.0, -2.0, 0.5], dtype=fm.float64, requires_grad=True)
    (g,) = autograd.grad(Cube.apply(x).sum(), x, create_graph=True)
    (h,) = autograd.grad(g.sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x.detach().numpy())
    assert autograd.gradgradcheck(lambda a: Exp.apply(a * 0.5), (x,))


def test_backward_create_graph_gives_grad_with_history():
    x = fm.tensor([0.5, -1.0, 2.0], requires_grad=True)
    (x**3).sum().backward(create_graph=True)
    assert x.grad.grad_fn is not None and x.grad.requires_grad
    np.testing.assert_allclose(x.grad.detach().numpy(), 3 * x.detach().numpy() ** 2, rtol=1e-6)
    first = x.grad
    x.grad = None
    first.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.detach().numpy(), rtol=1e-6)
    assert x.grad.grad_fn is None
    # accumulation under create_graph is out of place and keeps history
    y = fm.tensor([1.0, 2.0], requires_grad=True)
    (y * y).sum().backward(create_graph=True)
    (y * y * y).sum().backward(create_graph=True)
    np.testing.assert_allclose(y.grad.detach().numpy(), [2 + 3, 4 + 12], rtol=1e-6)
    (h,) = autograd.grad(y.grad.sum(), y)
    np.testing.assert_allclose(h.numpy(), [2 + 6, 2 + 12], rtol=1e-6)


def test_first_order_backward_keeps_no_history():
    x = fm.tensor([0.5, -1.0], requires_grad=True)
    (x.exp() * x).sum().backward()
    assert x.grad.grad_fn is None and not x.grad.requires_grad


def test_leaves_sharing_a_gradient_get_separate_grads():
    a = fm.tensor([1.0, 2.0], requires_grad=True)
    b = fm.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward(create_graph=True)
    assert a.grad is not b.grad
    (a * b).sum().backward()  # first-order accumulation into a.grad must not change b.grad
    np.testing.assert_allclose(b.grad.detach().numpy(), [2.0, 3.0])
    np.testing.assert_allclose(a.grad.detach().numpy(), [4.0, 5.0])


def test_unsupported_op_names_itself():
    x = fm.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x.flip(0)  # an op with no differentiable backward rule (yet)
    with pytest.raises(RuntimeError, match="FlipBackward does not support higher-order gradients"):
        autograd.grad((y * y).sum(), x, create_graph=True)


def test_grad_create_graph_validates_like_grad():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    z = fm.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="appears to not have been used"):
        autograd.grad((x * x).sum(), [x, z], create_graph=True)
    gx, gz = autograd.grad((x * x).sum(), [x, z], create_graph=True, allow_unused=True)
    assert gz is None and gx.grad_fn is not None


# ------------------------------------------------------------------ parity with PyTorch
def _mlp_params(rng):
    return [rng.standard_normal(s) * 0.5 for s in [(8, 3), (8,), (8, 8), (8,), (1, 8), (1,)]]


def _critic_fm(x, p):
    h = F.leaky_relu(F.linear(x, p[0], p[1]), 0.2)
    h = F.gelu(F.linear(h, p[2], p[3]))
    return F.linear(h, p[4], p[5])


def _critic_torch(x, p):
    tf = torch.nn.functional
    h = tf.leaky_relu(tf.linear(x, p[0], p[1]), 0.2)
    h = tf.gelu(tf.linear(h, p[2], p[3]))
    return tf.linear(h, p[4], p[5])


@needs_torch
def test_wgan_gp_gradient_penalty_matches_torch():
    rng = np.random.default_rng(3)
    params = _mlp_params(rng)
    real, fake, alpha = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)), rng.uniform(size=(6, 1))

    def run(lib, critic, make):
        p = [make(a, True) for a in params]
        mix = make(alpha, False) * make(real, False) + (1 - make(alpha, False)) * make(fake, False)
        mix.requires_grad_(True)
        score = critic(mix, p)
        (g,) = lib.autograd.grad(score.sum(), mix, create_graph=True)
        gp = ((g.norm(2, dim=1) - 1) ** 2).mean()
        loss = critic(make(fake, False), p).mean() - critic(make(real, False), p).mean() + 10 * gp
        loss.backward()
        return loss.item(), [t.grad.detach().numpy() for t in p]

    fl, fg = run(fm, _critic_fm, lambda a, rg: fm.tensor(a, dtype=fm.float64, requires_grad=rg))
    tl, tg = run(torch, _critic_torch, lambda a, rg: torch.tensor(a, dtype=torch.float64, requires_grad=rg))
    assert fl == pytest.approx(tl, rel=1e-10)
    for a, b in zip(fg, tg):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


@needs_torch
def test_cross_entropy_input_gradient_penalty_matches_torch():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    target = np.array([0, 2, 1, 1, 0])

    def run(lib, make, tgt):
        xt, wt = make(x), make(w)
        loss = lib.nn.functional.cross_entropy(lib.nn.functional.linear(xt, wt).tanh(), tgt)
        (gx,) = lib.autograd.grad(loss, xt, create_graph=True)
        total = loss + (gx * gx).sum()
        total.backward()
        return total.item(), xt.grad.detach().numpy(), wt.grad.detach().numpy()

    f = run(fm, lambda a: fm.tensor(a, dtype=fm.float64, requires_grad=True), fm.tensor(target))
    t = run(torch, lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True), torch.tensor(target))
    assert f[0] == pytest.approx(t[0], rel=1e-10)
    np.testing.assert_allclose(f[1], t[1], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(f[2], t[2], rtol=1e-8, atol=1e-12)


def _scalar_fn(lib):
    def f(x, y):
        return ((x @ y).tanh() * x.sum(1, keepdim=True)).sum() + (y.exp() * y).sum()

    return f


@needs_torch
def test_hvp_vhp_vjp_jvp_match_torch():
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((2, 3)), rng.standard_normal((3, 2))]
    vs = [rng.standard_normal((2, 3)), rng.standard_normal((3, 2))]
    fin = tuple(fm.tensor(a, dtype=fm.float64) for a in xs)
    fv = tuple(fm.tensor(a, dtype=fm.float64) for a in vs)
    tin = tuple(torch.tensor(a, dtype=torch.float64) for a in xs)
    tv = tuple(torch.tensor(a, dtype=torch.float64) for a in vs)
    for name in ("hvp", "vhp"):
        fo, fr = getattr(AF, name)(_scalar_fn(fm), fin, fv)
        to, tr = getattr(torch.autograd.functional, name)(_scalar_fn(torch), tin, tv)
        assert fo.item() == pytest.approx(to.item(), rel=1e-12)
        assert isinstance(fr, tuple) and len(fr) == 2
        for a, b in zip(fr, tr):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)

    def g(x):
        return (x.sin() * x).reshape(3, 2).T @ x[0]

    x, u, w = rng.standard_normal((2, 3)), rng.standard_normal(2), rng.standard_normal((2, 3))
    fo, fr = AF.vjp(g, fm.tensor(x), fm.tensor(u))
    to, tr = torch.autograd.functional.vjp(g, torch.tensor(x), torch.tensor(u))
    np.testing.assert_allclose(fo.numpy(), to.numpy(), rtol=1e-12)
    np.testing.assert_allclose(fr.numpy(), tr.numpy(), rtol=1e-9, atol=1e-12)
    fo, fr = AF.jvp(g, fm.tensor(x), fm.tensor(w))
    to, tr = torch.autograd.functional.jvp(g, torch.tensor(x), torch.tensor(w))
    np.testing.assert_allclose(fr.numpy(), tr.numpy(), rtol=1e-9, atol=1e-12)
    assert fr.grad_fn is None and not fr.requires_grad


@needs_torch
def test_jacobian_and_hessian_match_torch():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal(3)

    def f(x, y):
        return (x * y).exp(), (x @ y).tanh()

    fj = AF.jacobian(f, (fm.tensor(a), fm.tensor(b)))
    tj = torch.autograd.functional.jacobian(f, (torch.tensor(a), torch.tensor(b)))
    assert len(fj) == 2 and all(len(row) == 2 for row in fj)
    for frow, trow in zip(fj, tj):
        for x, y in zip(frow, trow):
            assert tuple(x.shape) == tuple(y.shape)
            np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-9, atol=1e-12)
    single = AF.jacobian(lambda x: x.softmax(-1), fm.tensor(b))
    np.testing.assert_allclose(
        single.numpy(), torch.autograd.functional.jacobian(lambda x: x.softmax(-1), torch.tensor(b)).numpy(), rtol=1e-9
    )

    def s(x, y):
        return (x.sin() * y).sum() + (x * x).sum() * (y**3).sum()

    fh = AF.hessian(s, (fm.tensor(a), fm.tensor(b)))
    th = torch.autograd.functional.hessian(s, (torch.tensor(a), torch.tensor(b)))
    for frow, trow in zip(fh, th):
        for x, y in zip(frow, trow):
            assert tuple(x.shape) == tuple(y.shape)
            np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-9, atol=1e-12)
    h1 = AF.hessian(lambda x: (x.exp() * x).sum(), fm.tensor(b))
    t1 = torch.autograd.functional.hessian(lambda x: (x.exp() * x).sum(), torch.tensor(b))
    assert tuple(h1.shape) == (3, 3)
    np.testing.assert_allclose(h1.numpy(), t1.numpy(), rtol=1e-9)


def test_jacobian_create_graph_is_differentiable():
    x = fm.tensor([0.3, -0.7], dtype=fm.float64, requires_grad=True)
    jac = AF.jacobian(lambda z: z.exp() * z.sum(), x, create_graph=True)
    assert jac.grad_fn is not None
    (g,) = autograd.grad(jac.sum(), x)
    eps = 1e-6
    num = []
    for i in range(2):
        d = np.zeros(2)
        d[i] = eps
        plus = AF.jacobian(lambda z: z.exp() * z.sum(), fm.tensor(x.detach().numpy() + d)).numpy().sum()
        minus = AF.jacobian(lambda z: z.exp() * z.sum(), fm.tensor(x.detach().numpy() - d)).numpy().sum()
        num.append((plus - minus) / (2 * eps))
    np.testing.assert_allclose(g.numpy(), num, rtol=1e-6)
