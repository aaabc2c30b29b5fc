"""Reading PyTorch's ``torch.save`` files (the zip format of PyTorch >= 1.6) with ``weights_only`` semantics.

Such a file is a zip archive holding ``<name>/data.pkl`` (a pickle of the saved object in which every tensor is
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and every storage a persistent id
``('storage', torch.FloatStorage, key, location, numel)``), the raw storages as ``<name>/data/<key>`` and
``<name>/byteorder``. The pickle is read by a restricted unpickler: only the tensor and parameter rebuild
functions, storage types, torch dtypes, ``collections.OrderedDict`` and plain containers, numbers and strings
are allowed; anything else is refused with :class:`UnsafePickleError` before it can run. Tensors that shared a
storage in PyTorch (a tensor and its transpose or slice) come back as views of one array.
"""

from __future__ import annotations

import io
import pickle
import sys
import zipfile
from collections import OrderedDict
from typing import ClassVar

import numpy as np

from ..tensor import Tensor

__all__ = ["UnsafePickleError", "is_pickle", "is_zip", "load_torch_zip", "legacy_format_error"]

_ZIP_MAGIC = b"PK\x03\x04"
# The pickle that opens a legacy (pre-1.6) torch.save file: protocol 2, then the long 0x1950a86a20f9469cfc6c.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}
_TORCH_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "float64": "float64",
    "double": "float64",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "short": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that asks for something other than tensors, storages and plain containers: not loaded."""


class _StorageType:
    """Stands for ``torch.FloatStorage`` (etc.) or a torch dtype while unpickling."""

    def __init__(self, torch_name: str, dtype_name: str) -> None:
        self.torch_name, self.dtype_name = torch_name, dtype_name

    def __repr__(self) -> str:
        return f"torch.{self.torch_name}"


def _numpy_dtype(dtype_name: str, what: str):
    """The NumPy dtype of a forgeml dtype name (bfloat16 needs ml_dtypes)."""
    from ..backend import dtypes

    dt = getattr(dtypes, "bool_" if dtype_name == "bool" else dtype_name)
    try:
        return np.dtype(dt.numpy)
    except (TypeError, ImportError) as exc:
        raise TypeError(f"cannot load {what}: ForgeML's {dtype_name} needs an extra package ({exc})") from None


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"_rebuild_tensor_v2 expects a storage, got {type(storage).__name__}")
    array = storage.view(int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))
    tensor = storage.place(array)
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    from ..nn.parameter import Parameter

    if state:
        raise UnsafePickleError("a Parameter with extra attributes (state) cannot be loaded weights-only")
    return Parameter(data, requires_grad=requires_grad)


class _Storage:
    """One storage of the archive: a flat array that the tensors rebuilt from it view."""

    def __init__(self, array: np.ndarray, location: str, place) -> None:
        self.array, self.location, self._place = array, location, place
        self._placed = None

    def view(self, offset: int, size: tuple, stride: tuple) -> np.ndarray:
        numel = self.array.size
        if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
            raise pickle.UnpicklingError(f"invalid tensor: size {size}, stride {stride}, offset {offset}")
        if len(size) != len(stride):
            raise pickle.UnpicklingError(f"invalid tensor: size {size} and stride {stride} differ in length")
        if 0 not in size:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= numel:
                raise pickle.UnpicklingError(
                    f"invalid tensor: size {size}, stride {stride}, offset {offset} reach element {last} "
                    f"of a storage of {numel}"
                )
        item = self.array.itemsize
        flat = self.array[offset:] if 0 not in size else self.array[:0]
        return np.lib.stride_tricks.as_strided(flat, shape=size, strides=tuple(s * item for s in stride))

    def place(self, array: np.ndarray) -> Tensor:
        return self._place(array, self.location)


def _fresh(fn):
    """A new function object that calls ``fn``."""

    def call(*args, **kwargs):
        return fn(*args, **kwargs)

    return call


def _allowed_globals() -> dict:
    # fresh wrappers per load: nothing a pickle does to them (BUILD is restricted anyway) outlives the load
    allowed = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _fresh(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_parameter"): _fresh(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _fresh(_rebuild_parameter),
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("builtins", "range"): range,
    }
    for name, dtype_name in _STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(name, dtype_name)
    allowed[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage", "uint8")
    return allowed


def _load_build(self) -> None:
    """BUILD only sets the attributes of an OrderedDict (a state_dict's ``_metadata``); nothing else."""
    state = self.stack.pop()
    inst = self.stack[-1]
    if type(inst) is not OrderedDict or not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UnsafePickleError(
            f"{self._name}: refusing to set the state of a {type(inst).__name__} (weights-only loading)"
        )
    inst.__dict__.update(state)


class _RestrictedUnpickler(pickle._Unpickler):
    """Resolves only the globals of :func:`_allowed_globals` (and torch dtypes); anything else raises.

    The pure-Python unpickler, so that BUILD can be restricted too (the pickle is small: tensor data lives in
    separate archive entries).
    """

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str, place, name: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
        self._place, self._name = place, name
        self._storages: dict = {}
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _TORCH_DTYPES:
            from ..backend import dtypes

            return getattr(dtypes, "bool_" if name == "bool" else _TORCH_DTYPES[name])
        raise UnsafePickleError(
            f"{self._name}: refusing to load {module}.{name}: weights-only loading allows tensors, "
            "parameters, storages, torch dtypes, OrderedDict and plain Python containers, numbers and strings. "
            "If you trust the file, load it in PyTorch and save the tensors with safetensors "
            "(safetensors.torch.save_file(state_dict, 'model.safetensors')), which forgeml.load reads."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"{self._name}: unsupported persistent id {pid!r} (expected a storage)")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"{self._name}: unsupported storage type {storage_type!r}")
        key = str(key)
        if key not in self._storages:
            dtype = _numpy_dtype(storage_type.dtype_name, f"storage {key} ({storage_type!r})")
            entry = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(entry)
            except KeyError:
                raise pickle.UnpicklingError(f"{self._name}: the archive has no {entry!r}") from None
            if len(raw) < int(numel) * dtype.itemsize:
                raise pickle.UnpicklingError(
                    f"{self._name}: storage {key} holds {len(raw)} bytes; {numel} elements of {dtype} need "
                    f"{int(numel) * dtype.itemsize}"
                )
            array = np.frombuffer(raw, dtype=dtype, count=int(numel)).copy()  # writable
            if dtype.itemsize > 1 and self._byteorder != sys.byteorder:
                array = array.view(f"u{dtype.itemsize}").byteswap().view(dtype)
            self._storages[key] = _Storage(array, str(location), self._place)
        return self._storages[key]


