"""Checkpoints in the safetensors format: ``forgeml.save(obj, path)`` and ``forgeml.load(path)``.

A safetensors file is an 8-byte little-endian header length, a JSON header
(each tensor's dtype, shape and byte range, plus a ``__metadata__`` map of
strings), then the raw little-endian bytes. ForgeML writes it natively and
checks every byte range on load, so a truncated or corrupt file raises a
:class:`CheckpointError` before anything is returned.

``obj`` may be a flat state_dict (its tensors are stored under their own
names, so ``safetensors.torch.load_file`` gives PyTorch the same dict) or a
nested structure such as ``{"model": model.state_dict(), "optimizer":
opt.state_dict(), "epoch": 3}``: tensors are stored under dotted paths and
everything else (numbers, strings, lists, dicts with int keys) as JSON in the
header's metadata.

Devices. The file always holds host bytes: CUDA tensors are copied to the host
as they are written, and the structure notes the device each came from.
``load`` returns CPU tensors unless ``map_location`` says otherwise, as
``torch.load(..., map_location=...)`` does: a device for every tensor, a dict
that maps saved locations to devices, or a function of (tensor, location).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..backend.device import CPU, Device, as_device, cuda_is_available, device_of, is_array, to_device, to_host
from ..tensor import Tensor

__all__ = ["CheckpointError", "load", "save"]

FORMAT_KEY = "forgeml.structure"
_MAX_HEADER = 100 * 1024 * 1024

_TO_CODE = {
    np.dtype(np.float16): "F16",
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int8): "I8",
    np.dtype(np.int16): "I16",
    np.dtype(np.int32): "I32",
    np.dtype(np.int64): "I64",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}
_FROM_CODE = {code: dt for dt, code in _TO_CODE.items()}
_BF16 = "BF16"  # bfloat16 (ml_dtypes' NumPy dtype), resolved on first use
_CODES = (*sorted(_FROM_CODE), _BF16)


def _code_of(dtype) -> str | None:
    code = _TO_CODE.get(dtype)
    if code is None and dtype.name == "bfloat16":
        return _BF16
    return code


def _dtype_of(code: str):
    if code == _BF16:
        from ..backend.dtypes import bfloat16

        return bfloat16.numpy  # a TypeError naming ml_dtypes when it is missing
    return _FROM_CODE[code]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, corrupt, or not safetensors."""


# ---------------------------------------------------------------- structure
def _encode(value, path: str, tensors: dict):
    """JSON-able description of ``value``; arrays go into ``tensors`` under ``path``."""
    if isinstance(value, (Tensor, np.ndarray)) or is_array(value):
        key = path or "tensor"
        if key in tensors:
            raise ValueError(f"two tensors would be stored under the same name {key!r}")
        array = value._data if isinstance(value, Tensor) else value
        if _code_of(array.dtype) is None:
            raise TypeError(f"cannot save a tensor of dtype {array.dtype} (at {key!r})")
        node = {"__tensor__": key, "parameter": type(value).__name__ == "Parameter"}
        if type(array) is not np.ndarray:
            device = device_of(array)
            if device.type != "cpu":
                node["device"] = str(device)  # where it came from: map_location may send it back there
                array = to_host(array)  # the file holds host bytes
        tensors[key] = array
        return node
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"checkpoint dict keys must be str or int, got {type(k).__name__} at {path!r}")
            items.append([k, _encode(v, f"{path}.{k}" if path else str(k), tensors)])
        return {"__dict__": items, "ordered": isinstance(value, OrderedDict)}
    if isinstance(value, (list, tuple)):
        encoded = [_encode(v, f"{path}.{i}" if path else str(i), tensors) for i, v in enumerate(value)]
        return {"__tuple__": encoded} if isinstance(value, tuple) else {"__list__": encoded}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save a {type(value).__name__} in a checkpoint (at {path or 'the top level'!r})")


