"""ONNX interchange: ``export`` writes a ForgeML module as an ONNX graph, ``load`` reads one back as a module.

Both need the ``onnx`` extra (``pip install "forgeml[onnx]"``), which they import when first called, so
``import forgeml.onnx`` costs nothing. ``load`` is looked up lazily (from :mod:`forgeml.onnx.load`).
"""

from __future__ import annotations

import sys
import types

from ._errors import ExportError, UnsupportedOperatorError
from .export import export

__all__ = ["ExportError", "UnsupportedOperatorError", "export", "load", "register_op"]


def register_op(*functions, precheck=None):
    """Decorator: give your own ``autograd.Function`` classes an ONNX form for :func:`export`.

    The decorated ``emit(ctx, call)`` appends the ONNX nodes of one call (see ``forgeml/onnx/_ops_export.py``
    for the built-in ops, written the same way); ``precheck(args, kwargs)`` may refuse calls that have none.
    """
    from ._ops_export import emits

    return emits(*functions, precheck=precheck)


def __getattr__(name: str):
    if name == "load":
        from .load import load

        globals()["load"] = load
        return load
    raise AttributeError(f"module 'forgeml.onnx' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps ``forgeml.onnx.export`` and ``forgeml.onnx.load`` the functions: importing the submodule of the
    same name would otherwise replace the package attribute with the module (the submodule stays in
    ``sys.modules``)."""

    def __setattr__(self, name: str, value) -> None:
        if name in ("export", "load") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
