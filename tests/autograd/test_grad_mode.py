"""Grad mode: ``no_grad``, ``enable_grad``, ``set_grad_enabled`` as context managers and decorators,
nesting, exceptions, threads, and what grad mode must not touch."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import forgeml as fm
from tests.oracle import LIBS, arr

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _restore_both_libraries():
    """Whatever a test does to grad mode, leave both libraries with grad enabled."""
    yield
    fm.set_grad_enabled(True)
    torch.set_grad_enabled(True)


OPS = {
    "mul": lambda x: x * 2,
    "exp": lambda x: x.exp(),
    "matmul": lambda x: x @ x.T,
    "sum": lambda x: x.sum(),
    "mean_dim": lambda x: x.mean(1),
    "reshape_view": lambda x: x.reshape(-1),
    "transpose_view": lambda x: x.transpose(0, 1),
    "getitem_view": lambda x: x[0],
    "advanced_index": lambda x: x[[1, 0]],
    "split": lambda x: x.split(1)[0],
    "relu": lambda x: x.relu(),
    "softmax": lambda x: x.softmax(-1),
    "add_leaf": lambda x: x + x,
}


def test_grad_is_enabled_by_default():
    assert fm.is_grad_enabled() is True


@pytest.mark.parametrize("op", list(OPS), ids=list(OPS))
def test_results_inside_no_grad_record_no_graph(op):
    x = fm.randn(2, 3, dtype=fm.float64, requires_grad=True)
    with fm.no_grad():
        assert fm.is_grad_enabled() is False
        y = OPS[op](x)
    assert fm.is_grad_enabled() is True
    assert y.requires_grad is False
    assert y.grad_fn is None
    assert y.is_leaf
    # the same op outside no_grad does record a graph (so the check above can fail)
    z = OPS[op](x)
    assert z.requires_grad is True and z.grad_fn is not None


def test_values_computed_inside_no_grad_equal_those_outside():
    x = fm.randn(3, 4, dtype=fm.float64, requires_grad=True)
    with fm.no_grad():
        inside = arr((x.exp() @ x.T).softmax(-1))
    outside = arr((x.exp() @ x.T).softmax(-1))
    np.testing.assert_array_equal(inside, outside)


def test_backward_through_a_no_grad_result_raises():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    with fm.no_grad():
        y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_a_no_grad_result_is_a_constant_in_a_later_graph():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        with lib.no_grad():
            c = x * x
        (c * x).sum().backward()
        return arr(x.grad)

    ours, theirs = script(fm), script(torch)
    np.testing.assert_allclose(ours, theirs)
    np.testing.assert_allclose(ours, [1.0, 4.0, 9.0])


@LIBS
def test_leaf_created_inside_no_grad_keeps_requires_grad(lib):
    with lib.no_grad():
        z = lib.tensor([1.0, 2.0], requires_grad=True)
        w = z * 2
    assert z.requires_grad is True and z.is_leaf
    assert w.requires_grad is False
    (z * 3).sum().backward()
    np.testing.assert_allclose(arr(z.grad), [3.0, 3.0])


def test_in_place_update_of_a_non_leaf_inside_no_grad_is_not_recorded():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        with lib.no_grad():
            y.mul_(3)
        y.sum().backward()
        return [arr(x.grad), arr(y), y.grad_fn is not None]

    ours, theirs = script(fm), script(torch)
    np.testing.assert_allclose(ours[0], theirs[0])
    np.testing.assert_allclose(ours[1], theirs[1])
    assert ours[2] == theirs[2]
    np.testing.assert_allclose(ours[0], [2.0, 2.0])


def test_enable_grad_inside_no_grad_records():
    x = fm.tensor([1.0, 2.0], dtype=fm.float64, requires_grad=True)
    with fm.no_grad():
        with fm.enable_grad():
            assert fm.is_grad_enabled()
            y = x * x
        assert not fm.is_grad_enabled()
        z = x * x
    assert y.grad_fn is not None and z.grad_fn is None
    y.sum().backward()
    np.testing.assert_allclose(arr(x.grad), [2.0, 4.0])


def test_set_grad_enabled_as_context_manager():
    x = fm.tensor([1.0], requires_grad=True)
    with fm.set_grad_enabled(False):
        assert not fm.is_grad_enabled()
        y = x * 2
        with fm.set_grad_enabled(True):
            assert fm.is_grad_enabled()
            z = x * 2
        assert not fm.is_grad_enabled()
    assert fm.is_grad_enabled()
    assert y.grad_fn is None and z.grad_fn is not None


@LIBS
def test_set_grad_enabled_called_as_a_function_takes_effect_immediately(lib):
    result = lib.set_grad_enabled(False)
    assert lib.is_grad_enabled() is False
    x = lib.tensor([1.0], requires_grad=True)
    assert (x * 2).grad_fn is None
    assert type(result).__name__ == "set_grad_enabled"
    lib.set_grad_enabled(True)
    assert lib.is_grad_enabled() is True
    assert (x * 2).grad_fn is not None


@LIBS
def test_set_grad_enabled_true_inside_no_grad_lasts_until_the_block_exits(lib):
    with lib.no_grad():
        lib.set_grad_enabled(True)
        assert lib.is_grad_enabled()
    assert lib.is_grad_enabled()
    lib.set_grad_enabled(False)
    with lib.enable_grad():
        pass
    assert lib.is_grad_enabled() is False


@LIBS
def test_set_grad_enabled_rejects_a_non_bool(lib):
    with pytest.raises(TypeError):
        lib.set_grad_enabled(0)
    assert lib.is_grad_enabled()


# -- decorators ----------------------------------------------------------------------------------------------
def _decorated(lib, kind):
    if kind == "no_grad()":
        deco = lib.no_grad()
    elif kind == "no_grad":
        deco = lib.no_grad
    elif kind == "enable_grad()":
        deco = lib.enable_grad()
    elif kind == "enable_grad":
        deco = lib.enable_grad
    elif kind == "set_grad_enabled(False)":
        deco = lib.set_grad_enabled(False)
    else:
        deco = lib.set_grad_enabled(True)

    @deco
    def f(x):
        """Docstring kept."""
        return x * 2, lib.is_grad_enabled()

    return f


DECORATORS = {
    "no_grad()": False,
    "no_grad": False,
    "enable_grad()": True,
    "enable_grad": True,
    "set_grad_enabled(False)": False,
    "set_grad_enabled(True)": True,
}


@pytest.mark.parametrize("kind", list(DECORATORS))
@pytest.mark.parametrize("outer", [True, False], ids=["outside-enabled", "outside-disabled"])
def test_decorators(kind, outer):
    expected = DECORATORS[kind]
    fm.set_grad_enabled(outer)
    f = _decorated(fm, kind)
    assert fm.is_grad_enabled() is outer, "decorating must not change the current mode"
    assert f.__name__ == "f" and f.__doc__ == "Docstring kept."
    x = fm.tensor([1.0], requires_grad=True)
    y, mode = f(x)
    assert mode is expected
    assert (y.grad_fn is not None) is expected
    assert fm.is_grad_enabled() is outer
    # same with torch, as a reference for the expectations above
    torch.set_grad_enabled(outer)
    ty, tmode = _decorated(torch, kind)(torch.tensor([1.0], requires_grad=True))
    assert tmode is expected and (ty.grad_fn is not None) is expected
    assert torch.is_grad_enabled() is outer


def test_decorated_function_raising_restores_mode():
    @fm.no_grad()
    def boom():
        assert not fm.is_grad_enabled()
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        boom()
    assert fm.is_grad_enabled()


def test_decorated_function_can_be_called_repeatedly_and_recursively():
    depth = []

    @fm.no_grad
    def rec(n):
        depth.append(fm.is_grad_enabled())
        if n:
            with fm.enable_grad():
                rec(n - 1)
                depth.append(fm.is_grad_enabled())

    rec(2)
    rec(0)
    assert depth == [False, False, False, True, True, False]
    assert fm.is_grad_enabled()


@LIBS
def test_no_grad_on_a_generator_function(lib):
    @lib.no_grad()
    def gen():
        yield lib.is_grad_enabled()
        yield lib.is_grad_enabled()

    it = gen()
    first = next(it)
    between = lib.is_grad_enabled()
    second = next(it)
    assert (first, between, second) == (False, True, False)
    assert lib.is_grad_enabled()


# -- nesting and exceptions -------------------------------------------------------------------------------
def test_nested_contexts_restore_each_level():
    trace = []
    with fm.no_grad():
        trace.append(fm.is_grad_enabled())
        with fm.enable_grad():
            trace.append(fm.is_grad_enabled())
            with fm.no_grad():
                trace.append(fm.is_grad_enabled())
                with fm.set_grad_enabled(True):
                    trace.append(fm.is_grad_enabled())
                trace.append(fm.is_grad_enabled())
            trace.append(fm.is_grad_enabled())
        trace.append(fm.is_grad_enabled())
    trace.append(fm.is_grad_enabled())
    assert trace == [False, True, False, True, False, True, False, True]


@pytest.mark.parametrize("inner", ["no_grad", "enable_grad", "set_grad_enabled(False)", "set_grad_enabled(True)"])
@pytest.mark.parametrize("outer_mode", [True, False])
def test_exception_inside_a_context_restores_the_previous_mode(inner, outer_mode):
    make = {
        "no_grad": fm.no_grad,
        "enable_grad": fm.enable_grad,
        "set_grad_enabled(False)": lambda: fm.set_grad_enabled(False),
        "set_grad_enabled(True)": lambda: fm.set_grad_enabled(True),
    }[inner]
    fm.set_grad_enabled(outer_mode)
    with pytest.raises(ZeroDivisionError):
        with make():
            1 / 0
    assert fm.is_grad_enabled() is outer_mode


def test_exception_in_nested_contexts_unwinds_every_level():
    with fm.no_grad():
        try:
            with fm.enable_grad():
                with fm.no_grad():
                    raise RuntimeError("deep")
        except RuntimeError:
            assert fm.is_grad_enabled() is False
    assert fm.is_grad_enabled() is True


# -- threads ----------------------------------------------------------------------------------------------------
def _in_thread(fn):
    """Run ``fn`` in a new thread and return its result (re-raising what it raised)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result(timeout=30)


