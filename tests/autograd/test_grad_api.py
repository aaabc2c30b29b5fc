"""``forgeml.autograd.grad``: gradients returned instead of accumulated, checked against ``torch.autograd.grad``."""

import numpy as np
import pytest

import forgeml as fm
from tests.oracle import LIBS, arr, assert_same, both

torch = pytest.importorskip("torch")


X = [[0.5, -1.25, 2.0], [1.5, 0.25, -0.75]]
W = [[1.0, 2.0, -0.5], [0.3, -0.7, 1.1]]


def computation(lib):
    x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
    w = lib.tensor(W, dtype=lib.float64, requires_grad=True)
    y = x * w
    z = ((y.exp() + x.sin() * w) / (1 + w * w)).sum()
    return x, w, y, z


def test_grad_matches_torch_autograd_grad():
    def script(lib):
        x, w, _, z = computation(lib)
        return list(lib.autograd.grad(z, [x, w]))

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_grad_returns_a_tuple_of_plain_tensors():
    x, w, _, z = computation(fm)
    result = fm.autograd.grad(z, [x, w])
    assert isinstance(result, tuple) and len(result) == 2
    for g, inp in zip(result, (x, w)):
        assert isinstance(g, fm.Tensor)
        assert g.requires_grad is False and g.grad_fn is None
        assert g.shape == inp.shape and g.dtype == inp.dtype


def test_grad_with_a_single_tensor_input_returns_a_one_tuple():
    def script(lib):
        x, _, _, z = computation(lib)
        result = lib.autograd.grad(z, x)
        return [len(result), result[0]]

    ours, theirs = both(script)
    assert ours[0] == theirs[0] == 1
    assert_same(ours[1], theirs[1])


def test_grad_does_not_touch_dot_grad():
    x, w, _, z = computation(fm)
    w.grad = fm.tensor(np.full((2, 3), 7.0), dtype=fm.float64)
    fm.autograd.grad(z, [x, w])
    assert x.grad is None
    np.testing.assert_allclose(arr(w.grad), np.full((2, 3), 7.0))


def test_grad_does_not_fill_leaves_that_are_not_inputs():
    x, w, _, z = computation(fm)
    fm.autograd.grad(z, [x])
    assert x.grad is None and w.grad is None


def test_grad_fills_retained_grads_like_torch():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        y.retain_grad()
        (g,) = lib.autograd.grad((y * y).sum(), x)
        return [g, y.grad, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_grad_for_non_leaf_inputs():
    def script(lib):
        x, _, y, z = computation(lib)
        return list(lib.autograd.grad(z, [y, x]))

    ours, theirs = both(script)
    assert_same(ours, theirs)
    y = np.array(X) * np.array(W)
    np.testing.assert_allclose(ours[0], np.exp(y) / (1 + np.array(W) ** 2))


def test_grad_for_a_non_leaf_then_for_a_leaf_further_down():
    def script(lib):
        a = lib.tensor(2.0, dtype=lib.float64, requires_grad=True)
        b = a * a
        c = b * 3
        (gb,) = lib.autograd.grad(c, b, retain_graph=True)
        (ga,) = lib.autograd.grad(c, a)
        return [gb, ga]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours, [3.0, 12.0])


def test_grad_of_an_output_with_respect_to_itself_is_grad_outputs():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x.exp()
        return list(lib.autograd.grad(y, y, grad_outputs=lib.tensor([3.0, -1.0], dtype=lib.float64)))

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], [3.0, -1.0])


def test_grad_of_broadcast_input_keeps_the_input_shape():
    def script(lib):
        x = lib.tensor([[1.0], [2.0]], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([[0.5, -1.0, 2.0]], dtype=lib.float64, requires_grad=True)
        return list(lib.autograd.grad((x * w + x).sum(), [x, w]))

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0].shape == (2, 1) and ours[1].shape == (1, 3)


def test_grad_with_the_same_input_twice():
    def script(lib):
        x, _, _, z = computation(lib)
        return list(lib.autograd.grad(z, [x, x]))

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], ours[1])


# -- allow_unused -----------------------------------------------------------------------------------------
def test_unused_input_raises_and_suggests_allow_unused():
    x, _, _, z = computation(fm)
    u = fm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="allow_unused=True") as info:
        fm.autograd.grad(z, [x, u])
    assert "not have been used" in str(info.value) or "used in the graph" in str(info.value)
    tx, _, _, tz = computation(torch)
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        torch.autograd.grad(tz, [tx, torch.tensor([1.0, 2.0], requires_grad=True)])


