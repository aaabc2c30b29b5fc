"""Transposed convolution (``conv_transpose2d``, ``conv_transpose1d``), as in ``torch.nn.functional``.

A transposed convolution is the gradient of a convolution with respect to its
input, so it reuses the conv2d kernels of :mod:`forgeml.ops.conv` the other
way round: forward is one batched GEMM (``weight^T @ x`` per group) and a
col2im onto the output, backward is an im2col of the output gradient and two
GEMMs (the input gradient is an ordinary convolution of it). The weight is
``[in_channels, out_channels / groups, kH, kW]``, PyTorch's layout, which is
exactly the conv2d weight of the convolution being transposed.
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction
from . import _autocast
from .conv import _ConvGrid, _pair, _shape_str
from .conv1d import _check_args, _single
from .shape import squeeze, unsqueeze

__all__ = ["conv_transpose1d", "conv_transpose2d"]


class _TransposedGrid(_ConvGrid):
    """The conv2d grid of the convolution being transposed: its input is our output, its output our input."""

    def __init__(self, out_hw, in_hw, wshape, stride, pads, dilation):
        super().__init__(out_hw, wshape, stride, pads, dilation)
        if (self.oh, self.ow) != tuple(in_hw):
            # output_padding >= stride (allowed while < dilation): the conv would produce more rows than we have
            self.oh, self.ow = in_hw
            self.q, self.tail = self.ow, 0
            self.flat = self.hp * self.wp


class ConvTranspose2d(ArrayFunction):
    """2-D transposed convolution: ``weight^T @ x`` per group, then a col2im; backward is a conv2d of the gradient.

    An unbatched (C, H, W) input is a batch of one.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pads, dilation, groups, out_hw):
        xp = ctx.xp
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]
        n, cin, h, w = x.shape
        _, cg, kh, kw = weight.shape
        grid = _TransposedGrid(out_hw, (h, w), weight.shape, stride, pads, dilation)
        if grid.q == w:
            xt = xp.ascontiguousarray(x.transpose(1, 0, 2, 3))
        else:  # the grid's junk columns are zero
            xt = xp.zeros((cin, n, h, grid.q), dtype=x.dtype)
            xt[..., :w] = x.transpose(1, 0, 2, 3)
        xt = xt.reshape(groups, cin // groups, n * h * grid.q)
        wm = weight.reshape(groups, cin // groups, cg * kh * kw)
        cols = xp.matmul(wm.transpose(0, 2, 1), xt)  # (groups, cg*kh*kw, N*H*Q)
        if cols.dtype != x.dtype:  # bfloat16 products come back in float32
            cols = cols.astype(x.dtype)
        out = grid.col2im(xp, cols.reshape(groups * cg, kh, kw, n, h, grid.q))
        if bias is not None:
            out += bias.reshape(1, -1, 1, 1)
        needs = ctx.needs_input_grad
        ctx.save_for_backward(xt if needs[1] else None, weight if needs[0] else None)
        ctx.meta = (grid, weight.shape, groups, unbatched, (h, w))
        return out[0] if unbatched else out

    @staticmethod
    def backward(ctx, g):
        xt, weight = ctx.saved_tensors
        grid, wshape, groups, unbatched, (h, w) = ctx.meta
        xp = ctx.xp
        needs = ctx.needs_input_grad
        if unbatched:
            g = g[None]
        n = g.shape[0]
        cin, cg, kh, kw = wshape
        gx = gw = gb = None
        if needs[0] or needs[1]:
            cols = grid.im2col(xp, g).reshape(groups, cg * kh * kw, n * h * grid.q)
        if needs[0]:
            wm = weight.reshape(groups, cin // groups, cg * kh * kw)
            res = xp.matmul(wm, cols).reshape(cin, n, h, grid.q)[..., :w]
            gx = xp.ascontiguousarray(res.transpose(1, 0, 2, 3))
            if gx.dtype != g.dtype:
                gx = gx.astype(g.dtype)
            if unbatched:
                gx = gx[0]
        if needs[1]:
            gw = xp.matmul(cols, xt.transpose(0, 2, 1))  # (groups, cg*kh*kw, cin/groups)
            gw = xp.ascontiguousarray(gw.transpose(0, 2, 1)).reshape(wshape)
            if gw.dtype != g.dtype:
                gw = gw.astype(g.dtype)
        if needs[2]:
            gb = g.sum(axis=(0, 2, 3))
        return gx, gw, gb, None, None, None, None, None


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution of (N, C_in, H, W) or (C_in, H, W) with an (C_in, C_out/groups, kH, kW) weight.

    The output is ``(H - 1)*stride - 2*padding + dilation*(kH - 1) + output_padding + 1`` high (likewise
    wide); ``output_padding`` (smaller than the stride or the dilation) adds rows and columns at the bottom and
    right. Under autocast the input, weight and bias are cast to the autocast dtype, as PyTorch does.
    """
    fn = "conv_transpose2d"
    if _autocast.state.active:
        input, weight, bias = _autocast.lower(input, weight, bias)
    _check_args(fn, input, weight, bias, groups, 2)
    stride = _pair(stride, "stride", fn)
    padding = _pair(padding, "padding", fn)
    output_padding = _pair(output_padding, "output_padding", fn)
    dilation = _pair(dilation, "dilation", fn)
    if min(stride) <= 0:
        raise RuntimeError(f"{fn}: non-positive stride is not supported, got stride={stride}")
    if min(dilation) <= 0:
        raise RuntimeError(f"{fn}: non-positive dilation is not supported, got dilation={dilation}")
    if min(padding) < 0:
        raise RuntimeError(f"{fn}: negative padding is not supported, got padding={padding}")
    for op, s, d in zip(output_padding, stride, dilation):
        if op < 0 or (op >= s and op >= d):
            raise RuntimeError(
                f"{fn}: output padding must be non-negative and smaller than either stride or dilation, "
                f"but got output_padding={output_padding}, stride={stride}, dilation={dilation}"
            )
    cin, cg, kh, kw = weight._data.shape
    c, h, w = input._data.shape[-3:]
    if c != cin:
        raise RuntimeError(
            f"{fn}: given weight of size {_shape_str(weight.shape)} (in_channels first), expected input "
            f"{_shape_str(input.shape)} to have {cin} channels, but got {c} channels instead"
        )
    if cin % groups:
        raise RuntimeError(
            f"{fn}: given groups={groups}, the weight's in_channels ({cin}, dim 0 of weight "
            f"{_shape_str(weight.shape)}) must be divisible by groups"
        )
    if bias is not None and bias._data.shape != (cg * groups,):
        raise RuntimeError(
            f"{fn}: given weight of size {_shape_str(weight.shape)} and groups={groups}, expected bias to be "
            f"1-dimensional with {cg * groups} elements, but got bias of size {_shape_str(bias.shape)} instead"
        )
    out_hw = tuple(
        (size - 1) * s - 2 * p + d * (k - 1) + op + 1
        for size, s, p, d, k, op in zip((h, w), stride, padding, dilation, (kh, kw), output_padding)
    )
    if min(out_hw) <= 0 or min(h, w) <= 0:
        raise RuntimeError(
            f"{fn}: given input of size {_shape_str(input.shape)} and weight of size {_shape_str(weight.shape)}, "
            f"the calculated output size {list(out_hw)} is too small"
        )
    pads = (padding[0], padding[0], padding[1], padding[1])
    return ConvTranspose2d.apply(input, weight, bias, stride, pads, dilation, int(groups), out_hw)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """1-D transposed convolution of (N, C_in, L) or (C_in, L) with an (C_in, C_out/groups, kL) weight.

    Runs as :func:`conv_transpose2d` on a height-1 view (no copy).
    """
    fn = "conv_transpose1d"
    if _autocast.state.active:
        input, weight, bias = _autocast.lower(input, weight, bias)
    _check_args(fn, input, weight, bias, groups, 1)
    stride = (1, _single(stride, "stride", fn))
    padding = (0, _single(padding, "padding", fn))
    output_padding = (0, _single(output_padding, "output_padding", fn))
    dilation = (1, _single(dilation, "dilation", fn))
    out = conv_transpose2d(
        unsqueeze(input, -2), unsqueeze(weight, -2), bias, stride, padding, output_padding, groups, dilation
    )
    return squeeze(out, -2)
