"""Gradient clipping, as in ``torch.nn.utils``.

Norms are computed where the gradients live (one partial norm per device,
combined on the first gradient's device), so clipping CUDA gradients moves no
data to the host. On the CPU the total norm is also a Python number, so the
gradients are only rescaled when clipping is needed; on a GPU they are always
multiplied by ``min(1, max_norm / (norm + 1e-6))``, which needs no device sync.
"""

from __future__ import annotations

import math

from ...backend.device import HOST_XP, ignore_float_errors, namespace_of, to_device, to_host
from ...tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _by_device(grads):
    """The gradients grouped by device, in order of first appearance: [(xp, device, [tensor, ...]), ...]."""
    groups: dict = {}
    for g in grads:
        dev = g.device
        group = groups.get(dev)
        if group is None:
            group = groups[dev] = (namespace_of(g._data), dev, [])
        group[2].append(g)
    return list(groups.values())


def _partial_norm(xp, arrays, norm_type: float):
    """The combinable partial norm (float64, 0-d on the arrays' device) of ``arrays``.

    For a finite p >= 1 it is the sum of |x|^p (the 2-norm: of squares), for
    p = inf the max of |x|, for p = -inf the min, for p = 0 the count of non-zeros.
    """
    f64 = xp.float64
    acc = None
    for a in arrays:
        if norm_type == 2.0:  # the common case: one BLAS dot product per gradient, no temporaries
            flat = a.ravel()
            part = xp.vdot(flat, flat).astype(f64)
        elif math.isinf(norm_type):
            if a.size == 0:
                continue
            part = (xp.abs(a).max() if norm_type > 0 else xp.abs(a).min()).astype(f64)
        elif norm_type == 0.0:
            part = xp.asarray(xp.count_nonzero(a), dtype=f64)
        else:
            part = (xp.abs(a.astype(f64)) ** norm_type).sum()
        if acc is None:
            acc = part
        elif math.isinf(norm_type):
            acc = xp.maximum(acc, part) if norm_type > 0 else xp.minimum(acc, part)
        else:
            acc = acc + part
    if acc is None:  # only empty gradients
        acc = xp.asarray(math.inf if norm_type == -math.inf else 0.0, dtype=f64)
    return acc


def _combine(xp, parts, norm_type: float):
    """The total norm (float64, 0-d) from the per-device partial norms, all on one device."""
    total = parts[0]
    for part in parts[1:]:
        if norm_type == math.inf:
            total = xp.maximum(total, part)
        elif norm_type == -math.inf:
            total = xp.minimum(total, part)
        else:
            total = total + part
    if norm_type == 2.0:
        return xp.sqrt(total)
    if math.isinf(norm_type) or norm_type == 0.0:
        return total
    return total ** (1.0 / norm_type)


def clip_grad_norm_(
    parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False, foreach=None
):
    """Scale all gradients together so their combined ``norm_type``-norm is at most ``max_norm``.

    Returns the total norm before clipping, a 0-d tensor in the gradients' dtype
    on the first gradient's device, as PyTorch does. ``error_if_nonfinite``
    raises when that norm is inf or NaN (a device sync on a GPU). ``foreach`` is
    accepted for PyTorch compatibility; the update is one pass per gradient either way.
    """
    grads = _grads(parameters)
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not grads:
        return Tensor._make(HOST_XP.zeros((), dtype=HOST_XP.float32), False, None)
    groups = _by_device(grads)
    first_xp, first_device, _ = groups[0]
    parts = [to_device(_partial_norm(xp, [g._data for g in group], norm_type), first_device) for xp, _, group in groups]
    total = _combine(first_xp, parts, norm_type)
    if error_if_nonfinite and not bool(first_xp.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    coef = max_norm / (total + 1e-6)
    with ignore_float_errors():  # a non-finite norm scales by 0 or NaN, as PyTorch does, without warnings
        if first_xp is HOST_XP:
            host_coef = float(coef)
            if host_coef < 1.0:
                _scale(groups, host_coef, None)
        else:
            _scale(groups, None, first_xp.minimum(coef, 1.0))
    return Tensor._make(first_xp.asarray(total, dtype=grads[0]._data.dtype), False, None)


def _scale(groups, host_coef, device_coef) -> None:
    """Multiply every gradient in place by the clip coefficient: a Python float, or a 0-d device array."""
    for xp, dev, group in groups:
        if xp is HOST_XP:
            value = host_coef if host_coef is not None else float(to_host(device_coef))
            for g in group:
                xp.multiply(g._data, g._data.dtype.type(value), out=g._data)
                g._bump_version()
            continue
        coef = to_device(device_coef, dev) if device_coef is not None else xp.asarray(host_coef)
        for g in group:
            xp.multiply(g._data, coef.astype(g._data.dtype), out=g._data)
            g._bump_version()


def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]``, in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        namespace_of(g._data).clip(g._data, -clip_value, clip_value, out=g._data)
        g._bump_version()
