"""Backward with ``create_graph=True``: gradients that are tensors with history of their own.

The first-order engine (``engine.run_backward``) computes on raw arrays with grad
mode off. With ``create_graph`` this module runs the same dependency-counted
walk, but every gradient is a :class:`~forgeml.Tensor` and grad mode is on, so
the arithmetic of the backward pass is itself recorded: the gradients it
returns (or puts in ``.grad``) have a ``grad_fn`` and can be differentiated
again (gradient penalties, Hessian-vector products, ``gradgradcheck``).

A built-in op (an ``ArrayFunction``) takes part through its *differentiable
backward*: a function registered for its class with
:func:`register_differentiable_backward`, written with ForgeML's tensor ops
instead of array arithmetic. It receives the node, what ``forward`` saved
(inputs and the output as tensors that carry their history, the rest as
constants) and the output gradient as a tensor. An op without one raises
"<op> does not support higher-order gradients". A user-defined ``Function``
needs nothing: its ``backward`` already computes with tensors; under
``create_graph`` it runs with grad mode on and sees its saved tensors with
their history.
"""

from __future__ import annotations

from ..backend.convert import as_array
from ..backend.device import device_of, ignore_float_errors, namespace_of, to_device
from . import function as _function
from .function import FREED_GRAPH_MESSAGE, POST_ACCUMULATE_HOOKS, AccumulateGrad
from .grad_mode import state as _grad_state

__all__ = ["register_differentiable_backward", "run_backward_graph", "saved_with_history"]

# op class -> fn(node, saved, grad) returning one tensor (or None) per input of forward
DIFFERENTIABLE_BACKWARD: dict = {}


def register_differentiable_backward(*op_classes):
    """Decorator: ``fn(node, saved, grad)`` is the backward of ``op_classes`` used under ``create_graph``.

    ``saved`` is ``node``'s saved values as tensors (see :func:`saved_with_history`);
    ``grad`` is the output gradient as a tensor (a list, ``None`` where missing, for
    an op with several outputs). It returns what the op's ``backward`` returns, with
    tensors in place of arrays, computed with differentiable tensor ops; gradients
    of the broadcast output shape are summed back to each input's shape for it.
    """

    def register(fn):
        for cls in op_classes:
            DIFFERENTIABLE_BACKWARD[cls] = fn
        return fn

    return register


def constant(node, array):
    """``array`` as a tensor without history (a mask, an index, a saved intermediate)."""
    return _function._tensor_cls._make(array, False, None)


def input_tensor(node, index: int, value):
    """A tensor holding ``value`` whose history is that of ``node``'s input ``index``.

    ``value`` should be that input's value (or, for an op that only depends on it up
    to a shift, anything with the same derivative); its gradient flows to the input.
    """
    tensor_cls = _function._tensor_cls
    edge = node.next_edges[index] if index < len(node.next_edges) else None
    if edge is None:
        return tensor_cls._make(value, False, None)
    fn, nr = edge
    if type(fn) is AccumulateGrad:
        leaf = fn.variable
        if leaf._data is value:
            return leaf
        t = tensor_cls._make(value, True, None)
        t._acc = leaf._acc  # the same accumulator: its gradient is the leaf's
        return t
    t = tensor_cls._make(value, True, fn)
    t._output_nr = nr
    return t


def output_tensor(node, value, nr: int = 0):
    """A tensor holding ``value`` (``node``'s output ``nr``) whose history is ``node`` itself."""
    t = _function._tensor_cls._make(value, True, node)
    t._output_nr = nr
    return t


def saved_with_history(node) -> tuple:
    """``node.saved_tensors`` as tensors: the op's inputs and outputs keep their history, the rest are constants."""
    saved = node.saved_tensors  # checks the versions, and that the graph was not freed
    sources = {id(v[0]): v[3] for v in node._saved_versions}
    tensor_cls = _function._tensor_cls
    out = []
    for item in saved:
        if item is None or not hasattr(item, "shape"):
            out.append(item)  # numbers and None as they are
            continue
        data = item._data if isinstance(item, tensor_cls) else item
        source = sources.get(id(data))
        if isinstance(source, int):
            if source >= 0:
                out.append(input_tensor(node, source, data))
            else:
                out.append(output_tensor(node, data, -1 - source))
        elif isinstance(source, tensor_cls):  # a user Function's saved input: the tensor itself
            out.append(source)
        else:
            out.append(item if isinstance(item, tensor_cls) else constant(node, data))
    return tuple(out)


def _unsupported(node):
    return RuntimeError(
        f"{node.name()} does not support higher-order gradients: create_graph=True needs a differentiable "
        f"backward for {type(node).__name__}, and none is registered (see "
        "forgeml.autograd.higher_order.register_differentiable_backward)"
    )


