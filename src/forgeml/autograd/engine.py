"""The backward engine: a dependency-counted walk over the graph, with no recursion.

Pass one counts, for every node reachable from the roots, how many edges
point at it. Pass two runs a node once all of those edges have delivered
their gradient, so each node's gradients are summed before its ``backward``
runs, and a graph of any depth needs only a Python list for its stack.
"""

from __future__ import annotations

import sys
import threading

from ..backend.convert import as_array
from ..backend.device import device_of, ignore_float_errors, namespace_of, to_device
from . import function as _function
from .function import FREED_GRAPH_MESSAGE, OP_OBSERVERS, POST_ACCUMULATE_HOOKS, AccumulateGrad, observed_backward
from .grad_mode import state as _grad_state

__all__ = ["grad", "queue_callback", "run_backward"]

_running = threading.local()  # .callbacks: one list per backward pass running in this thread (innermost last)


def queue_callback(callback) -> None:
    """Run ``callback()`` once the backward pass now running (in this thread) has finished.

    Only valid while backward runs, typically from a gradient hook; callbacks run in the order they
    were queued, after every leaf has its gradient (``DistributedDataParallel`` waits for its
    gradient all-reduces there).
    """
    stack = getattr(_running, "callbacks", None)
    if not stack:
        raise RuntimeError("queue_callback can only be called while a backward pass runs (from a hook)")
    stack[-1].append(callback)


def _run_post_accumulate_hooks(variable) -> None:
    hooks = POST_ACCUMULATE_HOOKS.get(variable._id)
    if hooks:
        for hook in list(hooks):
            hook(variable)


def _root_edge(tensor, index: int):
    if tensor.grad_fn is not None:
        return tensor.grad_fn, tensor._output_nr
    if tensor._requires_grad:
        return tensor._accumulator(), 0
    raise RuntimeError(f"element {index} of tensors does not require grad and does not have a grad_fn")


def _root_grad(tensor, gradient, index: int):
    data = tensor._data
    if gradient is None:
        if data.size != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for scalar outputs; output {index} has shape "
                f"{list(data.shape)}: pass gradient= (a tensor of that shape)"
            )
        return namespace_of(data).ones(data.shape, dtype=data.dtype)
    if isinstance(gradient, _function._tensor_cls):
        g = gradient._data
    else:
        g = to_device(as_array(gradient, data.dtype), device_of(data))
    if g.shape != data.shape:
        raise RuntimeError(
            f"Mismatch in shape: grad_output[{index}] has a shape of {list(g.shape)} and "
            f"output[{index}] has a shape of {list(data.shape)}"
        )
    if g.dtype != data.dtype:
        g = g.astype(data.dtype)
    return g


def _count_dependencies(root_nodes):
    deps = {}
    stack = list(root_nodes)
    seen = set(stack)
    while stack:
        node = stack.pop()
        for edge in node.next_edges:
            if edge is not None:
                child = edge[0]
                deps[child] = deps.get(child, 0) + 1
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
    return deps


def _nodes_leading_to(root_nodes, deps, target_nodes):
    """The nodes from which some target node can be reached (the part of the graph worth running)."""
    remaining = dict(deps)
    order = []
    ready = [n for n in dict.fromkeys(root_nodes) if remaining.get(n, 0) == 0]
    while ready:
        node = ready.pop()
        order.append(node)
        for edge in node.next_edges:
            if edge is not None:
                child = edge[0]
                remaining[child] -= 1
                if remaining[child] == 0:
                    ready.append(child)
    useful = set()
    for node in reversed(order):
        if node in target_nodes or any(e is not None and e[0] in useful for e in node.next_edges):
            useful.add(node)
    return useful


def _run_hooks(hooks, g):
    tensor_cls = _function._tensor_cls
    for hook in list(hooks):
        result = hook(tensor_cls._make(g, False, None))
        if result is not None:
            new = result._data if isinstance(result, tensor_cls) else namespace_of(g).asarray(result)
            if new.shape != g.shape:
                raise RuntimeError(f"a hook returned a gradient of shape {list(new.shape)}; expected {list(g.shape)}")
            g = new
    return g


# References to a gradient array that only the engine holds when _accumulate_leaf looks at it:
# the caller's local, the parameter, and getrefcount's own argument.
_ENGINE_ONLY_REFS = 3


