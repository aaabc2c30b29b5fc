"""Convolution, pooling and batch-norm kernels, and their functional forms (as in ``torch.nn.functional``).

Layout is NCHW (an unbatched CHW input is accepted wherever PyTorch accepts
one). The convolution is an im2col: a strided window view of the padded input
(``as_strided``, no copy) is gathered by one copy into a contiguous
``(C*kh*kw, N*OH*OW)`` matrix, and one batched GEMM over the groups with the
``(out, C*kh*kw)`` weight gives the output. Backward is two GEMMs and a col2im
that adds each of the ``kh*kw`` kernel positions back into the input gradient
with one strided add. Pooling loops over kernel positions the same way; no
kernel loops over pixels or batch items in Python.

Every op computes through ``ctx.xp``. The window kernels have a CPU half
(``xp is HOST_XP``: read-only window views, preallocated ``out=`` buffers,
NumPy-only shortcuts that check the data on the host) and a portable half that
uses only names CuPy has and never reads device data back to the host (no
synchronising checks), which is what runs on a GPU.
"""

from __future__ import annotations

import math
import numbers

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_XP, namespace_of
from ..backend.dtypes import is_float
from ..tensor import Tensor
from . import _autocast

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "conv2d", "max_pool2d", "mode_pad"]


# ----------------------------------------------------------------- helpers
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _pair(value, name: str, fn: str) -> tuple[int, int]:
    """``value`` (an int or a sequence of one or two ints) as a pair of ints."""
    if _is_int(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
        if len(value) == 1:
            return int(value[0]), int(value[0])
        if len(value) == 2:
            return int(value[0]), int(value[1])
    raise TypeError(f"{fn}: {name} must be an int or a tuple of two ints, got {value!r}")


def _shape_str(shape) -> str:
    return str(list(shape))


def _check_tensor(input, fn: str) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{fn}: expected a Tensor as input, got {type(input).__name__}")


def _check_float(t: Tensor, fn: str, what: str = "input") -> None:
    if not is_float(t._data.dtype):
        raise RuntimeError(f"{fn}: expected a floating point {what}, got {t.dtype}")


def _spatial_slices(k, stride, dilation, out_hw):
    """For each kernel position (i, j): the slices of the padded input that it reads for every output pixel."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = k, stride, dilation, out_hw
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        for j in range(kw):
            yield i, j, (Ellipsis, rows, slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def _pad_hw(xp, x, pads, value=0.0):
    """``x`` padded on its last two dims by ``(top, bottom, left, right)``, filled with ``value``."""
    top, bottom, left, right = pads
    if not (top or bottom or left or right):
        return x
    h, w = x.shape[-2:]
    out = xp.full(x.shape[:-2] + (h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[..., top : top + h, left : left + w] = x
    return out


def _crop_hw(xp, g, pads, hw):
    """The inverse of ``_pad_hw`` for gradients: the interior of ``g`` (contiguous)."""
    top, _, left, _ = pads
    h, w = hw
    if g.shape[-2:] == (h, w):
        return g
    return xp.ascontiguousarray(g[..., top : top + h, left : left + w])


def _lowest(xp, dtype):
    """The fill that never wins a max: -inf for floats, the smallest integer otherwise."""
    return -math.inf if is_float(dtype) else int(xp.iinfo(dtype).min)


def _conv_out(size, k, s, p_total, d):
    return (size + p_total - d * (k - 1) - 1) // s + 1


class _ConvGrid:
    """Where every kernel position reads, in a padded input flattened to ``(..., Hp*Wp + tail)``.

    Output pixel ``(oh, q)`` under kernel position ``(i, j)`` reads flat element
    ``i*dh*Wp + j*dw + oh*sh*Wp + q*sw``. With unit stride along W the grid is made
    ``Wp`` wide (``q`` runs past ``OW`` into junk columns that are computed and
    dropped) so that each kernel position reads one long contiguous run instead
    of ``OH`` short rows; im2col and col2im then stream memory. ``tail`` zeros
    after the image keep the junk reads of the last row in bounds.

    The windows are ``as_strided`` views, which NumPy and CuPy both have; the
    CPU half differs only in taking them read-only and in checking the input
    for inf/NaN on the host (the portable half zeroes the junk columns instead,
    which needs no device-to-host read).
    """

    def __init__(self, hw, wshape, stride, pads, dilation):
        h, w = hw
        self.kh, self.kw = wshape[2:]
        self.stride, self.dilation, self.pads, self.hw = stride, dilation, pads, hw
        self.hp, self.wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
        self.oh = _conv_out(h, self.kh, stride[0], pads[0] + pads[1], dilation[0])
        self.ow = _conv_out(w, self.kw, stride[1], pads[2] + pads[3], dilation[1])
        wide = stride[1] == 1 and self.ow < self.wp and 4 * (self.wp - self.ow) <= self.ow
        self.q = self.wp if wide else self.ow
        self.tail = (self.kw - 1) * dilation[1] if wide else 0
        self.flat = self.hp * self.wp + self.tail

    def _strides(self, itemsize):
        """Element steps, in bytes, of (kernel row, kernel column, output row, output column) in the flat image."""
        (sh, sw), (dh, dw), wp = self.stride, self.dilation, self.wp
        return dh * wp * itemsize, dw * itemsize, sh * wp * itemsize, sw * itemsize

    def _image(self, xp, flat):
        """The (A, B, Hp, Wp) image at the start of a flat (A, B, Hp*Wp + tail) buffer, as a view.

        NumPy's reshape of the sliced buffer is a view; the portable half builds the view with ``as_strided``,
        so that a write through it can never land in a silent copy.
        """
        a, b = flat.shape[:2]
        if xp is HOST_XP:
            return flat[:, :, : self.hp * self.wp].reshape(a, b, self.hp, self.wp)
        itemsize = flat.itemsize
        strides = flat.strides[:2] + (self.wp * itemsize, itemsize)
        return xp.lib.stride_tricks.as_strided(flat, (a, b, self.hp, self.wp), strides)

    def im2col(self, xp, x):
        """Columns (C, kh, kw, N, OH, Q), contiguous: one copy from a strided window view, no loop over pixels."""
        n, c, h, w = x.shape
        top, _, left, _ = self.pads
        if self.flat == h * w and x.flags.c_contiguous:
            xf = x.reshape(n, c, h * w)
        else:
            xf = xp.zeros((n, c, self.flat), dtype=x.dtype)
            self._image(xp, xf)[:, :, top : top + h, left : left + w] = x
        s_ki, s_kj, s_oh, s_ow = self._strides(xf.itemsize)
        shape = (c, self.kh, self.kw, n, self.oh, self.q)
        strides = (xf.strides[1], s_ki, s_kj, xf.strides[0], s_oh, s_ow)
        if xp is HOST_XP:  # CPU half: a read-only view, and the junk columns zeroed only when they could matter
            cols = xp.empty(shape, dtype=x.dtype)
            xp.copyto(cols, xp.lib.stride_tricks.as_strided(xf, shape, strides, writeable=False))
            if self.q != self.ow and not xp.isfinite(x).all():
                cols[..., self.ow :] = 0  # junk columns meet zero gradients: keep inf * 0 out of the weight gradient
            return cols
        cols = xp.ascontiguousarray(xp.lib.stride_tricks.as_strided(xf, shape, strides))
        if self.q != self.ow:
            cols[..., self.ow :] = 0  # as above, without a device-to-host check of the input
        return cols

    def col2im(self, xp, dcols):
        """Sum (C, kh, kw, N, OH, Q) window gradients into an (N, C, H, W) input gradient: one add per kernel position."""
        c, _, _, n = dcols.shape[:4]
        dxf = xp.zeros((c, n, self.flat), dtype=dcols.dtype)
        s_ki, s_kj, s_oh, s_ow = self._strides(dxf.itemsize)
        shape = (c, n, self.oh, self.q)
        strides = dxf.strides[:2] + (s_oh, s_ow)
        as_strided = xp.lib.stride_tricks.as_strided
        for i in range(self.kh):
            for j in range(self.kw):
                start = (i * s_ki + j * s_kj) // dxf.itemsize
                # distinct elements within one kernel position, so the in-place add is safe (also on a GPU)
                target = as_strided(dxf[:, :, start:], shape, strides)
                target += dcols[:, i, j]
        top, _, left, _ = self.pads
        h, w = self.hw
        dx = self._image(xp, dxf)[:, :, top : top + h, left : left + w]
        return xp.ascontiguousarray(dx.transpose(1, 0, 2, 3))


# ----------------------------------------------------------------- conv2d
class Conv2d(ArrayFunction):
    """2-D cross-correlation: im2col + one batched matmul over the groups forward; two matmuls and a col2im back.

    The columns hold the whole batch, (C*kh*kw, N*OH*Q), so each product is
    one large GEMM per group rather than N small ones. An unbatched (C, H, W)
    input is a batch of one.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pads, dilation, groups):
        xp = ctx.xp
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]
        n = x.shape[0]
        o, cg, kh, kw = weight.shape
        grid = _ConvGrid(x.shape[2:], weight.shape, stride, pads, dilation)
        cols = grid.im2col(xp, x).reshape(groups, cg * kh * kw, n * grid.oh * grid.q)
        wm = weight.reshape(groups, o // groups, cg * kh * kw)
        res = xp.matmul(wm, cols).reshape(o, n, grid.oh, grid.q)[..., : grid.ow].transpose(1, 0, 2, 3)
        if res.dtype != x.dtype:  # bfloat16 products come back in float32
            res = res.astype(x.dtype)
        out = xp.empty((n, o, grid.oh, grid.ow), dtype=x.dtype)
        if bias is not None:
            xp.add(res, bias.reshape(1, o, 1, 1), out=out)
        else:
            xp.copyto(out, res)
        needs = ctx.needs_input_grad
        ctx.save_for_backward(cols if needs[1] else None, weight if needs[0] else None)  # weight: version-checked
        ctx.meta = (grid, weight.shape, groups, unbatched)
        return out[0] if unbatched else out

    @staticmethod
    def backward(ctx, g):
        cols, weight = ctx.saved_tensors
        grid, wshape, groups, unbatched = ctx.meta
        xp = ctx.xp
        needs = ctx.needs_input_grad
        if unbatched:
            g = g[None]
        n = g.shape[0]
        o, cg, kh, kw = wshape
        gt = xp.zeros((o, n, grid.oh, grid.q), dtype=g.dtype)  # g as (out, N, OH, Q), zero in junk columns
        gt[..., : grid.ow] = g.transpose(1, 0, 2, 3)
        gt = gt.reshape(groups, o // groups, n * grid.oh * grid.q)
        gx = gw = gb = None
        if needs[0]:
            wm = weight.reshape(groups, o // groups, cg * kh * kw)
            dcols = xp.matmul(wm.transpose(0, 2, 1), gt)  # (groups, cg*kh*kw, N*OH*Q)
            if dcols.dtype != g.dtype:
                dcols = dcols.astype(g.dtype)
            gx = grid.col2im(xp, dcols.reshape(groups * cg, kh, kw, n, grid.oh, grid.q))
            if unbatched:
                gx = gx[0]
        if needs[1]:
            gw = xp.matmul(cols, gt.transpose(0, 2, 1))  # (groups, cg*kh*kw, o/groups): the faster GEMM order
            gw = xp.ascontiguousarray(gw.transpose(0, 2, 1)).reshape(wshape)
            if gw.dtype != g.dtype:
                gw = gw.astype(g.dtype)
        if needs[2]:
            gb = gt.sum(axis=2).reshape(o)  # junk columns are zero; a contiguous sum is fastest
        return gx, gw, gb, None, None, None, None


def _conv_padding(padding, k, stride, dilation):
    """``padding`` (int, pair, 'valid' or 'same') as ``(top, bottom, left, right)``."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise RuntimeError(f"conv2d: invalid padding string {padding!r}, should be one of 'valid', 'same'")
        if stride != (1, 1):
            raise RuntimeError(f"conv2d: padding='same' is not supported for strided convolutions (stride={stride})")
        pads = []
        for size, d in zip(k, dilation):
            total = d * (size - 1)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    ph, pw = _pair(padding, "padding", "conv2d")
    if ph < 0 or pw < 0:
        raise RuntimeError(f"conv2d: negative padding is not supported, got padding={(ph, pw)}")
    return (ph, ph, pw, pw)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) of an (N, C, H, W) or (C, H, W) input with an (out, C/groups, kh, kw) weight.

    ``padding`` is an int, a pair, ``'valid'`` (none) or ``'same'`` (output size
    equals input size; stride 1 only; an odd total pad puts the extra row and
    column at the bottom and right, as PyTorch does). Under autocast the input,
    weight and bias are cast to the autocast dtype (conv2d is in PyTorch's
    lower-precision list).
    """
    if _autocast.state.active:
        input, weight, bias = _autocast.lower(input, weight, bias)
    _check_tensor(input, "conv2d")
    _check_tensor(weight, "conv2d")
    if input._data.ndim not in (3, 4):
        raise RuntimeError(
            f"conv2d: expected 3D (unbatched) or 4D (batched) input, but got input of size: {_shape_str(input.shape)}"
        )
    if weight._data.ndim != 4:
        raise RuntimeError(
            f"conv2d: expected a 4D weight [out_channels, in_channels/groups, kH, kW], got {_shape_str(weight.shape)}"
        )
    _check_float(input, "conv2d")
    if input._data.dtype != weight._data.dtype:
        raise RuntimeError(
            f"conv2d: input dtype {input.dtype} and weight dtype {weight.dtype} differ; convert one with .to()"
        )
    if not _is_int(groups) or groups <= 0:
        raise RuntimeError(f"conv2d: groups must be a positive integer, got {groups!r}")
    stride = _pair(stride, "stride", "conv2d")
    dilation = _pair(dilation, "dilation", "conv2d")
    if min(stride) <= 0:
        raise RuntimeError(f"conv2d: non-positive stride is not supported, got stride={stride}")
    if min(dilation) <= 0:
        raise RuntimeError(f"conv2d: non-positive dilation is not supported, got dilation={dilation}")
    o, cg, kh, kw = weight._data.shape
    if o % groups:
        raise RuntimeError(
            f"conv2d: given groups={groups}, the weight's out_channels ({o}, dim 0 of weight "
            f"{_shape_str(weight.shape)}) must be divisible by groups"
        )
    c, h, w = input._data.shape[-3:]
    if c != cg * groups:
        raise RuntimeError(
            f"conv2d: given groups={groups}, weight of size {_shape_str(weight.shape)}, expected input "
            f"{_shape_str(input.shape)} to have {cg * groups} channels, but got {c} channels instead"
        )
    if bias is not None:
        _check_tensor(bias, "conv2d")
        if bias._data.shape != (o,):
            raise RuntimeError(
                f"conv2d: given weight of size {_shape_str(weight.shape)}, expected bias to be 1-dimensional with "
                f"{o} elements, but got bias of size {_shape_str(bias.shape)} instead"
            )
        if bias._data.dtype != weight._data.dtype:
            raise RuntimeError(f"conv2d: bias dtype {bias.dtype} differs from weight dtype {weight.dtype}")
    pads = _conv_padding(padding, (kh, kw), stride, dilation)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if hp < eh or wp < ew:
        raise RuntimeError(
            f"conv2d: calculated padded input size per channel: ({hp} x {wp}). Kernel size: ({eh} x {ew}) "
            f"(dilation {dilation}). Kernel size can't be greater than actual input size"
        )
    return Conv2d.apply(input, weight, bias, stride, pads, dilation, int(groups))


# ----------------------------------------------------------------- padding modes
def _mode_index(size: int, before: int, after: int, mode: str) -> list[int]:
    """Source index along one dim for each position of the padded dim (reflect, replicate or circular)."""
    positions = range(-before, size + after)
    if mode == "reflect":
        period = 2 * (size - 1)
        folded = [abs(p) % period if period else 0 for p in positions]
        return [period - p if p >= size else p for p in folded]
    if mode == "replicate":
        return [min(max(p, 0), size - 1) for p in positions]
    if mode == "circular":
        return [p % size for p in positions]
    raise ValueError(f"padding mode {mode!r} is not one of 'reflect', 'replicate', 'circular'")


def _along(axis: int, index):
    """An index that applies ``index`` to dim ``axis`` (-1 or -2) of an array."""
    return (Ellipsis, index) if axis == -1 else (Ellipsis, index, slice(None))


class ModePad(ArrayFunction):
    """Reflect/replicate/circular padding of the last two dims: row and column copies, no gather.

    Forward copies the interior once and each padded row (then column) from its
    source; backward adds every padded position back onto its source, in
    position order (as a scatter-add would), so repeated sources accumulate.
    Only basic slicing, so the same code runs on every namespace.
    """

    @staticmethod
    def forward(ctx, x, pads, mode):
        left, right, top, bottom = pads
        h, w = x.shape[-2:]
        plan = []  # (axis, before, size, source index per padded position), in the order applied
        if top or bottom:
            plan.append((-2, top, h, _mode_index(h, top, bottom, mode)))
        if left or right:
            plan.append((-1, left, w, _mode_index(w, left, right, mode)))
        out = x
        for axis, before, size, index in plan:
            out = ModePad._pad(ctx.xp, out, axis, before, size, index)
        ctx.meta = plan
        return out

    @staticmethod
    def _pad(xp, x, axis, before, size, index):
        shape = list(x.shape)
        shape[axis] = len(index)
        out = xp.empty(tuple(shape), dtype=x.dtype)
        out[_along(axis, slice(before, before + size))] = x
        for p, src in enumerate(index):
            if not before <= p < before + size:
                out[_along(axis, p)] = x[_along(axis, src)]
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        for axis, before, size, index in reversed(ctx.meta):
            shape = list(g.shape)
            shape[axis] = size
            gx = xp.zeros(tuple(shape), dtype=g.dtype)
            for p in range(before):
                gx[_along(axis, index[p])] += g[_along(axis, p)]
            gx += g[_along(axis, slice(before, before + size))]
            for p in range(before + size, len(index)):
                gx[_along(axis, index[p])] += g[_along(axis, p)]
            g = gx
        return g, None, None


def mode_pad(input, pads, mode: str):
    """Pad the last two dims by ``(left, right, top, bottom)`` (F.pad order) with a non-zero ``mode``.

    Differentiable: a source pixel copied into several padded positions accumulates their gradients.
    """
    _check_tensor(input, "mode_pad")
    if mode not in ("reflect", "replicate", "circular"):
        raise ValueError(f"padding mode {mode!r} is not one of 'reflect', 'replicate', 'circular'")
    if input._data.ndim < 2:
        raise RuntimeError(f"{mode} padding needs an input of at least 2 dims, got {_shape_str(input.shape)}")
    left, right, top, bottom = (int(p) for p in pads)
    if min(left, right, top, bottom) < 0:
        raise RuntimeError(f"{mode} padding must be non-negative, got {tuple(pads)}")
    h, w = input._data.shape[-2:]
    for name, size, before, after in (("height", h, top, bottom), ("width", w, left, right)):
        limit = size if mode == "circular" else size - 1
        if mode in ("reflect", "circular") and max(before, after) > limit:
            raise RuntimeError(
                f"{mode} padding of ({before}, {after}) on the {name} dim is too large for an input of size {size} "
                f"(at most {limit}); input shape {_shape_str(input.shape)}"
            )
        if (before or after) and size == 0:
            raise RuntimeError(f"{mode} padding of an empty {name} dim; input shape {_shape_str(input.shape)}")
    if not (left or right or top or bottom):
        return input
    return ModePad.apply(input, (left, right, top, bottom), mode)


# ----------------------------------------------------------------- pooling
def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size; with ``ceil_mode`` the last window must start inside the input or left pad."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _check_pool_input(input, fn: str, floats_only: bool = True) -> None:
    _check_tensor(input, fn)
    if input._data.ndim not in (3, 4) or 0 in input._data.shape[-3:]:
        raise RuntimeError(
            f"{fn}: expected a 3D (unbatched) or 4D (batched) input with non-zero channel and spatial sizes "
            f"(the batch may be empty), got {_shape_str(input.shape)}"
        )
    if floats_only:
        _check_float(input, fn)
    elif not is_float(input._data.dtype) and input._data.dtype.kind not in "iu":
        raise RuntimeError(f"{fn}: expected a floating point or integer input, got {input.dtype}")


def _pool_args(input, kernel_size, stride, padding, dilation, fn):
    _check_pool_input(input, fn, floats_only=fn != "max_pool2d")
    k = _pair(kernel_size, "kernel_size", fn)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else _pair(stride, "stride", fn)
    p = _pair(padding, "padding", fn)
    d = _pair(dilation, "dilation", fn)
    if min(k) <= 0:
        raise RuntimeError(f"{fn}: kernel_size must be greater than zero, got {k}")
    if min(s) <= 0:
        raise RuntimeError(f"{fn}: stride must be greater than zero, got {s}")
    if min(d) <= 0:
        raise RuntimeError(f"{fn}: dilation must be greater than zero, got {d}")
    if min(p) < 0 or p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise RuntimeError(
            f"{fn}: pad should be between 0 and half of kernel size, but got padding={p}, kernel_size={k}"
        )
    return k, s, p, d


def _pool_geometry(input, k, s, p, d, ceil_mode, fn):
    """Output size and the ``(top, bottom, left, right)`` padding that makes every window lie inside the array."""
    h, w = input._data.shape[-2:]
    oh, ow = _pool_out(h, k[0], s[0], p[0], d[0], ceil_mode), _pool_out(w, k[1], s[1], p[1], d[1], ceil_mode)
    if oh < 1 or ow < 1:
        c = input._data.shape[-3]
        raise RuntimeError(
            f"{fn}: given input size: ({c}x{h}x{w}), kernel_size={k}, stride={s}, padding={p}, dilation={d}. "
            f"Calculated output size: ({c}x{oh}x{ow}). Output size is too small"
        )
    bottom = max((oh - 1) * s[0] + d[0] * (k[0] - 1) + 1 - h - p[0], 0)
    right = max((ow - 1) * s[1] + d[1] * (k[1] - 1) + 1 - w - p[1], 0)
    return (oh, ow), (p[0], bottom, p[1], right)


class MaxPool2d(ArrayFunction):
    """Max over each window; the gradient goes to the first maximum in the window (a NaN wins, as in PyTorch).

    Works on (N, C, H, W) and (C, H, W) alike (windows slice the last two dims).
    """

    @staticmethod
    def _scan(xp, xpad, k, stride, dilation, out_hw, track, nan_aware):
        """CPU half: window maxima and, when ``track``, the kernel position of each (PyTorch's scan order and tie rule).

        Arithmetic with preallocated ``out=`` buffers and a wrapping uint8 step, as masked writes are slow in NumPy.
        """
        best = arg = better = step = None
        for i, j, where in _spatial_slices(k, stride, dilation, out_hw):
            v = xpad[where]
            if best is None:
                best = v.copy()
                if track:
                    arg = xp.zeros(best.shape, dtype=xp.uint8 if k[0] * k[1] <= 256 else xp.int32)
                    better, step = xp.empty(best.shape, dtype=bool), xp.empty(best.shape, dtype=arg.dtype)
                continue
            if track:  # move to (i, j) where it is greater (or NaN)
                xp.greater(v, best, out=better)
                if nan_aware:
                    better |= xp.isnan(v)
                xp.subtract(i * k[1] + j, arg, out=step)  # wraps around in uint8; exact after the add
                step *= better
                arg += step
            xp.maximum(best, v, out=best)
        return best, arg

    @staticmethod
    def _scan_portable(xp, xpad, k, stride, dilation, out_hw, track, nan_aware):
        """Portable half of ``_scan``: the same scan with selects (cheap on a GPU), the NaN rule always on for floats."""
        best = arg = positions = None
        for i, j, where in _spatial_slices(k, stride, dilation, out_hw):
            v = xpad[where]
            if best is None:
                best = v.copy()
                if track:
                    arg = xp.zeros(best.shape, dtype=xp.int32)
                    positions = xp.arange(k[0] * k[1], dtype=xp.int32)
                continue
            if track:
                better = v > best
                if nan_aware:
                    better |= xp.isnan(v)
                arg = xp.where(better, positions[i * k[1] + j], arg)
            best = xp.maximum(best, v)
        return best, arg

    @staticmethod
    def forward(ctx, x, k, stride, dilation, pads, out_hw, want_indices):
        xp = ctx.xp
        xpad = _pad_hw(xp, x, pads, _lowest(xp, x.dtype))
        track = want_indices or ctx.needs_input_grad[0]
        if xp is HOST_XP:
            best, arg = MaxPool2d._scan(xp, xpad, k, stride, dilation, out_hw, track, False)
            if track and xp.isnan(best).any():  # a window holds a NaN: rescan with PyTorch's NaN rule
                best, arg = MaxPool2d._scan(xp, xpad, k, stride, dilation, out_hw, track, True)
        else:  # no host check of the data: the NaN rule costs one more elementwise op per kernel position
            nan_aware = is_float(x.dtype)
            best, arg = MaxPool2d._scan_portable(xp, xpad, k, stride, dilation, out_hw, track, nan_aware)
        ctx.save_for_backward(arg)
        ctx.meta = (xpad.shape, x.shape[-2:], k, stride, dilation, pads, out_hw)
        if not want_indices:
            return best
        oh, ow = out_hw
        w = x.shape[-1]
        row = xp.arange(oh).reshape(oh, 1) * stride[0] - pads[0] + (arg // k[1]) * dilation[0]
        col = xp.arange(ow) * stride[1] - pads[2] + (arg % k[1]) * dilation[1]
        return best, (row * w + col).astype(xp.int64)

    @staticmethod
    def backward(ctx, g, *_):
        (arg,) = ctx.saved_tensors
        padded_shape, hw, k, stride, dilation, pads, out_hw = ctx.meta
        xp = ctx.xp
        dx = xp.zeros(padded_shape, dtype=g.dtype)
        disjoint = all(s >= d * (size - 1) + 1 for s, d, size in zip(stride, dilation, k))
        if xp is HOST_XP:
            finite = bool(xp.isfinite(g).all())  # then mask * g is exact (no 0 * inf)
            for i, j, where in _spatial_slices(k, stride, dilation, out_hw):
                hit = arg == i * k[1] + j
                if disjoint and finite:
                    xp.multiply(hit, g, out=dx[where])
                elif finite:
                    dx[where] += hit * g
                else:
                    dx[where] += xp.where(hit, g, g.dtype.type(0))
        else:  # selects need no host check of g
            zero = xp.zeros((), dtype=g.dtype)
            for i, j, where in _spatial_slices(k, stride, dilation, out_hw):
                share = xp.where(arg == i * k[1] + j, g, zero)
                if disjoint:
                    dx[where] = share
                else:
                    dx[where] += share
        return _crop_hw(xp, dx, pads, hw), None, None, None, None, None, None


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """2-D max pooling over (N, C, H, W) or (C, H, W); ``return_indices`` adds the flat H*W index of each maximum."""
    k, s, p, d = _pool_args(input, kernel_size, stride, padding, dilation, "max_pool2d")
    out_hw, pads = _pool_geometry(input, k, s, p, d, ceil_mode, "max_pool2d")
    out = MaxPool2d.apply(input, k, s, d, pads, out_hw, bool(return_indices))
    if return_indices:
        values, indices = out
        return values, indices.detach()
    return out


def _avg_divisor(size, k, s, p, out, count_include_pad) -> list[int]:
    """Per-output-position window size along one dim (PyTorch's ``pool_size`` or the count of real pixels)."""
    sizes = []
    for i in range(out):
        start = i * s - p
        end = min(start + k, size + p)
        sizes.append(end - start if count_include_pad else min(end, size) - max(start, 0))
    return sizes


class AvgPool2d(ArrayFunction):
    """Mean over each window (zero padding, a per-position divisor); backward spreads the gradient evenly."""

    @staticmethod
    def forward(ctx, x, k, stride, pads, out_hw, divisor):
        xp = ctx.xp
        xpad = _pad_hw(xp, x, pads)
        acc = None
        for _, _, where in _spatial_slices(k, stride, (1, 1), out_hw):
            if acc is None:
                acc = xpad[where].copy()
            else:
                acc += xpad[where]
        ctx.meta = (xpad.shape, x.shape[-2:], k, stride, pads, out_hw, divisor)
        acc /= divisor
        return acc

    @staticmethod
    def backward(ctx, g):
        padded_shape, hw, k, stride, pads, out_hw, divisor = ctx.meta
        xp = ctx.xp
        share = g / divisor
        dx = xp.zeros(padded_shape, dtype=g.dtype)
        for _, _, where in _spatial_slices(k, stride, (1, 1), out_hw):
            dx[where] += share
        return _crop_hw(xp, dx, pads, hw), None, None, None, None, None


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """2-D average pooling over (N, C, H, W) or (C, H, W), with PyTorch's divisor rules."""
    k, s, p, d = _pool_args(input, kernel_size, stride, padding, 1, "avg_pool2d")
    out_hw, pads = _pool_geometry(input, k, s, p, d, ceil_mode, "avg_pool2d")
    dtype = input._data.dtype
    if divisor_override is not None:
        if divisor_override == 0:
            raise RuntimeError("avg_pool2d: divisor_override must not be zero")
        divisor = dtype.type(divisor_override)
    else:
        h, w = input._data.shape[-2:]
        dh = _avg_divisor(h, k[0], s[0], p[0], out_hw[0], count_include_pad)
        dw = _avg_divisor(w, k[1], s[1], p[1], out_hw[1], count_include_pad)
        if min(dh) == max(dh) and min(dw) == max(dw):
            divisor = dtype.type(dh[0] * dw[0])
        else:  # a (OH, OW) array on the input's device
            divisor = namespace_of(input._data).asarray([[a * b for b in dw] for a in dh], dtype=dtype)
    return AvgPool2d.apply(input, k, s, pads, out_hw, divisor)


def _adaptive_matrix(xp, size: int, out: int, dtype):
    """(out, size) averaging matrix on ``xp``'s device: row i averages input [floor(i*size/out), ceil((i+1)*size/out))."""
    i = xp.arange(out)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    pos = xp.arange(size)
    inside = (pos >= start[:, None]) & (pos < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


class AdaptiveAvgPool2d(ArrayFunction):
    """Adaptive average pooling as two small matmuls, ``A_h @ x @ A_w.T`` (their transposes backward)."""

    @staticmethod
    def forward(ctx, x, out_hw):
        xp = ctx.xp
        h, w = x.shape[-2:]
        oh, ow = out_hw
        if h % oh == 0 and w % ow == 0:  # equal windows: a reshape and a mean
            ctx.meta = (x.shape, None, None)
            return x.reshape(x.shape[:-2] + (oh, h // oh, ow, w // ow)).mean(axis=(-3, -1))
        ah, aw = _adaptive_matrix(xp, h, oh, x.dtype), _adaptive_matrix(xp, w, ow, x.dtype)
        ctx.meta = (x.shape, ah, aw)
        out = xp.matmul(xp.matmul(ah, x), aw.T)
        return out if out.dtype == x.dtype else out.astype(x.dtype)

    @staticmethod
    def backward(ctx, g):
        shape, ah, aw = ctx.meta
        xp = ctx.xp
        if ah is None:
            h, w = shape[-2:]
            oh, ow = g.shape[-2:]
            share = g / ((h // oh) * (w // ow))
            expanded = xp.broadcast_to(share[..., None, :, None], shape[:-2] + (oh, h // oh, ow, w // ow))
            return expanded.reshape(shape), None
        gx = xp.matmul(xp.matmul(ah.T, g), aw)
        return (gx if gx.dtype == g.dtype else gx.astype(g.dtype)), None


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size (an int, or a pair whose None entries keep the input's size)."""
    _check_pool_input(input, "adaptive_avg_pool2d")
    h, w = input._data.shape[-2:]
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise RuntimeError(f"adaptive_avg_pool2d: output_size must have 2 entries, got {output_size!r}")
        sizes = (h if output_size[0] is None else output_size[0], w if output_size[1] is None else output_size[1])
    else:
        sizes = output_size
    oh, ow = _pair(sizes, "output_size", "adaptive_avg_pool2d")
    if oh <= 0 or ow <= 0:
        raise RuntimeError(f"adaptive_avg_pool2d: output_size must be positive, got {(oh, ow)}")
    return AdaptiveAvgPool2d.apply(input, (oh, ow))


# ----------------------------------------------------------------- batch norm
class BatchNorm(ArrayFunction):
    """Batch normalisation, forward and backward fused; training mode also updates the running stats in place.

    The running stats are arrays on the input's device, updated there. With a
    float16/bfloat16 input and float32 parameters (PyTorch's mixed case, e.g. a
    conv under autocast feeding a float32 BatchNorm) the statistics and the
    normalisation are computed in float32 and the output is in the input dtype.
    """

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps, compute_dtype):
        xp = ctx.xp
        in_dtype = x.dtype
        if compute_dtype is not None:
            x = x.astype(compute_dtype)
        c = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, c) + (1,) * (x.ndim - 2)
        if training:
            mean = x.mean(axis=axes)
            centered = x - mean.reshape(shape)
            var = xp.square(centered).mean(axis=axes)
            count = x.size // c
            if running_mean is not None:
                running_mean[...] = momentum * mean + (1 - momentum) * running_mean
            if running_var is not None:
                running_var[...] = momentum * (var * (count / (count - 1))) + (1 - momentum) * running_var
        else:
            centered = x - running_mean.astype(x.dtype, copy=False).reshape(shape)
            var = running_var.astype(x.dtype, copy=False)
        invstd = (1.0 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)
        xhat = centered * invstd.reshape(shape)
        out = xhat * weight.reshape(shape) if weight is not None else xhat.copy()
        if bias is not None:
            out += bias.reshape(shape)
        needs = ctx.needs_input_grad
        ctx.save_for_backward(xhat if (needs[0] and training) or needs[3] else None, invstd, weight)
        ctx.meta = (training, axes, shape, in_dtype if compute_dtype is not None else None)
        return out.astype(in_dtype) if compute_dtype is not None else out

    @staticmethod
    def backward(ctx, g):
        xhat, invstd, weight = ctx.saved_tensors
        training, axes, shape, in_dtype = ctx.meta
        needs = ctx.needs_input_grad
        if in_dtype is not None:
            g = g.astype(invstd.dtype)
        gx = gw = gb = None
        if needs[0]:
            gxhat = g * weight.reshape(shape) if weight is not None else g
            if training:
                m1 = gxhat.mean(axis=axes, keepdims=True)
                m2 = (gxhat * xhat).mean(axis=axes, keepdims=True)
                gx = (gxhat - m1 - xhat * m2) * invstd.reshape(shape)
            else:
                gx = gxhat * invstd.reshape(shape)
            if in_dtype is not None:
                gx = gx.astype(in_dtype)
        if needs[3]:
            gw = (g * xhat).sum(axis=axes)
        if needs[4]:
            gb = g.sum(axis=axes)
        return gx, None, None, gw, gb, None, None, None, None


def _batch_norm_compute_dtype(input, params):
    """None when the input and the given parameters share a dtype; float32 in PyTorch's mixed case; else an error.

    PyTorch accepts a float16/bfloat16 input with float32 weight, bias and
    running stats (all of those given), and computes in float32; any other
    mismatch of the input with the weight or bias is an error.
    """
    dtype = input._data.dtype
    given = [(name, t) for name, t in params if t is not None]
    if all(t._data.dtype == dtype for _, t in given):
        return None
    if is_float(dtype) and dtype.itemsize == 2 and given and all(t._data.dtype.name == "float32" for _, t in given):
        return given[0][1]._data.dtype
    for name, t in given:
        if name in ("weight", "bias") and t._data.dtype != dtype:
            raise RuntimeError(
                f"batch_norm: {name} dtype {t.dtype} differs from input dtype {input.dtype} (a float16/bfloat16 "
                "input may only be combined with float32 weight, bias and running stats, all of them)"
            )
    return None  # running stats of another dtype: cast to the input's, as before


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise each channel (dim 1) of an (N, C, ...) input; ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    In training mode the batch statistics are used (biased variance) and, when
    given, ``running_mean``/``running_var`` become ``(1 - momentum) * running +
    momentum * batch`` in place, with the unbiased batch variance. Otherwise the
    running statistics normalise. As in PyTorch, batch_norm is on neither
    autocast list: it runs in the input's dtype (a float16/bfloat16 input with
    float32 parameters is computed in float32 and returned in the input dtype).
    """
    _check_tensor(input, "batch_norm")
    if input._data.ndim < 2:
        raise RuntimeError(
            f"batch_norm: expected an input of at least 2 dims (N, C, ...), got {_shape_str(input.shape)}"
        )
    _check_float(input, "batch_norm")
    c = input._data.shape[1]
    params = (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias))
    for name, t in params:
        if t is None:
            continue
        _check_tensor(t, "batch_norm")
        if t._data.shape != (c,):
            raise RuntimeError(
                f"batch_norm: {name} should have {c} elements (one per channel of input "
                f"{_shape_str(input.shape)}), but it has shape {_shape_str(t.shape)}"
            )
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError("batch_norm: running_mean and running_var must be defined in evaluation mode")
    if training and input._data.size // max(c, 1) <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {_shape_str(input.shape)}"
        )
    compute_dtype = _batch_norm_compute_dtype(input, params)
    momentum = 0.0 if momentum is None else float(momentum)
    out = BatchNorm.apply(
        input, running_mean, running_var, weight, bias, bool(training), momentum, float(eps), compute_dtype
    )
    if training:
        for t in (running_mean, running_var):
            if t is not None:
                t._bump_version()
    return out