def sum_to_shape(g, shape):
    """Differentiable ``backend.shapes.sum_to_shape``: ``g`` summed back over the dims broadcasting added."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    extra = g.ndim - len(shape)
    if extra < 0:
        raise ValueError(f"a gradient of shape {list(g.shape)} does not reduce to shape {list(shape)}")
    if extra:
        g = g.sum(tuple(range(extra)))
    axes = tuple(i for i, size in enumerate(shape) if size == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axes, keepdim=True)
    if tuple(g.shape) != shape:
        raise ValueError(f"a gradient of shape {list(g.shape)} does not reduce to shape {list(shape)}")
    return g


def _call_backward_graph(node, grad):
    """Run ``node``'s differentiable backward on tensor gradients; returns one tensor or None per input."""
    if node._freed:
        raise RuntimeError(FREED_GRAPH_MESSAGE)
    if not node._raw:
        return _call_user_backward_graph(node, grad)
    rule = DIFFERENTIABLE_BACKWARD.get(type(node))
    if rule is None:
        raise _unsupported(node)
    grads = rule(node, saved_with_history(node), grad)
    if type(grads) is not tuple:
        grads = (grads,)
    if node._reduce_to is not None:
        grads = list(grads)
        for i, shape in node._reduce_to:
            if i < len(grads) and grads[i] is not None and tuple(grads[i].shape) != tuple(shape):
                try:
                    grads[i] = sum_to_shape(grads[i], shape)
                except ValueError:
                    raise RuntimeError(
                        f"{node.name()} returned a gradient of shape {list(grads[i].shape)} for input {i}, "
                        f"whose shape is {list(shape)}"
                    ) from None
    return grads


class _CtxWithHistory:
    """What a user ``Function``'s backward sees under ``create_graph``: its ctx, saved tensors with history."""

    def __init__(self, node) -> None:
        object.__setattr__(self, "_node", node)

    def __getattr__(self, name):
        return getattr(self._node, name)

    def __setattr__(self, name, value) -> None:
        setattr(self._node, name, value)

    @property
    def saved_tensors(self):
        return saved_with_history(self._node)


def _call_user_backward_graph(node, grad):
    tensor_cls = _function._tensor_cls
    grads = grad if node._n_outputs > 1 else [grad]
    wrapped = []
    for g, meta in zip(grads, node._output_meta):
        if g is None and meta is not None:
            g = tensor_cls._make(_function.namespace_for_type(meta[2]).zeros(meta[0], dtype=meta[1]), False, None)
        wrapped.append(g)
    result = type(node).backward(_CtxWithHistory(node), *wrapped)
    if not isinstance(result, tuple):
        result = (result,)
    expected = len(node.needs_input_grad)
    if len(result) < expected or any(r is not None for r in result[expected:]):
        raise RuntimeError(
            f"function {node.name()} returned an incorrect number of gradients (expected {expected}, got {len(result)})"
        )
    out = []
    for i, (r, need, meta) in enumerate(zip(result, node.needs_input_grad, node._input_meta)):
        if r is None or not need:
            if r is not None and meta is None and not node._input_is_tensor[i]:
                raise RuntimeError(
                    f"function {node.name()} returned a gradient different than None at position {i + 1}, "
                    "but the corresponding forward input was not a Tensor"
                )
            out.append(None)
            continue
        if not isinstance(r, tensor_cls):
            r = tensor_cls._make(_function._as_array(r, _function.namespace_for_type(meta[2])), False, None)
        if tuple(r.shape) != tuple(meta[0]):
            try:
                r = sum_to_shape(r, meta[0])
            except ValueError:
                raise RuntimeError(
                    f"function {node.name()} returned an invalid gradient at index {i} - got {list(r.shape)} "
                    f"but expected shape compatible with {list(meta[0])}"
                ) from None
        if r._data.dtype != meta[1]:
            r = r.to(_dtype_of(meta[1]))
        out.append(r)
    return tuple(out)


def _dtype_of(np_dtype):
    from ..backend.dtypes import as_dtype

    return as_dtype(np_dtype)


# ------------------------------------------------------------------ the walk
def _root_grad_tensor(tensor, gradient, index: int):
    tensor_cls = _function._tensor_cls
    data = tensor._data
    if gradient is None:
        if data.size != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for scalar outputs; output {index} has shape "
                f"{list(data.shape)}: pass gradient= (a tensor of that shape)"
            )
        return tensor_cls._make(namespace_of(data).ones(data.shape, dtype=data.dtype), False, None)
    if not isinstance(gradient, tensor_cls):
        gradient = tensor_cls._make(to_device(as_array(gradient, data.dtype), device_of(data)), False, None)
    if tuple(gradient.shape) != tuple(data.shape):
        raise RuntimeError(
            f"Mismatch in shape: grad_output[{index}] has a shape of {list(gradient.shape)} and "
            f"output[{index}] has a shape of {list(data.shape)}"
        )
    if gradient._data.dtype != data.dtype:
        gradient = gradient.to(tensor.dtype)
    return gradient


def _add(prev, g):
    return g if prev is None else prev + g


def _add_to_buffer(buffers, node, nr, g) -> None:
    if node._n_outputs == 1:
        buffers[node] = _add(buffers.get(node), g)
        return
    slots = buffers.get(node)
    if slots is None:
        slots = buffers[node] = [None] * node._n_outputs
    slots[nr] = _add(slots[nr], g)


