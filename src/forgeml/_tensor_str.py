"""Tensor printing in PyTorch's style: ``tensor([1.5000, 2.2500])``, ``tensor([1., 2.])``, ``1.0000e-05``."""

from __future__ import annotations

import numpy as np

__all__ = ["format_array"]


def _float_format(values: np.ndarray):
    finite = np.abs(values[np.isfinite(values)]).astype(np.float64)
    nonzero = finite[finite != 0]
    integral = finite.size == 0 or bool(np.all(finite == np.round(finite)))
    sci = False
    if nonzero.size:
        big, small = nonzero.max(), nonzero.min()
        sci = big / small > 1000.0 or big > 1e8 or (not integral and small < 1e-4)
    if sci:
        return lambda v: f"{v:.4e}"
    if integral:
        return lambda v: f"{v:.0f}." if np.isfinite(v) else f"{v}"
    return lambda v: f"{v:.4f}"


def format_array(data: np.ndarray) -> str:
    """The body of a tensor's repr: values formatted and aligned like PyTorch's."""
    if data.size == 0:
        return "[]"
    kind = data.dtype.kind
    if data.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 has kind 'V'; print it as the float it is
        data = data.astype(np.float32)
        kind = "f"
    if kind == "f":
        shown = data if data.size <= 1000 else np.concatenate([data.ravel()[:3], data.ravel()[-3:]])
        fmt = _float_format(shown)
        to_str = lambda v: fmt(float(v))  # noqa: E731
    elif kind == "b":
        to_str = lambda v: str(bool(v))  # noqa: E731
    else:
        to_str = lambda v: str(int(v))  # noqa: E731
    sample = data.ravel() if data.size <= 1000 else np.concatenate([data.ravel()[:3], data.ravel()[-3:]])
    width = max(len(to_str(v)) for v in sample)
    if data.ndim == 0:
        return to_str(data.item())
    return np.array2string(
        data,
        separator=", ",
        prefix="tensor(",
        threshold=1000,
        edgeitems=3,
        max_line_width=80,
        formatter={"all": lambda v: to_str(v).rjust(width)},
    )
