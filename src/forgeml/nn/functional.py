"""Stateless neural-network functions, as in ``torch.nn.functional``."""

from __future__ import annotations

from ..ops.elementwise import elu, gelu, leaky_relu, relu, sigmoid, silu, softplus, tanh
from ..ops.nn import log_softmax, one_hot, softmax

__all__ = [
    "elu",
    "gelu",
    "leaky_relu",
    "log_softmax",
    "one_hot",
    "relu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "tanh",
]
