"""Resampling ops: ``pad``, ``interpolate``, ``pixel_shuffle`` and ``pixel_unshuffle``.

Padding in the ``reflect``/``replicate``/``circular`` modes and every
interpolation mode are separable: along each resampled dim, output position
``o`` reads input positions through a map. An index map (``nearest``, the pad
modes) gathers with ``xp.take`` forward; a weight map (``linear``, ``area``)
is a ``[n_out, n_in]`` matrix applied with one GEMM. Backward applies each
map's matrix transposed (an index map's matrix is one-hot), so the gradient
of a gathered element reaches every input it was read from. ``constant``
padding copies the input into a filled array and slices the gradient back.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_XP
from ..backend.dtypes import is_float
from ..tensor import Tensor
from .shape import permute, reshape

__all__ = [
    "interpolate",
    "pad",
    "pixel_shuffle",
    "pixel_unshuffle",
    "upsample",
    "upsample_bilinear",
    "upsample_nearest",
]


# ------------------------------------------------------------------ axis maps
class AxisMap:
    """How one dim is resampled: an index per output position, or a ``[n_out, n_in]`` weight matrix.

    ``index(xp)`` returns the int64 source positions (or None for a weight
    map); ``matrix(xp, dtype)`` the matrix (one-hot rows for an index map).
    """

    def __init__(self, axis: int, n_in: int, n_out: int, index_fn=None, weight_fn=None) -> None:
        self.axis, self.n_in, self.n_out = axis, n_in, n_out
        self._index_fn, self._weight_fn = index_fn, weight_fn
        self.gathers = index_fn is not None

    def index(self, xp):
        return None if self._index_fn is None else self._index_fn(xp).astype(xp.int64)

    def matrix(self, xp, dtype):
        if self._index_fn is not None:
            idx = self.index(xp)
            return (idx[:, None] == xp.arange(self.n_in)[None, :]).astype(dtype)
        return self._weight_fn(xp, dtype)


_MAX_SLICE_SEGMENTS = 64  # a non-monotonic index map in at most this many contiguous runs: one slice-add per run


def _gather_backward(xp, g, axis, m):
    """The gradient of ``take(x, idx, axis)``: ``g`` summed into the input positions it was read from.

    A non-decreasing index (nearest, replicate) is one segmented sum
    (``add.reduceat``); an index made of a few contiguous runs (reflect,
    circular) is one slice-add per run; anything else is a GEMM with the
    one-hot matrix.
    """
    idx = m.index(HOST_XP)  # the map's structure is read on the host; the sums run on g's device
    steps = HOST_XP.diff(idx)
    pre = (slice(None),) * axis
    gx = xp.zeros(g.shape[:axis] + (m.n_in,) + g.shape[axis + 1 :], dtype=g.dtype)
    if (steps >= 0).all():
        starts = HOST_XP.flatnonzero(HOST_XP.concatenate(([True], steps != 0)))
        gx[pre + (xp.asarray(idx[starts]),)] = xp.add.reduceat(g, xp.asarray(starts), axis=axis)
        return gx
    bounds = [0, *(HOST_XP.flatnonzero(steps != 1) + 1).tolist(), idx.size]
    if len(bounds) - 1 > _MAX_SLICE_SEGMENTS:
        return _along(xp, g, axis, m.matrix(xp, g.dtype).T)
    for s, e in itertools.pairwise(bounds):
        a = int(idx[s])
        gx[pre + (slice(a, a + e - s),)] += g[pre + (slice(s, e),)]
    return gx


def _along(xp, x, axis, mat):
    """``y[..., o, ...] = sum_i mat[o, i] * x[..., i, ...]`` along ``axis``, as one 2-D GEMM."""
    moved = xp.moveaxis(x, axis, -1)
    lead = moved.shape[:-1]
    out = xp.ascontiguousarray(moved).reshape(-1, moved.shape[-1]) @ mat.T
    return xp.ascontiguousarray(xp.moveaxis(out.reshape(lead + (mat.shape[0],)), -1, axis))


class _Resample(ArrayFunction):
    """Apply ``maps`` (one per resampled dim) in turn; backward applies their transposes in reverse."""

    @staticmethod
    def forward(ctx, x, maps):
        xp = ctx.xp
        ctx.maps = maps
        if not maps:
            return x.copy()  # a new tensor, never an alias of the input
        for m in maps:
            idx = m.index(xp)
            if idx is not None:
                x = xp.take(x, idx, axis=m.axis)
            else:
                x = _along(xp, x, m.axis, m.matrix(xp, x.dtype))
        return x

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        for m in reversed(ctx.maps):
            if m.gathers:
                g = _gather_backward(xp, g, m.axis, m)
            else:
                g = _along(xp, g, m.axis, m.matrix(xp, g.dtype).T)
        return g, None


class PadIndexed(_Resample):
    """``pad`` in the reflect, replicate and circular modes (an index map per padded dim)."""


class Interpolate(_Resample):
    """``interpolate`` in every supported mode (an index or weight map per spatial dim)."""


# ------------------------------------------------------------------ pad
class ConstantPad(ArrayFunction):
    """Copy the (cropped, for negative padding) input into an array filled with ``value``."""

    @staticmethod
    def forward(ctx, x, pairs, value):
        xp = ctx.xp
        src, dst, out_shape = [], [], []
        for n, (lo, hi) in zip(x.shape, pairs):
            out_shape.append(n + lo + hi)
            kept = max(n + min(lo, 0) + min(hi, 0), 0)  # input positions that survive the cropping
            src.append(slice(max(-lo, 0), max(-lo, 0) + kept))
            dst.append(slice(max(lo, 0), max(lo, 0) + kept))
        ctx.meta = (x.shape, tuple(src), tuple(dst))
        out = xp.full(tuple(out_shape), value, dtype=x.dtype)
        out[tuple(dst)] = x[tuple(src)]
        return out

    @staticmethod
    def backward(ctx, g):
        in_shape, src, dst = ctx.meta
        gx = ctx.xp.zeros(in_shape, dtype=g.dtype)
        gx[src] = g[dst]
        return gx, None, None


def _source_index(mode: str, n: int, lo: int, n_out: int):
    """The input position read by each output position of a dim of size ``n`` padded by ``lo`` in front."""

    def index_fn(xp):
        s = xp.arange(n_out) - lo
        if mode == "replicate":
            return xp.clip(s, 0, n - 1)
        if mode == "circular":  # crop first (negative padding), then wrap around what is left
            kept = n + min(lo, 0) + min(n_out - n - lo, 0)
            return max(-lo, 0) + (xp.arange(n_out) - max(lo, 0)) % kept
        s = xp.abs(s)  # reflect: mirror at 0, then at n - 1
        return (n - 1) - xp.abs((n - 1) - s)

    return index_fn


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _check_pad_sizes(mode, shape, pairs, first):
    for k, (lo, hi) in enumerate(pairs):
        d = first + k
        n = shape[d]
        if mode == "reflect" and (lo >= n or hi >= n):
            raise RuntimeError(
                f"pad: padding size should be less than the corresponding input dimension in reflect mode, but got "
                f"padding ({lo}, {hi}) at dimension {d} of input of shape {list(shape)}"
            )
        if mode == "circular" and (lo > n or hi > n):
            raise RuntimeError(
                f"pad: padding value causes wrapping around more than once in circular mode: padding ({lo}, {hi}) "
                f"at dimension {d} of input of shape {list(shape)}"
            )
        if mode != "constant" and n == 0:
            raise RuntimeError(f"pad: {mode} padding needs non-empty dims, got input of shape {list(shape)}")
        if n + min(lo, 0) + min(hi, 0) < (0 if mode == "constant" else 1):
            raise RuntimeError(
                f"pad: the input size {n}, plus negative padding {lo} and {hi} resulted in a negative output size "
                f"at dimension {d} (input shape {list(shape)})"
            )


def pad(input, pad, mode: str = "constant", value=None):
    """Pad ``input``: ``pad`` lists (left, right) pairs starting from the last dim and going backwards.

    ``mode='constant'`` fills with ``value`` (default 0) on any number of dims,
    and negative padding crops. ``'reflect'`` (mirror without repeating the
    edge), ``'replicate'`` (repeat the edge) and ``'circular'`` (wrap around)
    pad the last 1, 2 or 3 dims of a 2-3, 3-4 or 4-5 dim input, as in PyTorch.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"pad(): expected a Tensor as input, got {type(input).__name__}")
    pad = tuple(int(p) for p in pad)
    nd = input._data.ndim
    if len(pad) % 2:
        raise RuntimeError(f"pad: padding length must be divisible by 2, got {len(pad)} values {list(pad)}")
    if len(pad) // 2 > nd:
        raise RuntimeError(
            f"pad: padding length should be less than or equal to two times the input dimension but got padding "
            f"length {len(pad)} and input of dimension {nd}"
        )
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"pad: unsupported padding mode {mode!r}; expected one of {_PAD_MODES}")
    k = len(pad) // 2
    pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(k)][::-1]  # first padded dim first
    first = nd - k
    shape = input._data.shape
    if mode == "constant":
        _check_pad_sizes(mode, shape, pairs, first)
        fill = 0 if value is None else value
        if input._data.dtype.kind in "biu" and isinstance(fill, float) and not float(fill).is_integer():
            raise RuntimeError(f"pad: value {fill} cannot be converted to {input.dtype} without overflow")
        full_pairs = ((0, 0),) * first + tuple(pairs)
        return ConstantPad.apply(input, full_pairs, fill)
    if value is not None and value != 0:
        raise RuntimeError(f'pad: padding mode "{mode}" doesn\'t take in value argument (got value={value})')
    if not (k in (1, 2, 3) and nd in (k + 1, k + 2)):
        raise NotImplementedError(
            f"pad: {mode} padding pads the last 1, 2 or 3 dims of a 2-3, 3-4 or 4-5 dim input; got padding "
            f"length {len(pad)} for an input of dimension {nd} (only 2D, 3D, 4D, 5D padding with non-constant "
            "padding are supported)"
        )
    _check_pad_sizes(mode, shape, pairs, first)
    maps = []
    for i, (lo, hi) in enumerate(pairs):
        n = shape[first + i]
        maps.append(AxisMap(first + i, n, n + lo + hi, _source_index(mode, n, lo, n + lo + hi)))
    return PadIndexed.apply(input, tuple(maps))


