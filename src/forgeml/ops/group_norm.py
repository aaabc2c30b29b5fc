"""Group and instance normalisation: ``group_norm`` and ``instance_norm``, as in ``torch.nn.functional``.

One op, :class:`GroupNorm`, normalises an (N, C, *) input over each group of
``C / num_groups`` channels and all spatial positions, then scales and shifts
per channel. Instance norm is group norm with one channel per group; when it
tracks running statistics the op also updates them in place (PyTorch's rule:
the running mean and the unbiased running variance move towards the average
over the batch of the per-instance statistics). Instance norm without input
statistics (eval with tracked stats) is batch norm in eval mode.
"""

from __future__ import annotations

import math

from ..autograd.function import ArrayFunction
from . import _autocast
from .conv import _check_float, _check_tensor, _shape_str, batch_norm

__all__ = ["group_norm", "instance_norm"]


class GroupNorm(ArrayFunction):
    """``(x - mean_g) / sqrt(var_g + eps) * weight_c + bias_c`` with biased per-(sample, group) statistics.

    Forward and backward are fused; float16/bfloat16 inputs compute in float32.
    ``running_mean``/``running_var`` (instance norm only: one channel per group)
    are updated in place when given.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps, running_mean, running_var, momentum):
        xp = ctx.xp
        in_dtype = x.dtype
        work = x.astype(xp.float32) if x.dtype.itemsize < 4 else x
        n, c = x.shape[:2]
        size = math.prod(x.shape[2:])
        xg = work.reshape(n, groups, (c // groups) * size)
        mean = xg.mean(axis=2, keepdims=True)
        xhat = xg - mean
        var = xp.einsum("ngm,ngm->ng", xhat, xhat)[..., None] / max(xg.shape[2], 1)
        rstd = (1.0 / xp.sqrt(var + eps)).astype(work.dtype, copy=False)
        xhat *= rstd
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean.reshape(n, c).mean(axis=0)
        if running_var is not None:
            unbiased = var.reshape(n, c) * (size / max(size - 1, 1))
            running_var[...] = (1 - momentum) * running_var + momentum * unbiased.mean(axis=0)
        xc = xhat.reshape(n, c, size)
        out = xc * weight.reshape(1, c, 1) if weight is not None else xc.copy()
        if bias is not None:
            out += bias.reshape(1, c, 1)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.meta = (x.shape, in_dtype)
        return out.reshape(x.shape).astype(in_dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, weight = ctx.saved_tensors
        shape, in_dtype = ctx.meta
        xp = ctx.xp
        needs = ctx.needs_input_grad
        n, c = shape[:2]
        gc = g.astype(xhat.dtype, copy=False).reshape(n, c, -1)
        gx = gw = gb = None
        if needs[1]:
            gw = xp.einsum("ncs,ncs->c", gc, xhat.reshape(gc.shape)).astype(weight.dtype, copy=False)
        if needs[2]:
            gb = gc.sum(axis=(0, 2)).astype(g.dtype, copy=False)
        if needs[0]:
            gxhat = (gc * weight.reshape(1, c, 1) if weight is not None else gc).reshape(xhat.shape)
            m = max(xhat.shape[2], 1)
            dot = xp.einsum("ngm,ngm->ng", gxhat, xhat)[..., None] / m
            gx = gxhat - gxhat.mean(axis=2, keepdims=True)
            gx -= xhat * dot
            gx *= rstd
            gx = gx.reshape(shape).astype(in_dtype, copy=False)
        return gx, gw, gb, None, None, None, None, None


def _check_params(fn, input, named):
    """Each given tensor of ``named`` has one element per channel of ``input`` and a matching dtype."""
    c = input._data.shape[1]
    for name, t in named:
        if t is None:
            continue
        _check_tensor(t, fn)
        if t._data.shape != (c,):
            raise RuntimeError(
                f"{fn}: expected {name} to have {c} elements (one per channel of input {_shape_str(input.shape)}), "
                f"but got {name} of shape {_shape_str(t.shape)}"
            )
        if name in ("weight", "bias") and t._data.dtype != input._data.dtype:
            raise RuntimeError(f"{fn}: {name} dtype {t.dtype} differs from input dtype {input.dtype}")


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise an (N, C, *) input over groups of ``C / num_groups`` channels (biased variance, eps inside
    the square root), then scale by ``weight`` and shift by ``bias`` per channel. Runs in float32 under
    autocast, as PyTorch's does."""
    fn = "group_norm"
    if _autocast.state.active:
        input, weight, bias = _autocast.full(input, weight, bias)
    _check_tensor(input, fn)
    if input._data.ndim < 2:
        raise RuntimeError(f"{fn}: expected an input of at least 2 dims (N, C, *), got {_shape_str(input.shape)}")
    _check_float(input, fn)
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups <= 0:
        raise RuntimeError(f"{fn}: num_groups must be a positive integer, got {num_groups!r}")
    c = input._data.shape[1]
    if c % num_groups:
        raise RuntimeError(
            f"{fn}: Expected number of channels in input to be divisible by num_groups, but got input of shape "
            f"{_shape_str(input.shape)} and num_groups={num_groups}"
        )
    _check_params(fn, input, (("weight", weight), ("bias", bias)))
    return GroupNorm.apply(input, weight, bias, num_groups, float(eps), None, None, 0.0)


def instance_norm(
    input,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
):
    """Normalise each channel of each sample of an (N, C, *) input over its spatial positions.

    With ``use_input_stats`` (the default) the per-instance statistics
    normalise and, when given, ``running_mean``/``running_var`` move towards
    their batch averages (unbiased variance) by ``momentum``; otherwise the
    running statistics normalise, as batch norm in eval mode does.
    """
    fn = "instance_norm"
    _check_tensor(input, fn)
    if input._data.ndim < 3:
        raise RuntimeError(
            f"{fn}: expected an input of at least 3 dims (N, C, *spatial), got {_shape_str(input.shape)}"
        )
    _check_float(input, fn)
    named = (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias))
    _check_params(fn, input, named)
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise RuntimeError(
                f"{fn}: Expected running_mean and running_var to be defined when use_input_stats is false"
            )
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    if math.prod(input._data.shape[2:]) <= 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {list(input.shape)}")
    momentum = 0.0 if momentum is None else float(momentum)
    c = input._data.shape[1]
    out = GroupNorm.apply(input, weight, bias, c, float(eps), running_mean, running_var, momentum)
    for t in (running_mean, running_var):
        if t is not None:
            t._bump_version()
    return out
