"""Scaled dot-product attention as one op.

Forward keeps a single attention matrix per head (the probabilities ``P``,
and the dropout mask when dropout is on); backward derives everything else from
it: ``dV = Pᵀ dO``, ``dP = dO Vᵀ``, ``dS = P ∘ (dP - rowsum(dP ∘ P))``,
``dQ = dS K · scale``, ``dK = dSᵀ Q · scale``. The softmax subtracts the row
maximum first, and a row whose keys are all masked gives zeros (as PyTorch's
``scaled_dot_product_attention`` does) rather than NaN. On CUDA the softmax
and its backward (``dS`` from ``dP`` and ``P``) are the fused row kernels of
:mod:`forgeml.ops._fused_nn`; the products are cuBLAS GEMMs.
"""

from __future__ import annotations

import math

from ..autograd.function import ArrayFunction
from ..backend.device import is_cupy, namespace_of
from ..backend.random import generator_for
from ..tensor import Tensor
from . import _autocast, _fused_nn
from .nn import on_device_of

__all__ = ["scaled_dot_product_attention"]


def _t(x, xp):
    """The last two dims swapped, as a contiguous array: NumPy's stacked matmul falls off its BLAS
    path for transposed views, so the (small) operand is copied rather than the (large) scores."""
    return xp.ascontiguousarray(xp.swapaxes(x, -1, -2))


def _kernel_dtype(xp, x):
    """The dtype the fused row kernels compute ``x`` in on CUDA, else None (the portable body runs)."""
    return _fused_nn.kernel_dtype(xp, x.dtype) if is_cupy(xp) else None


class ScaledDotProductAttention(ArrayFunction):
    @staticmethod
    def forward(ctx, q, k, v, mask, scale, dropout_p, gen):
        xp = ctx.xp
        qs = q * q.dtype.type(scale)  # scaling Q ([.., L, E]) is cheaper than scaling the [.., L, S] scores
        scores = xp.matmul(qs, _t(k, xp))
        if mask is not None:
            scores += mask  # additive, in its own (often small, broadcast) shape
        kd = _kernel_dtype(xp, scores)
        if kd is not None:
            rows = xp.ascontiguousarray(scores.astype(kd, copy=False)).reshape(-1, scores.shape[-1])
            p = _fused_nn.softmax_forward(xp, rows, False, zero_masked_rows=True)
            p = p.reshape(scores.shape).astype(scores.dtype, copy=False)
        else:
            row_max = scores.max(axis=-1, keepdims=True)
            row_max[~xp.isfinite(row_max)] = 0.0  # fully masked rows: exp(-inf) = 0 everywhere, no NaN
            scores -= row_max
            p = xp.exp(scores, out=scores)
            total = p.sum(axis=-1, keepdims=True)
            total[total == 0] = 1.0  # a fully masked row stays all zeros (and a ufunc `where=` would be slow)
            p /= total
        keep = None
        if dropout_p > 0.0:
            keep = gen.random(p.shape, dtype=xp.float32) >= dropout_p
            out = xp.matmul(p * keep, v)
            out *= out.dtype.type(1.0 / (1.0 - dropout_p))
        else:
            out = xp.matmul(p, v)
        ctx.save_for_backward(qs, k, v, p, keep)
        ctx.meta = (scale, dropout_p)
        if out.dtype != q.dtype:  # NumPy returns products of bfloat16 arrays as float32
            out = out.astype(q.dtype)
        return out

    @staticmethod
    def backward(ctx, g):
        qs, k, v, p, keep = ctx.saved_tensors
        scale, dropout_p = ctx.meta
        xp = ctx.xp
        n = ctx.needs_input_grad
        c = g.dtype.type(1.0 / (1.0 - dropout_p)) if keep is not None else None
        gq = gk = gv = None
        if n[2]:
            weights = p * keep if keep is not None else p
            gv = xp.swapaxes(xp.matmul(_t(g, xp), weights), -1, -2)  # (gᵀ W)ᵀ = Wᵀ g, without a transposed view
            if c is not None:
                gv = gv * c
        if n[0] or n[1]:
            ds = xp.matmul(g, _t(v, xp))  # dP (times the dropout mask), then dS in place
            if keep is not None:
                ds *= keep
            kd = _kernel_dtype(xp, ds)
            if kd is not None:
                S = ds.shape[-1]
                rows = xp.ascontiguousarray(p.astype(kd, copy=False)).reshape(-1, S)
                ds = _fused_nn.softmax_backward(xp, ds.reshape(-1, S), rows, False)
                ds = ds.reshape(p.shape).astype(g.dtype, copy=False)
            else:
                ds -= xp.einsum("...ij,...ij->...i", ds, p)[..., None]
                ds *= p
            if n[0]:
                gq = xp.matmul(ds, k)
                gq *= g.dtype.type(scale * (c if c is not None else 1.0))
            if n[1]:
                gk = xp.swapaxes(xp.matmul(_t(qs, xp), ds), -1, -2)  # (Qᵀ dS)ᵀ = dSᵀ Q
                if c is not None:
                    gk = gk * c
        return _as(gq, qs), _as(gk, k), _as(gv, v), None, None, None, None


def _as(grad, like):
    """``grad`` (or None) in ``like``'s dtype (products of bfloat16 arrays come back as float32)."""
    if grad is None or grad.dtype == like.dtype:
        return grad
    return grad.astype(like.dtype)


def scaled_dot_product_attention(
    query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False, scale=None, *, generator=None
):
    """``softmax(Q Kᵀ · scale + mask) V`` over the last two dims, with PyTorch's semantics.

    ``attn_mask`` is boolean (True: the query may attend to that key) or
    additive (added to the scores), broadcastable to ``[..., L, S]``; a list or
    NumPy array is copied to the query's device. ``is_causal`` lets query ``i``
    see keys ``0..i`` only. ``scale`` defaults to ``1/sqrt(E)``. ``dropout_p``
    drops attention weights (pass 0 in eval mode), drawing from ``generator``
    or the default generator of the query's device.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or t._data.ndim < 2:
            raise RuntimeError(f"scaled_dot_product_attention: {name} must be a tensor of at least 2 dims")
    if _autocast.state.active:
        query, key, value = _autocast.lower(query, key, value)
    E, S = query._data.shape[-1], key._data.shape[-2]
    if key._data.shape[-1] != E:
        raise RuntimeError(
            f"scaled_dot_product_attention: query and key feature sizes differ ({E} vs {key._data.shape[-1]})"
        )
    if value._data.shape[-2] != S:
        raise RuntimeError(
            f"scaled_dot_product_attention: key and value lengths differ ({S} vs {value._data.shape[-2]})"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if is_causal and attn_mask is not None:
        raise RuntimeError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    dtype = query._data.dtype
    mask = None
    if attn_mask is not None:
        m = on_device_of(attn_mask, query, "attn_mask", "scaled_dot_product_attention")._data
        # a boolean mask becomes an additive one of its own shape: 0 where allowed, -inf elsewhere
        if m.dtype.kind == "b":
            mask = namespace_of(m).where(m, 0.0, -math.inf).astype(dtype)
        else:
            mask = m.astype(dtype, copy=False)
    if is_causal:
        xp = namespace_of(query._data)
        L = query._data.shape[-2]
        mask = xp.where(xp.tril(xp.ones((L, S), dtype=bool)), 0.0, -math.inf).astype(dtype)
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    gen = generator_for(query.device, generator) if dropout_p > 0 else None
    return ScaledDotProductAttention.apply(query, key, value, mask, scale, dropout_p, gen)
