"""Layer normalisation and RMS normalisation, each one op with a fused backward.

On CUDA LayerNorm runs the fused row kernels of :mod:`forgeml.ops._fused_nn`
(mean, variance, normalise, scale and shift in one launch; the input gradient
in another; the weight and bias gradients are column sums). RMSNorm, and
LayerNorm elsewhere, run the portable body, which on the CPU is the code
ForgeML always ran.
"""

from __future__ import annotations

import math

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_ARRAY, is_cupy
from . import _autocast, _fused_nn
from .nn import full_on_cuda

__all__ = ["layer_norm", "rms_norm"]


def _norm_axes(x, normalized_shape, name):
    shape = tuple(normalized_shape)
    k = len(shape)
    if k == 0 or x.shape[x.ndim - k :] != shape:
        raise RuntimeError(
            f"{name}: normalized_shape {list(shape)} must match the last {k} dims of the input, got shape {list(x.shape)}"
        )
    return tuple(range(x.ndim - k, x.ndim))


def _row_mean_of_products(a, b, axes, xp):
    """mean(a * b) over the trailing ``axes`` without materialising the product (one fused dot per row)."""
    k = len(axes)
    rows = a.reshape(-1, math.prod(a.shape[a.ndim - k :]))
    other = b.reshape(rows.shape)
    out = xp.einsum("ij,ij->i", rows, other) / rows.shape[1]
    return out.reshape(a.shape[: a.ndim - k] + (1,) * k)


def _blas_dtype(a) -> bool:
    return a.dtype.char in "fd"


def _rows_apply(x, weight, bias, axes) -> bool:
    """Whether LayerNorm's row body (:func:`_layer_norm_rows`) takes ``x``: float32/float64, with a weight and
    bias (if any) of one element per normalised position."""
    n = math.prod(x.shape[x.ndim - len(axes) :])
    return _blas_dtype(x) and all(p is None or p.size == n for p in (weight, bias))


def _row_means(rows, xp):
    """Means of the rows of a 2-D float32/float64 array, as a product with a vector of ones: BLAS's
    matrix-vector product is several times faster than NumPy's reduction over short rows."""
    return (rows @ xp.ones(rows.shape[1], dtype=rows.dtype)) / rows.shape[1]


def _layer_norm_rows(ctx, xp, x, weight, bias, axes, eps):
    """LayerNorm's forward over ``x`` viewed as rows (float32/float64): row means as BLAS products."""
    n = math.prod(x.shape[x.ndim - len(axes) :])
    rows = x.reshape(-1, n)
    xhat = rows - _row_means(rows, xp)[:, None]
    rstd = 1.0 / xp.sqrt(_row_means(xhat * xhat, xp) + eps)
    xhat *= rstd[:, None]
    out = xhat * weight.reshape(n) if weight is not None else xhat.copy()
    if bias is not None:
        out += bias.reshape(n)
    keep = x.shape[: x.ndim - len(axes)] + (1,) * len(axes)
    ctx.save_for_backward(xhat.reshape(x.shape), rstd.astype(x.dtype, copy=False).reshape(keep), weight)
    ctx.axes = axes
    return out.astype(x.dtype, copy=False).reshape(x.shape)


def _layer_norm_rows_backward(ctx, xp, g, xhat, rstd, weight):
    """The backward of :func:`_layer_norm_rows`, on rows: row and column sums as BLAS products."""
    n = math.prod(g.shape[g.ndim - len(ctx.axes) :])
    needs = ctx.needs_input_grad
    g2, xh2 = g.reshape(-1, n), xhat.reshape(-1, n)
    gw = gb = gx = None
    if needs[1]:
        gw = xp.einsum("ij,ij->j", g2, xh2).reshape(weight.shape)
    if needs[2]:
        gb = (xp.ones(g2.shape[0], dtype=g2.dtype) @ g2).reshape(g.shape[g.ndim - len(ctx.axes) :])
    if needs[0]:
        gxhat = g2 * weight.reshape(n) if weight is not None else g2.copy()
        mean_gx = _row_means(gxhat * xh2, xp)
        gxhat -= _row_means(gxhat, xp)[:, None]
        gxhat -= xh2 * mean_gx[:, None]
        gxhat *= rstd.reshape(-1, 1)
        gx = gxhat.reshape(g.shape)
    return gx, gw, gb, None, None


