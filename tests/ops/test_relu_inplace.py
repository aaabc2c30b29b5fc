"""``relu_`` (method, ``forgeml.relu_`` and ``F.relu_``) writes into its input, as PyTorch's does, and
autograd records it on a non-leaf."""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")

VALUES = np.array([[-1.5, 0.0, 2.0], [3.0, -0.25, 0.5]], dtype=np.float32)


@pytest.mark.parametrize("form", ["method", "function", "functional"])
def test_relu_inplace_on_a_non_leaf_matches_torch(form):
    def run(lib, x):
        y = x * 2.0
        z = {"method": lambda t: t.relu_(), "function": lib.relu_, "functional": lib.nn.functional.relu_}[form](y)
        assert z is y  # the same tensor, now rectified
        (y * y).sum().backward()
        return y.detach().numpy(), x.grad.numpy()

    ours = run(fm, fm.tensor(VALUES, requires_grad=True))
    theirs = run(torch, torch.tensor(VALUES, requires_grad=True))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b)


def test_relu_inplace_without_autograd_and_on_a_leaf():
    x = fm.tensor(VALUES.copy())
    version = x._version
    x.relu_()
    np.testing.assert_array_equal(x.numpy(), np.maximum(VALUES, 0))
    assert x._version == version + 1
    leaf = fm.tensor(VALUES, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        leaf.relu_()
