"""Creating tensors: ``tensor``, ``from_numpy``, ``zeros``, ``arange``, ``randn``, ``*_like`` ...

Python floats become the default float dtype (float32), Python ints int64,
bools bool; NumPy arrays keep their dtype. Random functions draw from the
given ``generator`` or the default one (see :func:`forgeml.manual_seed`).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend.device import array_module, as_device, to_device
from ..backend.dtypes import as_dtype, dtype_of_array, get_default_dtype
from ..backend.random import numpy_generator
from ..tensor import Tensor
from .shape import size_args

__all__ = [
    "arange",
    "as_tensor",
    "empty",
    "empty_like",
    "eye",
    "from_numpy",
    "full",
    "full_like",
    "linspace",
    "ones",
    "ones_like",
    "rand",
    "rand_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
    "tensor",
    "zeros",
    "zeros_like",
]


def as_array(data, dtype):
    """``data`` (nested lists, numbers, arrays, tensors) as an array of a supported dtype."""
    if isinstance(data, Tensor):
        arr = data.data
    elif isinstance(data, np.ndarray) or hasattr(data, "__cuda_array_interface__"):
        arr = data
    else:
        try:
            arr = np.asarray(data)
        except ValueError as exc:
            raise ValueError(f"could not build a tensor from {type(data).__name__}: {exc}") from None
        if arr.dtype == object:
            raise TypeError(
                f"could not infer a dtype for {type(data).__name__} data: expected (nested, rectangular) "
                "sequences of numbers, or arrays"
            )
        if arr.dtype.kind in "US":
            raise TypeError(f"can't build a tensor from strings ({arr.dtype})")
        if dtype is None and _from_python_numbers(data):
            if arr.dtype.kind == "f":
                arr = arr.astype(get_default_dtype().numpy)
            elif arr.dtype.kind in "iu":
                arr = arr.astype(np.int64)
    if dtype is not None:
        target = as_dtype(dtype).numpy
        if arr.dtype != target:
            arr = arr.astype(target)
    else:
        dtype_of_array(arr)
    return arr


def _from_python_numbers(data) -> bool:
    """True when ``data``'s first element is a Python number (not a NumPy scalar, array or tensor).

    PyTorch infers the dtype of Python numbers (float -> default float dtype,
    int -> int64) but keeps the dtype of NumPy scalars and arrays.
    """
    while isinstance(data, (list, tuple)) and data:
        data = data[0]
    if isinstance(data, np.generic):  # np.float64 subclasses float, but keeps its dtype
        return False
    return isinstance(data, (bool, int, float)) or (isinstance(data, (list, tuple)) and not data)


def _finish(arr, device, requires_grad) -> Tensor:
    if device is not None:
        arr = to_device(arr, as_device(device))
    t = Tensor._make(arr, False, None)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (nested lists, a number, an array, or a tensor)."""
    arr = as_array(data, dtype)
    if isinstance(data, (Tensor, np.ndarray)) and arr is (data.data if isinstance(data, Tensor) else data):
        arr = arr.copy()
    return _finish(arr, device, requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like :func:`tensor`, but shares memory with a NumPy array or tensor when no conversion is needed."""
    if isinstance(data, Tensor) and (dtype is None or as_dtype(dtype).numpy == data.data.dtype):
        return data if device is None else data.to(device)
    return _finish(as_array(data, dtype), device, False)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing ``array``'s memory (no copy): writes to one show in the other."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    dtype_of_array(array)
    return Tensor._make(array, False, None)


def _float_dtype(dtype):
    """``dtype`` as a NumPy dtype, or the default float dtype when None."""
    return as_dtype(dtype).numpy if dtype is not None else get_default_dtype().numpy


def _filled(maker, size, dtype, device, requires_grad, name):
    shape = size_args(size, name)
    if any(s < 0 for s in shape):
        raise RuntimeError(f"{name}(): trying to create tensor with negative dimension in {list(shape)}")
    xp = array_module(device)
    return _finish(maker(xp, shape, _float_dtype(dtype)), None, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, d: xp.zeros(s, dtype=d), size, dtype, device, requires_grad, "zeros")


def ones(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, d: xp.ones(s, dtype=d), size, dtype, device, requires_grad, "ones")


def empty(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, d: xp.empty(s, dtype=d), size, dtype, device, requires_grad, "empty")


def _fill_dtype(fill_value, dtype):
    if dtype is not None:
        return as_dtype(dtype).numpy
    if isinstance(fill_value, (bool, np.bool_)):
        return np.bool_
    if isinstance(fill_value, (int, np.integer)):
        return np.int64
    return get_default_dtype().numpy


def full(size, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of ``size`` filled with ``fill_value`` (its dtype inferred from the value)."""
    shape = size_args((size,), "full")
    xp = array_module(device)
    return _finish(xp.full(shape, fill_value, dtype=_fill_dtype(fill_value, dtype)), None, requires_grad)


def _like(input, dtype, device):
    return (
        as_dtype(dtype).numpy if dtype is not None else input.data.dtype,
        device if device is not None else input.device,
    )


def zeros_like(input, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return _finish(array_module(dev).zeros(input.data.shape, dtype=d), None, requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return _finish(array_module(dev).ones(input.data.shape, dtype=d), None, requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return _finish(array_module(dev).empty(input.data.shape, dtype=d), None, requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return _finish(array_module(dev).full(input.data.shape, fill_value, dtype=d), None, requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Values from ``start`` (default 0) up to but excluding ``end``, ``step`` apart."""
    if end is None:
        start, end = 0, start
    values = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    if (end - start) / step < 0:
        raise RuntimeError(
            f"arange: upper bound and larger bound inconsistent with step sign (start={start}, end={end}, step={step})"
        )
    if dtype is None:
        dtype = get_default_dtype() if any(isinstance(v, float) for v in values) else as_dtype("int64")
    target = as_dtype(dtype)
    count = max(math.ceil((values[1] - values[0]) / values[2]), 0)
    if target.is_floating_point:
        arr = (values[0] + np.arange(count, dtype=np.float64) * values[2]).astype(target.numpy)
    else:
        # PyTorch computes the length from the exact bounds, then steps by start and step cast to the dtype.
        step = int(values[2])
        if step == 0:
            raise RuntimeError(f"arange: step must be nonzero (step {values[2]} becomes 0 as {target.name})")
        arr = (int(values[0]) + np.arange(count, dtype=np.int64) * step).astype(target.numpy)
    return _finish(arr, device, requires_grad)


def linspace(start, end, steps: int, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    if steps < 0:
        raise RuntimeError(f"linspace: number of steps must be non-negative, got {steps}")
    arr = np.linspace(start, end, steps, dtype=np.float64).astype(_float_dtype(dtype))
    return _finish(arr, device, requires_grad)


def eye(n: int, m: int | None = None, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _finish(np.eye(n, m, dtype=_float_dtype(dtype)), device, requires_grad)


def _random(sample, size, dtype, device, requires_grad, name, generator):
    shape = size_args(size, name)
    target = _float_dtype(dtype)
    if np.dtype(target).kind != "f":
        raise RuntimeError(f"{name}: expected a floating dtype, got {np.dtype(target)}")
    rng = numpy_generator(generator)
    arr = sample(rng, shape, np.float64 if target == np.float16 else target)
    return _finish(arr.astype(target, copy=False), device, requires_grad)


def rand(*size, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Samples from U[0, 1)."""
    return _random(lambda r, s, d: r.random(s, dtype=d), size, dtype, device, requires_grad, "rand", generator)


def randn(*size, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Samples from the standard normal distribution."""
    return _random(
        lambda r, s, d: r.standard_normal(s, dtype=d), size, dtype, device, requires_grad, "randn", generator
    )


def randint(*args, low=None, high=None, size=None, generator=None, dtype=None, device=None, requires_grad=False):
    """``randint(high, size)`` or ``randint(low, high, size)``: integers in ``[low, high)``."""
    args = list(args)
    if size is None and args and isinstance(args[-1], (tuple, list)):
        size = args.pop()
    if len(args) > 2:
        raise TypeError("randint expects (high, size) or (low, high, size)")
    if len(args) == 2:
        low, high = args
    elif len(args) == 1:
        if high is None:
            high = args[0]
        else:
            low = args[0]
    low = 0 if low is None else low
    if high is None:
        raise TypeError("randint() missing required argument 'high'")
    if size is None:
        raise TypeError("randint() missing required argument 'size'")
    if high <= low:
        raise RuntimeError(f"randint: expects 'from' ({low}) to be less than 'to' ({high})")
    shape = size_args((size,), "randint")
    target = as_dtype(dtype).numpy if dtype is not None else np.int64
    arr = numpy_generator(generator).integers(low, high, size=shape, dtype=np.int64).astype(target)
    return _finish(arr, device, requires_grad)


def randperm(n: int, *, generator=None, dtype=None, device=None) -> Tensor:
    """A random permutation of ``0 .. n-1``."""
    target = as_dtype(dtype).numpy if dtype is not None else np.int64
    return _finish(numpy_generator(generator).permutation(n).astype(target), device, False)


def rand_like(input, *, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return rand(input.data.shape, generator=generator, dtype=d, device=dev, requires_grad=requires_grad)


def randn_like(input, *, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return randn(input.data.shape, generator=generator, dtype=d, device=dev, requires_grad=requires_grad)


def randint_like(input, low=0, high=None, *, generator=None, dtype=None, device=None) -> Tensor:
    if high is None:
        low, high = 0, low
    d, dev = _like(input, dtype, device)
    return randint(low, high, input.data.shape, generator=generator, dtype=d, device=dev)