def _decode(node, tensors: dict, place):
    if isinstance(node, dict):
        if "__tensor__" in node:
            tensor = place(tensors[node["__tensor__"]], node.get("device", "cpu"))
            if node.get("parameter"):
                from ..nn.parameter import Parameter

                return Parameter(tensor)
            return tensor
        if "__dict__" in node:
            cls = OrderedDict if node.get("ordered") else dict
            return cls((k, _decode(v, tensors, place)) for k, v in node["__dict__"])
        if "__tuple__" in node:
            return tuple(_decode(v, tensors, place) for v in node["__tuple__"])
        if "__list__" in node:
            return [_decode(v, tensors, place) for v in node["__list__"]]
        raise CheckpointError(f"unknown entry in the checkpoint structure: {sorted(node)}")
    return node


# ------------------------------------------------------------ map_location
def _check_usable(device: Device, name: str) -> Device:
    if device.type == "cuda" and not cuda_is_available():
        raise RuntimeError(
            f"cannot load {name} onto {device}: CUDA is not available (no CuPy, or no GPU that CuPy sees). "
            "On a machine without a GPU, pass map_location='cpu'."
        )
    return device


def _placer(map_location, name: str):
    """``place(host_array, saved_location) -> Tensor`` for ``map_location`` (see :func:`load`)."""
    if map_location is None:
        return lambda array, location: Tensor._make(array, False, None)
    if isinstance(map_location, (str, Device, int)) and not isinstance(map_location, bool):
        target = _check_usable(as_device(map_location), name)
        if target == CPU:
            return lambda array, location: Tensor._make(array, False, None)
        return lambda array, location: Tensor._make(to_device(array, target), False, None)
    if isinstance(map_location, Mapping):
        table = {}
        for k, v in map_location.items():
            try:
                table[str(as_device(k))] = _check_usable(as_device(v), name)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"map_location: cannot map {k!r} to {v!r}: {exc}") from None

        def place(array, location):
            target = table.get(str(as_device(location)), CPU)
            return Tensor._make(to_device(array, target) if target != CPU else array, False, None)

        return place
    if callable(map_location):

        def place(array, location):
            result = map_location(Tensor._make(array, False, None), location)
            if result is None:  # as in torch.load: None keeps the default placement
                return Tensor._make(array, False, None)
            if isinstance(result, Tensor):
                return result
            if is_array(result):
                return Tensor._make(result, False, None)
            raise TypeError(
                f"map_location function must return a Tensor, an array or None, got {type(result).__name__}"
            )

        return place
    raise TypeError(
        "map_location must be None, a device ('cpu', 'cuda', 'cuda:1', a forgeml.device or a CUDA index), "
        f"a dict from saved locations to devices, or a function (tensor, location) -> tensor; got {type(map_location).__name__}"
    )


