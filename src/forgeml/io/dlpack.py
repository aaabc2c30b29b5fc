"""DLPack: tensors that share memory with PyTorch, NumPy, CuPy and any other library that speaks the protocol.

``forgeml.from_dlpack(obj)`` wraps the memory of any object with
``__dlpack__``/``__dlpack_device__`` (a ``torch.Tensor``, a NumPy or CuPy
array, another ForgeML tensor) or a DLPack capsule (``torch.utils.dlpack.to_dlpack``)
in a :class:`~forgeml.Tensor`, without copying; ``Tensor.__dlpack__`` is the
other direction, so ``torch.from_dlpack(t)``, ``numpy.from_dlpack(t)`` and
``cupy.from_dlpack(t)`` see a ForgeML tensor's memory. A write on either side
is seen on the other. As in PyTorch, a tensor that requires grad refuses to
be exported (``BufferError``: use ``tensor.detach()``).

The work is the arrays' own: host memory is read by ``numpy.from_dlpack``,
CUDA memory by the CUDA namespace's ``from_dlpack`` (CuPy, on the device the
producer names, whose stream CuPy synchronises with). What NumPy's DLPack
cannot hold, ForgeML cannot either: ``bfloat16`` (DLPack has it, NumPy's
reader does not) and complex or unsigned 16/32/64-bit types (ForgeML has no
such dtypes) raise.
"""

from __future__ import annotations

import ctypes
import enum

import numpy as np

from ..backend.device import CPU, Device, array_module, as_device, to_device
from ..backend.dtypes import dtype_of_array
from ..tensor import Tensor

__all__ = ["DLDeviceType", "from_dlpack"]


# DLPack's device types (``dlpack.h``), as ``__dlpack_device__`` reports them, under dlpack.h's names.
DLDeviceType = enum.IntEnum(
    "DLDeviceType",
    {
        "kDLCPU": 1,
        "kDLCUDA": 2,
        "kDLCUDAHost": 3,
        "kDLOpenCL": 4,
        "kDLVulkan": 7,
        "kDLMetal": 8,
        "kDLVPI": 9,
        "kDLROCM": 10,
        "kDLROCMHost": 11,
        "kDLExtDev": 12,
        "kDLCUDAManaged": 13,
        "kDLOneAPI": 14,
        "kDLWebGPU": 15,
        "kDLHexagon": 16,
        "kDLMAIA": 17,
    },
    module=__name__,
)

_HOST = frozenset({DLDeviceType.kDLCPU, DLDeviceType.kDLCUDAHost, DLDeviceType.kDLROCMHost})  # NumPy reads these
_CUDA = frozenset({DLDeviceType.kDLCUDA, DLDeviceType.kDLCUDAManaged})  # CuPy reads these