def test_allow_unused_gives_none_for_the_unused_input():
    def script(lib):
        x, _, _, z = computation(lib)
        u = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        return list(lib.autograd.grad(z, [u, x], allow_unused=True))

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] is None and ours[1] is not None


def test_unused_non_leaf_input_with_allow_unused():
    def script(lib):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        d = a * 5
        e = (a * 2).sum()
        return list(lib.autograd.grad(e, [d, a], allow_unused=True))

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] is None


def test_materialize_grads_gives_zeros_for_the_unused_input():
    def script(lib):
        x, _, _, z = computation(lib)
        u = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        return list(lib.autograd.grad(z, [x, u], materialize_grads=True))

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_array_equal(ours[1], [0.0, 0.0])


@LIBS
def test_input_that_does_not_require_grad_raises(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    c = lib.tensor([3.0, 4.0])
    with pytest.raises(RuntimeError):
        lib.autograd.grad((x * c).sum(), [c])


# -- grad_outputs ----------------------------------------------------------------------------------------------
def test_grad_outputs_for_a_non_scalar_output():
    def script(lib):
        x, w, y, _ = computation(lib)
        out = y.exp() * x
        return list(lib.autograd.grad(out, [x, w], grad_outputs=lib.tensor(X, dtype=lib.float64) - 0.5))

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_grad_outputs_as_lists_with_several_outputs_are_summed():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        y1 = x * x
        y2 = x.exp()
        s = x.sin().sum()
        g1 = lib.tensor([1.0, 0.0, -1.0], dtype=lib.float64)
        g2 = lib.tensor([2.0, 2.0, 2.0], dtype=lib.float64)
        return list(lib.autograd.grad([y1, y2, s], [x], grad_outputs=[g1, g2, None]))

    ours, theirs = both(script)
    assert_same(ours, theirs)
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(ours[0], 2 * x * [1, 0, -1] + 2 * np.exp(x) + np.cos(x))


def test_non_scalar_output_without_grad_outputs_raises():
    x, _, y, _ = computation(fm)
    with pytest.raises(RuntimeError, match="scalar"):
        fm.autograd.grad(y, x)
    tx, _, ty, _ = computation(torch)
    with pytest.raises(RuntimeError, match="scalar"):
        torch.autograd.grad(ty, tx)


def test_grad_outputs_of_wrong_shape_raises_naming_both_shapes():
    x, _, y, _ = computation(fm)
    with pytest.raises(RuntimeError) as info:
        fm.autograd.grad(y, x, grad_outputs=fm.ones(5, dtype=fm.float64))
    assert "[5]" in str(info.value) and "[2, 3]" in str(info.value)


def test_grad_outputs_count_mismatch_raises():
    x, _, y, _ = computation(fm)
    with pytest.raises((RuntimeError, ValueError)):
        fm.autograd.grad([y, y], x, grad_outputs=[fm.ones(2, 3, dtype=fm.float64)])


# -- retain_graph ---------------------------------------------------------------------------------------------
def test_grad_frees_the_graph_by_default():
    x, w, _, z = computation(fm)
    fm.autograd.grad(z, [x])
    with pytest.raises(RuntimeError, match="retain_graph"):
        fm.autograd.grad(z, [w])
    tx, tw, _, tz = computation(torch)
    torch.autograd.grad(tz, [tx])
    with pytest.raises(RuntimeError, match="retain_graph"):
        torch.autograd.grad(tz, [tw])


def test_grad_with_retain_graph_can_run_again_with_equal_results():
    x, w, _, z = computation(fm)
    first = fm.autograd.grad(z, [x, w], retain_graph=True)
    second = fm.autograd.grad(z, [x, w], retain_graph=True)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(arr(a), arr(b))
    z.backward()
    np.testing.assert_allclose(arr(x.grad), arr(first[0]))


def test_grad_results_are_independent_copies():
    x = fm.tensor([1.0, 2.0], dtype=fm.float64, requires_grad=True)
    y = x * 1
    g = fm.tensor([5.0, 6.0], dtype=fm.float64)
    (gx,) = fm.autograd.grad(y, x, grad_outputs=g, retain_graph=True)
    gx.add_(100)
    np.testing.assert_allclose(arr(g), [5.0, 6.0])
    (again,) = fm.autograd.grad(y, x, grad_outputs=g)
    np.testing.assert_allclose(arr(again), [5.0, 6.0])
