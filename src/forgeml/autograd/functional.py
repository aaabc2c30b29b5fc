"""``forgeml.autograd.functional``: Jacobians, Hessians and their products with vectors, as in PyTorch.

Every function takes ``func`` (tensors in, a tensor or a tuple of tensors out)
and ``inputs`` (a tensor or a tuple of tensors); results mirror that structure
(a tuple where ``inputs`` is a tuple). Products are computed by reverse mode:
``jvp`` and ``hvp`` with the double-vjp trick (the vjp is linear in its vector,
so differentiating it w.r.t. that vector gives the transposed product), which
needs ``create_graph`` support from every op on the way.
"""

from __future__ import annotations

from . import function as _function
from .engine import grad as _grad
from .grad_mode import enable_grad

__all__ = ["hessian", "hvp", "jacobian", "jvp", "vhp", "vjp"]


def _as_tuple(value, arg_name: str, fn_name: str):
    tensor_cls = _function._tensor_cls
    is_tuple = isinstance(value, (tuple, list))
    items = tuple(value) if is_tuple else (value,)
    for i, item in enumerate(items):
        if not isinstance(item, tensor_cls):
            where = f"{arg_name}[{i}]" if is_tuple else arg_name
            raise TypeError(f"{fn_name}: {where} must be a Tensor (or a tuple of Tensors), got {type(item).__name__}")
    return is_tuple, items


def _prepare_inputs(inputs, create_graph: bool):
    """Inputs that require grad: detached copies, or (with ``create_graph``) views keeping their history."""
    out = []
    for x in inputs:
        if create_graph and x.requires_grad:
            out.append(x.view_as(x))
        else:
            out.append(x.detach().requires_grad_(True))
    return tuple(out)


def _finish(values, create_graph: bool):
    if create_graph:
        return tuple(values)
    return tuple(v.detach() if v is not None else None for v in values)


def _zeros_like(x):
    from ..ops.creation import zeros_like  # the tensor layer sits above autograd; imported when used

    return zeros_like(x)


def _grad_or_none(outputs, inputs, grad_outputs, create_graph: bool):
    """``autograd.grad`` over the outputs that require grad (graph retained): None for an input none reaches."""
    needed = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not needed:
        return (None,) * len(inputs)
    return _grad(
        [o for o, _ in needed],
        list(inputs),
        grad_outputs=[g for _, g in needed],
        retain_graph=True,
        create_graph=create_graph,
        allow_unused=True,
    )


def _grads(outputs, inputs, grad_outputs, create_graph: bool, strict: bool, fn_name: str):
    """``autograd.grad`` with zeros for inputs the outputs do not depend on (an error with ``strict``)."""
    found = _grad_or_none(outputs, inputs, grad_outputs, create_graph)
    result = []
    for i, (x, g) in enumerate(zip(inputs, found)):
        if g is None:
            if strict:
                raise RuntimeError(
                    f"{fn_name}: the output of the user-provided function is independent of input {i}; "
                    "this is not allowed in strict mode"
                )
            g = _zeros_like(x)
        result.append(g)
    return tuple(result)


def _check_v(v, like, fn_name: str, what: str):
    if len(v) != len(like):
        raise RuntimeError(f"{fn_name}: v has {len(v)} tensors but the {what} has {len(like)}")
    for i, (a, b) in enumerate(zip(v, like)):
        if tuple(a.shape) != tuple(b.shape):
            raise RuntimeError(
                f"{fn_name}: v[{i}] has shape {list(a.shape)} but the {what} has shape {list(b.shape)} there"
            )


def _default_v(outputs, fn_name: str):
    for o in outputs:
        if o.numel() != 1:
            raise RuntimeError(
                f"{fn_name}: v can only be omitted when the function returns a single-element tensor, "
                f"got one of shape {list(o.shape)}"
            )
    from ..ops.creation import ones_like

    return tuple(ones_like(o) for o in outputs)


def _vectors(v, like, fn_name: str, what: str):
    """``v`` as a tuple checked against ``like`` (the function's ``what``: "input" or "output"), or ones when
    ``v`` is None (allowed for single-element ``like`` only)."""
    if v is None:
        return _default_v(like, fn_name)
    vs = _as_tuple(v, "v", fn_name)[1]
    _check_v(vs, like, fn_name, what)
    return vs


def _seeded_grads(ys, xs, vs, create_graph: bool, like):
    """The gradient of ``sum(y * v)`` w.r.t. ``xs`` over the ``ys`` that require grad; zeros shaped as the
    matching tensor of ``like`` where nothing reaches an ``x``."""
    found = _grad_or_none(ys, xs, vs, create_graph)
    return tuple(_zeros_like(x) if g is None else g for x, g in zip(like, found))


def _scalar_and_grads(func, ins, strict: bool, fn_name: str):
    """``func(*ins)`` (a single-element tensor) and its gradient w.r.t. ``ins``, with a graph for another backward."""
    out = _single_output(func(*ins), fn_name)
    return out, _grads([out], ins, _default_v([out], fn_name), True, strict, fn_name)


def vjp(func, inputs, v=None, create_graph: bool = False, strict: bool = False):
    """``(func(inputs), v^T J)``: the vector-Jacobian product of ``func`` at ``inputs``."""
    in_tuple, ins = _as_tuple(inputs, "inputs", "vjp")
    with enable_grad():
        ins = _prepare_inputs(ins, create_graph)
        out_tuple, outs = _as_tuple(func(*ins), "outputs of func", "vjp")
        vs = _vectors(v, outs, "vjp", "output")
        result = _grads(outs, ins, vs, create_graph, strict, "vjp")
    outs = _finish(outs, create_graph)
    result = _finish(result, create_graph)
    return (outs if out_tuple else outs[0]), (result if in_tuple else result[0])


