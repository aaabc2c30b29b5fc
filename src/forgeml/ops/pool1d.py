"""1-D pooling, as in ``torch.nn.functional``: ``max_pool1d``, ``avg_pool1d``, ``adaptive_avg_pool1d``,
``adaptive_max_pool1d``.

Max and average pooling run the 2-D window kernels of :mod:`forgeml.ops.conv`
on a height-1 view of the (N, C, L) or (C, L) input (no copy); adaptive
average pooling is the 2-D one's matmul. Adaptive max pooling has its own op:
one gather of every (possibly overlapping, unequal) window padded to the
longest by repeating its last element, an argmax, and a scatter-add back.
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction
from ..backend.device import namespace_of
from .conv import (
    AvgPool2d,
    MaxPool2d,
    _avg_divisor,
    _check_float,
    _check_tensor,
    _pool_out,
    _shape_str,
    adaptive_avg_pool2d,
)
from .conv1d import _single
from .shape import squeeze, unsqueeze

__all__ = ["adaptive_avg_pool1d", "adaptive_max_pool1d", "avg_pool1d", "max_pool1d"]


def _check_input(input, fn: str, floats_only: bool = True) -> None:
    _check_tensor(input, fn)
    if input._data.ndim not in (2, 3) or 0 in input._data.shape[-2:]:
        raise RuntimeError(
            f"{fn}: expected a 2D (unbatched) or 3D (batched) input with non-zero channel and length sizes "
            f"(the batch may be empty), got {_shape_str(input.shape)}"
        )
    if floats_only:
        _check_float(input, fn)
    elif input._data.dtype.kind not in "fiu" and input._data.dtype.name != "bfloat16":
        raise RuntimeError(f"{fn}: expected a floating point or integer input, got {input.dtype}")


def _geometry(input, kernel_size, stride, padding, dilation, ceil_mode, fn):
    """Checked ``(k, s, d, out, (top, bottom, left, right))`` of a 1-D pooling on the height-1 view."""
    k = _single(kernel_size, "kernel_size", fn)
    s = (
        k
        if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
        else _single(stride, "stride", fn)
    )
    p = _single(padding, "padding", fn)
    d = _single(dilation, "dilation", fn)
    if k <= 0:
        raise RuntimeError(f"{fn}: kernel_size must be greater than zero, got {k}")
    if s <= 0:
        raise RuntimeError(f"{fn}: stride must be greater than zero, got {s}")
    if d <= 0:
        raise RuntimeError(f"{fn}: dilation must be greater than zero, got {d}")
    if p < 0 or p > k // 2:
        raise RuntimeError(
            f"{fn}: pad should be between 0 and half of kernel size, but got padding={p}, kernel_size={k}"
        )
    length = input._data.shape[-1]
    out = _pool_out(length, k, s, p, d, ceil_mode)
    if out < 1:
        raise RuntimeError(
            f"{fn}: given input size {_shape_str(input.shape)}, kernel_size={k}, stride={s}, padding={p}, "
            f"dilation={d}: the calculated output length ({out}) is too small"
        )
    right = max((out - 1) * s + d * (k - 1) + 1 - length - p, 0)
    return k, s, p, d, out, (0, 0, p, right)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """1-D max pooling over (N, C, L) or (C, L); ``stride`` defaults to ``kernel_size``; ``return_indices``
    adds the index (along L) of each maximum. The gradient goes to the first maximum of each window."""
    fn = "max_pool1d"
    _check_input(input, fn, floats_only=False)
    k, s, _, d, out, pads = _geometry(input, kernel_size, stride, padding, dilation, ceil_mode, fn)
    res = MaxPool2d.apply(unsqueeze(input, -2), (1, k), (1, s), (1, d), pads, (1, out), bool(return_indices))
    if return_indices:
        values, indices = res
        return squeeze(values, -2), squeeze(indices.detach(), -2)
    return squeeze(res, -2)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """1-D average pooling over (N, C, L) or (C, L), with PyTorch's ``ceil_mode`` and ``count_include_pad``."""
    fn = "avg_pool1d"
    _check_input(input, fn)
    k, s, p, _, out, pads = _geometry(input, kernel_size, stride, padding, 1, ceil_mode, fn)
    dtype = input._data.dtype
    sizes = _avg_divisor(input._data.shape[-1], k, s, p, out, count_include_pad)
    if min(sizes) == max(sizes):
        divisor = dtype.type(sizes[0])
    else:  # a (1, out) array on the input's device
        divisor = namespace_of(input._data).asarray([sizes], dtype=dtype)
    return squeeze(AvgPool2d.apply(unsqueeze(input, -2), (1, k), (1, s), pads, (1, out), divisor), -2)