def test_a_fresh_thread_sees_grad_enabled_while_main_is_in_no_grad():
    x = fm.tensor([1.0, 2.0], requires_grad=True)

    def work():
        y = x * 2
        return fm.is_grad_enabled(), y.grad_fn is not None

    with fm.no_grad():
        assert _in_thread(work) == (True, True)
        assert fm.is_grad_enabled() is False
    fm.set_grad_enabled(False)
    try:
        assert _in_thread(work) == (True, True)
    finally:
        fm.set_grad_enabled(True)


def test_no_grad_in_a_thread_does_not_leak_into_the_main_thread():
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with fm.no_grad():
            seen["worker"] = fm.is_grad_enabled()
            entered.set()
            release.wait(timeout=10)
        fm.set_grad_enabled(False)  # a plain call, never undone in that thread
        seen["worker_after"] = fm.is_grad_enabled()

    t = threading.Thread(target=worker)
    t.start()
    assert entered.wait(timeout=10)
    seen["main_during"] = fm.is_grad_enabled()
    release.set()
    t.join()
    assert seen == {"worker": False, "main_during": True, "worker_after": False}
    assert fm.is_grad_enabled() is True
    x = fm.tensor([1.0], requires_grad=True)
    assert (x * 2).grad_fn is not None


# -- what grad mode must not touch ----------------------------------------------------------------------------
def test_no_grad_does_not_change_rng_default_dtype_or_values():
    fm.manual_seed(123)
    outside = arr(fm.randn(5))
    fm.manual_seed(123)
    dtype_before = fm.get_default_dtype()
    with fm.no_grad():
        inside = arr(fm.randn(5))
        assert fm.get_default_dtype() is dtype_before
    np.testing.assert_array_equal(inside, outside)
    assert fm.get_default_dtype() is dtype_before


def test_no_grad_does_not_change_requires_grad_of_existing_tensors():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with fm.no_grad():
        assert x.requires_grad is True
        assert y.requires_grad is True and y.grad_fn is not None
    y.sum().backward()
    np.testing.assert_allclose(arr(x.grad), [2.0, 2.0])
