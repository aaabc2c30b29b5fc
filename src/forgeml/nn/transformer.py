"""The transformer encoder stack: ``FeedForward``, ``TransformerEncoderLayer``, ``TransformerEncoder``.

Submodule names match PyTorch's (``self_attn``, ``linear1``, ``linear2``,
``norm1``, ``norm2``, ``dropout1``, ``dropout2``; ``layers.N`` and ``norm``
in the encoder), so state_dicts move between the two unchanged.
"""

from __future__ import annotations

import copy

from ..backend.device import is_cupy, namespace_of
from ..ops import elementwise as ew
from ..ops.nn import linear_activation
from . import functional as F
from .activation import GELU, ReLU
from .attention import MultiHeadAttention
from .container import ModuleList
from .dropout import Dropout
from .linear import Linear
from .masked import MaskedBatch
from .module import Module
from .normalization import LayerNorm

__all__ = ["FeedForward", "TransformerEncoder", "TransformerEncoderLayer"]

_ACTIVATIONS = {"relu": ew.relu, "gelu": ew.gelu}


def _activation(activation):
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation should be 'relu' or 'gelu' (or a callable), not {activation!r}")
        return _ACTIVATIONS[activation]
    if not callable(activation):
        raise TypeError(f"activation must be a string or a callable, got {type(activation).__name__}")
    return activation


def _to_layout(x, layer):
    """A MaskedBatch's ``[batch, seq, E]`` data in ``layer``'s layout (``[seq, batch, E]`` unless its
    self-attention is batch-first), and back: the swap is its own inverse."""
    return x if getattr(getattr(layer, "self_attn", None), "batch_first", True) else x.transpose(0, 1)


def _hooked(module) -> bool:
    """Whether ``module`` has forward or backward hooks (then a fused kernel must not bypass its call)."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


def _fused_name(activation):
    """The fused epilogue that computes ``activation`` (ReLU, exact or tanh GELU), or None for anything else."""
    if isinstance(activation, (ReLU, GELU)) and _hooked(activation):
        return None  # the module's hooks must see its call
    if activation is ew.relu or activation is F.relu or isinstance(activation, ReLU):
        return "relu"
    if activation is ew.gelu:
        return "gelu"
    if isinstance(activation, GELU):
        return "gelu_tanh" if activation.approximate == "tanh" else "gelu"
    return None


def _linear_then(linear, activation, x):
    """``activation(linear(x))``, with the bias add and a standard activation fused into one kernel on CUDA."""
    name = _fused_name(activation) if is_cupy(namespace_of(x._data)) else None
    if name is None or type(linear) is not Linear or linear.bias is None or _hooked(linear):
        return activation(linear(x))
    return linear_activation(x, linear.weight, linear.bias, name)


class FeedForward(Module):
    """The position-wise block ``Linear(E, H) -> activation -> Dropout -> Linear(H, E)`` (no residual)."""

    def __init__(
        self, embed_dim: int, hidden_dim: int, activation="gelu", dropout: float = 0.0, device=None, dtype=None
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.linear1 = Linear(embed_dim, hidden_dim, **kw)
        self.activation = (
            {"gelu": GELU(), "relu": ReLU()}.get(activation, activation) if isinstance(activation, str) else activation
        )
        if isinstance(self.activation, str):
            raise ValueError(f"activation should be 'relu' or 'gelu' (or a module), not {activation!r}")
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(hidden_dim, embed_dim, **kw)

    def forward(self, input):
        return self.linear2(self.dropout(_linear_then(self.linear1, self.activation, input)))


def _clones(layer: Module, num_layers: int) -> ModuleList:
    """``num_layers`` deep copies of ``layer`` (the ``layers`` of an encoder or decoder stack)."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    return ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])


class _TransformerLayer(Module):
    """Shared body of the encoder and decoder layers, submodules registered in PyTorch's order: ``self_attn``
    (and ``multihead_attn``, the cross-attention, when ``_blocks`` is 3), the feed-forward ``linear1``,
    ``dropout``, ``linear2``, then ``norm1..N`` and ``dropout1..N``, one per residual block."""

    _blocks = 2

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation="relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw)
        if self._blocks == 3:
            self.multihead_attn = MultiHeadAttention(
                d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw
            )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        for i in range(1, self._blocks + 1):
            setattr(self, f"norm{i}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw))
        for i in range(1, self._blocks + 1):
            setattr(self, f"dropout{i}", Dropout(dropout))
        self.activation = _activation(activation)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        out, _ = self.self_attn(
            x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False, is_causal=is_causal
        )
        return self.dropout1(out)


class TransformerEncoderLayer(_TransformerLayer):
    """Self-attention and a feed-forward block, each with a residual connection and LayerNorm
    (after each block by default, before it with ``norm_first=True``), as ``torch.nn.TransformerEncoderLayer``.
    Tensors are ``[seq, batch, d_model]`` by default (``[batch, seq, d_model]`` with ``batch_first=True``), as in
    PyTorch. Accepts a :class:`MaskedBatch` (always ``[batch, seq, d_model]``)."""

    accepts_masked = True

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        masked = isinstance(src, MaskedBatch)
        if masked:
            src_key_padding_mask = src.padding_mask if src_key_padding_mask is None else src_key_padding_mask
            batch, src = src, _to_layout(src.data, self)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return batch.replace(_to_layout(x, self)) if masked else x

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(_linear_then(self.linear1, self.activation, x))))


class TransformerEncoder(Module):
    """``num_layers`` copies of ``encoder_layer`` in sequence, then an optional final ``norm``."""

    accepts_masked = True

    def __init__(
        self,
        encoder_layer: TransformerEncoderLayer,
        num_layers: int,
        norm: Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
    ) -> None:
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal: bool | None = None):
        masked = isinstance(src, MaskedBatch)
        if masked:
            src_key_padding_mask = src.padding_mask if src_key_padding_mask is None else src_key_padding_mask
            batch, src = src, _to_layout(src.data, self.layers[0])
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        if self.norm is not None:
            x = self.norm(x)
        return batch.replace(_to_layout(x, self.layers[0])) if masked else x