def _output_size(input, output_size, fn) -> int:
    if isinstance(output_size, (tuple, list)) and len(output_size) == 1 and output_size[0] is None:
        return input._data.shape[-1]
    out = _single(output_size, "output_size", fn)
    if out <= 0:
        raise RuntimeError(f"{fn}: output_size must be positive, got {out}")
    return out


def adaptive_avg_pool1d(input, output_size):
    """Average pooling of (N, C, L) or (C, L) to a fixed output length (window i covers
    ``[floor(i*L/out), ceil((i+1)*L/out))``)."""
    fn = "adaptive_avg_pool1d"
    _check_input(input, fn)
    out = _output_size(input, output_size, fn)
    return squeeze(adaptive_avg_pool2d(unsqueeze(input, -2), (1, out)), -2)


class AdaptiveMaxPool1d(ArrayFunction):
    """Max over the adaptive windows of the last dim; the gradient goes to the first maximum (a NaN wins)."""

    @staticmethod
    def forward(ctx, x, out, want_indices):
        xp = ctx.xp
        length = x.shape[-1]
        starts = [(i * length) // out for i in range(out)]
        ends = [-((-(i + 1) * length) // out) for i in range(out)]
        kmax = max(e - b for b, e in zip(starts, ends))
        start = xp.asarray(starts, dtype=xp.int64)
        idx = xp.minimum(start[:, None] + xp.arange(kmax), xp.asarray(ends, dtype=xp.int64)[:, None] - 1)
        # (..., out, kmax): each window padded with repeats of its last element
        windows = xp.take(x, idx.reshape(-1), axis=-1).reshape(x.shape[:-1] + idx.shape)
        values = windows.max(axis=-1)  # a NaN propagates, as in PyTorch
        if not (want_indices or ctx.needs_input_grad[0]):
            return values
        # the first maximum (or first NaN): kmax minus the largest descending weight among the hits; much faster
        # than an argmax over a short last axis
        hits = windows == values[..., None]
        if x.dtype.kind == "f" or x.dtype.name == "bfloat16":
            hits |= xp.isnan(windows)
        weights = xp.arange(kmax, 0, -1, dtype=xp.uint8 if kmax < 256 else xp.int32)
        pos = start + (kmax - (hits * weights).max(axis=-1)).astype(xp.int64)
        ctx.save_for_backward(pos)
        ctx.meta = x.shape
        return (values, pos) if want_indices else values

    @staticmethod
    def backward(ctx, g, *_):
        (pos,) = ctx.saved_tensors
        shape = ctx.meta
        xp = ctx.xp
        length = shape[-1]
        n_rows = g.size // g.shape[-1]
        rows = xp.arange(n_rows, dtype=xp.int64).reshape(g.shape[:-1] + (1,)) * length
        # a weighted bincount sums repeated positions (overlapping windows) much faster than a scatter-add
        flat = xp.bincount((rows + pos).ravel(), weights=g.ravel(), minlength=n_rows * length)
        return flat.astype(g.dtype, copy=False).reshape(shape), None, None


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """Max pooling of (N, C, L) or (C, L) to a fixed output length; ``return_indices`` adds the argmax indices."""
    fn = "adaptive_max_pool1d"
    _check_input(input, fn)
    out = _output_size(input, output_size, fn)
    res = AdaptiveMaxPool1d.apply(input, out, bool(return_indices))
    if return_indices:
        values, indices = res
        return values, indices.detach()
    return res
