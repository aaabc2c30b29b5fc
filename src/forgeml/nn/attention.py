"""``MultiHeadAttention``, laid out like ``torch.nn.MultiheadAttention`` so weights move between the two."""

from __future__ import annotations

import math

from ..backend.convert import as_array
from ..backend.device import namespace_of, to_device
from ..ops.attention import scaled_dot_product_attention
from ..ops.creation import empty
from ..ops.nn import linear, softmax
from ..tensor import Tensor
from . import init
from .linear import Linear
from .masked import MaskedBatch
from .module import Module
from .parameter import Parameter

__all__ = ["MultiHeadAttention", "MultiheadAttention"]


def _mask_array(mask, like: Tensor, kind: str):
    """``mask`` (a tensor on ``like``'s device, an array or nested lists) as an array on ``like``'s device."""
    if isinstance(mask, Tensor):
        if mask.device != like.device:
            raise RuntimeError(
                f"{kind} is on {mask.device} but the query is on {like.device}: expected all tensors on one device "
                f"(move the mask with .to('{like.device}'))"
            )
        return mask._data
    return to_device(as_array(mask), like.device)


def _as_allowed(m, kind: str):
    """A mask array as (boolean 'may attend' array, additive float array): exactly one of them is set."""
    if m.dtype.kind == "b":
        return ~m, None  # in MultiheadAttention True means "not allowed"
    if m.dtype.kind != "f":
        raise TypeError(f"{kind} must be a bool or float mask, got {m.dtype}")
    return None, m


class MultiHeadAttention(Module):
    """Multi-head attention with ``num_heads`` heads over ``embed_dim`` features.

    ``mha(x)`` (or ``mha(masked_batch)``) is self-attention and returns just the
    output, so the layer sits in a ``Sequential``; ``mha(query, key, value,
    key_padding_mask=None, attn_mask=None, need_weights=False, is_causal=False)``
    is PyTorch's general form and returns ``(output, weights or None)``. Masks
    follow ``nn.MultiheadAttention``: boolean True means *not allowed* (padding in
    ``key_padding_mask``), float masks are added to the scores. Parameters are
    ``in_proj_weight`` ``[3E, E]`` (or ``q/k/v_proj_weight`` when ``kdim``/``vdim``
    differ), ``in_proj_bias`` and ``out_proj``, as in PyTorch. Tensors are
    ``[seq, batch, E]`` by default and ``[batch, seq, E]`` with ``batch_first=True``,
    as in PyTorch; a ``MaskedBatch`` is always ``[batch, seq, E]``.
    """

    accepts_masked = True

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim=None,
        vdim=None,
        batch_first: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be positive, got {embed_dim} and {num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError(
                "MultiheadAttention: add_bias_kv=True and add_zero_attn=True are not supported; leave them False"
            )
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        kw = {"dtype": dtype, "device": device}
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim, **kw))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = Parameter(empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = Parameter(empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = Parameter(empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _project(self, query, key, value):
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E : 2 * E], b[2 * E :])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            if key is query and value is query:  # self-attention: one matmul for all three
                qkv = linear(query, w, b)
                return qkv.split(E, -1)
            return linear(query, w[:E], bq), linear(key, w[E : 2 * E], bk), linear(value, w[2 * E :], bv)
        return (
            linear(query, self.q_proj_weight, bq),
            linear(key, self.k_proj_weight, bk),
            linear(value, self.v_proj_weight, bv),
        )

    def _heads(self, x, batch: int, length: int):
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _mask(self, attn_mask, key_padding_mask, batch: int, L: int, S: int, like: Tensor):
        """Combine the masks into one for scaled_dot_product_attention (True / 0 = may attend).

        The result lives on ``like``'s device and, when additive, has its dtype.
        """
        allowed = additive = None
        if attn_mask is not None:
            a, f = _as_allowed(_mask_array(attn_mask, like, "attn_mask"), "attn_mask")
            if (a if a is not None else f).ndim == 3:  # [B*H, L, S]
                a = a.reshape(batch, self.num_heads, L, S) if a is not None else None
                f = f.reshape(batch, self.num_heads, L, S) if f is not None else None
            allowed, additive = a, f
        if key_padding_mask is not None:
            kp = _mask_array(key_padding_mask, like, "key_padding_mask")
            if kp.shape != (batch, S):
                raise RuntimeError(f"key_padding_mask must have shape [{batch}, {S}], got {list(kp.shape)}")
            a, f = _as_allowed(kp, "key_padding_mask")
            a = a[:, None, None, :] if a is not None else None
            f = f[:, None, None, :] if f is not None else None
            allowed = a if allowed is None else (allowed & a if a is not None else allowed)
            additive = f if additive is None else (additive + f if f is not None else additive)
        if additive is None:
            return None if allowed is None else Tensor._make(allowed, False, None)
        dtype = like._data.dtype
        combined = additive.astype(dtype, copy=False)
        if allowed is not None:
            combined = namespace_of(combined).where(allowed, combined, -math.inf).astype(dtype, copy=False)
        return Tensor._make(combined, False, None)

    def forward(
        self,
        query,
        key=None,
        value=None,
        key_padding_mask=None,
        need_weights: bool = False,
        attn_mask=None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        sequential_call = key is None and value is None
        masked = isinstance(query, MaskedBatch)
        if masked:
            if not sequential_call:
                raise TypeError("pass a MaskedBatch as the only input (self-attention); for key/value use tensors")
            key_padding_mask = query.padding_mask if key_padding_mask is None else key_padding_mask
            query = query.data
        key = query if key is None else key
        value = key if value is None else value
        batch_first = self.batch_first or masked  # a MaskedBatch is [batch, time, E] whatever the layout
        if not batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if query.ndim != 3 or query.shape[-1] != self.embed_dim:
            raise RuntimeError(
                f"MultiHeadAttention expects [batch, time, {self.embed_dim}] inputs, got {list(query.shape)}"
            )
        B, L, _ = query.shape
        S = key.shape[1]
        q, k, v = self._project(query, key, value)
        qh, kh, vh = self._heads(q, B, L), self._heads(k, B, S), self._heads(v, B, S)
        mask = self._mask(attn_mask, key_padding_mask, B, L, S, qh)
        causal = is_causal and attn_mask is None
        dropout = self.dropout if self.training else 0.0
        out = scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        out = self.out_proj(out.transpose(1, 2).reshape(B, L, self.embed_dim))
        if not batch_first:
            out = out.transpose(0, 1)
        if sequential_call:
            return (
                MaskedBatch(out, key_padding_mask if isinstance(key_padding_mask, Tensor) else None) if masked else out
            )
        weights = None
        if need_weights:
            weights = self._weights(qh, kh, mask, causal, average_attn_weights)
        return out, weights

    def _weights(self, qh, kh, mask, causal, average):
        scores = (qh @ kh.mT) * (1.0 / math.sqrt(self.head_dim))
        if causal:
            L, S = scores.shape[-2:]
            xp = namespace_of(scores._data)
            mask = Tensor._make(xp.tril(xp.ones((L, S), dtype=xp.bool_)), False, None)
        if mask is not None:
            m = mask._data
            scores = (
                scores.masked_fill(Tensor._make(~m, False, None), float("-inf"))
                if m.dtype.kind == "b"
                else scores + mask
            )
        weights = softmax(scores, -1)
        return weights.mean(1) if average else weights

    def extra_repr(self) -> str:
        return ""


MultiheadAttention = MultiHeadAttention  # PyTorch's spelling
