"""Fused CUDA kernels: the GPU halves of ops whose portable body makes several passes over memory.

Each kernel is a CuPy ``ElementwiseKernel``, built from the namespace it is
called with the first time it is needed, so importing this module needs
neither CuPy nor a GPU. Ops call these only when ``backend.is_cupy(xp)``; on
other namespaces they keep their portable bodies. The kernels fuse what
PyTorch's eager CUDA kernels fuse: GELU forward and backward, the dropout
mask and scale, bias + activation, and the Adam/AdamW update (LayerNorm and
softmax with cross-entropy are in :mod:`forgeml.ops._fused_nn`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SPECS", "ElementwiseSpec", "define", "erfc64", "gelu_backward", "gelu_forward", "kernel"]

_kernels: dict = {}


@dataclass(frozen=True)
class ElementwiseSpec:
    """The source of one CuPy ``ElementwiseKernel``: parameters and C++ body (tests compile-check these)."""

    name: str
    in_params: str
    out_params: str
    body: str
    preamble: str = ""

    def __call__(self, xp):
        """The compiled kernel on ``xp`` (CuPy), built once and cached."""
        return kernel(xp, self.name, self.in_params, self.out_params, self.body, self.preamble)


SPECS: dict[str, ElementwiseSpec] = {}  # every kernel defined with ``define``, by name


def define(name: str, in_params: str, out_params: str, body: str, preamble: str = "") -> ElementwiseSpec:
    """Declare an ``ElementwiseKernel`` at import time (nothing is compiled until it is first called)."""
    spec = SPECS[name] = ElementwiseSpec(name, in_params, out_params, body, preamble)
    return spec


def kernel(xp, name: str, in_params: str, out_params: str, body: str, preamble: str = ""):
    """The ``ElementwiseKernel`` called ``name`` on ``xp`` (CuPy), compiled once and cached."""
    key = (id(xp), name)
    k = _kernels.get(key)
    if k is None:
        k = _kernels[key] = xp.ElementwiseKernel(in_params, out_params, body, f"forgeml_{name}", preamble=preamble)
    return k


_ERFC64 = define("erfc64", "float64 z", "float64 y", "y = erfc(z)")


def erfc64(xp, z):
    """``erfc(z)`` of a float64 array with CUDA's double-precision erfc."""
    return _ERFC64(xp)(z)


_GELU_FORWARD = {
    "none": define("gelu_none", "T x", "T y", "double u = (double)x; y = u * normcdf(u)"),
    "tanh": define(
        "gelu_tanh",
        "T x",
        "T y",
        "double u = (double)x; y = 0.5 * u * (1.0 + tanh(0.7978845608028654 * (u + 0.044715 * u * u * u)))",
    ),
}
_GELU_BACKWARD = {
    "none": define(
        "gelu_none_backward",
        "T g, T x",
        "T dx",
        "double u = (double)x; dx = (double)g * (normcdf(u) + u * 0.3989422804014327 * exp(-0.5 * u * u))",
    ),
    "tanh": define(
        "gelu_tanh_backward",
        "T g, T x",
        "T dx",
        "double u = (double)x; double t = tanh(0.7978845608028654 * (u + 0.044715 * u * u * u));"
        " dx = (double)g * (0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * u * u))",
    ),
}


def gelu_forward(xp, x, approximate: str):
    """GELU in one pass (the exact form through CUDA's ``normcdf``)."""
    return _GELU_FORWARD[approximate](xp)(x)


def gelu_backward(xp, g, x, approximate: str):
    """GELU's input gradient in one pass, recomputing the CDF instead of keeping it."""
    return _GELU_BACKWARD[approximate](xp)(g, x)
