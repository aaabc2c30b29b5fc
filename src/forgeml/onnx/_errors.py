"""The exceptions of ONNX export (importable without the ``onnx`` extra)."""

from __future__ import annotations

__all__ = ["ExportError", "UnsupportedOperatorError"]


class ExportError(RuntimeError):
    """A model could not be written as ONNX (bad arguments, or a value that depends on fixed sizes)."""


class UnsupportedOperatorError(ExportError):
    """An op the model runs has no ONNX form; the message names the op and the module it sits in."""
