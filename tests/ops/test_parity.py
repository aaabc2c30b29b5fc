"""Every differentiable op, checked two ways.

1. ``gradcheck``: analytical gradients against float64 central differences, on
   contiguous inputs and on non-contiguous ones (transposed, strided slices).
2. PyTorch as an oracle: forward values and input gradients in float32 on the
   same random inputs and upstream gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

import forgeml as fm
from forgeml.autograd import gradcheck

torch = pytest.importorskip("torch")
F = torch.nn.functional


@dataclass
class Case:
    name: str
    fm_fn: object
    torch_fn: object
    shapes: list
    domain: str = "any"  # any | pos | unit | away (|x| > 0.1, away from kinks at 0)
    extra: dict = field(default_factory=dict)


def both(fn):
    """An op written once for both libraries (method calls and operators are spelled alike)."""
    return fn, fn


IDX = np.array([[0, 0], [1, 0], [4, 4]])
IDX1 = np.array([0, 0, 3])


def _idx(lib, arr):
    return lib.tensor(arr)


CASES = [
    # --- binary arithmetic, with broadcasting
    Case("add", *both(lambda a, b: a + b), [(3, 4), (4,)]),
    Case("add_alpha", fm.add, torch.add, [(3, 4), (3, 4)]),
    Case("radd_scalar", *both(lambda a: 2.5 + a), [(3, 4)]),
    Case("sub", *both(lambda a, b: a - b), [(3, 1), (1, 4)]),
    Case("rsub_scalar", *both(lambda a: 1.0 - a), [(3, 4)]),
    Case("mul", *both(lambda a, b: a * b), [(2, 3, 4), (3, 1)]),
    Case("mul_scalar", *both(lambda a: a * -1.5), [(3, 4)]),
    Case("div", *both(lambda a, b: a / b), [(3, 4), (4,)], "away"),
    Case("rdiv_scalar", *both(lambda a: 2.0 / a), [(3, 4)], "away"),
    Case("pow_tensor", *both(lambda a, b: a**b), [(3, 4), (4,)], "pos"),
    Case("pow_scalar", *both(lambda a: a**3), [(3, 4)]),
    Case("pow_half", *both(lambda a: a**0.5), [(3, 4)], "pos"),
    Case("rpow", *both(lambda a: 2.0**a), [(3, 4)]),
    Case("remainder", *both(lambda a, b: a % b), [(3, 4), (4,)], "pos"),
    Case("maximum", fm.maximum, torch.maximum, [(3, 4), (4,)]),
    Case("minimum", fm.minimum, torch.minimum, [(3, 1), (3, 4)]),
    Case("where", lambda a, b: fm.where(a > 0, a, b), lambda a, b: torch.where(a > 0, a, b), [(3, 5), (5,)], "away"),
    Case("where_scalar", lambda a: fm.where(a > 0, a, 0.0), lambda a: torch.where(a > 0, a, 0.0), [(3, 5)], "away"),
    Case("matmul_2d", *both(lambda a, b: a @ b), [(3, 4), (4, 5)]),
    Case("matmul_batched", *both(lambda a, b: a @ b), [(2, 3, 4), (2, 4, 5)]),
    Case("matmul_broadcast", *both(lambda a, b: a @ b), [(2, 1, 3, 4), (5, 4, 2)]),
    Case("matmul_vec_mat", *both(lambda a, b: a @ b), [(4,), (2, 4, 3)]),
    Case("matmul_mat_vec", *both(lambda a, b: a @ b), [(2, 3, 4), (4,)]),
    Case("matmul_dot", *both(lambda a, b: a @ b), [(4,), (4,)]),
    Case("mm", fm.mm, torch.mm, [(3, 4), (4, 2)]),
    Case("bmm", fm.bmm, torch.bmm, [(2, 3, 4), (2, 4, 2)]),
    # --- unary
    Case("neg", *both(lambda a: -a), [(3, 4)]),
    Case("abs", *both(lambda a: a.abs()), [(3, 4)], "away"),
    Case("exp", *both(lambda a: a.exp()), [(3, 4)]),
    Case("log", *both(lambda a: a.log()), [(3, 4)], "pos"),
    Case("log1p", *both(lambda a: a.log1p()), [(3, 4)], "pos"),
    Case("sqrt", *both(lambda a: a.sqrt()), [(3, 4)], "pos"),
    Case("rsqrt", *both(lambda a: a.rsqrt()), [(3, 4)], "pos"),
    Case("sin", *both(lambda a: a.sin()), [(3, 4)]),
    Case("cos", *both(lambda a: a.cos()), [(3, 4)]),
    Case("tanh", *both(lambda a: a.tanh()), [(3, 4)]),
    Case("sigmoid", *both(lambda a: a.sigmoid()), [(3, 4)]),
    Case("relu", *both(lambda a: a.relu()), [(3, 4)], "away"),
    Case("gelu", fm.nn.functional.gelu, F.gelu, [(3, 4)]),
    Case(
        "gelu_tanh",
        lambda a: fm.nn.functional.gelu(a, approximate="tanh"),
        lambda a: F.gelu(a, approximate="tanh"),
        [(3, 4)],
    ),
    Case("silu", fm.nn.functional.silu, F.silu, [(3, 4)]),
    Case("softplus", fm.nn.functional.softplus, F.softplus, [(3, 4)]),
    Case(
        "softplus_beta",
        lambda a: fm.nn.functional.softplus(a * 10, beta=2, threshold=5),
        lambda a: F.softplus(a * 10, beta=2, threshold=5),
        [(3, 4)],
        "away",
    ),
    Case("leaky_relu", lambda a: fm.nn.functional.leaky_relu(a, 0.1), lambda a: F.leaky_relu(a, 0.1), [(3, 4)], "away"),
    Case("elu", lambda a: fm.nn.functional.elu(a, 0.7), lambda a: F.elu(a, 0.7), [(3, 4)], "away"),
    Case("clamp", *both(lambda a: a.clamp(-0.5, 0.5)), [(3, 4)], "away"),
    Case("clamp_min", *both(lambda a: a.clamp(min=0.2)), [(3, 4)], "away"),
    Case("clip_max", *both(lambda a: a.clip(max=0.3)), [(3, 4)], "away"),
    Case("square", *both(lambda a: a.square()), [(3, 4)]),
    Case("reciprocal", *both(lambda a: a.reciprocal()), [(3, 4)], "away"),
    # --- reductions
    Case("sum_all", *both(lambda a: a.sum()), [(3, 4)]),
    Case("sum_dim", *both(lambda a: a.sum(1)), [(3, 4)]),
    Case("sum_tuple_keepdim", *both(lambda a: a.sum((0, 2), keepdim=True)), [(3, 4, 2)]),
    Case("mean_all", *both(lambda a: a.mean()), [(3, 4)]),
    Case("mean_dim", *both(lambda a: a.mean(-1, keepdim=True)), [(3, 4)]),
    Case("var", *both(lambda a: a.var(1)), [(3, 4)]),
    Case("var_correction0", *both(lambda a: a.var((0, 1), correction=0)), [(3, 4, 2)]),
    Case("std", *both(lambda a: a.std()), [(3, 4)]),
    Case("std_keepdim", *both(lambda a: a.std(0, keepdim=True, correction=2)), [(4, 3)]),
    Case("max_all", *both(lambda a: a.max()), [(3, 4)]),
    Case("min_all", *both(lambda a: a.min()), [(3, 4)]),
    Case("max_dim", *both(lambda a: a.max(1).values), [(3, 4)]),
    Case("min_dim_keepdim", *both(lambda a: a.min(0, keepdim=True)[0]), [(3, 4)]),
    Case("max_other", *both(lambda a, b: a.max(b)), [(3, 4), (3, 4)]),
    Case("amax", *both(lambda a: a.amax(1)), [(3, 4)]),
    Case("amin_tuple", *both(lambda a: a.amin((0, 2), keepdim=True)), [(3, 4, 2)]),
    Case("prod_all", *both(lambda a: a.prod()), [(2, 3)]),
    Case("prod_dim", *both(lambda a: a.prod(1, keepdim=True)), [(3, 4)]),
    Case("logsumexp", *both(lambda a: a.logsumexp(1)), [(3, 4)]),
    Case("logsumexp_tuple", *both(lambda a: a.logsumexp((0, 1), keepdim=True)), [(3, 4)]),
    Case("norm", *both(lambda a: a.norm()), [(3, 4)]),
    Case("norm_dim", *both(lambda a: a.norm(dim=1, keepdim=True)), [(3, 4)]),
    Case("norm_p1", *both(lambda a: a.norm(p=1, dim=0)), [(3, 4)], "away"),
    Case("norm_p3", *both(lambda a: a.norm(p=3)), [(3, 4)], "away"),
    Case("norm_inf", *both(lambda a: a.norm(p=float("inf"), dim=1)), [(3, 4)], "away"),
    Case("softmax", *both(lambda a: a.softmax(1)), [(3, 4)]),
    Case("softmax_dim0", *both(lambda a: a.softmax(0)), [(3, 4, 2)]),
    Case("log_softmax", *both(lambda a: a.log_softmax(-1)), [(3, 4)]),
    Case("log_softmax_f", lambda a: fm.nn.functional.log_softmax(a, 0), lambda a: F.log_softmax(a, 0), [(3, 4)]),
    # --- shape
    Case("reshape", *both(lambda a: a.reshape(4, -1)), [(3, 4)]),
    Case("view", *both(lambda a: a.contiguous().view(2, 6)), [(3, 4)]),
    Case("flatten", *both(lambda a: a.flatten(1)), [(2, 3, 4)]),
    Case("unflatten", *both(lambda a: a.unflatten(1, (2, 2))), [(3, 4)]),
    Case("squeeze", *both(lambda a: a.squeeze()), [(3, 1, 4)]),
    Case("squeeze_dim", *both(lambda a: a.squeeze(1)), [(3, 1, 4)]),
    Case("unsqueeze", *both(lambda a: a.unsqueeze(-1) * 2), [(3, 4)]),
    Case("transpose", *both(lambda a: a.transpose(0, 2)), [(2, 3, 4)]),
    Case("permute", *both(lambda a: a.permute(2, 0, 1)), [(2, 3, 4)]),
    Case("T", *both(lambda a: a.T), [(3, 4)]),
    Case("mT", *both(lambda a: a.mT), [(2, 3, 4)]),
    Case("expand", *both(lambda a: a.expand(2, 3, 4)), [(3, 1)]),
    Case("expand_as", *both(lambda a, b: a.expand_as(b) * b), [(3, 1), (3, 4)]),
    Case("repeat", *both(lambda a: a.repeat(2, 1, 3)), [(3, 2)]),
    Case("tile", *both(lambda a: a.tile((2,))), [(3, 2)]),
    Case("cat", lambda a, b: fm.cat([a, b], 1), lambda a, b: torch.cat([a, b], 1), [(3, 2), (3, 4)]),
    Case("stack", lambda a, b: fm.stack([a, b], 1), lambda a, b: torch.stack([a, b], 1), [(3, 2), (3, 2)]),
    Case("split", *both(lambda a: a.split(2, 1)[1] * 3), [(3, 5)]),
    Case("split_sizes", *both(lambda a: a.split([1, 3, 1], 1)[1]), [(3, 5)]),
    Case("chunk", lambda a: fm.cat(a.chunk(2, 1)[::-1], 1), lambda a: torch.cat(a.chunk(2, 1)[::-1], 1), [(3, 5)]),
    Case("unbind", lambda a: fm.stack(a.unbind(1)[::-2]), lambda a: torch.stack(a.unbind(1)[::-2]), [(3, 5)]),
    Case("narrow", *both(lambda a: a.narrow(1, 1, 2)), [(3, 5)]),
    Case("tril", *both(lambda a: a.tril(1)), [(3, 5)]),
    Case("triu", *both(lambda a: a.triu(-1)), [(2, 3, 5)]),
    Case("flip", *both(lambda a: a.flip(0)), [(3, 5)]),
    # --- indexing
    Case("getitem_basic", *both(lambda a: a[1:, None, ::2]), [(3, 5)]),
    Case("getitem_int", *both(lambda a: a[-1, ..., 2]), [(3, 4, 5)]),
    Case("getitem_repeated", *both(lambda a: a[[0, 0, 2]]), [(3, 5)]),
    Case("getitem_two_arrays", *both(lambda a: a[[0, 2, 0], [1, 1, 1]]), [(3, 5)]),
    Case(
        "getitem_tensor_index", lambda a: a[:, fm.tensor([4, 0, 4])], lambda a: a[:, torch.tensor([4, 0, 4])], [(3, 5)]
    ),
    Case("getitem_bool_mask", *both(lambda a: a[a > 0]), [(3, 5)], "away"),
    Case("gather", lambda a: a.gather(1, fm.tensor(IDX)), lambda a: a.gather(1, torch.tensor(IDX)), [(3, 5)]),
    Case(
        "gather_dim0",
        lambda a: fm.gather(a, 0, fm.tensor(IDX.T[:, :2] % 3)),
        lambda a: torch.gather(a, 0, torch.tensor(IDX.T[:, :2] % 3)),
        [(3, 5)],
    ),
    Case(
        "scatter_add",
        lambda a, b: a.scatter_add(1, fm.tensor(IDX), b),
        lambda a, b: a.scatter_add(1, torch.tensor(IDX), b),
        [(3, 5), (3, 2)],
    ),
    Case(
        "index_select",
        lambda a: a.index_select(1, fm.tensor(IDX1)),
        lambda a: a.index_select(1, torch.tensor(IDX1)),
        [(3, 5)],
    ),
    Case("masked_fill", *both(lambda a: a.masked_fill(a > 0, 0.5)), [(3, 5)], "away"),
    Case(
        "masked_fill_tensor_value",
        lambda a, v: a.masked_fill(a > 0, v.sum()),
        lambda a, v: a.masked_fill(a > 0, v.sum()),
        [(3, 5), (2,)],
        "away",
    ),
    # --- conversions that carry gradients
    Case("clone", *both(lambda a: a.clone() * 2), [(3, 4)]),
    Case("contiguous", *both(lambda a: a.T.contiguous()), [(3, 4)]),
]


def _sample(rng, shape, domain):
    x = rng.standard_normal(shape)
    if domain == "pos":
        return np.abs(x) + 0.5
    if domain == "away":
        return np.sign(x) * (np.abs(x) + 0.2)
    return x


def _layout(arr, layout):
    """``arr``'s values in the requested memory layout (same shape)."""
    if layout == "contiguous" or arr.ndim == 0:
        return arr
    if layout == "transposed":
        if arr.ndim == 1:
            return np.stack([arr, arr])[0]
        base = np.ascontiguousarray(np.swapaxes(arr, -1, -2))
        out = np.swapaxes(base, -1, -2)
        assert not out.flags.c_contiguous or min(arr.shape[-2:]) == 1
        return out
    if layout == "sliced":
        big = np.empty((arr.shape[0] * 2,) + arr.shape[1:], dtype=arr.dtype)
        big[::2] = arr
        big[1::2] = np.nan  # any read of the wrong elements poisons the result
        return big[::2]
    raise ValueError(layout)


