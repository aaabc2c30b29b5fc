"""Embedding lookup: rows of a table by index, with gradients only to the rows used.

The backward sums the upstream rows per index (repeated indices accumulate,
``padding_idx`` gets nothing): on the CPU by sorting and ``np.add.reduceat``
(:func:`forgeml.ops._cpu.rows_sum`), elsewhere with the namespace's
scatter-add ``xp.add.at`` (atomic adds on CUDA).
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_ARRAY, HOST_XP
from ..tensor import Tensor
from . import _cpu
from ._util import as_tensor_like

__all__ = ["embedding"]


class Embedding(ArrayFunction):
    @staticmethod
    def forward(ctx, weight, indices, padding_idx):
        ctx.meta = (weight.shape[0], indices, padding_idx)
        return weight[indices]

    @staticmethod
    def backward(ctx, g):
        num_rows, indices, padding_idx = ctx.meta
        xp = ctx.xp
        flat_idx = indices.reshape(-1)
        flat_g = g.reshape(-1, g.shape[-1])
        if xp is HOST_XP:
            if padding_idx is not None:
                keep = flat_idx != padding_idx
                flat_idx, flat_g = flat_idx[keep], flat_g[keep]
            return _cpu.rows_sum(flat_idx, flat_g, num_rows), None, None
        out = xp.zeros((num_rows, g.shape[-1]), dtype=g.dtype)
        xp.add.at(out, flat_idx, flat_g)
        if padding_idx is not None:
            out[padding_idx] = 0
        return out, None, None


def embedding(input, weight, padding_idx: int | None = None):
    """Rows of ``weight`` ([num_embeddings, dim]) at the integer ``input`` indices; ``padding_idx`` gets no gradient.

    Indices given as a list or NumPy array are copied to the weight's device; a tensor of indices on
    another device is an error.
    """
    if isinstance(input, Tensor):
        if type(input._data) is not type(weight._data) or (
            type(input._data) is not HOST_ARRAY and input.device != weight.device
        ):
            raise RuntimeError(
                f"embedding: expected the indices and the weight on the same device, but the indices are on "
                f"{input.device} and the weight on {weight.device} (move them with .to('{weight.device}'))"
            )
        idx = input._data
    else:
        idx = as_tensor_like(input, weight)._data
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"embedding: indices must be an integer tensor, got {idx.dtype}")
    num = weight._data.shape[0]
    if idx.size:
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= num:
            bad = low if low < 0 else high
            raise IndexError(f"embedding: index {bad} is out of range for a table of {num} rows")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += num
    return Embedding.apply(weight, idx, padding_idx)
