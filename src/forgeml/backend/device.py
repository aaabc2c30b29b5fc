"""Devices, the array namespace behind each one, and moving arrays between them.

A :class:`Device` names where a tensor's storage lives: ``cpu`` (NumPy) or
``cuda:N`` (CuPy). Everything above this layer asks this module which
namespace (``xp``) computes on an array or a device, instead of naming NumPy
or CuPy itself. This module is the only place in ForgeML that imports CuPy,
and it does so lazily, so ``import forgeml`` needs NumPy alone.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CPU",
    "Device",
    "HOST_ARRAY",
    "HOST_SCALAR",
    "HOST_XP",
    "array_module",
    "as_device",
    "cuda_device_count",
    "cuda_is_available",
    "cuda_namespace",
    "device_of",
    "is_array",
    "is_cupy",
    "namespace_of",
    "to_device",
    "to_host",
]

_INSTALL_GPU_HINT = (
    'install the GPU extra: pip install "forgeml[gpu]" (CuPy for CUDA 13 drivers; for CUDA 12 drivers '
    "install cupy-cuda12x instead)"
)

HOST_ARRAY = np.ndarray  # the array type of the cpu device; autograd's fast path compares against it
HOST_SCALAR = np.generic  # what NumPy reductions return for 0-d results (CuPy returns 0-d arrays)
HOST_XP = np  # the namespace of the cpu device: ops pick their CPU half with ``xp is HOST_XP``


class Device:
    """Where a tensor lives: ``Device('cpu')``, ``Device('cuda')``, ``Device('cuda', 1)``.

    Accepts the same spellings as ``torch.device``: ``'cpu'``, ``'cuda'``,
    ``'cuda:1'``, or a type and an index.
    """

    __slots__ = ("type", "index")

    def __init__(self, type: str | Device, index: int | None = None) -> None:
        if isinstance(type, Device):
            self.type, self.index = type.type, type.index
            return
        if not isinstance(type, str):
            raise TypeError(f"device must be a string or Device, got {type!r}")
        kind, sep, idx = type.partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"unknown device type {kind!r}: expected 'cpu' or 'cuda' (optionally 'cuda:N')")
        if sep:
            if index is not None:
                raise ValueError(f"device {type!r} already has an index; do not pass index={index}")
            if not idx.isdigit():
                raise ValueError(f"invalid device index in {type!r}: expected a non-negative integer")
            index = int(idx)
        if index is not None and (isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0):
            raise ValueError(f"device index must be a non-negative integer, got {index!r}")
        if kind == "cpu" and index not in (None, 0):
            raise ValueError(f"the cpu device has no index {index}")
        if kind == "cuda" and index is None:
            index = 0
        self.type = kind
        self.index = None if kind == "cpu" else int(index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except (ValueError, TypeError):
                return False
        return isinstance(other, Device) and self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type={self.type!r})"
        return f"device(type={self.type!r}, index={self.index})"


CPU = Device("cpu")
_CUDA_DEVICES: dict[int, Device] = {}


def as_device(device: Device | str | int | None) -> Device:
    """Normalise ``None`` (the CPU), a string, a CUDA ordinal or a :class:`Device` to a :class:`Device`."""
    if device is None:
        return CPU
    if isinstance(device, Device):
        return device
    if isinstance(device, (int, np.integer)) and not isinstance(device, bool):
        return Device("cuda", int(device))
    return Device(device)


# -- the CUDA namespace -------------------------------------------------------------
# ``_cuda_xp`` is CuPy once imported; tests may install a stand-in namespace that
# behaves like CuPy (see ``use_cuda_namespace``) to run device-agnostic code on a CPU.
_cuda_xp = None
_cuda_is_real = False
_cuda_device_count = 0
_NAMESPACE_BY_TYPE: dict = {np.ndarray: np}


_cupy_missing: ImportError | None = None  # remembered, so availability checks do not retry the import


def _import_cupy():
    global _cuda_xp, _cuda_is_real, _cupy_missing
    if _cuda_xp is None:
        if _cupy_missing is not None:
            raise ImportError(str(_cupy_missing)) from _cupy_missing
        try:
            import cupy
        except ImportError as exc:
            _cupy_missing = ImportError(f"CUDA tensors need CuPy, which is not installed; {_INSTALL_GPU_HINT}")
            raise ImportError(str(_cupy_missing)) from exc
        _cuda_xp, _cuda_is_real = cupy, True
        _NAMESPACE_BY_TYPE[cupy.ndarray] = cupy
    return _cuda_xp


def use_cuda_namespace(module, device_count: int = 1):
    """Make ``module`` the namespace of ``cuda`` devices (a CuPy stand-in for tests); returns the previous state.

    ``module`` must expose ``ndarray`` (its array type) and the NumPy-like API
    CuPy has. Pass the returned state to :func:`restore_cuda_namespace`.
    """
    global _cuda_xp, _cuda_is_real, _cuda_device_count
    previous = (_cuda_xp, _cuda_is_real, _cuda_device_count, dict(_NAMESPACE_BY_TYPE))
    _cuda_xp, _cuda_is_real, _cuda_device_count = module, False, device_count
    _NAMESPACE_BY_TYPE[module.ndarray] = module
    return previous


def restore_cuda_namespace(state) -> None:
    """Undo :func:`use_cuda_namespace`."""
    global _cuda_xp, _cuda_is_real, _cuda_device_count
    _cuda_xp, _cuda_is_real, _cuda_device_count, types = state
    _NAMESPACE_BY_TYPE.clear()
    _NAMESPACE_BY_TYPE.update(types)


def cuda_namespace():
    """The array namespace of CUDA devices (CuPy); raises a clear error when CUDA cannot be used."""
    xp = _cuda_xp if _cuda_xp is not None else _import_cupy()
    if not cuda_is_available():
        raise RuntimeError(
            "CUDA is not available: CuPy is installed but sees no CUDA device (check the driver with nvidia-smi, "
            "and that the CuPy build matches its CUDA version)"
        )
    return xp


def cuda_is_available() -> bool:
    """True when a CUDA namespace is importable and sees at least one device."""
    return cuda_device_count() > 0


def cuda_device_count() -> int:
    """The number of CUDA devices the CUDA namespace sees (0 without CuPy or a GPU)."""
    if _cuda_xp is not None and not _cuda_is_real:
        return _cuda_device_count
    try:
        cp = _import_cupy()
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return 0


def is_cupy(xp) -> bool:
    """True when ``xp`` is the real CuPy (where CUDA-only code such as raw kernels can run)."""
    return _cuda_is_real and xp is _cuda_xp


def array_module(device: Device | str | None):
    """The array namespace (``numpy`` or ``cupy``) that computes on ``device``."""
    dev = as_device(device)
    if dev.type == "cpu":
        return np
    xp = cuda_namespace()
    count = cuda_device_count()
    if dev.index >= count:
        raise RuntimeError(f"CUDA error: invalid device ordinal: {dev} requested, but only {count} CUDA device(s)")
    return xp


def namespace_of(array):
    """The array namespace that computes on ``array`` (``numpy`` for NumPy arrays and scalars)."""
    xp = _NAMESPACE_BY_TYPE.get(type(array))
    if xp is not None:
        return xp
    if isinstance(array, (np.ndarray, np.generic)):
        return np
    if type(array).__module__.startswith("cupy") and _cuda_xp is None:
        _import_cupy()  # a CuPy array made by the user before ForgeML touched CUDA
        return namespace_of(array)
    raise TypeError(f"not an array ForgeML can hold: {type(array).__name__}")


def namespace_for_type(array_type):
    """``namespace_of`` keyed by the array's type (what ``Function.apply`` has at hand)."""
    xp = _NAMESPACE_BY_TYPE.get(array_type)
    if xp is None:
        if array_type.__module__.startswith("cupy") and _cuda_xp is None:
            _import_cupy()
            return namespace_for_type(array_type)
        raise TypeError(f"not an array ForgeML can hold: {array_type.__name__}")
    return xp


