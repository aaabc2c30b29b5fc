"""Position information for sequences: sinusoidal ``PositionalEncoding`` and learned positions."""

from __future__ import annotations

import math

from ..backend.device import array_module
from ..backend.dtypes import as_dtype
from ..ops.creation import empty
from ..tensor import Tensor
from . import init
from .dropout import Dropout
from .module import Module
from .parameter import Parameter

__all__ = ["LearnedPositionalEmbedding", "PositionalEncoding"]


def _check_length(x, max_len: int, name: str) -> int:
    if x.ndim != 3:
        raise RuntimeError(f"{name} expects [batch, time, features] inputs, got {list(x.shape)}")
    if x.shape[1] > max_len:
        raise RuntimeError(f"{name}: sequence length {x.shape[1]} exceeds max_len={max_len}")
    return x.shape[1]


class PositionalEncoding(Module):
    """Adds the sinusoids of "Attention Is All You Need": ``PE[pos, 2i] = sin(pos / 10000^(2i/d))``,
    ``PE[pos, 2i+1] = cos(...)``, then dropout. Inputs are ``[batch, time, d_model]``.

    The table is a non-persistent buffer ``pe`` computed in float64 on ``device``
    and stored as ``dtype`` (float32 unless given); ``.to(device)`` moves it
    with the module's parameters.
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        xp = array_module(device)
        position = xp.arange(max_len, dtype=xp.float64)[:, None]
        div = xp.exp(xp.arange(0, d_model, 2, dtype=xp.float64) * (-math.log(10000.0) / d_model))
        pe = xp.zeros((max_len, d_model), dtype=xp.float64)
        pe[:, 0::2] = xp.sin(position * div)
        pe[:, 1::2] = xp.cos(position * div)[:, : d_model // 2]
        table_dtype = as_dtype(dtype) if dtype is not None else None
        if table_dtype is not None and not table_dtype.is_floating_point:
            raise TypeError(f"PositionalEncoding needs a floating dtype for its table, got {table_dtype}")
        table_dtype = table_dtype.numpy if table_dtype is not None else xp.float32
        self.register_buffer("pe", Tensor(pe.astype(table_dtype)), persistent=False)  # a function of the shape
        self.dropout = Dropout(dropout)

    def forward(self, x):
        length = _check_length(x, self.max_len, "PositionalEncoding")
        pe = self.pe[:length]
        if pe.dtype != x.dtype:
            pe = pe.to(x.dtype)
        return self.dropout(x + pe)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"


class LearnedPositionalEmbedding(Module):
    """A learned vector per position (``[max_len, d_model]``, init N(0, 0.02^2)) added to the input."""

    def __init__(self, max_len: int, d_model: int, dropout: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.weight = Parameter(empty(max_len, d_model, dtype=dtype, device=device))
        init.normal_(self.weight, 0.0, 0.02)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        length = _check_length(x, self.max_len, "LearnedPositionalEmbedding")
        return self.dropout(x + self.weight[:length])

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"
