"""Layer normalisation and RMS normalisation, each one op with a fused backward."""

from __future__ import annotations

import numpy as np

from ..autograd.function import Function

__all__ = ["layer_norm", "rms_norm"]


def _norm_axes(x, normalized_shape, name):
    shape = tuple(normalized_shape)
    k = len(shape)
    if k == 0 or x.shape[x.ndim - k :] != shape:
        raise RuntimeError(
            f"{name}: normalized_shape {list(shape)} must match the last {k} dims of the input, got shape {list(x.shape)}"
        )
    return tuple(range(x.ndim - k, x.ndim))


def _row_mean_of_products(a, b, axes):
    """mean(a * b) over the trailing ``axes`` without materialising the product (one fused dot per row)."""
    k = len(axes)
    rows = a.reshape(-1, int(np.prod(a.shape[a.ndim - k :])))
    other = b.reshape(rows.shape)
    out = np.einsum("ij,ij->i", rows, other) / rows.shape[1]
    return out.reshape(a.shape[: a.ndim - k] + (1,) * k)


class LayerNorm(Function):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dims (biased variance, as PyTorch).

    Written for few passes over memory: the variance is a per-row dot product, and the
    normalisation, scale and shift run in place on one fresh array.
    """

    _raw = True

    @staticmethod
    def forward(ctx, x, weight, bias, axes, eps):
        xhat = x - x.mean(axis=axes, keepdims=True)
        rstd = 1.0 / np.sqrt(_row_mean_of_products(xhat, xhat, axes) + eps)
        xhat *= rstd
        out = xhat * weight if weight is not None else xhat.copy()
        if bias is not None:
            out += bias
        ctx.save_for_backward(xhat, rstd.astype(x.dtype, copy=False), weight)
        ctx.axes = axes
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        axes = ctx.axes
        n = ctx.needs_input_grad
        lead = g.ndim - len(axes)
        gw = gb = gx = None
        if n[1]:
            size = weight.size
            gw = np.einsum("ij,ij->j", g.reshape(-1, size), xhat.reshape(-1, size)).reshape(weight.shape)
        if n[2]:
            gb = g.sum(axis=tuple(range(lead)))
        if n[0]:
            gxhat = g * weight if weight is not None else g.copy()
            mean_gx = _row_mean_of_products(gxhat, xhat, axes)
            gxhat -= gxhat.mean(axis=axes, keepdims=True)
            gxhat -= xhat * mean_gx
            gxhat *= rstd
            gx = gxhat
        return gx, gw, gb, None, None


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalise over the trailing ``normalized_shape`` dims, then scale and shift (``F.layer_norm``)."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    axes = _norm_axes(input.data, normalized_shape, "layer_norm")
    return LayerNorm.apply(input, weight, bias, axes, eps)


class RMSNorm(Function):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dims."""

    _raw = True

    @staticmethod
    def forward(ctx, x, weight, axes, eps):
        rstd = 1.0 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + eps)
        xr = x * rstd
        ctx.save_for_backward(xr, rstd, weight)
        ctx.axes = axes
        return (xr * weight if weight is not None else xr).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xr, rstd, weight = ctx.saved_tensors
        axes = ctx.axes
        n = ctx.needs_input_grad
        gw = (g * xr).sum(axis=tuple(range(g.ndim - len(axes)))) if n[1] else None
        gx = None
        if n[0]:
            gxr = g * weight if weight is not None else g
            gx = (gxr - xr * (gxr * xr).mean(axis=axes, keepdims=True)) * rstd
        return gx, gw, None, None


def rms_norm(input, normalized_shape, weight=None, eps: float | None = None):
    """Root-mean-square normalisation over the trailing dims; ``eps=None`` uses the dtype's machine epsilon."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    axes = _norm_axes(input.data, normalized_shape, "rms_norm")
    if eps is None:
        eps = float(np.finfo(input.data.dtype).eps)
    return RMSNorm.apply(input, weight, axes, eps)