def _inputs(case, seed):
    rng = np.random.default_rng(seed)
    return [_sample(rng, s, case.domain) for s in case.shapes]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_gradcheck(case, layout):
    arrays = [_layout(a, layout) for a in _inputs(case, 0)]
    inputs = [fm.from_numpy(a).requires_grad_() for a in arrays]
    assert gradcheck(case.fm_fn, inputs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_torch_float32(case):
    arrays = [a.astype(np.float32) for a in _inputs(case, 1)]
    fx = [fm.tensor(a, requires_grad=True) for a in arrays]
    tx = [torch.tensor(a, requires_grad=True) for a in arrays]
    f_out = case.fm_fn(*fx)
    t_out = case.torch_fn(*tx)
    assert f_out.shape == tuple(t_out.shape)
    assert f_out.dtype.name == str(t_out.dtype).removeprefix("torch.")
    np.testing.assert_allclose(f_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-5, atol=1e-5)
    upstream = np.random.default_rng(2).standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(upstream))
    t_out.backward(torch.tensor(upstream))
    for i, (f, t) in enumerate(zip(fx, tx)):
        assert f.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"input {i}")


# ------------------------------------------------------------------ semantics
def _grads(fm_fn, torch_fn, values):
    f = fm.tensor(values, dtype=fm.float64, requires_grad=True)
    t = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    fm_fn(f).backward()
    torch_fn(t).backward()
    return f.grad.numpy(), t.grad.numpy()