def is_zip(raw: bytes) -> bool:
    return raw[:4] == _ZIP_MAGIC


def is_pickle(raw: bytes) -> bool:
    return raw[:1] == b"\x80"


def legacy_format_error(raw: bytes, name: str) -> Exception:
    """The error for a pickle file that is not a zip archive (PyTorch's legacy format or a plain pickle)."""
    what = (
        "a PyTorch file in the legacy (pre-1.6) serialization format"
        if raw.startswith(_LEGACY_MAGIC)
        else "a plain Python pickle, not a PyTorch zip archive or a safetensors file"
    )
    return ValueError(
        f"{name} is {what}, which ForgeML does not read (unpickling it could run arbitrary code). "
        "Convert it once in PyTorch: `sd = torch.load(path, weights_only=True)` then "
        "`safetensors.torch.save_file(sd, 'model.safetensors')` (or `torch.save(sd, 'model.pt')` for the zip "
        "format); forgeml.load and Module.load_state_dict read both."
    )


def load_torch_zip(raw: bytes, name: str, place):
    """The object saved by ``torch.save`` in zip archive ``raw``; ``place(array, location) -> Tensor``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{name}: a corrupt zip archive ({exc})") from None
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pickles:
        kind = "a TorchScript archive" if any(n.endswith("constants.pkl") for n in names) else "a zip archive"
        raise ValueError(f"{name} is {kind} without a <name>/data.pkl entry: not a torch.save file")
    prefix = pickles[0][: -len("data.pkl")]
    if any(n.startswith(prefix + "code/") for n in names):
        raise ValueError(f"{name} is a TorchScript archive (torch.jit.save); ForgeML reads torch.save files only")
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise ValueError(f"{name}: unknown byteorder {byteorder!r}")
    unpickler = _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix, byteorder, place, name)
    return unpickler.load()
