"""Padded token batches through a ``Sequential``: ``MaskedBatch`` and sequence pooling.

The convention: a batch of padded sequences travels through a ``Sequential``
as a :class:`MaskedBatch`, the data ``[B, T, ...]`` with a ``padding_mask``
``[B, T]`` (True at padding positions, PyTorch's ``key_padding_mask``).
Layers that need the mask (``Embedding``, ``MultiHeadAttention``, the
transformer layers, ``SequencePool``) read it; every other layer is applied to
the data and the mask is carried along unchanged (see ``Module.__call__``).
``SequencePool`` ends the sequence part: it returns a plain ``[B, E]`` tensor
that a final ``Linear(embed_dim, num_classes)`` classifies.
"""

from __future__ import annotations

from ..ops.elementwise import where
from .masked import MaskedBatch
from .module import Module

__all__ = ["MaskedBatch", "SequencePool"]


class SequencePool(Module):
    """``[B, T, E]`` -> ``[B, E]``: the mean over non-padding positions (``mode='mean'``), the first
    token (``'first'``, e.g. a ``<cls>`` token), or the maximum over non-padding positions (``'max'``)."""

    accepts_masked = True

    def __init__(self, mode: str = "mean") -> None:
        super().__init__()
        if mode not in ("mean", "first", "max"):
            raise ValueError(f"SequencePool mode must be 'mean', 'first' or 'max', got {mode!r}")
        self.mode = mode

    def forward(self, input):
        x, mask = (input.data, input.padding_mask) if isinstance(input, MaskedBatch) else (input, None)
        if x.ndim != 3:
            raise RuntimeError(f"SequencePool expects [batch, time, features], got {list(x.shape)}")
        if self.mode == "first":
            return x[:, 0]
        if mask is None:
            return x.mean(1) if self.mode == "mean" else x.amax(1)
        keep = (~mask).unsqueeze(-1)
        if self.mode == "max":
            return where(keep, x, float("-inf")).amax(1)
        counts = keep.sum(1).clamp(min=1).to(x.dtype)
        return (x * keep.to(x.dtype)).sum(1) / counts

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
