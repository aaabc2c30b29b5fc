"""Backward semantics of the autograd engine: accumulation, retained grads, graph freeing, deep and
diamond-shaped graphs, ``inputs=`` and several roots, checked against PyTorch on the same scripts."""

import sys
import weakref

import numpy as np
import pytest

import forgeml as fm
from tests.oracle import LIBS, arr, assert_same, both

torch = pytest.importorskip("torch")


X = [[0.5, -1.25, 2.0], [1.5, 0.25, -0.75]]
W = [[1.0, 2.0, -0.5], [0.3, -0.7, 1.1]]


# -- accumulation into leaves -------------------------------------------------------------------
def test_leaf_grad_is_none_before_any_backward():
    x = fm.tensor(X, dtype=fm.float64, requires_grad=True)
    assert x.grad is None
    assert x.is_leaf


def test_backward_accumulates_into_leaf_grad_across_calls():
    def script(lib):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        grads = []
        for k in range(3):
            ((x * x).sum() * (k + 1)).backward()
            grads.append(x.grad.clone())
        return grads

    ours, theirs = both(script)
    assert_same(ours, theirs)
    x = np.array(X)
    np.testing.assert_allclose(ours[0], 2 * x)
    np.testing.assert_allclose(ours[2], 2 * x * (1 + 2 + 3))


def test_backward_accumulates_onto_a_grad_the_user_assigned():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        x.grad = lib.tensor([10.0, 20.0], dtype=lib.float64)
        (x * 3).sum().backward()
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours, [13.0, 23.0])


def test_leaf_grad_does_not_alias_the_gradient_argument():
    g = fm.tensor([1.0, 2.0, 3.0], dtype=fm.float64)
    x = fm.tensor([0.0, 0.0, 0.0], dtype=fm.float64, requires_grad=True)
    (x * 1).backward(g)
    g.add_(100)  # changing the caller's gradient afterwards must not change x.grad
    np.testing.assert_allclose(arr(x.grad), [1.0, 2.0, 3.0])


def test_backward_from_a_leaf_itself():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        x.backward(lib.tensor([3.0, 4.0], dtype=lib.float64))
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_grads_are_plain_tensors_outside_the_graph():
    x = fm.tensor(X, dtype=fm.float64, requires_grad=True)
    (x.exp() * x).sum().backward()
    assert x.grad.requires_grad is False
    assert x.grad.grad_fn is None
    assert x.grad.shape == x.shape
    assert x.grad.dtype == fm.float64


# -- non-leaves and retain_grad --------------------------------------------------------------------
def test_non_leaf_has_no_grad_without_retain_grad():
    x = fm.tensor(X, dtype=fm.float64, requires_grad=True)
    y = x * 2
    z = y.exp()
    z.sum().backward()
    assert not y.is_leaf and not z.is_leaf
    assert y.grad is None
    assert z.grad is None
    assert x.grad is not None


def test_is_leaf_flags_match_torch():
    def script(lib):
        a = lib.tensor([1.0, 2.0])
        b = lib.tensor([1.0, 2.0], requires_grad=True)
        c = b * 2
        d = c.detach()
        e = a * 2
        return [t.is_leaf for t in (a, b, c, d, e)] + [t.requires_grad for t in (a, b, c, d, e)]

    ours, theirs = both(script)
    assert ours == theirs == [True, True, False, True, True, False, True, True, False, False]


def test_retain_grad_fills_non_leaf_grad():
    def script(lib):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        y = x * 2
        y.retain_grad()
        z = y.sin() * y
        z.retain_grad()
        z.sum().backward()
        return [y.grad, z.grad, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    y = 2 * np.array(X)
    np.testing.assert_allclose(ours[0], np.cos(y) * y + np.sin(y))
    np.testing.assert_allclose(ours[1], np.ones((2, 3)))


def test_retained_grad_accumulates_across_two_backward_calls_like_torch():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        y.retain_grad()
        z = (y * y).sum()
        z.backward(retain_graph=True)
        first = y.grad.clone()
        z.backward()
        return [first, y.grad, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], [4.0, 8.0, 12.0])
    np.testing.assert_allclose(ours[1], [8.0, 16.0, 24.0])


def test_retain_grad_on_a_leaf_is_a_no_op():
    x = fm.tensor([1.0, 2.0], dtype=fm.float64, requires_grad=True)
    x.retain_grad()
    (x * x).sum().backward()
    np.testing.assert_allclose(arr(x.grad), [2.0, 4.0])


