"""The state of automatic mixed precision (``forgeml.autocast``): on or off, and at which dtype, per device type.

Thread-local, like grad mode: each thread starts with autocast off. ``active``
is True when autocast is on for any device type, so ops pay one attribute
read when it is off.
"""

from __future__ import annotations

import threading

__all__ = ["state"]


class _State(threading.local):
    def __init__(self) -> None:
        self.active = False
        self.enabled: dict[str, bool] = {"cpu": False, "cuda": False}
        self.dtype: dict[str, object] = {}  # device type -> DType while enabled
        self.cache: dict | None = None  # id(weight) -> (weight, version, low-precision copy), per outermost region
        self.depth = 0

    def refresh(self) -> None:
        self.active = self.enabled["cpu"] or self.enabled["cuda"]


state = _State()
