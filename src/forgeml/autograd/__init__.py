"""Reverse-mode automatic differentiation: ``Function``, the backward engine, grad mode, ``gradcheck``."""

from . import functional
from .engine import backward, grad
from .function import AccumulateGrad, Function, RemovableHandle
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import GradcheckError, gradcheck, gradgradcheck

__all__ = [
    "AccumulateGrad",
    "Function",
    "GradcheckError",
    "RemovableHandle",
    "backward",
    "enable_grad",
    "grad",
    "functional",
    "gradcheck",
    "gradgradcheck",
    "is_grad_enabled",
    "no_grad",
    "set_grad_enabled",
]
