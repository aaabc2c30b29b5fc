"""Matrix products: ``matmul`` (1-D, 2-D, batched, broadcast batch dims) and its aliases.

``matmul``, ``mm``, ``bmm`` and ``mv`` are in PyTorch's autocast lower-precision
list: under ``forgeml.autocast`` their floating inputs are cast to the autocast
dtype first. Autograd sums the gradients of broadcast batch dims back to each
input's shape.
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction
from ..backend.shapes import broadcast_shapes
from ..tensor import Tensor
from . import _autocast
from ._util import binary_operands

__all__ = ["bmm", "dot", "matmul", "mm", "mv", "outer"]

_autocast_state = _autocast.state


class Matmul(ArrayFunction):
    @staticmethod
    def forward(ctx, a, b):
        n = ctx.needs_input_grad
        ctx.save_for_backward(a if n[1] else None, b if n[0] else None)
        ctx.ndims = (a.ndim, b.ndim)
        out = ctx.xp.matmul(a, b)
        if out.dtype != a.dtype:  # NumPy's matmul of ml_dtypes' bfloat16 accumulates in and returns float32
            out = out.astype(a.dtype)
        return out

    @staticmethod
    def backward(ctx, g):
        ga, gb = _matmul_grads(ctx, g)
        if ga is not None and ga.dtype != g.dtype:  # bfloat16 (see forward)
            ga = ga.astype(g.dtype)
        if gb is not None and gb.dtype != g.dtype:
            gb = gb.astype(g.dtype)
        return ga, gb


def _matmul_grads(ctx, g):
    a, b = ctx.saved_tensors
    nda, ndb = ctx.ndims
    n = ctx.needs_input_grad
    if nda == 2 and ndb == 2:
        return (g @ b.T if n[0] else None, a.T @ g if n[1] else None)
    if nda == 1 and ndb == 1:
        return (g * b if n[0] else None, g * a if n[1] else None)
    # Promote vectors to matrices, as matmul does, then drop the added dim from the gradients;
    # the gradients keep the broadcast batch dims, which autograd sums back to each input's shape.
    xp = ctx.xp
    g2 = g
    if nda == 1:
        g2 = xp.expand_dims(g2, -2)
    if ndb == 1:
        g2 = xp.expand_dims(g2, -1)
    ga = gb = None
    if n[0]:
        b2 = b.reshape(b.shape[0], 1) if ndb == 1 else b
        ga = g2 @ b2.swapaxes(-1, -2)
        if nda == 1:
            ga = ga.squeeze(axis=-2)
    if n[1]:
        a2 = a.reshape(1, a.shape[0]) if nda == 1 else a
        gb = a2.swapaxes(-1, -2) @ g2
        if ndb == 1:
            gb = gb.squeeze(axis=-1)
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
            broadcast_shapes(sa[:-2], sb[:-2])
        except ValueError:
            raise RuntimeError(
                f"{name}: batch dims {list(sa[:-2])} and {list(sb[:-2])} cannot be broadcast "
                f"(shapes {list(sa)} and {list(sb)})"
            ) from None


def _matmul(input, other, name):
    if not isinstance(input, Tensor) or not isinstance(other, Tensor):
        raise TypeError(f"{name} expects two Tensors, got {type(input).__name__} and {type(other).__name__}")
    a, b = binary_operands(input, other, name)
    _check_matmul_shapes(a._data.shape, b._data.shape, name)
    return Matmul.apply(a, b)


def matmul(input, other):
    """Matrix product with NumPy/PyTorch semantics for 1-D operands and broadcast batch dims."""
    if _autocast_state.active:
        input, other = _autocast.lower(input, other)
    return _matmul(input, other, "matmul")


def mm(input, mat2):
    if _autocast_state.active:
        input, mat2 = _autocast.lower(input, mat2)
    if input._data.ndim != 2 or mat2._data.ndim != 2:
        raise RuntimeError(f"mm expects 2-D tensors, got shapes {list(input.shape)} and {list(mat2.shape)}")
    return _matmul(input, mat2, "matmul")


def bmm(input, mat2):
    if _autocast_state.active:
        input, mat2 = _autocast.lower(input, mat2)
    if input._data.ndim != 3 or mat2._data.ndim != 3:
        raise RuntimeError(f"bmm expects 3-D tensors, got shapes {list(input.shape)} and {list(mat2.shape)}")
    if input._data.shape[0] != mat2._data.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {input._data.shape[0]} and {mat2._data.shape[0]}")
    return _matmul(input, mat2, "matmul")


def dot(input, other):
    """Inner product of two 1-D tensors (not in autocast's lower-precision list: it keeps its inputs' dtype)."""
    if input._data.ndim != 1 or other._data.ndim != 1:
        raise RuntimeError(f"dot expects 1-D tensors, got shapes {list(input.shape)} and {list(other.shape)}")
    return _matmul(input, other, "matmul")


def mv(input, vec):
    if _autocast_state.active:
        input, vec = _autocast.lower(input, vec)
    if input._data.ndim != 2 or vec._data.ndim != 1:
        raise RuntimeError(f"mv expects a matrix and a vector, got shapes {list(input.shape)} and {list(vec.shape)}")
    return _matmul(input, vec, "matmul")


def outer(input, vec2):
    if input._data.ndim != 1 or vec2._data.ndim != 1:
        raise RuntimeError(f"outer expects 1-D tensors, got shapes {list(input.shape)} and {list(vec2.shape)}")
    return input.unsqueeze(1) * vec2.unsqueeze(0)
