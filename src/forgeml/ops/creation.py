"""Creating tensors: ``tensor``, ``from_numpy``, ``zeros``, ``arange``, ``randn``, ``*_like`` ...

Python floats become the default float dtype (float32), Python ints int64,
bools bool; NumPy (and CuPy) arrays keep their dtype. Every function takes
``device=`` and creates its result directly on that device, with the array
namespace of the device (``*_like`` default to the input's device). Random
functions draw from the given ``generator`` or the default generator of the
device (see :func:`forgeml.manual_seed`).
"""

from __future__ import annotations

import math

from ..backend import convert as _convert
from ..backend.device import HOST_ARRAY, array_module, as_device, device_of, is_array, to_device
from ..backend.dtypes import as_dtype, dtype_of_array, get_default_dtype, is_float
from ..backend.random import generator_for
from ..backend.shapes import size_args
from ..tensor import Tensor

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

_BOOL = as_dtype("bool").numpy
_INT64 = as_dtype("int64").numpy
_FLOAT32 = as_dtype("float32").numpy
_FLOAT64 = as_dtype("float64").numpy


def as_array(data, dtype=None):
    """``data`` (nested lists, numbers, arrays, tensors) as an array of a supported dtype, on its device."""
    if isinstance(data, Tensor):
        data = data._data
    return _convert.as_array(data, dtype)


def _finish(arr, requires_grad) -> Tensor:
    t = Tensor._make(arr, False, None)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (nested lists, a number, an array, or a tensor).

    Without ``device``, the result is on the CPU for Python data and on the
    device of ``data`` for arrays and tensors (a CUDA tensor is copied on its device).
    """
    source = data._data if isinstance(data, Tensor) else data
    arr = as_array(source, dtype)
    if device is not None:
        arr = to_device(arr, as_device(device))
    if arr is source:  # neither converted nor moved: copy, so the new tensor owns its storage
        arr = arr.copy()
    return _finish(arr, requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like :func:`tensor`, but shares memory with an array or tensor when no conversion or transfer is needed."""
    if isinstance(data, Tensor) and (dtype is None or as_dtype(dtype).numpy == data._data.dtype):
        return data if device is None else data.to(device)
    arr = as_array(data, dtype)
    if device is not None:
        arr = to_device(arr, as_device(device))
    return Tensor._make(arr, False, None)


def from_numpy(array) -> Tensor:
    """A CPU tensor sharing ``array``'s memory (no copy): writes to one show in the other."""
    if not isinstance(array, HOST_ARRAY):
        if is_array(array):
            raise TypeError(
                f"expected np.ndarray (got {type(array).__name__} on {device_of(array)}): from_numpy takes host "
                "arrays only; use forgeml.as_tensor or forgeml.tensor for device arrays"
            )
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
    return _finish(maker(xp, shape, _float_dtype(dtype)), requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, d: xp.zeros(s, dtype=d), size, dtype, device, requires_grad, "zeros")


def ones(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, d: xp.ones(s, dtype=d), size, dtype, device, requires_grad, "ones")


def empty(*size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, d: xp.empty(s, dtype=d), size, dtype, device, requires_grad, "empty")


def _fill_dtype(fill_value, dtype):
    if dtype is not None:
        return as_dtype(dtype).numpy
    kind = getattr(getattr(fill_value, "dtype", None), "kind", None)  # NumPy scalars
    if isinstance(fill_value, bool) or kind == "b":
        return _BOOL
    if isinstance(fill_value, int) or kind in ("i", "u"):
        return _INT64
    return get_default_dtype().numpy