@pytest.mark.parametrize(
    "name, fn",
    [
        ("max_ties_split", lambda x: x.max()),
        ("amax_ties_split", lambda x: x.amax(0).sum()),
        ("min_ties_split", lambda x: x.min()),
        ("max_dim_to_index", lambda x: x.max(0).values.sum()),
        ("maximum_tie_halves", lambda x: (x.maximum(x.detach() * 0 + 3.0)).sum()),
        ("relu_at_zero", lambda x: x.relu().sum()),
        ("abs_at_zero", lambda x: x.abs().sum()),
        ("clamp_at_bounds", lambda x: x.clamp(0.0, 3.0).sum()),
        ("prod_one_zero", lambda x: x.prod()),
        ("norm_at_zero", lambda x: (x * 0).norm()),
        ("sqrt_at_zero", lambda x: x.sqrt().sum()),
    ],
)
def test_gradient_conventions_match_torch(name, fn):
    values = [0.0, 3.0, 3.0, 1.0] if "zero" not in name else [0.0, 3.0, 2.0, 1.0]
    if name == "prod_one_zero":
        values = [0.0, 2.0, 3.0]
    f_grad, t_grad = _grads(fn, fn, values)
    np.testing.assert_allclose(f_grad, t_grad, rtol=1e-14, atol=0)


