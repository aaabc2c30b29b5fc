"""Embedding lookup: rows of a table by index, with gradients only to the rows used."""

from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from ..tensor import Tensor

__all__ = ["embedding"]


def rows_sum(indices: np.ndarray, values: np.ndarray, num_rows: int) -> np.ndarray:
    """``out[i] = sum of values[j] where indices[j] == i`` for a [num_rows, D] table (repeats accumulate).

    Sorting and ``np.add.reduceat`` sum each used row once, much faster than ``np.add.at`` for embeddings.
    """
    out = np.zeros((num_rows, values.shape[-1]), dtype=values.dtype)
    if indices.size == 0:
        return out
    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    out[sorted_idx[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out


class Embedding(Function):
    _raw = True

    @staticmethod
    def forward(ctx, weight, indices, padding_idx):
        ctx.meta = (weight.shape[0], indices, padding_idx)
        return weight[indices]

    @staticmethod
    def backward(ctx, g):
        num_rows, indices, padding_idx = ctx.meta
        flat_idx = indices.reshape(-1)
        flat_g = g.reshape(-1, g.shape[-1])
        if padding_idx is not None:
            keep = flat_idx != padding_idx
            flat_idx, flat_g = flat_idx[keep], flat_g[keep]
        return rows_sum(flat_idx, flat_g, num_rows), None, None


def embedding(input, weight, padding_idx: int | None = None):
    """Rows of ``weight`` ([num_embeddings, dim]) at the integer ``input`` indices; ``padding_idx`` gets no gradient."""
    idx = input.data if isinstance(input, Tensor) else np.asarray(input)
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"embedding: indices must be an integer tensor, got {idx.dtype}")
    num = weight.data.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= num):
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise IndexError(f"embedding: index {bad} is out of range for a table of {num} rows")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += num
    return Embedding.apply(weight, idx, padding_idx)
