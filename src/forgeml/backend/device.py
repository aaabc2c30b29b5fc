"""Devices and the array namespace behind each one.

A :class:`Device` names where a tensor's storage lives: ``cpu`` (NumPy) or
``cuda:N`` (CuPy). This module is the only place in ForgeML that imports
CuPy, and it does so lazily, so ``import forgeml`` needs NumPy alone.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "Device",
    "as_device",
    "array_module",
    "cuda_is_available",
    "device_of",
    "to_device",
]

_INSTALL_GPU_HINT = 'install the GPU extra: pip install "forgeml[gpu]"'


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
        if kind == "cpu" and index not in (None, 0):
            raise ValueError(f"the cpu device has no index {index}")
        if kind == "cuda" and index is None:
            index = 0
        self.type = kind
        self.index = None if kind == "cpu" else index

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


def as_device(device: Device | str | None) -> Device:
    """Normalise ``None`` (the CPU), a string or a :class:`Device` to a :class:`Device`."""
    if device is None:
        return CPU
    if isinstance(device, Device):
        return device
    return Device(device)


_cupy = None


def _import_cupy():
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise ImportError(f"CUDA tensors need CuPy, which is not installed; {_INSTALL_GPU_HINT}") from exc
        _cupy = cupy
    return _cupy


def cuda_is_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        cp = _import_cupy()
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


def array_module(device: Device | str | None):
    """The array namespace (``numpy`` or ``cupy``) that computes on ``device``."""
    dev = as_device(device)
    if dev.type == "cpu":
        return np
    return _import_cupy()


def device_of(array) -> Device:
    """The device that holds ``array`` (a NumPy or CuPy array)."""
    if isinstance(array, (np.ndarray, np.generic)):
        return CPU
    dev = getattr(array, "device", None)
    if dev is not None and type(array).__module__.startswith("cupy"):
        return Device("cuda", int(getattr(dev, "id", 0)))
    raise TypeError(f"not an array ForgeML can hold: {type(array).__name__}")


def to_device(array, device: Device | str | None):
    """Copy ``array`` to ``device``; returns it unchanged when it is already there."""
    dev = as_device(device)
    src = device_of(array)
    if src == dev:
        return array
    if dev.type == "cpu":
        return array.get()
    cp = _import_cupy()
    with cp.cuda.Device(dev.index):
        return cp.asarray(array)