def from_dlpack(ext_tensor, *, device=None, copy: bool | None = None) -> Tensor:
    """A tensor sharing the memory of ``ext_tensor`` (``torch.from_dlpack``'s counterpart).

    ``ext_tensor`` is an object with ``__dlpack__`` and ``__dlpack_device__``
    (a ``torch.Tensor``, a NumPy or CuPy array, a ForgeML tensor) or a DLPack
    capsule. The tensor lives where the memory does: ``cpu`` (NumPy) for host
    memory, ``cuda:N`` (CuPy) for CUDA memory. ``copy=True`` asks for a copy,
    ``copy=False`` forbids one; ``device`` copies to another device (so it
    cannot be combined with ``copy=False``). The result never requires grad.
    """
    if type(ext_tensor).__name__ == "PyCapsule":
        ext_tensor = _Capsule(ext_tensor)
    elif not (hasattr(ext_tensor, "__dlpack__") and hasattr(ext_tensor, "__dlpack_device__")):
        raise TypeError(
            "from_dlpack expects an object with __dlpack__ and __dlpack_device__ (a torch.Tensor, a NumPy or CuPy "
            f"array, a ForgeML tensor) or a DLPack capsule, got {type(ext_tensor).__name__}"
        )
    kind, index = ext_tensor.__dlpack_device__()
    capsule = isinstance(ext_tensor, _Capsule)
    kwargs = {} if copy is None or capsule else {"copy": copy}
    if kind in _HOST:
        source = CPU
        try:
            array = np.from_dlpack(ext_tensor, **kwargs)
        except RuntimeError as exc:
            if "dtype" not in str(exc):
                raise
            raise TypeError(
                f"from_dlpack: {exc} NumPy reads host memory for ForgeML, and its DLPack reader has no bfloat16 "
                "(nor any other type beyond ints, floats, complex and bool): convert it on the other side first "
                "(for example .float())"
            ) from exc
    elif kind in _CUDA:
        source = Device("cuda", int(index))
        xp = array_module(source)  # CuPy (a clear error without it or without a GPU)
        with xp.cuda.Device(source.index):
            array = xp.from_dlpack(ext_tensor, **kwargs)
    else:
        try:
            name = DLDeviceType(kind).name
        except ValueError:
            name = str(kind)
        raise BufferError(
            f"from_dlpack: the memory is on DLPack device {name} (index {index}); ForgeML holds host memory "
            "(NumPy) and CUDA memory (CuPy)"
        )
    if capsule and copy:
        array = array.copy()  # a capsule is an export made already: the copy is ours to take
    elif capsule and ext_tensor.legacy and kind in _HOST and not array.flags.writeable:
        array = _writable(array)
    dtype_of_array(array)  # a clear TypeError for element types ForgeML has no dtype for (complex, uint16...)
    if device is not None and as_device(device) != source:
        if copy is False:
            raise ValueError(f"from_dlpack: moving {source} memory to {as_device(device)} needs a copy, but copy=False")
        array = to_device(array, as_device(device))
    return Tensor._make(array, False, None)


# -- capsules ---------------------------------------------------------------------------------------------------
# A capsule made by ``to_dlpack`` is already an export: the consumers above need an object with ``__dlpack__`` and
# ``__dlpack_device__``, so the device is read from the capsule's DLTensor (``dlpack.h``): an unversioned
# "dltensor" capsule points at DLManagedTensor, whose DLTensor starts with ``void* data`` and then the device;
# a versioned one points at DLManagedTensorVersioned, whose DLTensor follows the version, manager context,
# deleter and flags (4 fields of 8 bytes).
_DEVICE_OFFSET = {b"dltensor": 8, b"dltensor_versioned": 32 + 8}


class _Capsule:
    """A DLPack capsule presented as a producer: ``__dlpack__`` hands it over (once, as the protocol says)."""

    def __init__(self, capsule) -> None:
        get_name = ctypes.pythonapi.PyCapsule_GetName
        get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
        name = get_name(capsule)
        if name not in _DEVICE_OFFSET:
            used = name is not None and name.startswith(b"used_")
            raise BufferError(
                "from_dlpack: this DLPack capsule was consumed already (a capsule can be read once)"
                if used
                else f"from_dlpack: a capsule named {name!r} is not a DLPack tensor"
            )
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        address = get_pointer(capsule, name) + _DEVICE_OFFSET[name]
        self.device = (ctypes.c_int32.from_address(address).value, ctypes.c_int32.from_address(address + 4).value)
        self.capsule = capsule
        self.legacy = name == b"dltensor"

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        return self.capsule

    def __dlpack_device__(self) -> tuple:
        return self.device


class _Writable:
    """Memory NumPy took as read-only, offered again as writable; holds the read-only array (and so the capsule)."""

    def __init__(self, array) -> None:
        interface = dict(array.__array_interface__)
        interface["data"] = (interface["data"][0], False)
        self.__array_interface__ = interface
        self.keep = array


def _writable(array):
    """NumPy reads an unversioned capsule as read-only, since that format cannot say whether it is; PyTorch (which
    makes them, with ``to_dlpack``) reads it as writable, and so does ForgeML."""
    return np.asarray(_Writable(array))