# ------------------------------------------------------------------ interpolate
_INTERP_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area")
_LINEAR_DIMS = {"linear": 3, "bilinear": 4, "trilinear": 5}


def _scale_dtype(xp, dtype):
    """The dtype PyTorch computes source positions in: double for float64 inputs, float otherwise."""
    return xp.float64 if dtype == xp.float64 else xp.float32


def _inverse_scale(xp, ft, n_in, n_out, scale_factor):
    """PyTorch's ``compute_scales_value``: ``1 / scale_factor`` when one was given, else ``n_in / n_out``."""
    if scale_factor is not None and scale_factor > 0:
        return ft(1.0 / scale_factor)
    return ft(n_in) / ft(n_out)


def _nearest_map(axis, n_in, n_out, scale_factor, exact, shortcuts):
    """``shortcuts``: PyTorch's legacy 'nearest' kernel for 4-D inputs copies a dim whose size is kept and
    halves the index of a dim whose size doubles, whatever ``scale_factor`` says (its 3-D and 5-D kernels
    apply the formula)."""

    def index_fn(xp):
        if shortcuts and n_out == n_in:
            return xp.arange(n_out)
        if shortcuts and n_out == 2 * n_in:
            return xp.arange(n_out) // 2
        scale = _inverse_scale(xp, xp.float32, n_in, n_out, scale_factor)
        pos = xp.arange(n_out, dtype=xp.float32)
        if exact:
            pos = pos + xp.float32(0.5)
        return xp.minimum(xp.floor(pos * scale).astype(xp.int64), n_in - 1)

    return AxisMap(axis, n_in, n_out, index_fn=index_fn)