@LIBS
def test_retain_grad_on_tensor_without_grad_raises(lib):
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        lib.tensor([1.0]).retain_grad()


# -- graph freeing -------------------------------------------------------------------------------------
SAVING_EXPRESSIONS = ["a * b", "a.exp()", "a.sigmoid()", "a * 2", "a / 2", "a ** 2", "a.relu()", "a @ b", "a.tanh()"]


@pytest.mark.parametrize("expr", SAVING_EXPRESSIONS)
def test_second_backward_through_freed_graph_raises_mentioning_retain_graph(expr):
    a = fm.tensor([1.0, 2.0], dtype=fm.float64, requires_grad=True)
    b = fm.tensor([3.0, 4.0], dtype=fm.float64, requires_grad=True)
    out = eval(expr, {}, {"a": a, "b": b}).sum()
    out.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        out.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        fm.autograd.grad(out, [a])


def test_retain_graph_allows_one_more_backward_then_frees():
    def script(lib):
        x = lib.tensor([0.5, 1.5], dtype=lib.float64, requires_grad=True)
        out = (x.exp() * x).sum()
        out.backward(retain_graph=True)
        g1 = x.grad.clone()
        out.backward()
        g2 = x.grad.clone()
        try:
            out.backward()
            third = "ok"
        except RuntimeError as exc:
            third = "raise" if "retain_graph" in str(exc) else str(exc)
        return [g1, g2, third]

    ours, theirs = both(script)
    assert ours[2] == theirs[2] == "raise"
    assert_same(ours[:2], theirs[:2])
    np.testing.assert_allclose(ours[1], 2 * ours[0])


ALL_EXPRESSIONS = SAVING_EXPRESSIONS + [
    "a + b",
    "a - b",
    "-a",
    "a.reshape(2, 1)",
    "a[0]",
    "a.mean()",
    "a.sum(0)",
    "a.unsqueeze(0).expand(3, 2)",
    "lib.cat([a, b])",
    "lib.stack([a, b])",
    "a.clone()",
    "a.permute(0)",
    "a.flip(0)",
    "a.repeat(2)",
    "a.split(1)[1]",
]


@pytest.mark.parametrize("expr", ALL_EXPRESSIONS)
def test_second_backward_without_retain_graph_behaves_like_torch(expr):
    """Nodes that saved nothing (a + b, reshape ...) can be walked again, exactly where torch allows it."""

    def script(lib):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        b = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        out = eval(expr, {"lib": lib, "a": a, "b": b}).sum()
        out.backward()
        try:
            out.backward()
            outcome = "ok"
        except RuntimeError:
            outcome = "raise"
        return [outcome, a.grad]

    ours, theirs = both(script)
    assert ours[0] == theirs[0]
    assert_same(ours[1], theirs[1])


def test_second_backward_through_saveless_graph_accumulates_again():
    a = fm.tensor([1.0, 2.0], dtype=fm.float64, requires_grad=True)
    b = fm.tensor([3.0, 4.0], dtype=fm.float64, requires_grad=True)
    out = (a + b).sum()
    out.backward()
    out.backward()
    np.testing.assert_allclose(arr(a.grad), [2.0, 2.0])
    np.testing.assert_allclose(arr(b.grad), [2.0, 2.0])


def test_shared_subgraph_freed_by_the_first_root_raises_for_the_second():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x.exp()
        z1 = y.sum()
        z2 = (y * 2).sum()
        z1.backward()
        try:
            z2.backward()
            return "ok"
        except RuntimeError as exc:
            return "retain_graph" in str(exc)

    ours, theirs = both(script)
    assert ours is True and theirs is True


def test_grad_mode_restored_when_backward_raises():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    out = x.exp().sum()
    out.backward()
    with pytest.raises(RuntimeError):
        out.backward()
    assert fm.is_grad_enabled()
    y = x * 2
    assert y.requires_grad and y.grad_fn is not None


# -- root errors ------------------------------------------------------------------------------------------
def test_non_scalar_output_without_gradient_raises_clear_error():
    x = fm.tensor(X, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="implicitly created only for scalar outputs") as info:
        y.backward()
    assert "[2, 3]" in str(info.value)
    assert x.grad is None
    with pytest.raises(RuntimeError, match="scalar"):
        torch.tensor(X, requires_grad=True).mul(2).backward()


