"""``forgeml.autocast``: run matmuls and convolutions in float16/bfloat16, keep reductions and losses in float32.

Inside ``with forgeml.autocast(device_type='cuda', dtype=forgeml.float16):``
the ops in PyTorch's lower-precision list (matmul, mm, bmm, linear, conv2d,
scaled_dot_product_attention) cast their floating inputs to ``dtype``; the
ops in its float32 list (sum, prod, softmax, log_softmax, layer_norm, norms,
exp/log/pow, the losses) run in float32; the rest run in their inputs' dtype,
promoting mixed inputs as usual. float64 tensors are never cast. Casts are
differentiable, so gradients flow back to float32 parameters ("master
weights"). ``device_type='cpu'`` works the same way on the CPU (bfloat16 by
default, as in PyTorch; it needs ``ml_dtypes``).
"""

from __future__ import annotations

import functools

from ..backend.autocast import state
from ..backend.dtypes import as_dtype

__all__ = ["autocast", "get_autocast_dtype", "is_autocast_available", "is_autocast_enabled"]

_DEFAULT_DTYPE = {"cuda": "float16", "cpu": "bfloat16"}
_ALLOWED = {"cuda": ("float16", "bfloat16"), "cpu": ("float16", "bfloat16")}


def is_autocast_available(device_type: str) -> bool:
    """True for the device types autocast supports ('cpu' and 'cuda')."""
    return device_type in _ALLOWED


def is_autocast_enabled(device_type: str = "cuda") -> bool:
    if not is_autocast_available(device_type):
        raise ValueError(f"autocast has no device type {device_type!r}; expected 'cpu' or 'cuda'")
    return state.enabled[device_type]


def get_autocast_dtype(device_type: str = "cuda"):
    """The dtype autocast casts to on ``device_type`` (its default when autocast is off)."""
    if not is_autocast_available(device_type):
        raise ValueError(f"autocast has no device type {device_type!r}; expected 'cpu' or 'cuda'")
    return state.dtype.get(device_type) or as_dtype(_DEFAULT_DTYPE[device_type])


class autocast:  # noqa: N801 - PyTorch's name
    """Context manager (and decorator) for mixed precision, as ``torch.autocast``.

    Args:
        device_type: ``'cuda'`` or ``'cpu'``.
        dtype: ``forgeml.float16`` or ``forgeml.bfloat16`` (default: float16 on
            CUDA, bfloat16 on the CPU).
        enabled: False makes the region run in full precision (nesting
            ``autocast(enabled=False)`` turns it off locally).
        cache_enabled: keep one low-precision copy of each weight per region.
    """

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled: bool | None = None) -> None:
        if not isinstance(device_type, str) or device_type not in _ALLOWED:
            raise ValueError(
                f"autocast: device_type must be 'cuda' or 'cpu', got {device_type!r} (the device *type*, not 'cuda:0')"
            )
        self.device_type = device_type
        target = as_dtype(dtype if dtype is not None else _DEFAULT_DTYPE[device_type])
        if target.name not in _ALLOWED[device_type]:
            raise ValueError(
                f"autocast on {device_type} supports {' and '.join(_ALLOWED[device_type])}, got {target.name}"
            )
        target.numpy  # noqa: B018 - resolves bfloat16 now, raising if ml_dtypes is missing
        self.fast_dtype = target
        self._enabled = bool(enabled)
        self._cache_enabled = True if cache_enabled is None else bool(cache_enabled)
        self._saved: list = []

    def __enter__(self) -> autocast:
        kind = self.device_type
        self._saved.append((state.enabled[kind], state.dtype.get(kind), state.cache))
        state.enabled[kind] = self._enabled
        if self._enabled:
            state.dtype[kind] = self.fast_dtype
        if state.depth == 0 or not self._cache_enabled:
            state.cache = {} if self._cache_enabled else None
        state.depth += 1
        state.refresh()
        return self

    def __exit__(self, *exc) -> None:
        kind = self.device_type
        enabled, dtype, cache = self._saved.pop()
        state.enabled[kind] = enabled
        if dtype is None:
            state.dtype.pop(kind, None)
        else:
            state.dtype[kind] = dtype
        state.depth -= 1
        state.cache = cache if state.depth else None
        state.refresh()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device_type, self.fast_dtype, self._enabled, self._cache_enabled):
                return fn(*args, **kwargs)

        return wrapper
