"""Conversions: dtype casts, device transfers, ``clone`` and ``contiguous``; differentiable where PyTorch's are.

``to('cuda')``/``cuda()``/``cpu()`` copy through ``backend.device.to_device``;
the gradient of a transfer is copied back to the source device. Casts between
floating dtypes (bfloat16 included, through ``ml_dtypes``) carry gradients.
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction
from ..backend.device import Device, as_device, device_of, to_device
from ..backend.dtypes import DType, as_dtype, is_float
from ..tensor import Tensor

__all__ = ["clone", "contiguous", "to"]


class Cast(ArrayFunction):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.in_dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.in_dtype), None


class ToDevice(ArrayFunction):
    @staticmethod
    def forward(ctx, x, device):
        ctx.source = device_of(x)
        return to_device(x, device)

    @staticmethod
    def backward(ctx, g):
        return to_device(g, ctx.source), None


class Clone(ArrayFunction):
    @staticmethod
    def forward(ctx, x):
        return ctx.xp.array(x, copy=True, order="C")

    @staticmethod
    def backward(ctx, g):
        return g


def clone(input):
    """A copy with its own storage; gradients flow back to ``input``."""
    return Clone.apply(input)


def contiguous(input):
    """``input`` itself when C-contiguous, else a contiguous copy."""
    if input._data.flags.c_contiguous:
        return input
    return Clone.apply(input)


def _is_device_spec(value) -> bool:
    """Devices are ``Device`` objects and strings that do not name a dtype ('cpu', 'cuda:1', or a typo)."""
    if isinstance(value, Device):
        return True
    if not isinstance(value, str):
        return False
    try:
        as_dtype(value)
    except TypeError:
        return True
    return False


def _parse_to_args(args, kwargs):
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    copy = kwargs.pop("copy", False)
    kwargs.pop("non_blocking", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    for arg in args:
        if isinstance(arg, Tensor):
            device, dtype = arg.device, arg.dtype
        elif _is_device_spec(arg):
            device = arg
        elif arg is None:
            continue
        else:
            dtype = arg
    return (as_device(device) if device is not None else None, as_dtype(dtype) if dtype is not None else None, copy)


def to(input, *args, **kwargs):
    """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)``; ``input`` itself when nothing changes."""
    device, dtype, copy = _parse_to_args(args, kwargs)
    out = input
    if dtype is not None and out._data.dtype != dtype.numpy:
        out = cast(out, dtype)
    if device is not None and device != out.device:
        out = ToDevice.apply(out, device)
    if copy and out is input:
        out = clone(input)
    return out


def cast(input, dtype: DType):
    if dtype.is_floating_point and is_float(input._data.dtype):
        return Cast.apply(input, dtype.numpy)
    # Casts to or from integer types carry no gradient.
    return Tensor._make(input._data.astype(dtype.numpy), False, None)


def type_as(input, other):
    return to(input, other.dtype)


def float_(input):
    return to(input, "float32")


def double(input):
    return to(input, "float64")


def half(input):
    return to(input, "float16")


def long(input):
    return to(input, "int64")


def int_(input):
    return to(input, "int32")


def bool_(input):
    return to(input, "bool")


def cpu(input):
    return to(input, "cpu")


def cuda(input, device=None, non_blocking: bool = False):
    """``input`` on a CUDA device (``non_blocking`` is accepted: transfers here are synchronous)."""
    return to(input, Device("cuda", device) if isinstance(device, int) else (device or "cuda"))