def _one_hot_rows(xp, idx, n, dtype):
    return (idx[:, None] == xp.arange(n)[None, :]).astype(dtype)


def _linear_map(axis, n_in, n_out, scale_factor, align_corners):
    def weight_fn(xp, dtype):
        ft = _scale_dtype(xp, dtype)
        pos = xp.arange(n_out, dtype=ft)
        if align_corners:
            scale = ft(n_in - 1) / ft(n_out - 1) if n_out > 1 else ft(0)
            src = pos * scale
        else:
            scale = _inverse_scale(xp, ft, n_in, n_out, scale_factor)
            src = xp.maximum(scale * (pos + ft(0.5)) - ft(0.5), ft(0))
        i0 = xp.minimum(src.astype(xp.int64), n_in - 1)
        i1 = i0 + (i0 < n_in - 1)
        lam1 = xp.clip(src - i0.astype(ft), 0, 1)
        lam0 = 1 - lam1
        w = _one_hot_rows(xp, i0, n_in, ft) * lam0[:, None] + _one_hot_rows(xp, i1, n_in, ft) * lam1[:, None]
        return w.astype(dtype)

    return AxisMap(axis, n_in, n_out, weight_fn=weight_fn)


def _area_map(axis, n_in, n_out):
    def weight_fn(xp, dtype):
        o = xp.arange(n_out)
        start = (o * n_in) // n_out
        end = ((o + 1) * n_in + n_out - 1) // n_out
        i = xp.arange(n_in)
        inside = (i[None, :] >= start[:, None]) & (i[None, :] < end[:, None])
        return (inside / (end - start)[:, None]).astype(dtype)

    return AxisMap(axis, n_in, n_out, weight_fn=weight_fn)


