"""CPU halves of kernels that NumPy and CuPy cannot share: what only NumPy offers (or does faster).

Ops call these when their namespace is NumPy (``xp is HOST_XP``); the CUDA
halves are in :mod:`forgeml.ops._fused`, the portable bodies in the ops.
This is one of the few modules of the tensor stack allowed to name NumPy.
"""

from __future__ import annotations

import math

import numpy as np  # noqa: TID251 - CPU halves of device-specific kernels

__all__ = ["add_at", "erfc64"]

_erfc = np.frompyfunc(math.erfc, 1, 1)


def erfc64(z: np.ndarray) -> np.ndarray:
    """``erfc(z)`` elementwise with libm's exact erfc, as float64 (NumPy has no vectorised erf)."""
    return _erfc(z).astype(np.float64)


def add_at(target: np.ndarray, index, values) -> None:
    """``target[index] += values`` in place with repeated indices accumulating (NumPy's unbuffered ``add.at``)."""
    np.add.at(target, index, values)


__all__ += ["rows_sum"]


def rows_sum(indices: np.ndarray, values: np.ndarray, num_rows: int) -> np.ndarray:
    """``out[i] = sum of values[j] where indices[j] == i`` for a [num_rows, D] table (repeats accumulate).

    Sorting and ``np.add.reduceat`` sum each used row once, much faster than ``np.add.at`` for embeddings
    (the CPU half of the embedding backward).
    """
    out = np.zeros((num_rows, values.shape[-1]), dtype=values.dtype)
    if indices.size == 0:
        return out
    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    out[sorted_idx[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out
