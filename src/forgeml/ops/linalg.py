"""Matrix products: ``matmul`` (1-D, 2-D, batched, broadcast batch dims) and its aliases."""

from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from ..tensor import Tensor
from ._util import binary_operands, unbroadcast

__all__ = ["bmm", "dot", "matmul", "mm", "mv", "outer"]


def _swap(x):
    return np.swapaxes(x, -1, -2)


class Matmul(Function):
    _raw = True

    @staticmethod
    def forward(ctx, a, b):
        n = ctx.needs_input_grad
        ctx.save_for_backward(a if n[1] else None, b if n[0] else None)
        ctx.shapes = (a.shape, b.shape)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        n = ctx.needs_input_grad
        if len(sa) == 2 and len(sb) == 2:
            return (g @ b.T if n[0] else None, a.T @ g if n[1] else None)
        if len(sa) == 1 and len(sb) == 1:
            return (g * b if n[0] else None, g * a if n[1] else None)
        # Promote vectors to matrices, as matmul does, then undo it on the gradients.
        g2 = g
        if len(sa) == 1:
            g2 = np.expand_dims(g2, -2)
        if len(sb) == 1:
            g2 = np.expand_dims(g2, -1)
        ga = gb = None
        if n[0]:
            b2 = b.reshape(sb[0], 1) if len(sb) == 1 else b
            ga = g2 @ _swap(b2)
            ga = unbroadcast(ga, (1, sa[0]) if len(sa) == 1 else sa).reshape(sa)
        if n[1]:
            a2 = a.reshape(1, sa[0]) if len(sa) == 1 else a
            gb = _swap(a2) @ g2
            gb = unbroadcast(gb, (sb[0], 1) if len(sb) == 1 else sb).reshape(sb)
        return ga, gb


def _check_matmul_shapes(sa, sb, name):
    if len(sa) == 0 or len(sb) == 0:
        raise RuntimeError(f"{name}: both arguments need at least 1 dimension, got shapes {list(sa)} and {list(sb)}")
    k_a = sa[-1]
    k_b = sb[0] if len(sb) == 1 else sb[-2]
    if k_a != k_b:
        left = "x".join(map(str, sa))
        right = "x".join(map(str, sb))
        raise RuntimeError(
            f"{name}: shapes cannot be multiplied ({left} and {right}): inner sizes {k_a} and {k_b} differ"
        )
    if len(sa) > 2 or len(sb) > 2:
        try:
            np.broadcast_shapes(sa[:-2], sb[:-2])
        except ValueError:
            raise RuntimeError(
                f"{name}: batch dims {list(sa[:-2])} and {list(sb[:-2])} cannot be broadcast "
                f"(shapes {list(sa)} and {list(sb)})"
            ) from None


def matmul(input, other):
    """Matrix product with NumPy/PyTorch semantics for 1-D operands and broadcast batch dims."""
    if not isinstance(input, Tensor) or not isinstance(other, Tensor):
        raise TypeError(f"matmul expects two Tensors, got {type(input).__name__} and {type(other).__name__}")
    a, b = binary_operands(input, other, "matmul")
    _check_matmul_shapes(a.data.shape, b.data.shape, "matmul")
    return Matmul.apply(a, b)


def mm(input, mat2):
    if input.data.ndim != 2 or mat2.data.ndim != 2:
        raise RuntimeError(f"mm expects 2-D tensors, got shapes {list(input.shape)} and {list(mat2.shape)}")
    return matmul(input, mat2)


def bmm(input, mat2):
    if input.data.ndim != 3 or mat2.data.ndim != 3:
        raise RuntimeError(f"bmm expects 3-D tensors, got shapes {list(input.shape)} and {list(mat2.shape)}")
    if input.data.shape[0] != mat2.data.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {input.data.shape[0]} and {mat2.data.shape[0]}")
    return matmul(input, mat2)


def dot(input, other):
    if input.data.ndim != 1 or other.data.ndim != 1:
        raise RuntimeError(f"dot expects 1-D tensors, got shapes {list(input.shape)} and {list(other.shape)}")
    return matmul(input, other)


def mv(input, vec):
    if input.data.ndim != 2 or vec.data.ndim != 1:
        raise RuntimeError(f"mv expects a matrix and a vector, got shapes {list(input.shape)} and {list(vec.shape)}")
    return matmul(input, vec)


def outer(input, vec2):
    if input.data.ndim != 1 or vec2.data.ndim != 1:
        raise RuntimeError(f"outer expects 1-D tensors, got shapes {list(input.shape)} and {list(vec2.shape)}")
    return input.unsqueeze(1) * vec2.unsqueeze(0)