def jvp(func, inputs, v=None, create_graph: bool = False, strict: bool = False):
    """``(func(inputs), J v)``: the Jacobian-vector product, by differentiating a vjp w.r.t. its vector."""
    _, ins = _as_tuple(inputs, "inputs", "jvp")
    vs = _vectors(v, ins, "jvp", "input")
    with enable_grad():
        ins = _prepare_inputs(ins, create_graph)
        out_tuple, outs = _as_tuple(func(*ins), "outputs of func", "jvp")
        us = tuple(_zeros_like(o).requires_grad_(True) for o in outs)
        vjps = _grads(outs, ins, us, True, strict, "jvp")
        result = _seeded_grads(vjps, us, vs, create_graph, outs)
    outs = _finish(outs, create_graph)
    result = _finish(result, create_graph)
    return (outs if out_tuple else outs[0]), (result if out_tuple else result[0])


def jacobian(
    func,
    inputs,
    create_graph: bool = False,
    strict: bool = False,
    vectorize: bool = False,
    strategy: str = "reverse-mode",
):
    """The Jacobian of ``func`` at ``inputs``: for each output and input, a tensor of shape ``out.shape + in.shape``.

    One tensor for one input and one output; a tuple over inputs (or outputs), and a
    tuple of tuples (outputs, then inputs) when both are tuples. ``vectorize`` is
    accepted for compatibility (the rows are computed one backward at a time);
    only ``strategy="reverse-mode"`` is available.
    """
    if strategy != "reverse-mode":
        raise NotImplementedError(f"jacobian: only strategy='reverse-mode' is supported, got {strategy!r}")
    from ..ops.shape import reshape, stack

    in_tuple, ins = _as_tuple(inputs, "inputs", "jacobian")
    with enable_grad():
        ins = _prepare_inputs(ins, create_graph)
        out_tuple, outs = _as_tuple(func(*ins), "outputs of func", "jacobian")
        blocks = []
        for out in outs:
            rows = [[] for _ in ins]
            flat = reshape(out, (-1,))
            for k in range(flat.shape[0]):
                seed = _zeros_like(flat)
                seed._data[k] = 1
                row = _grads([flat], ins, [seed], create_graph, strict, "jacobian")
                for per_input, g in zip(rows, row):
                    per_input.append(g)
            per_out = []
            for x, per_input in zip(ins, rows):
                shape = tuple(out.shape) + tuple(x.shape)
                if per_input:
                    per_out.append(reshape(stack(per_input, 0), shape))
                else:
                    per_out.append(reshape(_zeros_like(reshape(x, (-1,)))[:0], shape))
            blocks.append(_finish(per_out, create_graph))
    if not out_tuple:
        return blocks[0] if in_tuple else blocks[0][0]
    return tuple(b if in_tuple else b[0] for b in blocks)


def hessian(
    func,
    inputs,
    create_graph: bool = False,
    strict: bool = False,
    vectorize: bool = False,
    outer_jacobian_strategy: str = "reverse-mode",
):
    """The Hessian of scalar ``func`` at ``inputs``: ``in.shape + in.shape``, or a tuple of tuples for a tuple."""
    in_tuple, ins = _as_tuple(inputs, "inputs", "hessian")

    def gradient(*xs):
        out = func(*xs)
        if not isinstance(out, _function._tensor_cls) or out.numel() != 1:
            shape = list(out.shape) if isinstance(out, _function._tensor_cls) else type(out).__name__
            raise RuntimeError(f"hessian: the function given must return a single-element Tensor, got {shape}")
        return jacobian(lambda *z: func(*z).reshape(()), xs, create_graph=True, strict=strict)

    result = jacobian(gradient, ins, create_graph=create_graph, strict=strict, strategy=outer_jacobian_strategy)
    if in_tuple:
        return result
    return result[0][0]


def vhp(func, inputs, v=None, create_graph: bool = False, strict: bool = False):
    """``(func(inputs), v^T H)``: a vector-Hessian product of scalar ``func``."""
    in_tuple, ins = _as_tuple(inputs, "inputs", "vhp")
    vs = _vectors(v, ins, "vhp", "input")
    with enable_grad():
        ins = _prepare_inputs(ins, create_graph)
        out, first = _scalar_and_grads(func, ins, strict, "vhp")
        result = _seeded_grads(first, ins, vs, create_graph, ins)
    (out,) = _finish((out,), create_graph)
    result = _finish(result, create_graph)
    return out, (result if in_tuple else result[0])


def hvp(func, inputs, v=None, create_graph: bool = False, strict: bool = False):
    """``(func(inputs), H v)``: a Hessian-vector product of scalar ``func`` (double backward, as in PyTorch)."""
    in_tuple, ins = _as_tuple(inputs, "inputs", "hvp")
    vs = _vectors(v, ins, "hvp", "input")
    with enable_grad():
        ins = _prepare_inputs(ins, create_graph)
        out, first = _scalar_and_grads(func, ins, strict, "hvp")
        us = tuple(_zeros_like(x).requires_grad_(True) for x in ins)
        # u -> u^T H is linear; its gradient w.r.t. u, seeded with v, is H^T v = H v
        back = _grads(list(first), ins, us, True, strict, "hvp")
        result = _seeded_grads(back, us, vs, create_graph, ins)
    (out,) = _finish((out,), create_graph)
    result = _finish(result, create_graph)
    return out, (result if in_tuple else result[0])


def _single_output(out, fn_name: str):
    tensor_cls = _function._tensor_cls
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, tensor_cls) or out.numel() != 1:
        shape = list(out.shape) if isinstance(out, tensor_cls) else type(out).__name__
        raise RuntimeError(f"{fn_name}: the function given must return a single-element Tensor, got {shape}")
    return out
