"""Property test: binary ops on any pair of broadcastable shapes give PyTorch's values and gradients."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import forgeml as fm

torch = pytest.importorskip("torch")

OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1),
    "maximum": lambda a, b: a.maximum(b) if hasattr(a, "maximum") else None,
    "where": lambda a, b: (a * 2).where(a > b, b * 3),
    "pow": lambda a, b: (a * a + 1) ** b,
}


@settings(max_examples=60, deadline=None)
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3),
    op=st.sampled_from(sorted(OPS)),
    seed=st.integers(0, 2**16),
)
def test_broadcast_gradients_match_torch(shapes, op, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s) for s in shapes.input_shapes)
    fa, fb = fm.tensor(a, requires_grad=True), fm.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    f_out, t_out = OPS[op](fa, fb), OPS[op](ta, tb)
    assert f_out.shape == tuple(t_out.shape) == shapes.result_shape
    np.testing.assert_allclose(f_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    upstream = rng.standard_normal(shapes.result_shape)
    f_out.backward(fm.tensor(upstream))
    t_out.backward(torch.tensor(upstream))
    assert fa.grad.shape == a.shape and fb.grad.shape == b.shape
    np.testing.assert_allclose(fa.grad.numpy(), ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fb.grad.numpy(), tb.grad.numpy(), rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4),
    data=st.data(),
)
def test_reductions_over_any_dims_match_torch(shape, data):
    dims = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1, max_size=len(shape)))
    keepdim = data.draw(st.booleans())
    name = data.draw(st.sampled_from(["sum", "mean", "amax", "logsumexp", "var", "norm"]))
    x = np.random.default_rng(len(shape)).standard_normal(shape)
    fx, tx = fm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)

    def apply(t, lib):
        if name == "var":
            return t.var(tuple(dims), keepdim=keepdim, correction=0)
        if name == "norm":
            if lib is torch:  # torch.norm treats a 2-tuple of dims as a matrix norm; the vector norm is the oracle
                return torch.linalg.vector_norm(t, dim=tuple(dims), keepdim=keepdim)
            return t.norm(dim=tuple(dims), keepdim=keepdim)
        return getattr(t, name)(tuple(dims), keepdim=keepdim)

    f_out, t_out = apply(fx, fm), apply(tx, torch)
    assert f_out.shape == tuple(t_out.shape)
    np.testing.assert_allclose(f_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    f_out.sum().backward()
    t_out.sum().backward()
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