def _per_dim(value, dim: int, name: str, spatial):
    if isinstance(value, (tuple, list)):
        if len(value) != dim:
            raise ValueError(
                f"interpolate: input and {name} must have the same number of spatial dimensions, but got input "
                f"with spatial dimensions of {list(spatial)} and {name} {list(value)}"
            )
        return list(value)
    return [value] * dim


def _check_interp_mode(mode, nd, align_corners, antialias):
    if mode not in _INTERP_MODES:
        raise NotImplementedError(
            f"interpolate: unsupported mode {mode!r}; expected one of {_INTERP_MODES} (bicubic is not implemented)"
        )
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    if nd not in (3, 4, 5):
        raise NotImplementedError(
            f"interpolate: only 3D, 4D and 5D input tensors are supported (got {nd}D) for mode {mode!r}"
        )
    want = _LINEAR_DIMS.get(mode)
    if want is not None and nd != want:
        raise NotImplementedError(f"interpolate: got {nd}D input, but {mode} mode needs {want}D input")
    if align_corners is not None and want is None:
        raise ValueError(
            "align_corners option can only be set with the interpolating modes: linear | bilinear | bicubic | "
            f"trilinear (got mode {mode!r})"
        )


def interpolate(
    input,
    size=None,
    scale_factor=None,
    mode: str = "nearest",
    align_corners=None,
    recompute_scale_factor=None,
    antialias: bool = False,
):
    """Resize the spatial dims (all dims after the first two) of ``input`` to ``size`` or by ``scale_factor``.

    ``mode``: ``'nearest'`` (PyTorch's legacy rule: source ``floor(dst * scale)``),
    ``'nearest-exact'``, ``'linear'`` (3-D), ``'bilinear'`` (4-D), ``'trilinear'``
    (5-D) with ``align_corners`` True or False (None means False), and ``'area'``
    (adaptive average pooling). With ``scale_factor`` the output size is
    ``floor(in * scale_factor)`` and the scale used is ``1 / scale_factor``
    unless ``recompute_scale_factor=True``, as in PyTorch.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"interpolate(): expected a Tensor as input, got {type(input).__name__}")
    nd = input._data.ndim
    _check_interp_mode(mode, nd, align_corners, antialias)
    spatial = input._data.shape[2:]
    dim = nd - 2
    if size is not None and scale_factor is not None:
        raise ValueError("interpolate: only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError("interpolate: either size or scale_factor should be defined")
    if recompute_scale_factor and size is not None:
        raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
    if size is not None:
        out_size = [int(s) for s in _per_dim(size, dim, "output size", spatial)]
        scales = [None] * dim
    else:
        scales = [float(s) for s in _per_dim(scale_factor, dim, "scale_factor", spatial)]
        out_size = [math.floor(float(n) * s) for n, s in zip(spatial, scales)]
        if recompute_scale_factor or mode == "area":
            scales = [None] * dim
    if any(s <= 0 for s in out_size) or any(n <= 0 for n in spatial):
        raise RuntimeError(
            f"interpolate: input {list(spatial)} and output {out_size} sizes should be greater than 0 (spatial dims "
            f"of input shape {list(input.shape)})"
        )
    if mode not in ("nearest", "nearest-exact") and not is_float(input._data.dtype):
        raise RuntimeError(f"interpolate: mode {mode!r} expects a floating point input, got {input.dtype}")
    maps = []
    for i, (n_in, n_out, s) in enumerate(zip(spatial, out_size, scales)):
        axis = 2 + i
        if mode in ("nearest", "nearest-exact"):
            maps.append(_nearest_map(axis, n_in, n_out, s, mode == "nearest-exact", mode == "nearest" and nd == 4))
        elif n_out == n_in and mode != "area":
            continue  # PyTorch's linear kernels copy a dim whose size is kept, whatever scale_factor says
        elif mode == "area":
            maps.append(_area_map(axis, n_in, n_out))
        else:
            maps.append(_linear_map(axis, n_in, n_out, s, bool(align_corners)))
    return Interpolate.apply(input, tuple(maps))


def upsample(input, size=None, scale_factor=None, mode: str = "nearest", align_corners=None):
    """Deprecated alias of ``interpolate`` (PyTorch warns that ``nn.functional.upsample`` is deprecated)."""
    warnings.warn("`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=2)
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    """Deprecated: ``interpolate(input, size, scale_factor, mode='nearest')``."""
    warnings.warn(
        "`nn.functional.upsample_nearest` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=2
    )
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """Deprecated: ``interpolate(input, size, scale_factor, mode='bilinear', align_corners=True)``."""
    warnings.warn(
        "`nn.functional.upsample_bilinear` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=2
    )
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


# ------------------------------------------------------------------ pixel shuffle
def _check_factor(factor, name: str) -> int:
    if not isinstance(factor, numbers.Integral) or isinstance(factor, bool) or factor <= 0:
        raise RuntimeError(f"{name}: expected a positive integer factor, got {factor!r}")
    return int(factor)


def pixel_shuffle(input, upscale_factor: int):
    """``[*, C * r^2, H, W]`` to ``[*, C, H * r, W * r]``: each group of ``r^2`` channels becomes an r x r block."""
    r = _check_factor(upscale_factor, "pixel_shuffle")
    shape = input._data.shape
    if len(shape) < 3:
        raise RuntimeError(
            f"pixel_shuffle expects input to have at least 3 dimensions, but got input with {len(shape)}"
        )
    c, h, w = shape[-3:]
    if c % (r * r):
        raise RuntimeError(
            f"pixel_shuffle expects its input's 'channel' dimension to be divisible by the square of upscale_factor, "
            f"but input.size(-3)={c} is not divisible by {r * r}"
        )
    lead = shape[:-3]
    b = len(lead)
    x = reshape(input, lead + (c // (r * r), r, r, h, w))
    x = permute(x, tuple(range(b)) + (b, b + 3, b + 1, b + 4, b + 2))
    return reshape(x, lead + (c // (r * r), h * r, w * r))


def pixel_unshuffle(input, downscale_factor: int):
    """The inverse of ``pixel_shuffle``: ``[*, C, H * r, W * r]`` to ``[*, C * r^2, H, W]``."""
    r = _check_factor(downscale_factor, "pixel_unshuffle")
    shape = input._data.shape
    if len(shape) < 3:
        raise RuntimeError(
            f"pixel_unshuffle expects input to have at least 3 dimensions, but got input with {len(shape)}"
        )
    c, h, w = shape[-3:]
    if h % r or w % r:
        raise RuntimeError(
            f"pixel_unshuffle expects height ({h}) and width ({w}) to be divisible by downscale_factor ({r})"
        )
    lead = shape[:-3]
    b = len(lead)
    x = reshape(input, lead + (c, h // r, r, w // r, r))
    x = permute(x, tuple(range(b)) + (b, b + 2, b + 4, b + 1, b + 3))
    return reshape(x, lead + (c * r * r, h // r, w // r))
