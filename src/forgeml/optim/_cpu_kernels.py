"""The CPU halves of the optimizer update kernels: blocked, cache-sized, in-place NumPy passes.

An update kernel (``_adam_kernel``, ``_sgd_kernel``, ...) is a function
``kernel(xp, p, g, *buffers, s, s2, *consts)`` that updates the parameter
``p`` and its state ``buffers`` in place with ``xp`` ufuncs and ``out=``; ``s``
and ``s2`` are scratch arrays. On another device it runs once on the whole
arrays. On the CPU it runs here, over cache-sized blocks of the flat arrays,
so the dozen passes an update makes over each block stay in the CPU cache,
and the only scratch memory is one block-sized buffer per dtype, shared by
all parameters. State buffers start on a 64-byte (cache line) boundary.
"""

from __future__ import annotations

import numpy as np  # noqa: TID251 - CPU halves of the optimizer update kernels

__all__ = ["BLOCK_BYTES", "aligned_copy", "aligned_empty", "aligned_full", "blocked_update"]

BLOCK_BYTES = 1 << 17  # 128 KiB per array per block: the arrays of one block fit in L2 together


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous NumPy array whose data starts on a 64-byte (cache line) boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + 64, dtype=np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + n].view(dtype).reshape(shape)


def aligned_full(shape, dtype, fill: float) -> np.ndarray:
    """``aligned_empty`` filled with ``fill`` (a state buffer of the CPU)."""
    array = aligned_empty(shape, dtype)
    array.fill(fill)
    return array


def aligned_copy(array: np.ndarray, dtype) -> np.ndarray:
    """An aligned C-contiguous copy of the host array ``array``, cast to ``dtype``."""
    out = aligned_empty(array.shape, dtype)
    out[...] = array
    return out


def _scratch_for(cache: dict, dtype, count: int, size: int):
    """Two flat scratch arrays of ``size`` elements (the second None unless ``count`` is 2).

    They are views of block-sized buffers kept in ``cache`` (one optimizer's), shared by all its parameters.
    """
    bufs = cache.get(dtype)
    if bufs is None or len(bufs) < count or bufs[0].size < size:
        n = max(size, bufs[0].size if bufs else 0)
        bufs = [aligned_empty((n,), dtype) for _ in range(max(count, len(bufs) if bufs else 0))]
        cache[dtype] = bufs
    return bufs[0][:size], (bufs[1][:size] if count > 1 else None)


def blocked_update(cache: dict, kernel, p: np.ndarray, g: np.ndarray, buffers, n_scratch: int, consts) -> None:
    """Run ``kernel(np, p, g, *buffers, s, s2, *consts)`` over C-contiguous host arrays in cache-sized blocks.

    ``p`` and every buffer in ``buffers`` (state arrays shaped like ``p``, or
    None) must be C-contiguous NumPy arrays; ``g`` may have any layout.
    """
    if not g.flags.c_contiguous:
        g = np.ascontiguousarray(g)
    n = p.size
    block = max(BLOCK_BYTES // p.itemsize, 1)
    fp = p.reshape(-1)
    fg = g.reshape(-1)
    fb = [None if b is None else b.reshape(-1) for b in buffers]
    s, s2 = _scratch_for(cache, p.dtype, n_scratch, min(n, block))
    if n <= block:
        kernel(np, fp, fg, *fb, s, s2, *consts)
        return
    for i in range(0, n, block):
        j = i + block
        if j > n:
            j = n
            s = s[: j - i]
            s2 = None if s2 is None else s2[: j - i]
        kernel(np, fp[i:j], fg[i:j], *[None if b is None else b[i:j] for b in fb], s, s2, *consts)