def test_one_element_non_scalar_output_needs_no_gradient_like_torch():
    def script(lib):
        x = lib.tensor([[2.0]], dtype=lib.float64, requires_grad=True)
        (x * x * 3).backward()
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours, [[12.0]])


def test_gradient_of_wrong_shape_raises_naming_both_shapes():
    x = fm.tensor(X, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError) as info:
        y.backward(fm.ones(4))
    message = str(info.value)
    assert "[4]" in message and "[2, 3]" in message
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        torch.tensor(X, requires_grad=True).mul(2).backward(torch.ones(4))


def test_gradient_transposed_shape_is_rejected():
    x = fm.tensor(X, requires_grad=True)
    with pytest.raises(RuntimeError) as info:
        (x * 2).backward(fm.ones(3, 2))
    assert "[3, 2]" in str(info.value) and "[2, 3]" in str(info.value)


def test_gradient_argument_weights_the_vector_jacobian_product():
    def script(lib):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        y = x.exp() * x
        y.backward(lib.tensor(W, dtype=lib.float64))
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)


@LIBS
def test_backward_on_tensor_without_grad_raises(lib):
    with pytest.raises(RuntimeError, match="does not require grad"):
        lib.tensor([1.0, 2.0]).sum().backward()


# -- deep graphs ------------------------------------------------------------------------------------------
@pytest.fixture
def low_recursion_limit():
    """A recursive engine would need ~10,000 frames; make sure the default-ish limit is in force."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(min(old, 1000))
    yield
    sys.setrecursionlimit(old)


DEPTH = 10_000


def test_deep_chain_of_additions_backpropagates(low_recursion_limit):
    x = fm.tensor([1.0, -2.0], dtype=fm.float64, requires_grad=True)
    y = x
    for _ in range(DEPTH):
        y = y + 1
    np.testing.assert_allclose(arr(y), [1.0 + DEPTH, -2.0 + DEPTH])
    y.sum().backward()
    np.testing.assert_allclose(arr(x.grad), [1.0, 1.0])


def test_deep_chain_of_multiplications_gives_the_right_gradient(low_recursion_limit):
    x = fm.tensor([1.0, 3.0], dtype=fm.float64, requires_grad=True)
    y = x
    for _ in range(DEPTH):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(arr(x.grad), [1.0001**DEPTH] * 2, rtol=1e-9)


def test_deep_chain_with_autograd_grad_and_inputs(low_recursion_limit):
    x = fm.tensor([2.0], dtype=fm.float64, requires_grad=True)
    w = fm.tensor([1.0], dtype=fm.float64, requires_grad=True)
    y = x * w
    for _ in range(DEPTH):
        y = y * 1.0001 + 0.0
    out = y.sum()
    (gx,) = fm.autograd.grad(out, [x], retain_graph=True)
    np.testing.assert_allclose(arr(gx), [1.0001**DEPTH], rtol=1e-9)
    out.backward(inputs=[w])
    np.testing.assert_allclose(arr(w.grad), [2 * 1.0001**DEPTH], rtol=1e-9)
    assert x.grad is None


def test_deep_graph_dropped_without_backward_is_freed(low_recursion_limit):
    x = fm.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(DEPTH):
        y = y * 1.0
    first = weakref.ref(y.grad_fn)
    del y
    assert first() is None


# -- diamonds and reuse ----------------------------------------------------------------------------------
def test_tensor_used_twice_as_both_operands():
    def script(lib):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        (x * x).sum().backward()
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours, 2 * np.array(X))


def test_diamond_sums_gradients_from_every_path():
    def script(lib):
        a = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        b = lib.tensor(W, dtype=lib.float64, requires_grad=True)
        h = a.sin()
        h.retain_grad()
        out = (h * b + h.exp() + h * h + h).sum() + (a * b).sum()
        out.backward()
        return [a.grad, b.grad, h.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    a, b = np.array(X), np.array(W)
    h = np.sin(a)
    dh = b + np.exp(h) + 2 * h + 1
    np.testing.assert_allclose(ours[2], dh)
    np.testing.assert_allclose(ours[0], dh * np.cos(a) + b)


def test_broadcast_reuse_in_a_diamond():
    def script(lib):
        x = lib.tensor([[1.0], [2.0]], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([[0.5, -1.0, 2.0]], dtype=lib.float64, requires_grad=True)
        y = x * w
        out = (y * x + y.exp() * w).sum()
        out.backward()
        return [x.grad, w.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0].shape == (2, 1) and ours[1].shape == (1, 3)


def test_diamond_through_multi_output_op():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0, 4.0], dtype=lib.float64, requires_grad=True)
        p, q = x.split(2)
        out = (p * q + p.exp() + q * 3).sum()
        out.backward()
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)


# -- backward(inputs=...) ----------------------------------------------------------------------------------
def test_backward_inputs_only_fills_those_inputs():
    def script(lib):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        w = lib.tensor(W, dtype=lib.float64, requires_grad=True)
        b = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        (x * w + b).exp().sum().backward(inputs=[x])
        return [x.grad, w.grad, b.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[1] is None and ours[2] is None


def test_backward_inputs_accumulates_into_existing_grad():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        x.grad = lib.tensor([10.0, 10.0], dtype=lib.float64)
        (x * x).sum().backward(inputs=[x])
        (x * x).sum().backward(inputs=x)
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours, [14.0, 18.0])


def test_backward_inputs_with_a_non_leaf_fills_its_grad_like_torch():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        y = x * w
        (y * y).sum().backward(inputs=[y, w])
        return [y.grad, x.grad, w.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[1] is None


def test_backward_inputs_unused_input_gets_no_grad():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        u = lib.tensor([5.0], dtype=lib.float64, requires_grad=True)
        (x * x).sum().backward(inputs=[x, u])
        return [x.grad, u.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)


@LIBS
def test_backward_inputs_empty_raises(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError):
        (x * x).sum().backward(inputs=[])


def test_backward_inputs_does_not_free_parts_it_did_not_need():
    """With inputs=[w], a branch that only leads to x is not run, so it can still be walked later (as in torch)."""

    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        out = (x.exp() + w * w).sum()
        out.backward(inputs=[w])
        before = x.grad
        out.backward(inputs=[x])
        return [before, w.grad, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] is None
    np.testing.assert_allclose(ours[1], [6.0, 8.0])
    np.testing.assert_allclose(ours[2], np.exp([1.0, 2.0]))


# -- several roots -------------------------------------------------------------------------------------------
def test_autograd_backward_with_several_roots_and_gradients():
    def script(lib):
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        w = lib.tensor(W, dtype=lib.float64, requires_grad=True)
        h = x.sin()
        y1 = h * 2
        y2 = h.exp() * w
        g1 = lib.tensor(W, dtype=lib.float64)
        g2 = lib.tensor(X, dtype=lib.float64) + 1
        lib.autograd.backward([y1, y2], [g1, g2])
        return [x.grad, w.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_autograd_backward_several_roots_equals_sum_of_separate_backwards():
    x = fm.tensor(X, dtype=fm.float64, requires_grad=True)
    h = x.exp()
    y1 = (h * 3).sum()
    y2 = (h * h).sum()
    fm.autograd.backward([y1, y2])
    together = arr(x.grad)
    x.grad = None
    h = x.exp()
    (h * 3).sum().backward(retain_graph=True)
    (h * h).sum().backward()
    np.testing.assert_allclose(together, arr(x.grad))
    np.testing.assert_allclose(together, 3 * np.exp(X) + 2 * np.exp(2 * np.array(X)))


def test_autograd_backward_none_gradient_for_scalar_root():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        s = (x * x).sum()
        v = x * 5
        lib.autograd.backward([s, v], [None, lib.tensor([1.0, -1.0], dtype=lib.float64)])
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)


@LIBS
def test_autograd_backward_mismatched_gradient_count_raises(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises((RuntimeError, ValueError)):
        lib.autograd.backward([x * 2, x * 3], [lib.ones(2)])


# -- grad mode during backward ---------------------------------------------------------------------------------
def test_backward_records_no_graph_and_hooks_run_with_grad_disabled():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        seen = []
        y = x * x
        y.register_hook(lambda g: seen.append(lib.is_grad_enabled()))
        y.sum().backward()
        return [seen, x.grad.requires_grad, x.grad.grad_fn is None, lib.is_grad_enabled()]

    ours, theirs = both(script)
    assert ours == theirs == [[False], False, True, True]
