"""Memory: the graph and what it saved are released after backward, by reference counting alone
(the cyclic collector is switched off in these tests), and a training loop does not grow."""

import gc
import tracemalloc
import weakref

import numpy as np
import pytest

import forgeml as fm
from forgeml.autograd import Function

torch = pytest.importorskip("torch")


@pytest.fixture
def no_gc():
    """Run with the cyclic GC off: whatever is freed must be freed by refcounting."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


def _dead(ref):
    return ref() is None


class Square(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return 2 * a * g


# -- intermediates and nodes -------------------------------------------------------------------------------
def test_intermediates_and_nodes_are_freed_after_backward_without_gc(no_gc):
    x = fm.randn(50, dtype=fm.float64, requires_grad=True)
    a = x.sin()
    b = x.cos()
    e = (a * b).exp()
    out = e.sum()
    refs = {
        "a": weakref.ref(a),
        "a._data": weakref.ref(a._data),
        "b._data": weakref.ref(b._data),
        "e": weakref.ref(e),
        "e._data": weakref.ref(e._data),
        "a.grad_fn": weakref.ref(a.grad_fn),
        "e.grad_fn": weakref.ref(e.grad_fn),
        "out.grad_fn": weakref.ref(out.grad_fn),
    }
    del a, b, e
    # before backward the graph keeps what it saved
    assert not _dead(refs["a._data"]) and not _dead(refs["e._data"])
    out.backward()
    del out
    alive = [name for name, ref in refs.items() if not _dead(ref)]
    assert alive == []
    assert x.grad is not None


def test_gc_finds_nothing_to_collect_either():
    """Same scenario with the collector on: a collection right after finds no cyclic garbage from the graph."""
    x = fm.randn(50, dtype=fm.float64, requires_grad=True)
    gc.collect()
    out = ((x.sin() * x.cos()).exp()).sum()
    out.backward()
    del out
    assert gc.collect() == 0


def test_saved_arrays_are_released_after_backward_while_the_output_is_alive(no_gc):
    x = fm.randn(50, dtype=fm.float64, requires_grad=True)
    h = x * 3
    e = h.exp()  # exp saves its output
    s, c = h.sin(), h.cos()
    p = s * c  # mul saves both of its (intermediate) inputs
    saved = {"exp output": weakref.ref(e._data), "sin output": weakref.ref(s._data), "cos output": weakref.ref(c._data)}
    out = e.sum() + p.sum()
    del h, e, s, c, p
    assert [name for name, ref in saved.items() if _dead(ref)] == []
    out.backward()
    assert out.grad_fn is not None  # the output and its node are still alive ...
    still = [name for name, ref in saved.items() if not _dead(ref)]
    assert still == [], f"still referenced after backward: {still}"  # ... but not what the graph saved


def test_saved_inputs_of_mul_are_released_after_backward(no_gc):
    x = fm.randn(40, dtype=fm.float64, requires_grad=True)
    a = x.sin()
    b = x.cos()
    refs = [weakref.ref(a._data), weakref.ref(b._data)]
    out = (a * b).sum()
    del a, b
    assert all(not _dead(r) for r in refs)
    out.backward()
    assert all(_dead(r) for r in refs)


def test_retain_graph_keeps_saved_arrays_until_the_last_backward(no_gc):
    x = fm.randn(30, dtype=fm.float64, requires_grad=True)
    e = x.exp()
    ref = weakref.ref(e._data)
    out = e.sum()
    del e
    out.backward(retain_graph=True)
    assert not _dead(ref)
    out.backward(retain_graph=True)
    assert not _dead(ref)
    out.backward()
    assert _dead(ref)
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.exp(x.detach().numpy()))


def test_autograd_grad_releases_saved_arrays(no_gc):
    x = fm.randn(30, dtype=fm.float64, requires_grad=True)
    e = x.exp()
    ref = weakref.ref(e._data)
    out = e.sum()
    del e
    fm.autograd.grad(out, x)
    assert _dead(ref)


def test_graph_dropped_without_backward_is_freed(no_gc):
    x = fm.randn(30, dtype=fm.float64, requires_grad=True)
    e = x.exp()
    refs = [weakref.ref(e), weakref.ref(e._data), weakref.ref(e.grad_fn)]
    out = (e * e).sum()
    node = weakref.ref(out.grad_fn)
    del e
    assert not _dead(refs[1])
    del out
    assert _dead(node)
    assert all(_dead(r) for r in refs)


def test_leaf_tensor_and_its_accumulator_are_freed(no_gc):
    x = fm.randn(30, dtype=fm.float64, requires_grad=True)
    w = fm.randn(30, dtype=fm.float64, requires_grad=True)
    out = (x * w).sum()
    acc = weakref.ref(out.grad_fn.next_edges[0][0].next_edges[0][0])  # x's AccumulateGrad
    out.backward()
    refs = [weakref.ref(x), weakref.ref(x._data), weakref.ref(x.grad)]
    del out, x
    assert all(_dead(r) for r in refs)
    assert _dead(acc)


@pytest.mark.parametrize("kind", ["retain_grad", "hook"])
def test_non_leaf_with_retain_grad_or_hook_is_freed(no_gc, kind):
    x = fm.randn(30, dtype=fm.float64, requires_grad=True)
    y = x * 2
    if kind == "retain_grad":
        y.retain_grad()
    else:
        y.register_hook(lambda g: g * 2)
    ref, data_ref = weakref.ref(y), weakref.ref(y._data)
    out = (y * y).sum()
    out.backward()
    del y, out
    assert _dead(ref) and _dead(data_ref)


def test_custom_function_context_and_saved_tensors_are_released(no_gc):
    x = fm.randn(30, dtype=fm.float64, requires_grad=True)
    h = x * 3
    data_ref = weakref.ref(h._data)
    y = Square.apply(h)
    ctx_ref = weakref.ref(y.grad_fn)
    out = y.sum()
    del h
    assert not _dead(data_ref)
    out.backward()
    assert _dead(data_ref), "the custom function's saved tensor outlived backward"
    del out, y
    assert _dead(ctx_ref)
    np.testing.assert_allclose(x.grad.numpy(), 18 * x.detach().numpy())


def test_custom_function_output_dropped_without_backward_is_freed(no_gc):
    x = fm.randn(30, dtype=fm.float64, requires_grad=True)
    y = Square.apply(x)
    refs = [weakref.ref(y), weakref.ref(y.grad_fn)]
    del y
    assert all(_dead(r) for r in refs)


def test_in_place_graph_is_freed(no_gc):
    x = fm.randn(30, dtype=fm.float64, requires_grad=True)
    w = fm.randn(30, dtype=fm.float64, requires_grad=True)
    h = x * 2
    first = weakref.ref(h.grad_fn)
    h.mul_(w)
    h.add_(1)
    refs = [weakref.ref(h), weakref.ref(h.grad_fn), first]
    out = h.sum()
    out.backward()
    del h, out
    assert all(_dead(r) for r in refs)


SCENARIOS = [
    "plain",
    "retain_grad",
    "hooks",
    "custom",
    "inplace",
    "autograd_grad",
    "split",
    "no_backward",
    "retain_graph",
]


@pytest.mark.parametrize("kind", SCENARIOS)
def test_no_reference_cycles_are_created(no_gc, kind):
    x = fm.randn(10, dtype=fm.float64, requires_grad=True)
    w = fm.randn(10, dtype=fm.float64, requires_grad=True)

    def scenario():
        if kind == "plain":
            (x * w).exp().sum().backward()
        elif kind == "retain_grad":
            h = x * w
            h.retain_grad()
            (h * h).sum().backward()
        elif kind == "hooks":
            h = x * w
            h.register_hook(lambda g: g * 2)
            handle = x.register_hook(lambda g: g)
            (h * h).sum().backward()
            handle.remove()
        elif kind == "custom":
            Square.apply(x * w).sum().backward()
        elif kind == "inplace":
            h = x * w
            h.mul_(2)
            h.add_(w)
            h.sum().backward()
        elif kind == "autograd_grad":
            fm.autograd.grad((x * w).tanh().sum(), [x, w])
        elif kind == "split":
            a, b = (x * w).split(5)
            (a * b).sum().backward()
        elif kind == "no_backward":
            (x * w).exp().sum()
        else:
            out = (x * w).exp().sum()
            out.backward(retain_graph=True)

    gc.collect()
    scenario()
    assert gc.collect() == 0


# -- no_grad --------------------------------------------------------------------------------------------------
def _count_nodes():
    return sum(1 for o in gc.get_objects() if issubclass(type(o), Function))


def test_no_grad_creates_no_graph_nodes(no_gc):
    x = fm.randn(4, 5, dtype=fm.float64, requires_grad=True)
    w = fm.randn(5, 3, dtype=fm.float64, requires_grad=True)
    before = _count_nodes()
    with fm.no_grad():
        results = [
            (x @ w).relu().sum(),
            x.exp() * 2,
            x.reshape(-1)[3:],
            Square.apply(x),
            x.split(2)[0],
        ]
    assert all(r.grad_fn is None and not r.requires_grad for r in results)
    assert _count_nodes() == before
    kept = (x @ w).relu().sum()  # the same work with grad on does create nodes
    assert _count_nodes() > before
    del kept


def test_no_grad_results_do_not_keep_their_inputs_alive(no_gc):
    x = fm.randn(30, dtype=fm.float64, requires_grad=True)
    h = x * 2
    refs = [weakref.ref(x), weakref.ref(h), weakref.ref(h._data)]
    with fm.no_grad():
        y = (h.exp() * h).sum()
    del x, h
    assert all(_dead(r) for r in refs)
    assert y.grad_fn is None


# -- a training loop ---------------------------------------------------------------------------------------------
def test_training_loop_memory_does_not_grow():
    w = fm.randn(64, 64, dtype=fm.float64, requires_grad=True)
    b = fm.randn(64, dtype=fm.float64, requires_grad=True)
    inputs = fm.randn(32, 64, dtype=fm.float64)

    def step():
        h = (inputs @ w + b).relu()
        loss = (h * h).mean() + h.exp().mean() * 0.0
        loss.backward()
        with fm.no_grad():
            w.sub_(1e-4 * w.grad)
            b.sub_(1e-4 * b.grad)
        w.grad = None
        b.grad = None

    for _ in range(20):  # warm up caches
        step()
    gc.collect()
    tracemalloc.start()
    try:
        samples = []
        for i in range(200):
            step()
            if i % 40 == 39:
                # a full collection also empties CPython's free lists, whose cached blocks tracemalloc counts as
                # allocated; what remains after it is memory that something still holds
                gc.collect()
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    # one leaked step is at least one 32x64 float64 activation (16 KiB); allow far less than that in total
    growth = samples[-1] - samples[0]
    assert growth < 16 * 1024, f"traced memory grew by {growth} bytes over 160 steps: {samples}"


def test_training_loop_keeping_grads_does_not_grow():
    """Same loop with grads accumulated (zeroed in place) instead of set to None."""
    w = fm.randn(64, 64, dtype=fm.float64, requires_grad=True)
    inputs = fm.randn(32, 64, dtype=fm.float64)

    def step():
        loss = (inputs @ w).tanh().sum()
        loss.backward()
        with fm.no_grad():
            w.sub_(1e-4 * w.grad)
            w.grad.zero_()

    for _ in range(20):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        step()
        gc.collect()  # empties the free lists too (see the test above)
        first = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            step()
        gc.collect()
        last = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert last - first < 16 * 1024, f"traced memory grew by {last - first} bytes over 200 steps"