class LayerNorm(ArrayFunction):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last dims (biased variance, as PyTorch).

    Written for few passes over memory: the variance is a per-row dot product, and the
    normalisation, scale and shift run in place on one fresh array. On CUDA the fused
    row kernels run instead, and backward recomputes ``xhat`` from the saved mean and rstd.
    """

    fused_dtype = None  # the dtype the CUDA kernels computed in (None: the portable body ran)

    @staticmethod
    def forward(ctx, x, weight, bias, axes, eps):
        xp = ctx.xp
        if is_cupy(xp):
            kd = _fused_nn.kernel_dtype(xp, x.dtype)
            if kd is not None:
                return _layer_norm_cuda(ctx, xp, x, weight, bias, axes, eps, kd)
        if _rows_apply(x, weight, bias, axes):
            return _layer_norm_rows(ctx, xp, x, weight, bias, axes, eps)
        xhat = x - x.mean(axis=axes, keepdims=True)
        rstd = 1.0 / xp.sqrt(_row_mean_of_products(xhat, xhat, axes, xp) + eps)
        xhat *= rstd
        out = xhat * weight if weight is not None else xhat.copy()
        if bias is not None:
            out += bias
        ctx.save_for_backward(xhat, rstd.astype(x.dtype, copy=False), weight)
        ctx.axes = axes
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        if ctx.fused_dtype is not None:
            return _layer_norm_cuda_backward(ctx, g)
        xhat, rstd, weight = ctx.saved_tensors
        xp = ctx.xp
        if _blas_dtype(g) and _rows_apply(xhat, weight, None, ctx.axes):
            return _layer_norm_rows_backward(ctx, xp, g, xhat, rstd, weight)
        axes = ctx.axes
        n = ctx.needs_input_grad
        lead = g.ndim - len(axes)
        gw = gb = gx = None
        if n[1]:
            size = weight.size
            gw = xp.einsum("ij,ij->j", g.reshape(-1, size), xhat.reshape(-1, size)).reshape(weight.shape)
        if n[2]:
            gb = g.sum(axis=tuple(range(lead)))
        if n[0]:
            gxhat = g * weight if weight is not None else g.copy()
            mean_gx = _row_mean_of_products(gxhat, xhat, axes, xp)
            gxhat -= gxhat.mean(axis=axes, keepdims=True)
            gxhat -= xhat * mean_gx
            gxhat *= rstd
            gx = gxhat
        return gx, gw, gb, None, None


def _layer_norm_cuda(ctx, xp, x, weight, bias, axes, eps, kd):
    """LayerNorm's CUDA half: the fused row kernel in ``kd`` (float16 data computes in float32)."""
    n = math.prod(x.shape[x.ndim - len(axes) :])
    x2 = xp.ascontiguousarray(x.astype(kd, copy=False)).reshape(-1, n)
    w = None if weight is None else xp.ascontiguousarray(weight.astype(kd, copy=False)).reshape(n)
    b = None if bias is None else xp.ascontiguousarray(bias.astype(kd, copy=False)).reshape(n)
    y, mean, rstd = _fused_nn.layer_norm_forward(xp, x2, w, b, eps)
    ctx.fused_dtype = kd
    ctx.axes = axes
    ctx.save_for_backward(x2, w, mean, rstd)
    ctx.param_dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    return y.reshape(x.shape).astype(x.dtype, copy=False)


def _layer_norm_cuda_backward(ctx, g):
    x2, w, mean, rstd = ctx.saved_tensors
    xp = ctx.xp
    n = ctx.needs_input_grad
    size = x2.shape[1]
    g2 = g.reshape(-1, size)
    normalized = g.shape[g.ndim - len(ctx.axes) :]
    gx = gw = gb = None
    if n[0]:
        gx = _fused_nn.layer_norm_backward(xp, g2, x2, w, mean, rstd).reshape(g.shape).astype(g.dtype, copy=False)
    if n[1]:
        xhat = (x2 - mean[:, None]) * rstd[:, None]
        gw = (g2.astype(ctx.fused_dtype, copy=False) * xhat).sum(axis=0)
        gw = gw.reshape(normalized).astype(ctx.param_dtypes[0], copy=False)
    if n[2]:
        gb = g2.sum(axis=0).reshape(normalized).astype(ctx.param_dtypes[1], copy=False)
    return gx, gw, gb, None, None


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    """Normalise over the trailing ``normalized_shape`` dims, then scale and shift (``F.layer_norm``)."""
    if _autocast.state.active:
        input, weight, bias = full_on_cuda(input, weight, bias)
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    axes = _norm_axes(input._data, normalized_shape, "layer_norm")
    if input._data.dtype.kind != "f" and type(input._data) is HOST_ARRAY:
        # bfloat16 (ml_dtypes) on the CPU: NumPy's einsum has no loop for it; compute in float32, as PyTorch does
        return LayerNorm.apply(input.float(), weight, bias, axes, eps).to(input.dtype)
    return LayerNorm.apply(input, weight, bias, axes, eps)


class RMSNorm(ArrayFunction):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dims."""

    @staticmethod
    def forward(ctx, x, weight, axes, eps):
        rstd = 1.0 / ctx.xp.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
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
    axes = _norm_axes(input._data, normalized_shape, "rms_norm")
    if eps is None:
        eps = _EPS.get(input._data.dtype.name)
        if eps is None:
            raise RuntimeError(f"rms_norm: expected a floating point input, got {input.dtype}")
    if input._data.dtype.kind != "f" and type(input._data) is HOST_ARRAY:
        return RMSNorm.apply(input.float(), weight, axes, eps).to(input.dtype)  # bfloat16: in float32, as PyTorch
    return RMSNorm.apply(input, weight, axes, eps)


# machine epsilon per floating dtype (torch.finfo(dtype).eps), the default eps of rms_norm
_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}