def _accumulate_leaf(variable, g) -> None:
    current = variable._grad
    if current is None:
        data = variable._data
        if (
            type(g) is type(data)
            and g.base is None
            and sys.getrefcount(g) <= _ENGINE_ONLY_REFS
            and g.dtype == data.dtype
            and g.shape == data.shape
            and getattr(g.flags, "writeable", True)
        ):
            owned = g  # a fresh array nobody else can see: keep it instead of copying (as PyTorch steals)
        else:
            owned = _owned_copy(g, data)
        variable._grad = _function._tensor_cls._make(owned, False, None)
    else:
        current._data += g


def _owned_copy(g, like):
    """A new C-contiguous array of ``like``'s dtype and shape holding ``g`` (broadcast when smaller)."""
    xp = namespace_of(like)
    owned = xp.array(g, dtype=like.dtype, copy=True)
    if owned.shape != like.shape:
        owned = xp.ascontiguousarray(xp.broadcast_to(owned, like.shape))
    return owned


def run_backward(tensors, grad_tensors, retain_graph: bool, inputs=None, accumulate: bool = True):
    """Backpropagate from ``tensors``; returns the gradients of ``inputs`` when given (else None).

    With ``accumulate`` the gradients of the leaves reached (only those in
    ``inputs`` when it is given) are added into their ``.grad``; without it
    (``autograd.grad``) nothing is written and the gradients are returned.
    """
    roots = []
    for i, (t, g) in enumerate(zip(tensors, grad_tensors)):
        node, nr = _root_edge(t, i)
        roots.append((node, nr, _root_grad(t, g, i)))
    root_nodes = [r[0] for r in roots]
    deps = _count_dependencies(root_nodes)

    captures = None
    useful = None
    if inputs is not None:
        captures = {}
        for i, t in enumerate(inputs):
            if t.grad_fn is not None:
                key = (t.grad_fn, t._output_nr)
            elif t._requires_grad:
                key = (t._accumulator(), 0)
            else:
                raise RuntimeError(f"input {i} does not require grad, so it has no gradient to compute")
            captures.setdefault(key, []).append(i)
        useful = _nodes_leading_to(root_nodes, deps, {k[0] for k in captures})
    captured = [None] * (len(inputs) if inputs is not None else 0)

    buffers = {}
    for node, nr, g in roots:
        _add_to_buffer(buffers, node, nr, g)

    restricted = inputs is not None
    stack = _running.__dict__.setdefault("callbacks", [])
    depth = len(stack)
    stack.append([])
    prev_mode = _grad_state.enabled
    _grad_state.enabled = False  # gradient arithmetic records nothing
    # Like PyTorch, gradients through inf/nan (sqrt'(0), 1/0) propagate silently.
    errstate = ignore_float_errors()
    errstate.__enter__()
    try:
        ready = [n for n in dict.fromkeys(root_nodes) if deps.get(n, 0) == 0]
        while ready:
            node = ready.pop()
            grad = buffers.pop(node, None)
            if grad is not None and (useful is None or node in useful):
                if node._pre_hooks:
                    grad = _run_pre_hooks(node, grad)
                is_leaf = type(node) is AccumulateGrad
                if is_leaf and node.variable._hooks:
                    grad = _run_hooks(node.variable._hooks, grad)
                if captures is not None:
                    _capture(node, grad, captures, captured)
                if is_leaf:
                    if accumulate and not restricted:
                        _accumulate_leaf(node.variable, grad)
                        if POST_ACCUMULATE_HOOKS:
                            _run_post_accumulate_hooks(node.variable)
                else:
                    if node._freed:
                        raise RuntimeError(FREED_GRAPH_MESSAGE)
                    grads = node._call_backward(grad) if not OP_OBSERVERS else observed_backward(node, grad)
                    if not retain_graph:
                        node._release()
                    for edge, g in zip(node.next_edges, grads):
                        if edge is not None and g is not None:
                            child = edge[0]
                            if child._n_outputs == 1:
                                prev = buffers.get(child)
                                buffers[child] = g if prev is None else prev + g
                            else:
                                _add_to_buffer(buffers, child, edge[1], g)
                    grads = g = None  # the buffers hold the gradients now; see _accumulate_leaf
            for edge in node.next_edges:
                if edge is not None:
                    child = edge[0]
                    left = deps[child] - 1
                    deps[child] = left
                    if left == 0:
                        ready.append(child)
        if restricted and accumulate:  # backward(inputs=...): their .grad, and their hooks, before the callbacks
            _accumulate_inputs(inputs, captured)
        callbacks, i = stack[depth], 0
        while i < len(callbacks):  # a callback may queue another: the list grows while we walk it
            callbacks[i]()
            i += 1
    finally:
        del stack[depth:]
        errstate.__exit__(None, None, None)
        _grad_state.enabled = prev_mode
    return captured if inputs is not None else None


