"""Tensor printing laid out exactly as PyTorch lays it out: ``tensor([1.5000, 2.2500])``, ``tensor([1., 2.])``,
``1.0000e-05``, summaries with ``...`` past ``threshold`` elements, lines wrapped at ``linewidth``.

The options are set with :func:`set_printoptions` (as ``torch.set_printoptions``). Everything here works on the
host NumPy copy of a tensor's data.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["format_array", "get_printoptions", "printoptions", "set_printoptions", "tensor_repr"]


@dataclass
class _PrintOptions:
    precision: int = 4
    threshold: float = 1000
    edgeitems: int = 3
    linewidth: int = 80
    sci_mode: bool | None = None


PRINT_OPTS = _PrintOptions()

_PROFILES = {
    "default": {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80},
    "short": {"precision": 2, "threshold": 1000, "edgeitems": 2, "linewidth": 80},
    "full": {"precision": 4, "threshold": math.inf, "edgeitems": 3, "linewidth": 80},
}


def set_printoptions(
    precision: int | None = None,
    threshold: float | None = None,
    edgeitems: int | None = None,
    linewidth: int | None = None,
    profile: str | None = None,
    sci_mode: bool | None = None,
) -> None:
    """Set how tensors print, as ``torch.set_printoptions``.

    ``precision`` digits after the point (4), ``threshold`` element count above which a tensor is summarised
    (1000), ``edgeitems`` items kept at each end of a summarised dim (3), ``linewidth`` characters per line (80),
    ``profile`` one of ``'default'``, ``'short'``, ``'full'`` (applied first), ``sci_mode`` True/False forces
    scientific notation on or off (None: chosen per tensor).
    """
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"profile must be one of {sorted(_PROFILES)}, got {profile!r}")
        for name, value in _PROFILES[profile].items():
            setattr(PRINT_OPTS, name, value)
    for name, value in (
        ("precision", precision),
        ("threshold", threshold),
        ("edgeitems", edgeitems),
        ("linewidth", linewidth),
    ):
        if value is not None:
            setattr(PRINT_OPTS, name, value)
    PRINT_OPTS.sci_mode = sci_mode


def get_printoptions() -> dict:
    """The current print options, as a dict of :func:`set_printoptions`'s keyword arguments."""
    return dict(vars(PRINT_OPTS))


@contextlib.contextmanager
def printoptions(**kwargs):
    """Context manager that sets print options and restores the previous ones on exit."""
    old = get_printoptions()
    set_printoptions(**kwargs)
    try:
        yield
    finally:
        set_printoptions(**old)


class _Formatter:
    """Chooses integer / fixed / scientific mode and the column width from the values shown."""

    def __init__(self, data: np.ndarray) -> None:
        self.floating = data.dtype.kind == "f"
        self.int_mode, self.sci_mode, self.max_width = True, False, 1
        flat = data.reshape(-1)
        p = PRINT_OPTS.precision
        if not self.floating:
            for value in flat.tolist():
                self.max_width = max(self.max_width, len(f"{value}"))
        else:
            values = flat.astype(np.float64)
            values = values[np.isfinite(values) & (values != 0)]
            if values.size:
                absolute = np.abs(values)
                lo, hi = absolute.min(), absolute.max()
                self.int_mode = bool(np.all(values == np.ceil(values)))
                forced = PRINT_OPTS.sci_mode
                self.sci_mode = bool(hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4) if forced is None else forced
                if self.sci_mode:
                    texts = (f"{v:.{p}e}" for v in values.tolist())
                elif self.int_mode:
                    texts = (f"{v:.0f}." for v in values.tolist())
                else:
                    texts = (f"{v:.{p}f}" for v in values.tolist())
                self.max_width = max(len(t) for t in texts)

    def format(self, value) -> str:
        p = PRINT_OPTS.precision
        if self.floating:
            if self.sci_mode:
                text = f"{value:{self.max_width}.{p}e}"
            elif self.int_mode:
                text = f"{value:.0f}"
                if not (math.isinf(value) or math.isnan(value)):
                    text += "."
            else:
                text = f"{value:.{p}f}"
        else:
            text = f"{value}"
        return (self.max_width - len(text)) * " " + text


