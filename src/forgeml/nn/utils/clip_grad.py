"""Gradient clipping, as in ``torch.nn.utils``."""

from __future__ import annotations

import math

import numpy as np

from ...tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(
    parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False, foreach=None
):
    """Scale all gradients together so their combined ``norm_type``-norm is at most ``max_norm``.

    Returns the total norm before clipping (a 0-d tensor), as PyTorch does.
    """
    grads = _grads(parameters)
    if not grads:
        return Tensor._make(np.zeros((), dtype=np.float32), False, None)
    norm_type = float(norm_type)
    dtype = grads[0].data.dtype
    if math.isinf(norm_type):
        per = [np.abs(g.data).max() if g.data.size else 0.0 for g in grads]
        total = float(max(per))
    elif norm_type == 2.0:  # the common case: one BLAS dot product per gradient, no temporaries
        total = math.sqrt(sum(float(np.vdot(g.data.ravel(), g.data.ravel())) for g in grads))
    else:
        powered = sum(float((np.abs(g.data.astype(np.float64)) ** norm_type).sum()) for g in grads)
        total = float(powered ** (1.0 / norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            np.multiply(g.data, dtype.type(coef), out=g.data)
            g._bump_version()
    return Tensor._make(np.asarray(total, dtype=dtype), False, None)


def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]``."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        np.clip(g.data, -clip_value, clip_value, out=g.data)
        g._bump_version()
