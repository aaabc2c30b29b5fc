"""``Tensor.register_hook`` on leaves and non-leaves, handles, and how hooks interact with ``retain_grad``,
``autograd.grad`` and ``backward(inputs=...)``; every script is also run with torch."""

import numpy as np
import pytest

import forgeml as fm
from tests.oracle import LIBS, arr, assert_same, both

torch = pytest.importorskip("torch")


def test_leaf_hook_is_called_with_the_gradient_as_a_tensor():
    calls = []
    x = fm.tensor([1.0, 2.0, 3.0], dtype=fm.float64, requires_grad=True)
    x.register_hook(calls.append)
    (x * x).sum().backward()
    assert len(calls) == 1
    assert isinstance(calls[0], fm.Tensor)
    assert calls[0].requires_grad is False
    np.testing.assert_allclose(arr(calls[0]), [2.0, 4.0, 6.0])


def test_non_leaf_hook_is_called_with_its_gradient():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        seen = []
        y = x.exp()
        y.register_hook(lambda g: seen.append(g.clone()))
        (y * y).sum().backward()
        return [len(seen), seen[0], isinstance(seen[0], (fm.Tensor, torch.Tensor))]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[1], 2 * np.exp([1.0, 2.0, 3.0]))


def test_hook_on_a_tensor_used_twice_sees_the_summed_gradient_once():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x * 1
        leaf_seen, seen = [], []
        x.register_hook(lambda g: leaf_seen.append(g.clone()))
        y.register_hook(lambda g: seen.append(g.clone()))
        (y * 2 + y * 3).sum().backward()
        return [len(leaf_seen), len(seen), leaf_seen[0], seen[0]]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[:2] == [1, 1]
    np.testing.assert_allclose(ours[3], [5.0, 5.0])


def test_leaf_hook_replacement_goes_into_grad():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        x.register_hook(lambda g: g * 3)
        (x * x).sum().backward()
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours, [6.0, 12.0, 18.0])


def test_leaf_hook_returning_none_keeps_the_gradient():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        x.register_hook(lambda g: None)
        (x * x).sum().backward()
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours, [2.0, 4.0])


def test_non_leaf_hook_replacement_is_used_downstream():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([0.5, -1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x * w
        y.register_hook(lambda g: g * 10 + 1)
        (y.exp()).sum().backward()
        return [x.grad, w.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    x, w = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(ours[0], (np.exp(x * w) * 10 + 1) * w)


def test_hooks_chain_in_registration_order():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        order = []
        y.register_hook(lambda g: (order.append(("h1", g.tolist())), g + 1)[1])
        y.register_hook(lambda g: (order.append(("h2", g.tolist())), g * 2)[1])
        x.register_hook(lambda g: (order.append(("leaf", g.tolist())), None)[1])
        y.sum().backward()
        return [order, x.grad]

    ours, theirs = both(script)
    assert ours[0] == theirs[0] == [["h1", [1.0, 1.0]], ["h2", [2.0, 2.0]], ["leaf", [8.0, 8.0]]]
    assert_same(ours[1], theirs[1])


def test_leaf_hook_applies_to_every_backward_call():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        x.register_hook(lambda g: g * 2)
        (x * 1).sum().backward()
        (x * 1).sum().backward()
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours, [4.0, 4.0])


# -- handles ---------------------------------------------------------------------------------------------
def test_handle_remove_on_a_leaf():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        x.register_hook(lambda g: g * 3)
        handle = x.register_hook(lambda g: g + 1)
        (x * x).sum().backward()
        first = x.grad.clone()
        handle.remove()
        x.grad = None
        (x * x).sum().backward()
        return [first, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], [7.0, 13.0, 19.0])
    np.testing.assert_allclose(ours[1], [6.0, 12.0, 18.0])


def test_handle_remove_on_a_non_leaf():
    calls = []
    x = fm.tensor([1.0, 2.0], dtype=fm.float64, requires_grad=True)
    y = x * 2
    handle = y.register_hook(lambda g: (calls.append(1), g * 0)[1])
    handle.remove()
    (y * y).sum().backward()
    assert calls == []
    np.testing.assert_allclose(arr(x.grad), [8.0, 16.0])


def test_handle_remove_twice_is_harmless_and_keeps_other_hooks():
    x = fm.tensor([1.0, 2.0], dtype=fm.float64, requires_grad=True)
    keep = x.register_hook(lambda g: g * 5)  # noqa: F841 - stays registered
    handle = x.register_hook(lambda g: g * 100)
    handle.remove()
    handle.remove()
    (x * 1).sum().backward()
    np.testing.assert_allclose(arr(x.grad), [5.0, 5.0])


def test_handle_as_context_manager_removes_on_exit():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        with x.register_hook(lambda g: g * 10):
            (x * 1).sum().backward()
        inside = x.grad.clone()
        (x * 1).sum().backward()
        return [inside, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[1], [11.0, 11.0])


# -- errors ----------------------------------------------------------------------------------------------------
@LIBS
@pytest.mark.parametrize("make", ["plain", "detached", "no_grad_result", "int"])
def test_hook_on_tensor_that_does_not_require_grad_raises(lib, make):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    if make == "plain":
        t = lib.tensor([1.0, 2.0])
    elif make == "detached":
        t = (x * 2).detach()
    elif make == "no_grad_result":
        with lib.no_grad():
            t = x * 2
    else:
        t = lib.tensor([1, 2])
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        t.register_hook(lambda g: g)


@LIBS
def test_hook_returning_wrong_shape_raises(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: lib.ones(3))
    with pytest.raises(RuntimeError):
        y.sum().backward()
    assert lib.is_grad_enabled()


def test_exception_in_hook_propagates_and_restores_grad_mode():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2

    def bad(g):
        raise KeyError("from the hook")

    y.register_hook(bad)
    with pytest.raises(KeyError, match="from the hook"):
        y.sum().backward()
    assert fm.is_grad_enabled()
    assert x.grad is None


# -- when hooks fire ------------------------------------------------------------------------------------
def test_hook_not_called_for_tensor_off_the_backward_path():
    def script(lib):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        called = []
        y.register_hook(lambda g: called.append(1))
        (x * 3).sum().backward()
        return called

    ours, theirs = both(script)
    assert ours == theirs == []


def test_hook_registered_after_the_tensor_was_used_still_fires():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        z = (y * y).sum()
        y.register_hook(lambda g: g * 0)
        z.backward()
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_array_equal(ours, [0.0, 0.0])


def test_hooks_on_outputs_of_a_multi_output_op():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0, 4.0], dtype=lib.float64, requires_grad=True)
        a, b = x.split(2)
        a.register_hook(lambda g: g * 10)
        b.register_hook(lambda g: g - 1)
        b.retain_grad()
        (a * b).sum().backward()
        return [x.grad, b.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], [30.0, 40.0, 0.0, 1.0])


