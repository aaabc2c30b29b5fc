"""``gradcheck``: compare autograd's gradients with central finite differences."""

from __future__ import annotations

import itertools
import warnings

from ..backend.device import HOST_XP, device_of, namespace_of, to_device, to_host
from . import function as _function
from .engine import grad as _grad
from .grad_mode import enable_grad, no_grad

__all__ = ["GradcheckError", "gradcheck", "gradgradcheck"]


class GradcheckError(RuntimeError):
    """Analytical and numerical Jacobians disagree."""


def _outputs_of(fn, inputs):
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    tensor_cls = _function._tensor_cls
    return [o for o in outs if isinstance(o, tensor_cls) and o.dtype.is_floating_point]


def _numerical_jacobian(fn, inputs, diff_inputs, n_out, eps):
    """Rows: flattened output elements; one block of columns per differentiable input."""
    blocks = []
    with no_grad():
        for x in diff_inputs:
            arr = x._data
            block = HOST_XP.zeros((n_out, arr.size))
            for col, idx in enumerate(itertools.product(*(range(n) for n in arr.shape))):
                orig = arr[idx].copy()
                arr[idx] = orig + eps
                plus = _flat_outputs(fn, inputs)
                arr[idx] = orig - eps
                minus = _flat_outputs(fn, inputs)
                arr[idx] = orig
                block[:, col] = (plus - minus) / (2 * eps)
            blocks.append(block)
    return blocks


def _flat_outputs(fn, inputs):
    """Every output element as one float64 host vector (the Jacobians are assembled on the host)."""
    return HOST_XP.concatenate([to_host(o._data).ravel().astype(HOST_XP.float64) for o in _outputs_of(fn, inputs)])


def _analytical_jacobian(outputs, diff_inputs):
    tensor_cls = _function._tensor_cls
    blocks = [HOST_XP.zeros((sum(o._data.size for o in outputs), x._data.size)) for x in diff_inputs]
    row = 0
    for out in outputs:
        xp = namespace_of(out._data)
        for k in range(out._data.size):
            seed = xp.zeros(out._data.size, dtype=out._data.dtype)
            seed[k] = 1
            seed = seed.reshape(out._data.shape)
            if not out.requires_grad:
                row += 1
                continue
            grads = _grad(
                out, diff_inputs, grad_outputs=tensor_cls._make(seed, False, None), retain_graph=True, allow_unused=True
            )
            for block, g in zip(blocks, grads):
                if g is not None:
                    block[row] = to_host(g._data).ravel()
            row += 1
    return blocks


def gradcheck(
    fn,
    inputs,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> bool:
    """Check ``fn``'s gradients against finite differences for every input that requires grad.

    ``inputs`` is a tensor or a tuple of tensors (other values pass through);
    use float64 inputs, since float32 finite differences are too coarse.
    Returns True, or raises :class:`GradcheckError` naming the input and the
    worst element (returns False instead when ``raise_exception=False``).
    """
    tensor_cls = _function._tensor_cls
    if isinstance(inputs, tensor_cls):
        inputs = (inputs,)
    inputs = tuple(inputs)
    diff_inputs = [x for x in inputs if isinstance(x, tensor_cls) and x.requires_grad]
    if not diff_inputs:
        raise ValueError("gradcheck expects at least one input tensor with requires_grad=True")
    for x in diff_inputs:
        if x._data.dtype.name != "float64":
            warnings.warn(
                f"gradcheck input of dtype {x.dtype} is not float64; finite differences will be imprecise",
                stacklevel=2,
            )
    outputs = _outputs_of(fn, inputs)
    if not outputs:
        raise ValueError("gradcheck: fn returned no floating-point tensor to differentiate")
    n_out = sum(o._data.size for o in outputs)
    analytical = _analytical_jacobian(outputs, diff_inputs)
    numerical = _numerical_jacobian(fn, inputs, diff_inputs, n_out, eps)
    for i, (a, n) in enumerate(zip(analytical, numerical)):
        bad = ~HOST_XP.isclose(a, n, rtol=rtol, atol=atol)
        if bad.any():
            r, c = HOST_XP.unravel_index(HOST_XP.argmax(HOST_XP.abs(a - n) * bad), a.shape)
            message = (
                f"Jacobian mismatch for input {i} (shape {list(diff_inputs[i].shape)}): "
                f"{int(bad.sum())} of {a.size} entries differ; worst at output element {r}, input element {c}: "
                f"analytical {a[r, c]:.8g} vs numerical {n[r, c]:.8g}"
            )
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True


def gradgradcheck(
    fn,
    inputs,
    grad_outputs=None,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
) -> bool:
    """Check second derivatives: :func:`gradcheck` of the gradients ``fn`` has with ``create_graph=True``.

    The function checked maps ``(*inputs, *grad_outputs)`` to the vector-Jacobian
    products of ``fn``'s outputs with ``grad_outputs`` w.r.t. the inputs that
    require grad, so both how they depend on the inputs (the Hessian) and on
    ``grad_outputs`` are compared with finite differences. ``grad_outputs``
    (one per floating-point output of ``fn``) default to random normal tensors
    that require grad, as in PyTorch.
    """
    tensor_cls = _function._tensor_cls
    if isinstance(inputs, tensor_cls):
        inputs = (inputs,)
    inputs = tuple(inputs)
    outputs = _outputs_of(fn, inputs)
    if grad_outputs is None:
        rng = HOST_XP.random.default_rng(0)
        grad_outputs = tuple(
            tensor_cls._make(
                to_device(rng.standard_normal(o._data.shape).astype(o._data.dtype), device_of(o._data)), True, None
            )
            for o in outputs
        )
    elif isinstance(grad_outputs, tensor_cls):
        grad_outputs = (grad_outputs,)
    grad_outputs = tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(
            f"gradgradcheck: got {len(grad_outputs)} grad_outputs for {len(outputs)} floating-point outputs of fn"
        )
    n_in = len(inputs)

    def first_derivatives(*args):
        ins, gos = args[:n_in], args[n_in:]
        with enable_grad():  # gradcheck evaluates under no_grad; these gradients need a graph
            outs = _outputs_of(fn, ins)
            pairs = [(o, g) for o, g in zip(outs, gos) if o.requires_grad]
            diff = [x for x in ins if isinstance(x, tensor_cls) and x.requires_grad]
            if not pairs:
                return tuple(tensor_cls._make(namespace_of(x._data).zeros_like(x._data), False, None) for x in diff)
            grads = _grad(
                [o for o, _ in pairs], diff, grad_outputs=[g for _, g in pairs], create_graph=True, allow_unused=True
            )
        return tuple(g for g in grads if g is not None)

    return gradcheck(
        first_derivatives, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol, raise_exception=raise_exception
    )