def full(size, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of ``size`` filled with ``fill_value`` (its dtype inferred from the value)."""
    shape = size_args((size,), "full")
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    xp = array_module(device)
    return _finish(xp.full(shape, fill_value, dtype=_fill_dtype(fill_value, dtype)), requires_grad)


def _like(input, dtype, device):
    return (
        as_dtype(dtype).numpy if dtype is not None else input._data.dtype,
        device if device is not None else input.device,
    )


def zeros_like(input, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return _finish(array_module(dev).zeros(input._data.shape, dtype=d), requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return _finish(array_module(dev).ones(input._data.shape, dtype=d), requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return _finish(array_module(dev).empty(input._data.shape, dtype=d), requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    return _finish(array_module(dev).full(input._data.shape, fill_value, dtype=d), requires_grad)


def _python_number(value):
    """A NumPy scalar as the Python number of the same value (what every array namespace accepts)."""
    return value.item() if hasattr(value, "item") else value


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Values from ``start`` (default 0) up to but excluding ``end``, ``step`` apart."""
    if end is None:
        start, end = 0, start
    values = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    if values[2] == 0:
        raise RuntimeError("arange: step must be nonzero")
    if (values[1] - values[0]) / values[2] < 0:
        raise RuntimeError(
            f"arange: upper bound and larger bound inconsistent with step sign (start={start}, end={end}, step={step})"
        )
    if dtype is None:
        dtype = get_default_dtype() if any(isinstance(v, float) for v in values) else as_dtype("int64")
    target = as_dtype(dtype)
    count = max(math.ceil((values[1] - values[0]) / values[2]), 0)
    xp = array_module(device)
    if target.is_floating_point:
        first, delta = _python_number(values[0]), _python_number(values[2])
        arr = (first + xp.arange(count, dtype=_FLOAT64) * delta).astype(target.numpy)
    else:
        # PyTorch computes the length from the exact bounds, then steps by start and step cast to the dtype.
        delta = int(values[2])
        if delta == 0:
            raise RuntimeError(f"arange: step must be nonzero (step {values[2]} becomes 0 as {target.name})")
        arr = (int(values[0]) + xp.arange(count, dtype=_INT64) * delta).astype(target.numpy)
    return _finish(arr, requires_grad)


def linspace(start, end, steps: int, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    if steps < 0:
        raise RuntimeError(f"linspace: number of steps must be non-negative, got {steps}")
    arr = array_module(device).linspace(start, end, steps, dtype=_FLOAT64).astype(_float_dtype(dtype))
    return _finish(arr, requires_grad)


def eye(n: int, m: int | None = None, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _finish(array_module(device).eye(n, m, dtype=_float_dtype(dtype)), requires_grad)


# -- random -------------------------------------------------------------------
# Each draws from ``generator_for(device, generator)`` with the draw methods of
# ``backend.random.Generator``, which on the CPU make exactly the NumPy calls
# these functions always made (so seeded CPU streams are unchanged).
def _random(draw, size, dtype, device, requires_grad, name, generator):
    shape = size_args(size, name)
    target = _float_dtype(dtype)
    if not is_float(target):
        raise RuntimeError(f"{name}: expected a floating dtype, got {target}")
    gen = generator_for(as_device(device), generator)
    # Generators draw float32 and float64; float16 and bfloat16 are drawn as float64, then rounded.
    arr = draw(gen, shape, target if target in (_FLOAT32, _FLOAT64) else _FLOAT64)
    return _finish(arr.astype(target, copy=False), requires_grad)


def rand(*size, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Samples from U[0, 1)."""
    return _random(lambda g, s, d: g.random(s, d), size, dtype, device, requires_grad, "rand", generator)


def randn(*size, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Samples from the standard normal distribution."""
    return _random(lambda g, s, d: g.standard_normal(s, d), size, dtype, device, requires_grad, "randn", generator)


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
    target = as_dtype(dtype).numpy if dtype is not None else _INT64
    gen = generator_for(as_device(device), generator)
    arr = gen.integers(_python_number(low), _python_number(high), shape).astype(target, copy=False)
    return _finish(arr, requires_grad)


def randperm(n: int, *, generator=None, dtype=None, device=None) -> Tensor:
    """A random permutation of ``0 .. n-1``."""
    target = as_dtype(dtype).numpy if dtype is not None else _INT64
    gen = generator_for(as_device(device), generator)
    return _finish(gen.permutation(n).astype(target, copy=False), False)


def rand_like(input, *, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return rand(input._data.shape, generator=generator, dtype=d, device=dev, requires_grad=requires_grad)


def randn_like(input, *, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    d, dev = _like(input, dtype, device)
    return randn(input._data.shape, generator=generator, dtype=d, device=dev, requires_grad=requires_grad)


def randint_like(input, low=0, high=None, *, generator=None, dtype=None, device=None) -> Tensor:
    if high is None:
        low, high = 0, low
    d, dev = _like(input, dtype, device)
    return randint(low, high, input._data.shape, generator=generator, dtype=d, device=dev)
