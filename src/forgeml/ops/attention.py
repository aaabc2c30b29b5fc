"""Scaled dot-product attention as one op.

Forward keeps a single attention matrix per head (the probabilities ``P``,
and the dropout mask when dropout is on); backward derives everything else from
it: ``dV = Pᵀ dO``, ``dP = dO Vᵀ``, ``dS = P ∘ (dP - rowsum(dP ∘ P))``,
``dQ = dS K · scale``, ``dK = dSᵀ Q · scale``. The softmax subtracts the row
maximum first, and a row whose keys are all masked gives zeros (as PyTorch's
``scaled_dot_product_attention`` does) rather than NaN.
"""

from __future__ import annotations

import math

import numpy as np

from ..autograd.function import Function
from ..backend.random import numpy_generator
from ..tensor import Tensor
from ._util import unbroadcast

__all__ = ["scaled_dot_product_attention"]


def _t(x):
    """The last two dims swapped, as a contiguous array: NumPy's stacked matmul falls off its BLAS
    path for transposed views, so the (small) operand is copied rather than the (large) scores."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -2))


class ScaledDotProductAttention(Function):
    _raw = True

    @staticmethod
    def forward(ctx, q, k, v, mask, scale, dropout_p, rng):
        qs = q * q.dtype.type(scale)  # scaling Q ([.., L, E]) is cheaper than scaling the [.., L, S] scores
        scores = np.matmul(qs, _t(k))
        if mask is not None:
            scores += mask  # additive, in its own (often small, broadcast) shape
        row_max = scores.max(axis=-1, keepdims=True)
        row_max[~np.isfinite(row_max)] = 0.0  # fully masked rows: exp(-inf) = 0 everywhere, no NaN
        scores -= row_max
        p = np.exp(scores, out=scores)
        total = p.sum(axis=-1, keepdims=True)
        total[total == 0] = 1.0  # a fully masked row stays all zeros (and a ufunc `where=` would be slow)
        p /= total
        keep = None
        if dropout_p > 0.0:
            keep = rng.random(p.shape, dtype=np.float32) >= dropout_p
            out = np.matmul(p * keep, v)
            out *= out.dtype.type(1.0 / (1.0 - dropout_p))
        else:
            out = np.matmul(p, v)
        ctx.save_for_backward(qs, k, v, p, keep)
        ctx.meta = (scale, dropout_p, q.shape)
        return out

    @staticmethod
    def backward(ctx, g):
        qs, k, v, p, keep = ctx.saved_tensors
        scale, dropout_p, q_shape = ctx.meta
        n = ctx.needs_input_grad
        c = g.dtype.type(1.0 / (1.0 - dropout_p)) if keep is not None else None
        gq = gk = gv = None
        if n[2]:
            weights = p * keep if keep is not None else p
            gv = np.swapaxes(np.matmul(_t(g), weights), -1, -2)  # (gᵀ W)ᵀ = Wᵀ g, without a transposed view of W
            if c is not None:
                gv = gv * c
            gv = unbroadcast(gv, v.shape)
        if n[0] or n[1]:
            ds = np.matmul(g, _t(v))  # dP (times the dropout mask), then dS in place
            if keep is not None:
                ds *= keep
            ds -= np.einsum("...ij,...ij->...i", ds, p)[..., None]
            ds *= p
            if n[0]:
                gq = np.matmul(ds, k)
                gq *= g.dtype.type(scale * (c if c is not None else 1.0))
                gq = unbroadcast(gq, q_shape)
            if n[1]:
                gk = np.swapaxes(np.matmul(_t(qs), ds), -1, -2)  # (Qᵀ dS)ᵀ = dSᵀ Q
                if c is not None:
                    gk = gk * c
                gk = unbroadcast(gk, k.shape)
        return gq, gk, gv, None, None, None, None


def scaled_dot_product_attention(
    query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False, scale=None, *, generator=None
):
    """``softmax(Q Kᵀ · scale + mask) V`` over the last two dims, with PyTorch's semantics.

    ``attn_mask`` is boolean (True: the query may attend to that key) or
    additive (added to the scores), broadcastable to ``[..., L, S]``;
    ``is_causal`` lets query ``i`` see keys ``0..i`` only. ``scale`` defaults to
    ``1/sqrt(E)``. ``dropout_p`` drops attention weights (pass 0 in eval mode).
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or t.data.ndim < 2:
            raise RuntimeError(f"scaled_dot_product_attention: {name} must be a tensor of at least 2 dims")
    E, S = query.data.shape[-1], key.data.shape[-2]
    if key.data.shape[-1] != E:
        raise RuntimeError(
            f"scaled_dot_product_attention: query and key feature sizes differ ({E} vs {key.data.shape[-1]})"
        )
    if value.data.shape[-2] != S:
        raise RuntimeError(
            f"scaled_dot_product_attention: key and value lengths differ ({S} vs {value.data.shape[-2]})"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if is_causal and attn_mask is not None:
        raise RuntimeError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    mask = None
    if attn_mask is not None:
        m = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        # a boolean mask becomes an additive one of its own shape: 0 where allowed, -inf elsewhere
        mask = (
            np.where(m, 0.0, -np.inf).astype(query.data.dtype)
            if m.dtype == np.bool_
            else m.astype(query.data.dtype, copy=False)
        )
    if is_causal:
        L, S = query.data.shape[-2], key.data.shape[-2]
        mask = np.where(np.tril(np.ones((L, S), dtype=bool)), 0.0, -np.inf).astype(query.data.dtype)
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    rng = numpy_generator(generator) if dropout_p > 0 else None
    return ScaledDotProductAttention.apply(query, key, value, mask, scale, dropout_p, rng)