def _run_hooks(hooks, g):
    for hook in list(hooks):
        result = hook(g)
        if result is not None:
            if tuple(result.shape) != tuple(g.shape):
                raise RuntimeError(
                    f"a hook returned a gradient of shape {list(result.shape)}; expected {list(g.shape)}"
                )
            g = result
    return g


def _run_pre_hooks(node, grad):
    if node._n_outputs == 1:
        hooks = node._pre_hooks.get(0)
        return _run_hooks(hooks, grad) if hooks else grad
    for nr, hooks in node._pre_hooks.items():
        if hooks and grad[nr] is not None:
            grad[nr] = _run_hooks(hooks, grad[nr])
    return grad


def _accumulate(variable, g) -> None:
    """``.grad`` of a leaf under ``create_graph``: a tensor of its own, accumulated out of place (it has history)."""
    from ..ops.conversion import clone  # the tensor layer sits above autograd; only reached under create_graph

    if variable._grad is None:
        variable._grad = clone(g) if g.requires_grad else constant(None, g._data.copy())
    else:
        variable._grad = variable._grad + g
    if POST_ACCUMULATE_HOOKS:
        hooks = POST_ACCUMULATE_HOOKS.get(variable._id)
        if hooks:
            for hook in list(hooks):
                hook(variable)


def run_backward_graph(tensors, grad_tensors, retain_graph: bool, inputs=None, accumulate: bool = True):
    """``engine.run_backward`` with gradients that are tensors with history (``create_graph=True``).

    Returns the gradients of ``inputs`` (tensors) when given, else None; with
    ``accumulate`` the gradients of the leaves reached (those in ``inputs`` when
    given) go into their ``.grad``.
    """
    from . import engine

    roots = []
    for i, (t, g) in enumerate(zip(tensors, grad_tensors)):
        node, nr = engine._root_edge(t, i)
        roots.append((node, nr, _root_grad_tensor(t, g, i)))
    root_nodes = [r[0] for r in roots]
    deps = engine._count_dependencies(root_nodes)
    captures = useful = None
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
        useful = engine._nodes_leading_to(root_nodes, deps, {k[0] for k in captures})
    captured = [None] * (len(inputs) if inputs is not None else 0)
    buffers = {}
    for node, nr, g in roots:
        _add_to_buffer(buffers, node, nr, g)

    stack = engine._running.__dict__.setdefault("callbacks", [])
    depth = len(stack)
    stack.append([])
    prev_mode = _grad_state.enabled
    _grad_state.enabled = True  # the backward arithmetic is recorded: that is create_graph
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
                    engine._capture(node, grad, captures, captured)
                if is_leaf:
                    if accumulate and inputs is None:
                        _accumulate(node.variable, grad)
                else:
                    grads = _call_backward_graph(node, grad)
                    if not retain_graph:
                        node._release()
                    for edge, g in zip(node.next_edges, grads):
                        if edge is not None and g is not None:
                            _add_to_buffer(buffers, edge[0], edge[1], g)
            for edge in node.next_edges:
                if edge is not None:
                    child = edge[0]
                    deps[child] -= 1
                    if deps[child] == 0:
                        ready.append(child)
        if inputs is not None and accumulate:
            for t, g in zip(inputs, captured):
                if g is not None:
                    _accumulate(t, g)
        callbacks, i = stack[depth], 0
        while i < len(callbacks):
            callbacks[i]()
            i += 1
    finally:
        del stack[depth:]
        errstate.__exit__(None, None, None)
        _grad_state.enabled = prev_mode
    return captured if inputs is not None else None


def grad_with_graph(outputs, inputs, grad_outputs, retain_graph, allow_unused, materialize_grads):
    """``autograd.grad(..., create_graph=True)``: the gradients of ``outputs`` w.r.t. ``inputs``, with history."""
    from .engine import _as_sequence

    if allow_unused is None:
        allow_unused = materialize_grads
    outputs = _as_sequence(outputs)
    inputs = _as_sequence(inputs)
    grads = [None] * len(outputs) if grad_outputs is None else _as_sequence(grad_outputs)
    if len(grads) != len(outputs):
        raise ValueError(f"grad_outputs has {len(grads)} entries for {len(outputs)} outputs")
    retain = True if retain_graph is None else bool(retain_graph)
    found = run_backward_graph(outputs, grads, retain, inputs=inputs, accumulate=False)
    tensor_cls = _function._tensor_cls
    result = []
    for i, (t, g) in enumerate(zip(inputs, found)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    f"One of the differentiated Tensors (input {i}) appears to not have been used in the graph. "
                    "Set allow_unused=True if this is the desired behavior."
                )
            g = tensor_cls._make(namespace_of(t._data).zeros_like(t._data), False, None) if materialize_grads else None
        elif tuple(g.shape) != tuple(t.shape):
            g = g.expand(tuple(t.shape))
        result.append(g)
    return tuple(result)
