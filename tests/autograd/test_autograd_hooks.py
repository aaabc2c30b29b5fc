"""Post-accumulate-grad hooks and ``queue_callback``: the two engine features ``DistributedDataParallel`` is
built on (a hook per parameter starts its all-reduce; a callback at the end of backward waits for them).

Semantics follow PyTorch's ``Tensor.register_post_accumulate_grad_hook`` and
``Variable._execution_engine.queue_callback``; where torch is importable the
same script runs on both.
"""

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.autograd.engine import queue_callback
from tests.oracle import arr

torch = pytest.importorskip("torch")


def _queue(lib):
    """queue_callback of ``lib`` (forgeml, or torch's engine)."""
    if lib is fm:
        return queue_callback
    return torch.autograd.Variable._execution_engine.queue_callback


def _both(script):
    return script(fm), script(torch)


def _plain(value):
    if isinstance(value, (fm.Tensor, torch.Tensor)):
        return np.asarray(arr(value)).tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def test_hook_sees_the_accumulated_gradient_once_per_backward():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        seen = []
        x.register_post_accumulate_grad_hook(lambda t: seen.append(("hook", t is x, t.grad.clone())))
        (x * x).sum().backward()
        # used twice in one graph: the hook runs once, after both contributions are in .grad
        (x * 3 + x * x).sum().backward()
        return seen

    ours, theirs = _both(script)
    assert _plain(ours) == _plain(theirs)
    assert _plain(ours) == [["hook", True, [2.0, 4.0]], ["hook", True, [2.0 + 5.0, 4.0 + 7.0]]]


def test_hook_sees_a_grad_that_existed_before_backward_plus_the_new_one():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        x.grad = lib.tensor([10.0, 20.0], dtype=lib.float64)
        seen = []
        x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.clone()))
        (x * x).sum().backward()
        return seen

    ours, theirs = _both(script)
    assert _plain(ours) == _plain(theirs) == [[12.0, 24.0]]


def test_hook_may_change_grad_in_place_and_replace_it():
    seen = []
    x = fm.tensor([1.0, 2.0], dtype=fm.float64, requires_grad=True)

    def halve(t):
        t.grad._data *= 0.5
        seen.append(arr(t.grad).copy())

    x.register_post_accumulate_grad_hook(halve)
    (x * x).sum().backward()
    np.testing.assert_array_equal(arr(x.grad), [1.0, 2.0])
    x.register_post_accumulate_grad_hook(lambda t: setattr(t, "grad", fm.zeros(2, dtype=fm.float64)))
    (x * x).sum().backward()  # halve runs first ((1 + 2) / 2, (2 + 4) / 2), then the replacement
    np.testing.assert_array_equal(seen[1], [1.5, 3.0])
    np.testing.assert_array_equal(arr(x.grad), [0.0, 0.0])


def test_hooks_run_in_registration_order_and_handles_remove_them():
    order = []
    x = fm.tensor([1.0], requires_grad=True)
    first = x.register_post_accumulate_grad_hook(lambda t: order.append("first"))
    second = x.register_post_accumulate_grad_hook(lambda t: order.append("second"))
    (x * 2).sum().backward()
    assert order == ["first", "second"]
    first.remove()
    first.remove()  # twice is harmless
    (x * 2).sum().backward()
    assert order == ["first", "second", "second"]
    with second:
        pass
    (x * 2).sum().backward()
    assert order == ["first", "second", "second"]
    np.testing.assert_array_equal(arr(x.grad), [6.0])  # removing hooks does not stop accumulation


def test_hook_runs_with_backward_inputs_and_only_for_those_inputs():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        seen = []
        x.register_post_accumulate_grad_hook(lambda t: seen.append(("x", t.grad.clone())))
        w.register_post_accumulate_grad_hook(lambda t: seen.append(("w", t.grad.clone())))
        (x * w).sum().backward(inputs=[x])
        return [seen, w.grad]

    ours, theirs = _both(script)
    assert _plain(ours) == _plain(theirs) == [[["x", [3.0, 4.0]]], None]


def test_hook_may_queue_a_callback_under_backward_inputs():
    # DistributedDataParallel's hooks queue their end-of-backward work: that must work with inputs= too
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        events = []

        def hook(t):
            events.append("hook")
            _queue(lib)(lambda: events.append(("callback", t.grad.clone())))

        x.register_post_accumulate_grad_hook(hook)
        (x * x).sum().backward(inputs=[x])
        return events

    ours, theirs = _both(script)
    assert _plain(ours) == _plain(theirs) == ["hook", ["callback", [2.0, 4.0]]]


def test_hook_does_not_run_for_autograd_grad():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        seen = []
        x.register_post_accumulate_grad_hook(lambda t: seen.append(1))
        (g,) = lib.autograd.grad((x * x).sum(), [x])
        return [seen, g, x.grad]

    ours, theirs = _both(script)
    assert _plain(ours) == _plain(theirs) == [[], [2.0, 4.0], None]


