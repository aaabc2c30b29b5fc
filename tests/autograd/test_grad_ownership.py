"""The engine keeps a fresh gradient array as the leaf's .grad (no copy), and copies anything shared."""

import weakref

import numpy as np

import forgeml as fm
from forgeml.autograd import Function

KEPT = []


class Fresh(Function):
    """Identity whose backward returns a new array, optionally keeping a reference to it."""

    @staticmethod
    def forward(ctx, x, keep):
        ctx.keep = keep
        return x * 1

    @staticmethod
    def backward(ctx, g):
        out = np.ones(g.shape, dtype=g._data.dtype) * 2
        if ctx.keep:
            KEPT.append(out)
        Fresh.last = weakref.ref(out)  # a weak reference does not count as another holder
        return fm.Tensor(out), None


def test_fresh_gradient_is_kept_without_a_copy():
    x = fm.zeros(4, requires_grad=True)
    Fresh.apply(x, False).sum().backward()
    assert x.grad._data is Fresh.last()


def test_gradient_someone_else_holds_is_copied():
    x = fm.zeros(4, requires_grad=True)
    Fresh.apply(x, True).sum().backward()
    assert x.grad._data is not KEPT[-1]
    x.grad.mul_(3)
    np.testing.assert_array_equal(KEPT[-1], [2.0, 2.0, 2.0, 2.0])


def test_one_gradient_array_sent_to_two_leaves_is_not_shared():
    a, b = fm.ones(3, requires_grad=True), fm.ones(3, requires_grad=True)
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad._data, b.grad._data)
    a.grad.mul_(5)
    assert b.grad.tolist() == [1.0, 1.0, 1.0]


def test_view_gradients_are_copied():
    x = fm.ones(2, 3, requires_grad=True)
    parts = x.split(1, 0)
    (parts[0] * 2 + parts[1] * 3).sum().backward()
    assert x.grad._data.base is None or not np.shares_memory(x.grad._data, parts[0]._data)
    assert x.grad.tolist() == [[2.0, 2.0, 2.0], [3.0, 3.0, 3.0]]