def _accumulate_inputs(inputs, found) -> None:
    """``backward(inputs=...)``: add each input's gradient into its ``.grad`` and run its post-accumulate hooks
    (inside the backward pass, so that they may queue callbacks, as ``DistributedDataParallel``'s do)."""
    tensor_cls = _function._tensor_cls
    for t, g in zip(inputs, found):
        if g is None:
            continue
        if t._grad is None:
            t._grad = tensor_cls._make(_owned_copy(g, t._data), False, None)
        else:
            t._grad._data += g
        if POST_ACCUMULATE_HOOKS:
            _run_post_accumulate_hooks(t)


def _add_to_buffer(buffers, node, nr, g) -> None:
    if node._n_outputs == 1:
        prev = buffers.get(node)
        buffers[node] = g if prev is None else prev + g
        return
    slots = buffers.get(node)
    if slots is None:
        slots = buffers[node] = [None] * node._n_outputs
    slots[nr] = g if slots[nr] is None else slots[nr] + g


def _run_pre_hooks(node, grad):
    if node._n_outputs == 1:
        hooks = node._pre_hooks.get(0)
        return _run_hooks(hooks, grad) if hooks else grad
    for nr, hooks in node._pre_hooks.items():
        if hooks and grad[nr] is not None:
            grad[nr] = _run_hooks(hooks, grad[nr])
    return grad


def _capture(node, grad, captures, captured) -> None:
    multi = node._n_outputs > 1
    for nr in range(node._n_outputs):
        slots = captures.get((node, nr))
        if slots:
            g = grad[nr] if multi else grad
            for i in slots:
                captured[i] = g


def _as_sequence(value):
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None) -> None:
    """Accumulate the gradients of ``tensors`` into the ``.grad`` of the leaves (``torch.autograd.backward``).

    With ``create_graph=True`` the gradients get a history of their own (see
    ``autograd.higher_order``), and the graph is kept unless ``retain_graph=False``.
    """
    tensors = _as_sequence(tensors)
    grads = [None] * len(tensors) if grad_tensors is None else _as_sequence(grad_tensors)
    if len(grads) != len(tensors):
        raise ValueError(f"got {len(grads)} gradients for {len(tensors)} tensors")
    retain = bool(create_graph if retain_graph is None else retain_graph)
    run = run_backward
    if create_graph:
        from .higher_order import run_backward_graph as run
    if inputs is None:
        run(tensors, grads, retain)
        return
    inputs = _as_sequence(inputs)
    if not inputs:
        raise RuntimeError("backward(inputs=...) needs at least one input; pass None to use every leaf")
    run(tensors, grads, retain, inputs=inputs)


def grad(
    outputs,
    inputs,
    grad_outputs=None,
    retain_graph=None,
    create_graph: bool = False,
    allow_unused: bool | None = None,
    materialize_grads: bool = False,
):
    """The gradients of ``outputs`` with respect to ``inputs``, returned instead of accumulated.

    Nothing is written to any ``.grad``. An input the outputs do not depend on
    raises unless ``allow_unused=True`` (then its gradient is ``None``, or
    zeros with ``materialize_grads=True``). With ``create_graph=True`` the
    gradients have a history of their own, so they can be differentiated again.
    """
    if create_graph:
        from .higher_order import grad_with_graph

        return grad_with_graph(outputs, inputs, grad_outputs, retain_graph, allow_unused, materialize_grads)
    if allow_unused is None:
        allow_unused = materialize_grads
    outputs = _as_sequence(outputs)
    inputs = _as_sequence(inputs)
    grads = [None] * len(outputs) if grad_outputs is None else _as_sequence(grad_outputs)
    if len(grads) != len(outputs):
        raise ValueError(f"grad_outputs has {len(grads)} entries for {len(outputs)} outputs")
    found = run_backward(outputs, grads, bool(retain_graph), inputs=inputs, accumulate=False)
    tensor_cls = _function._tensor_cls
    result = []
    for i, (t, g) in enumerate(zip(inputs, found)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    f"One of the differentiated Tensors (input {i}) appears to not have been used in the graph. "
                    "Set allow_unused=True if this is the desired behavior."
                )
            result.append(
                tensor_cls._make(namespace_of(t._data).zeros_like(t._data), False, None) if materialize_grads else None
            )
            continue
        result.append(tensor_cls._make(_owned_copy(g, t._data), False, None))
    return tuple(result)