def test_hooks_registered_before_and_after_an_in_place_op_see_old_and_new_gradients():
    """torch: a hook registered before y.mul_(3) gets the gradient w.r.t. the old y, one after it the new y."""

    def script(lib):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = a * 2
        before, after = [], []
        y.register_hook(lambda g: before.append(g.clone()))
        y.mul_(3)
        y.register_hook(lambda g: after.append(g.clone()))
        (y * y).sum().backward()
        return [before, after, a.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0][0], [36.0, 72.0])
    np.testing.assert_allclose(ours[1][0], [12.0, 24.0])


# -- retain_grad ordering ---------------------------------------------------------------------------------
@pytest.mark.parametrize("retain_first", [True, False], ids=["retain-then-hook", "hook-then-retain"])
def test_retain_grad_sees_the_gradient_after_user_hooks(retain_first):
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        if retain_first:
            y.retain_grad()
            y.register_hook(lambda g: g * 10)
        else:
            y.register_hook(lambda g: g * 10)
            y.retain_grad()
        y.register_hook(lambda g: g + 1)
        (y * y).sum().backward()
        return [y.grad, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], np.array([4.0, 8.0, 12.0]) * 10 + 1)


def test_hook_modifying_values_does_not_change_the_retained_grad_of_an_upstream_tensor():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        h = x.exp()
        h.retain_grad()
        y = h * 3
        y.register_hook(lambda g: g * 2)
        y.sum().backward()
        return [h.grad, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], [6.0, 6.0])


# -- hooks under autograd.grad and backward(inputs=...) ------------------------------------------------
def test_non_leaf_hook_runs_under_autograd_grad():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        seen = []
        y.register_hook(lambda g: (seen.append(1), g * 0 + 5)[1])
        (g,) = lib.autograd.grad((y * y).sum(), x)
        return [len(seen), g]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[1], [10.0, 10.0])


def test_leaf_hook_runs_under_autograd_grad_like_torch():
    """torch runs a leaf's hooks when autograd.grad computes that leaf's gradient, and returns the replacement."""

    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        seen = []
        x.register_hook(lambda g: (seen.append(g.clone()), g * 0 + 7)[1])
        (g,) = lib.autograd.grad((x * x).sum(), x)
        return [len(seen), g, x.grad]

    ours, theirs = both(script)
    assert theirs[0] == 1
    np.testing.assert_allclose(theirs[1], [7.0, 7.0])
    assert ours[0] == 1, "the leaf hook was not called by autograd.grad"
    assert_same(ours, theirs)


def test_leaf_hook_runs_under_backward_with_inputs_like_torch():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        seen = []
        x.register_hook(lambda g: (seen.append(1), g * 0 + 7)[1])
        (x * w).sum().backward(inputs=[x])
        return [len(seen), x.grad, w.grad]

    ours, theirs = both(script)
    np.testing.assert_allclose(theirs[1], [7.0, 7.0])
    assert ours[0] == theirs[0] == 1, "the leaf hook was not called by backward(inputs=[x])"
    assert_same(ours, theirs)
