"""Shape arithmetic shared by autograd, tensors and ops: dims, sizes, broadcasting.

Pure functions of shapes (tuples of ints); :func:`sum_to_shape` is the one
place where a broadcast gradient is summed back to its input's shape.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "broadcast_shapes",
    "broadcasts_to",
    "normalize_dim",
    "normalize_dims",
    "size_args",
    "sum_to_shape",
]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def normalize_dim(dim, ndim: int, *, allow_end: bool = False) -> int:
    """A dim in ``[-ndim, ndim)`` (``[-ndim-1, ndim]`` with ``allow_end``) as a non-negative int."""
    if not _is_int(dim):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    size = ndim + 1 if allow_end else ndim
    low, high = -max(size, 1), max(size, 1) - 1
    if not low <= dim <= high:
        raise IndexError(f"Dimension out of range (expected to be in range of [{low}, {high}], but got {dim})")
    return int(dim) % max(size, 1)


def normalize_dims(dim, ndim: int) -> tuple[int, ...]:
    """``dim`` (None, an int, or a sequence of ints) as a sorted tuple of distinct non-negative dims."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (list, tuple)):
        dims = tuple(normalize_dim(d, ndim) for d in dim)
        if len(set(dims)) != len(dims):
            raise RuntimeError(f"dim {list(dim)} appears multiple times in the list of dims")
        return tuple(sorted(dims))
    return (normalize_dim(dim, ndim),)


def size_args(sizes, name: str) -> tuple[int, ...]:
    """Accept ``f(2, 3)`` and ``f((2, 3))`` alike; every size must be an int (or a one-element tensor)."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    out = []
    for s in sizes:
        if hasattr(s, "item") and not _is_int(s):  # a one-element tensor or array
            s = s.item()
        if not _is_int(s):
            raise TypeError(f"{name}(): sizes must be ints, got {type(s).__name__} in {list(sizes)}")
        # a Python int is kept as it is: an int subclass carries meaning for tracers (ONNX export's symbolic
        # sizes read from x.shape); NumPy integers and tensor items become plain ints
        out.append(s if isinstance(s, int) and not isinstance(s, bool) else int(s))
    return tuple(out)


def broadcast_shapes(*shapes) -> tuple[int, ...]:
    """The shape that ``shapes`` broadcast to; ValueError when they do not."""
    return np.broadcast_shapes(*shapes)


def broadcasts_to(shape, target) -> bool:
    """True when an array of ``shape`` broadcasts to exactly ``target`` (what in-place ops and masks need)."""
    if tuple(shape) == tuple(target):
        return True
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def sum_to_shape(grad, shape):
    """Sum ``grad`` back to ``shape``: over the leading dims broadcasting added, then over its size-1 dims.

    ``grad`` is an array of any namespace; its shape must be ``shape``
    broadcast to something (ValueError otherwise, which autograd turns into an
    error naming the op).
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise ValueError(f"a gradient of shape {list(grad.shape)} does not reduce to shape {list(shape)}")
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    if grad.shape != tuple(shape):
        raise ValueError(f"a gradient of shape {list(grad.shape)} does not reduce to shape {list(shape)}")
    return grad
