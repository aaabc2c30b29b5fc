"""A CuPy stand-in on NumPy that refuses what CuPy refuses, so device-agnostic code is tested without a GPU.

``namespace`` behaves like the ``cupy`` module and :class:`CheckedArray` like
``cupy.ndarray``, computing with NumPy underneath. Installed as the namespace
of ``cuda`` devices (the ``checked_cuda`` fixture), it lets the op and module
parity tables run on ``device='cuda'`` on a CPU. It is stricter than CuPy
where that catches code that would break on a GPU:

* a host array never mixes with a device array: NumPy functions and ufuncs
  refuse a ``CheckedArray`` (``np.exp(x)``, ``np.asarray(x)``,
  ``isinstance(x, np.ndarray)`` is False), and device functions, operators,
  indices and assignments refuse NumPy arrays; ``xp.asarray``/``xp.array``
  are the explicit host-to-device copies and ``.get()`` the way back;
* only names CuPy has exist (``tests/cupy_api.json``, recorded from CuPy by
  ``tools/record_cupy_api.py``): ``xp.frompyfunc`` or ``x.flags.writeable``
  fail here as on a GPU;
* reductions return 0-d arrays, not NumPy scalars, as CuPy's do;
* CUDA kernels (``ElementwiseKernel``, ``RawModule``, ``fuse``) do not exist:
  code that uses them must check ``forgeml.backend.is_cupy(xp)`` and keep a
  portable path, which is what runs here.

What only a GPU run can find: kernel compilation and launch errors, numerical
differences of cuBLAS/cuDNN and fused kernels, asynchrony and streams, memory
pressure, and speed.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np

_API = json.loads(Path(__file__).with_name("cupy_api.json").read_text())
_NAMES = frozenset(_API["namespace"])
_ARRAY_NAMES = frozenset(_API["ndarray"])
_UFUNC_METHODS = frozenset(_API["ufunc"])
_RANDOM_STATE_NAMES = frozenset(_API["random_state"])
_KERNEL_NAMES = frozenset({"ElementwiseKernel", "ReductionKernel", "RawKernel", "RawModule", "fuse"})

accessed: set[str] = set()  # every namespace name the code under test asked for


class _DeviceInfo:
    id = 0

    def __repr__(self) -> str:
        return "<CUDA Device 0 (checked stand-in)>"


_DEVICE = _DeviceInfo()


class _Flags:
    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, a: np.ndarray) -> None:
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = bool(a.flags.owndata)


class _Pool:
    """``cupy.get_default_memory_pool()``: bytes held by live arrays that own their memory."""

    def __init__(self) -> None:
        self._used = self.peak = 0

    @property
    def used(self) -> int:
        return self._used

    @used.setter
    def used(self, value: int) -> None:
        self._used = value
        self.peak = max(self.peak, value)

    def used_bytes(self) -> int:
        return self._used

    def peak_bytes(self) -> int:
        return self.peak

    def reset_peak(self) -> None:
        self.peak = self._used

    def total_bytes(self) -> int:
        return self.used

    def free_all_blocks(self) -> None:
        pass


_POOL = _Pool()


def _host_array_error(where: str) -> TypeError:
    return TypeError(
        f"Unsupported type <class 'numpy.ndarray'> in {where}: a host (NumPy) array met a CUDA array; "
        "copy it to the device first (xp.asarray)"
    )


def _unwrap(value, where: str):
    if type(value) is CheckedArray:
        return value._a
    if isinstance(value, np.ndarray):
        raise _host_array_error(where)
    if type(value) in (list, tuple):
        return type(value)(_unwrap(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, where) for k, v in value.items()}
    return value


def _wrap(value, owners=()):
    """Device arrays for NumPy results; an input array that comes back unchanged keeps its wrapper."""
    if isinstance(value, np.ndarray):
        for owner in owners:
            if type(owner) is CheckedArray and owner._a is value:
                return owner
        return CheckedArray(value)
    if isinstance(value, np.generic):
        return CheckedArray(np.asarray(value))
    if type(value) is tuple:
        return tuple(_wrap(v, owners) for v in value)
    if type(value) is list:
        return [_wrap(v, owners) for v in value]
    return value


def _call(fn, where, args, kwargs, owners=()):
    out = kwargs.get("out")
    result = fn(*_unwrap(args, where), **_unwrap(kwargs, where))
    if type(out) is CheckedArray:
        return out
    return _wrap(result, owners + tuple(args))


class CheckedArray:
    """``cupy.ndarray`` on NumPy: same methods and operators, no implicit way back to the host."""

    __slots__ = ("_a", "_counted")
    __array_ufunc__ = None  # NumPy ufuncs and binary operators with a NumPy array refuse it

    def __init__(self, a: np.ndarray) -> None:
        self._a = a
        self._counted = a.base is None and a.nbytes > 0
        if self._counted:
            _POOL.used += a.nbytes

    def __del__(self) -> None:
        if self._counted:
            _POOL.used -= self._a.nbytes

    # -- the host boundary ------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy "
            "array explicitly."
        )

    def __array_function__(self, func, types_, args, kwargs):
        raise TypeError(
            f"numpy.{func.__name__} was called with a CUDA array; call it through the array namespace "
            f"(xp.{func.__name__})"
        )

    def get(self) -> np.ndarray:
        return self._a.copy()

    # -- attributes -----------------------------------------------------------------
    @property
    def shape(self):
        return self._a.shape

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def itemsize(self):
        return self._a.itemsize

    @property
    def nbytes(self):
        return self._a.nbytes

    @property
    def strides(self):
        return self._a.strides

    @property
    def flags(self) -> _Flags:
        return _Flags(self._a)

    @property
    def device(self) -> _DeviceInfo:
        return _DEVICE

    @property
    def base(self):
        base = self._a.base
        return None if base is None else CheckedArray(base) if isinstance(base, np.ndarray) else base

    @property
    def T(self):
        return CheckedArray(self._a.T)

    @property
    def mT(self):
        return CheckedArray(np.swapaxes(self._a, -1, -2))

    def __getattr__(self, name):
        if name not in _ARRAY_NAMES:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *args, **kwargs: _call(attr, f"cupy.ndarray.{name}", args, kwargs, (self,))
        return _wrap(attr)

    # -- Python protocols ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (CheckedArray(self._a[i]) for i in range(len(self._a)))

    def __bool__(self) -> bool:
        return bool(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __index__(self) -> int:
        return self._a.__index__()

    def __complex__(self) -> complex:
        return complex(self._a)

    def __repr__(self) -> str:
        return repr(self._a)[:-1] + ", device='cuda:0')"

    def __str__(self) -> str:
        return str(self._a)

    def __format__(self, spec: str) -> str:
        return format(self._a, spec)

    __hash__ = None  # type: ignore[assignment]  # arrays are unhashable, as CuPy's are

    def __getitem__(self, index):
        return _wrap(self._a[_index(index)], (self,))

    def __setitem__(self, index, value) -> None:
        self._a[_index(index)] = _unwrap(value, "an assignment")

    def __dlpack__(self, *args, **kwargs):
        return self._a.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0


def _index(index):
    items = index if type(index) is tuple else (index,)
    converted = tuple(_unwrap(i, "an index") for i in items)
    return converted if type(index) is tuple else converted[0]


def _binary(name):
    def op(self, other):
        result = getattr(self._a, name)(_unwrap(other, f"operator {name}"))
        return NotImplemented if result is NotImplemented else _wrap(result)

    op.__name__ = name
    return op


def _inplace(name):
    def op(self, other):
        getattr(self._a, name)(_unwrap(other, f"operator {name}"))
        return self

    op.__name__ = name
    return op


def _unary(name):
    def op(self):
        return _wrap(getattr(self._a, name)())

    op.__name__ = name
    return op


for _name in (
    "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift "
    "radd rsub rmul rtruediv rfloordiv rmod rpow rmatmul rand ror rxor "
    "eq ne lt le gt ge"
).split():
    setattr(CheckedArray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in "iadd isub imul itruediv ifloordiv imod ipow iand ior ixor".split():
    setattr(CheckedArray, f"__{_name}__", _inplace(f"__{_name}__"))
for _name in "neg pos abs invert".split():
    setattr(CheckedArray, f"__{_name}__", _unary(f"__{_name}__"))


# -- the namespace --------------------------------------------------------------------
class _Ufunc:
    def __init__(self, ufunc: np.ufunc) -> None:
        self._u = ufunc
        self.__name__ = ufunc.__name__
        self.nin, self.nout = ufunc.nin, ufunc.nout

    def __call__(self, *args, **kwargs):
        return _call(self._u, f"cupy.{self.__name__}", args, kwargs)

    def __getattr__(self, name):
        if name not in _UFUNC_METHODS:
            raise AttributeError(f"'cupy.ufunc' object has no attribute {name!r}")
        method = getattr(self._u, name)
        if name == "at":

            def at(a, indices, b=None):
                if type(a) is not CheckedArray:
                    raise TypeError(f"cupy.{self.__name__}.at needs a CUDA array to update, got {type(a).__name__}")
                where = f"cupy.{self.__name__}.at"
                args = (a._a, _index(indices)) + (() if b is None else (_unwrap(b, where),))
                method(*args)

            return at
        return lambda *args, **kwargs: _call(method, f"cupy.{self.__name__}.{name}", args, kwargs)


class _RandomState:
    """``cupy.random.RandomState`` on NumPy's legacy generator (its own stream: values differ from CuPy's)."""

    def __init__(self, seed=None) -> None:
        self._rs = np.random.RandomState(None if seed is None else int(seed) % (2**32))

    def __getattr__(self, name):
        if name not in _RANDOM_STATE_NAMES:
            raise AttributeError(f"'cupy.random.RandomState' object has no attribute {name!r}")
        method = getattr(self._rs, name)

        def call(*args, dtype=None, **kwargs):
            if name == "randint":
                out = method(*args, dtype=dtype or np.int64, **kwargs)
            else:
                out = method(*args, **kwargs)
                if dtype is not None:
                    out = np.asarray(out).astype(dtype)
            return _wrap(np.asarray(out))

        return call

    def seed(self, seed=None) -> None:
        self._rs.seed(None if seed is None else int(seed) % (2**32))


def _host_data(obj):
    """Python data (lists, numbers, NumPy arrays) on its way to the device; device arrays inside are unwrapped."""
    if type(obj) is CheckedArray:
        return obj._a
    if type(obj) in (list, tuple):
        return type(obj)(_host_data(v) for v in obj)
    return obj


def _asarray(obj, dtype=None, order=None):
    """``cupy.asarray``: a device array as it is (converted if asked), host data copied to the device."""
    if type(obj) is CheckedArray:
        converted = np.asarray(obj._a, dtype=dtype, order=order)
        return obj if converted is obj._a else CheckedArray(converted)
    return CheckedArray(np.array(_host_data(obj), dtype=dtype, order=order or "K", copy=True))


def _array(obj, dtype=None, copy=True, order="K", ndmin=0):
    """``cupy.array``: a copy (unless ``copy=False`` and nothing changes); host data always copied."""
    if type(obj) is CheckedArray:
        converted = np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin)
        return obj if converted is obj._a else CheckedArray(converted)
    return CheckedArray(np.array(_host_data(obj), dtype=dtype, copy=True, order=order, ndmin=ndmin))


class _CudaDevice:
    def __init__(self, index=0) -> None:
        self.id = int(getattr(index, "id", index))
        if self.id != 0:
            raise RuntimeError(f"invalid device ordinal {self.id}: the checked stand-in has one device")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def use(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    compute_capability = "90"


_cuda = types.SimpleNamespace(
    Device=_CudaDevice,
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda i: {"name": b"Checked CUDA stand-in", "totalGlobalMem": 16 << 30},
        deviceSynchronize=lambda: None,
    ),
    Stream=types.SimpleNamespace(null=types.SimpleNamespace(synchronize=lambda: None)),
    get_device_id=lambda: 0,
)


class _Namespace(types.ModuleType):
    ndarray = CheckedArray
    cuda = _cuda
    random = types.SimpleNamespace(RandomState=_RandomState)
    lib = types.SimpleNamespace(
        stride_tricks=types.SimpleNamespace(
            as_strided=lambda x, shape=None, strides=None: CheckedArray(
                np.lib.stride_tricks.as_strided(_unwrap(x, "as_strided"), shape, strides)
            )
        )
    )
    asarray = staticmethod(_asarray)
    array = staticmethod(_array)

    def __getattr__(self, name):
        accessed.add(name)
        if name in _KERNEL_NAMES:
            raise AttributeError(
                f"cupy.{name} compiles CUDA code, which the checked stand-in cannot run: guard it with "
                "forgeml.backend.is_cupy(xp) and keep a portable path"
            )
        if name not in _NAMES:
            raise AttributeError(f"module 'cupy' has no attribute {name!r}")
        if name == "get_default_memory_pool":
            return lambda: _POOL
        if name == "asnumpy":
            return lambda a: a.get() if type(a) is CheckedArray else np.asarray(a)
        if name == "linalg":
            return types.SimpleNamespace(
                **{n: _function(getattr(np.linalg, n), f"linalg.{n}") for n in _API["linalg"] if hasattr(np.linalg, n)}
            )
        obj = getattr(np, name)
        if isinstance(obj, np.ufunc):
            return _Ufunc(obj)
        if callable(obj) and not isinstance(obj, type):
            return _function(obj, name)
        return obj


def _function(fn, name):
    def call(*args, **kwargs):
        result = _call(fn, f"cupy.{name}", args, kwargs)
        return CheckedArray(np.asarray(result)) if isinstance(result, bool) else result  # CuPy answers with arrays

    call.__name__ = name
    return call


namespace = _Namespace("cupy_checked")