def is_array(obj) -> bool:
    """True for an array ForgeML can hold: NumPy's, CuPy's, or the stand-in namespace's in tests."""
    if type(obj) in _NAMESPACE_BY_TYPE or isinstance(obj, np.ndarray):
        return True
    return type(obj).__module__.startswith("cupy") and hasattr(obj, "__cuda_array_interface__")


def device_of(array) -> Device:
    """The device that holds ``array`` (a NumPy or CuPy array)."""
    if isinstance(array, (np.ndarray, np.generic)):
        return CPU
    if type(array) in _NAMESPACE_BY_TYPE or is_array(array):
        index = int(array.device.id)
        dev = _CUDA_DEVICES.get(index)
        if dev is None:
            dev = _CUDA_DEVICES[index] = Device("cuda", index)
        return dev
    raise TypeError(f"not an array ForgeML can hold: {type(array).__name__}")


def to_host(array) -> np.ndarray:
    """``array`` as a NumPy array: itself when it is one, else a copy from its device."""
    if isinstance(array, np.ndarray):
        return array
    if isinstance(array, np.generic):
        return np.asarray(array)
    return array.get()


def to_device(array, device: Device | str | None):
    """Copy ``array`` to ``device``; returns it unchanged when it is already there."""
    dev = as_device(device)
    src = device_of(array)
    if src == dev:
        return array
    if dev.type == "cpu":
        return array.get()
    xp = array_module(dev)
    with xp.cuda.Device(dev.index):
        return xp.asarray(array)


def ignore_float_errors():
    """A context in which NumPy's floating-point warnings (overflow, 0/0) stay silent; CuPy raises none."""
    return np.errstate(all="ignore")