# ------------------------------------------------------------------- write
def save(obj, path, metadata: dict | None = None) -> None:
    """Write ``obj`` (a state_dict or a nested dict/list of tensors and plain values) to ``path``.

    The file is written to a temporary name and renamed into place, so a
    crash or a bad value never leaves a half-written checkpoint at ``path``.
    ``metadata`` (str -> str) is stored in the header as is.
    """
    tensors: dict[str, np.ndarray] = {}
    structure = _encode(obj, "", tensors)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[FORMAT_KEY] = json.dumps(structure, separators=(",", ":"))
    header: dict = {"__metadata__": meta}
    offset = 0
    order = sorted(tensors)  # deterministic layout
    for key in order:
        array = tensors[key]
        nbytes = int(array.nbytes)
        header[key] = {
            "dtype": _code_of(array.dtype),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(struct.pack("<Q", len(encoded)))
            fh.write(encoded)
            for key in order:
                array = np.ascontiguousarray(tensors[key])
                if array.dtype.byteorder == ">":
                    array = array.astype(array.dtype.newbyteorder("<"))
                fh.write(array.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------- read
def _read_header(raw: bytes, name: str):
    if len(raw) < 8:
        raise CheckpointError(
            f"{name}: not a safetensors file (only {len(raw)} bytes; the header length alone needs 8)"
        )
    (size,) = struct.unpack("<Q", raw[:8])
    if size > _MAX_HEADER or 8 + size > len(raw):
        raise CheckpointError(
            f"{name}: truncated or corrupt: the header claims {size} bytes but the file has {len(raw) - 8} after its length"
        )
    try:
        header = json.loads(raw[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{name}: corrupt header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name}: corrupt header (expected a JSON object)")
    return header, 8 + size


def load(path, map_location=None, *, weights_only: bool | None = None):
    """Read a checkpoint written by :func:`save` (or any safetensors file) back into tensors.

    Returns what was saved: a state_dict (``OrderedDict`` of name -> tensor) or
    the nested structure. Every tensor's byte range is validated before any
    tensor is built.

    ``map_location`` says where the tensors go, as in ``torch.load``:

    * ``None`` (default): the CPU, whatever device they were saved from;
    * a device (``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``forgeml.device(...)`` or a CUDA
      index): every tensor goes there;
    * a dict from saved locations to devices (``{'cuda:0': 'cpu'}``,
      ``{'cpu': 'cuda:1'}``): a tensor saved from a location in the dict goes to its
      device, any other to the CPU. Tensors of plain safetensors files count as
      saved from ``'cpu'``;
    * a function ``f(tensor, location)`` given each tensor on the CPU and the
      location it was saved from (``'cpu'``, ``'cuda:0'`` ...); it returns the
      tensor to use, or ``None`` for the CPU one.

    Asking for a CUDA device where CUDA is not available raises a RuntimeError
    before the file is read. ``weights_only`` is accepted for ``torch.load``
    compatibility: a safetensors file never runs code, so loading is always
    weights-only.

    Files written by ``torch.save`` (PyTorch's zip format) are read too, with
    weights-only semantics: tensors, parameters, dtypes, OrderedDicts and plain
    containers load; anything else in the pickle is refused unrun (see
    :mod:`forgeml.io.torch_pickle`). The legacy non-zip format raises an error
    that says how to convert the file.
    """
    target = Path(path)
    name = str(target)
    place = _placer(map_location, name)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {name}") from None
    from . import torch_pickle

    if torch_pickle.is_zip(raw):  # torch.save's zip archive: read weights-only
        return torch_pickle.load_torch_zip(raw, name, place)
    if torch_pickle.is_pickle(raw):
        raise torch_pickle.legacy_format_error(raw, name)
    header, start = _read_header(raw, name)
    meta = header.pop("__metadata__", None) or {}
    data_len = len(raw) - start
    tensors = {}
    for key, info in header.items():
        if isinstance(info, dict) and info.get("dtype") not in _CODES and "dtype" in info:
            supported = ", ".join(_CODES)
            raise CheckpointError(
                f"{name}: tensor {key!r} has dtype {info['dtype']}, which ForgeML cannot hold ({supported})"
            )
        try:
            dtype = _dtype_of(info["dtype"])
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{name}: corrupt entry for tensor {key!r}: {info!r}") from None
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not 0 <= begin <= end <= data_len or end - begin != expected:
            raise CheckpointError(
                f"{name}: truncated or corrupt: tensor {key!r} ({info['dtype']} {list(shape)}) needs bytes "
                f"[{begin}, {end}) of a {data_len}-byte data section"
            )
        array = np.frombuffer(
            raw, dtype=dtype.newbyteorder("<"), count=expected // dtype.itemsize, offset=start + begin
        )
        tensors[key] = array.astype(dtype, copy=True).reshape(shape)
    structure = meta.get(FORMAT_KEY)
    if structure is None:
        return OrderedDict((k, place(v, "cpu")) for k, v in tensors.items())
    try:
        structure = json.loads(structure)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{name}: corrupt structure metadata ({exc})") from None
    try:
        return _decode(structure, tensors, place)
    except KeyError as exc:
        raise CheckpointError(f"{name}: corrupt structure metadata ({exc})") from None


def read_metadata(path) -> dict:
    """The ``__metadata__`` strings of a safetensors file, without loading its tensors."""
    target = Path(path)
    with target.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{target}: not a safetensors file")
        (size,) = struct.unpack("<Q", head)
        raw = head + fh.read(min(size, _MAX_HEADER))
    header, _ = _read_header(raw, str(target))
    return dict(header.get("__metadata__") or {})