def test_hook_on_a_parameter_receives_the_parameter():
    layer = nn.Linear(3, 2)
    got = []
    handles = [p.register_post_accumulate_grad_hook(got.append) for p in layer.parameters()]
    layer(fm.ones(4, 3)).sum().backward()
    assert {id(p) for p in got} == {id(layer.weight), id(layer.bias)}
    assert all(p.grad is not None for p in got)
    for h in handles:
        h.remove()


def test_registering_on_a_non_leaf_or_a_tensor_without_grad_raises():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        fm.tensor([1.0]).register_post_accumulate_grad_hook(lambda t: None)
    tx = torch.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (tx * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_callbacks_run_once_at_the_end_of_backward_in_queue_order():
    def script(lib):
        queue = _queue(lib)
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        w = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        events = []

        def hook(name):
            def run(t):
                events.append(f"hook {name}")
                queue(lambda: events.append(f"callback {name}: x.grad={x.grad.tolist()} w.grad={w.grad.tolist()}"))

            return run

        x.register_post_accumulate_grad_hook(hook("x"))
        w.register_post_accumulate_grad_hook(hook("w"))
        (x * w).sum().backward()
        events.append("after")
        (x * w).sum().backward()  # the first pass's callbacks do not run again
        return events

    ours, theirs = _both(script)
    # which leaf's hook comes first is the engine's business; every callback runs after the last hook,
    # once, in the order queued, and sees every gradient in place
    for events in (ours, theirs):
        hooks = [e for e in events[:4] if e.startswith("hook")]
        assert len(hooks) == 2 and events[2].startswith("callback") and events[4] == "after"
        names = [h.split()[1] for h in hooks]
        assert [e.split(":")[0] for e in events[2:4]] == [f"callback {n}" for n in names]
        assert "x.grad=[3.0, 4.0] w.grad=[1.0, 2.0]" in events[2]
        assert len(events) == 9 and "x.grad=[6.0, 8.0] w.grad=[2.0, 4.0]" in events[-1]


def test_a_callback_may_queue_another_which_runs_in_the_same_backward():
    def script(lib):
        queue = _queue(lib)
        x = lib.tensor([1.0], requires_grad=True)
        events = []

        def second():
            events.append("second")
            queue(lambda: events.append("third"))

        def first():
            events.append("first")
            queue(second)

        x.register_post_accumulate_grad_hook(lambda t: queue(first))
        (x * 2).sum().backward()
        events.append("done")
        return events

    ours, theirs = _both(script)
    assert ours == theirs == ["first", "second", "third", "done"]


def test_queue_callback_outside_backward_raises():
    with pytest.raises(RuntimeError, match="while a backward pass runs"):
        queue_callback(lambda: None)
    with pytest.raises(RuntimeError, match="during backward"):
        torch.autograd.Variable._execution_engine.queue_callback(lambda: None)


def test_a_nested_backward_runs_its_own_callbacks_at_its_own_end():
    events = []
    x = fm.tensor([1.0], requires_grad=True)
    inner = fm.tensor([2.0], requires_grad=True)
    inner.register_post_accumulate_grad_hook(lambda t: queue_callback(lambda: events.append("inner callback")))

    def outer_hook(t):
        queue_callback(lambda: events.append("outer callback"))
        with fm.enable_grad():  # hooks run with grad mode off, as in torch
            (inner * 3).sum().backward()  # a backward inside a hook: its callbacks are its own
        events.append("inner backward returned")

    x.register_post_accumulate_grad_hook(outer_hook)
    (x * 2).sum().backward()
    assert events == ["inner callback", "inner backward returned", "outer callback"]


def test_state_is_clean_after_an_exception_in_backward():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    ran = []

    def failing(t):
        queue_callback(lambda: ran.append("stale callback"))
        raise ValueError("hook failed")

    handle = x.register_post_accumulate_grad_hook(failing)
    with pytest.raises(ValueError, match="hook failed"):
        (x * x).sum().backward()
    assert ran == []  # a failed pass runs none of its callbacks...
    with pytest.raises(RuntimeError, match="while a backward pass runs"):
        queue_callback(lambda: None)  # ...and leaves no pass behind
    assert fm.is_grad_enabled()
    handle.remove()
    x.register_post_accumulate_grad_hook(lambda t: queue_callback(lambda: ran.append("fresh callback")))
    (x * x).sum().backward()
    assert ran == ["fresh callback"]  # and nothing of it leaks into the next one


def test_state_is_clean_after_an_exception_in_a_callback():
    x = fm.tensor([1.0], requires_grad=True)
    ran = []

    def boom():
        raise KeyError("callback failed")

    handle = x.register_post_accumulate_grad_hook(
        lambda t: (queue_callback(boom), queue_callback(lambda: ran.append("after")))
    )
    with pytest.raises(KeyError, match="callback failed"):
        (x * 2).sum().backward()
    assert ran == []  # the callbacks after a failing one do not run
    np.testing.assert_array_equal(arr(x.grad), [2.0])  # the gradient itself was accumulated
    with pytest.raises(RuntimeError, match="while a backward pass runs"):
        queue_callback(lambda: None)
    handle.remove()
    (x * 2).sum().backward()
    np.testing.assert_array_equal(arr(x.grad), [4.0])