def test_prod_two_zeros_gives_zero_gradient():
    f_grad, t_grad = _grads(lambda x: x.prod(), lambda x: x.prod(), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(f_grad, t_grad)
    np.testing.assert_array_equal(f_grad, [0.0, 0.0, 0.0])


def test_repeated_indices_accumulate():
    x = fm.zeros(4, dtype=fm.float64, requires_grad=True)
    x[fm.tensor([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 3.0, 0.0, 1.0])


def test_floor_divide_forward_and_no_derivative():
    a = np.array([7.5, -7.5, 3.0])
    assert fm.tensor(a).__floordiv__(2).tolist() == (torch.tensor(a) // 2).tolist()
    assert (fm.tensor([7, -7]) // fm.tensor([2, 2])).tolist() == [3, -4]
    x = fm.tensor(a, requires_grad=True)
    with pytest.raises(RuntimeError, match="floor_divide"):
        (x // 2).sum().backward()


@pytest.mark.parametrize(
    "op",
    [
        lambda a, b: a == b,
        lambda a, b: a != b,
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
)
def test_comparisons_match_torch_and_carry_no_grad(op):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    f = op(fm.tensor(a, requires_grad=True), fm.tensor(b))
    t = op(torch.tensor(a), torch.tensor(b))
    assert f.dtype == fm.bool
    assert not f.requires_grad
    np.testing.assert_array_equal(f.numpy(), t.numpy())


def test_argmax_argmin_match_torch():
    a = np.random.default_rng(3).standard_normal((3, 4, 5)).astype(np.float32)
    for dim in (None, 0, 1, -1):
        for keepdim in (False, True):
            for name in ("argmax", "argmin"):
                if dim is None and keepdim:
                    continue
                f = getattr(fm.tensor(a), name)(dim=dim, keepdim=keepdim)
                t = getattr(torch.tensor(a), name)(dim=dim, keepdim=keepdim)
                assert f.dtype == fm.int64
                np.testing.assert_array_equal(f.numpy(), t.numpy())


def test_max_dim_returns_values_and_indices_like_torch():
    a = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    values, indices = fm.tensor(a).max(1)
    t = torch.tensor(a).max(1)
    np.testing.assert_array_equal(values.numpy(), t.values.numpy())
    np.testing.assert_array_equal(indices.numpy(), t.indices.numpy())


def test_one_hot_matches_torch():
    idx = np.array([[0, 2], [1, 3]])
    f = fm.nn.functional.one_hot(fm.tensor(idx), 5)
    t = F.one_hot(torch.tensor(idx), 5)
    assert f.dtype == fm.int64
    np.testing.assert_array_equal(f.numpy(), t.numpy())
    np.testing.assert_array_equal(
        fm.nn.functional.one_hot(fm.tensor([0, 3])).numpy(), F.one_hot(torch.tensor([0, 3])).numpy()
    )


def test_integer_arithmetic_matches_torch():
    a = np.array([[5, -3, 7]])
    b = np.array([2, 4, -3])
    for op in (lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x // y, lambda x, y: x % y):
        f = op(fm.tensor(a), fm.tensor(b))
        t = op(torch.tensor(a), torch.tensor(b))
        assert f.dtype == fm.int64
        np.testing.assert_array_equal(f.numpy(), t.numpy())
    np.testing.assert_allclose(
        (fm.tensor(a) / fm.tensor(b)).numpy(), (torch.tensor(a) / torch.tensor(b)).numpy(), rtol=1e-6
    )


def test_setitem_without_grad_matches_numpy():
    x = fm.zeros(3, 4)
    x[1] = 2.0
    x[:, 0] = fm.tensor([1.0, 2.0, 3.0])
    x[x > 2.5] = -1.0
    x[[0, 2], [3, 3]] = 7.0
    expected = np.zeros((3, 4), dtype=np.float32)
    expected[1] = 2.0
    expected[:, 0] = [1.0, 2.0, 3.0]
    expected[expected > 2.5] = -1.0
    expected[[0, 2], [3, 3]] = 7.0
    np.testing.assert_array_equal(x.numpy(), expected)


def test_setitem_recorded_on_non_leaf_matches_torch():
    a = np.random.default_rng(5).standard_normal((3, 4))
    v = np.random.default_rng(6).standard_normal(4)
    f_x, f_v = fm.tensor(a, requires_grad=True), fm.tensor(v, requires_grad=True)
    t_x, t_v = torch.tensor(a, requires_grad=True), torch.tensor(v, requires_grad=True)
    for x, val in ((f_x, f_v), (t_x, t_v)):
        y = x * 2
        y[1] = val * 3
        (y * y).sum().backward()
    np.testing.assert_allclose(f_x.grad.numpy(), t_x.grad.numpy())
    np.testing.assert_allclose(f_v.grad.numpy(), t_v.grad.numpy())


def test_gelu_float32_is_accurate_to_float32_precision():
    import math

    x = np.linspace(-8, 8, 40_001).astype(np.float32)  # over two of the CPU's blocks, and a partial one
    ours = fm.nn.functional.gelu(fm.tensor(x)).numpy()
    np.testing.assert_array_equal(ours[123:456], fm.nn.functional.gelu(fm.tensor(x[123:456])).numpy())
    exact = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    # relative accuracy even in the far negative tail, where 1 + erf(x) would cancel
    np.testing.assert_allclose(ours, exact, rtol=1e-6, atol=1e-30)
    # torch computes 0.5 * (1 + erf(.)) in float32, so it agrees only to a few float32 ulps of 1
    np.testing.assert_allclose(ours, F.gelu(torch.tensor(x)).numpy(), rtol=1e-6, atol=1.5e-6)
    # the backward uses the density the forward kept: Phi(x) + x phi(x)
    fx = fm.tensor(x, requires_grad=True)
    fm.nn.functional.gelu(fx).sum().backward()
    x64 = x.astype(np.float64)
    slope = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x64]) + x64 * np.exp(-0.5 * x64**2) / math.sqrt(
        2 * math.pi
    )
    np.testing.assert_allclose(fx.grad.numpy(), slope, rtol=2e-6, atol=1e-7)


def test_sigmoid_and_softplus_saturate_without_warnings():
    x = fm.tensor([-1000.0, -100.0, 0.0, 100.0, 1000.0])
    # exp(-x) is clamped below float32 overflow, so the far tail is a denormal (6e-39) where torch has 0
    np.testing.assert_allclose(x.sigmoid().numpy(), torch.tensor(x.numpy()).sigmoid().numpy(), rtol=1e-7, atol=1e-37)
    np.testing.assert_allclose(fm.nn.functional.softplus(x).numpy(), F.softplus(torch.tensor(x.numpy())).numpy())


def test_softmax_is_stable_for_large_logits():
    x = np.array([[1000.0, 1001.0, 999.0]], dtype=np.float32)
    np.testing.assert_allclose(fm.tensor(x).softmax(1).numpy(), torch.tensor(x).softmax(1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(fm.tensor(x).log_softmax(1).numpy(), torch.tensor(x).log_softmax(1).numpy(), rtol=1e-6)