def _summarized(data: np.ndarray) -> np.ndarray:
    """The values a summarised print shows (``edgeitems`` at each end of every dim), for choosing the format."""
    e = PRINT_OPTS.edgeitems
    if data.ndim == 0:
        return data
    if data.ndim == 1:
        return np.concatenate([data[:e], data[-e:]]) if data.shape[0] > 2 * e else data
    if not e:
        return data[tuple(slice(0, 0) for _ in range(data.ndim))]
    rows = list(range(e)) + list(range(len(data) - e, len(data))) if data.shape[0] > 2 * e else range(len(data))
    return np.stack([_summarized(data[i]) for i in rows])


def _vector(data, indent: int, summarize: bool, fmt: _Formatter) -> str:
    e = PRINT_OPTS.edgeitems
    per_line = max(1, (PRINT_OPTS.linewidth - indent) // (fmt.max_width + 2))
    if summarize and not e:
        items = ["..."]
    elif summarize and data.shape[0] > 2 * e:
        items = [fmt.format(v) for v in data[:e].tolist()] + [" ..."] + [fmt.format(v) for v in data[-e:].tolist()]
    else:
        items = [fmt.format(v) for v in data.tolist()]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _nested(data, indent: int, summarize: bool, fmt: _Formatter) -> str:
    if data.ndim == 0:
        return fmt.format(data.item())
    if data.ndim == 1:
        return _vector(data, indent, summarize, fmt)
    e = PRINT_OPTS.edgeitems
    if summarize and data.shape[0] > 2 * e:
        slices = (
            [_nested(data[i], indent + 1, summarize, fmt) for i in range(e)]
            + ["..."]
            + [_nested(data[i], indent + 1, summarize, fmt) for i in range(len(data) - e, len(data))]
        )
    else:
        slices = [_nested(data[i], indent + 1, summarize, fmt) for i in range(data.shape[0])]
    return "[" + ("," + "\n" * (data.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def _host_values(data: np.ndarray) -> np.ndarray:
    """float16 / bfloat16 print through float32, as in PyTorch."""
    if (data.dtype.kind == "f" and data.dtype.itemsize < 4) or data.dtype.name == "bfloat16":
        return data.astype(np.float32)
    return data


def format_array(data: np.ndarray, indent: int = len("tensor(")) -> str:
    """The body of a tensor's repr (``[1.5000, 2.2500]``): values formatted, aligned and wrapped like PyTorch's."""
    if data.size == 0:
        return "[]"
    data = _host_values(data)
    summarize = data.size > PRINT_OPTS.threshold
    fmt = _Formatter(_summarized(data) if summarize else data)
    return _nested(data, indent, summarize, fmt)


def _add_suffixes(text: str, suffixes: list[str], indent: int) -> str:
    parts = [text]
    last_line = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line + len(suffix) + 2 > PRINT_OPTS.linewidth:
            parts.append(",\n" + " " * indent + suffix)
            last_line = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last_line += len(suffix) + 2
    parts.append(")")
    return "".join(parts)


def tensor_repr(data: np.ndarray, dtype, default_dtype, device=None, grad_fn_name=None, requires_grad=False) -> str:
    """``tensor(...)`` for host data ``data`` of ``dtype``, with PyTorch's suffixes (device, dtype unless it is
    the default float dtype, int64 or bool, ``grad_fn=<...>`` or ``requires_grad=True``)."""
    prefix = "tensor("
    suffixes = []
    if device is not None and device.type != "cpu":
        suffixes.append(f"device='{device}'")
    if data.size == 0:
        if data.ndim != 1:
            suffixes.append(f"size={tuple(data.shape)}")
        if dtype != default_dtype:
            suffixes.append(f"dtype={dtype}")
        body = "[]"
    else:
        if not PRINT_OPTS.edgeitems:
            suffixes.append(f"size={tuple(data.shape)}")
        if dtype != default_dtype and dtype.name not in ("int64", "bool"):
            suffixes.append(f"dtype={dtype}")
        body = format_array(data, len(prefix))
    if grad_fn_name is not None:
        suffixes.append(f"grad_fn=<{grad_fn_name}>")
    elif requires_grad:
        suffixes.append("requires_grad=True")
    return _add_suffixes(prefix + body, suffixes, len(prefix))
