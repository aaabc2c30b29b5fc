"""Floating-point operations of the ops that dominate them, from shapes (``with_flops=True``).

A multiply-add counts 2, as PyTorch's profiler counts it: a matmul of
``[m, k] @ [k, n]`` is ``2*m*n*k``; a linear layer is its matmul (the bias add
is not counted, as for ``aten::addmm``); a convolution is ``2 * output size *
(in_channels / groups) * kernel size``; attention is its two products. A
backward costs the forward's count once per matrix input that needs a
gradient (each is one product of the same size); attention's backward, twice
the forward. Other ops count 0 (``--`` in the table).
"""

from __future__ import annotations

import math

__all__ = ["backward_flops", "forward_flops"]


def _matmul(args, out):
    a = args[0]._data
    k = a.shape[-1]
    return 2 * _size(out) * k


def _linear(args, out):
    return 2 * _size(out) * args[1]._data.shape[1]  # weight is [out_features, in_features]


def _conv(args, out):
    weight = args[1]._data  # [out_channels, in_channels / groups, *kernel]
    return 2 * _size(out) * math.prod(weight.shape[1:])


def _attention(args, out):
    q, k, v = (a._data for a in args[:3])
    rows = math.prod(q.shape[:-1])  # batch * heads * target length
    return 2 * rows * k.shape[-2] * (q.shape[-1] + v.shape[-1])


# op class name -> (forward FLOPs of (args, output), how many leading inputs are matrices whose gradient costs
# one product of the forward's size; None: the backward costs twice the forward)
_FORWARD = {
    "Matmul": (_matmul, 2),
    "Linear": (_linear, 2),
    "LinearActivation": (_linear, 2),
    "Conv2d": (_conv, 2),
    "ScaledDotProductAttention": (_attention, None),
}


def _size(out) -> int:
    data = out[0]._data if isinstance(out, tuple) else out._data
    return int(data.size)


def forward_flops(cls, args, out) -> int:
    """FLOPs of one forward call of op class ``cls`` on ``args`` giving ``out`` (0 for ops not counted)."""
    entry = _FORWARD.get(cls.__name__)
    if entry is None:
        return 0
    try:
        return int(entry[0](args, out))
    except (AttributeError, IndexError, TypeError):  # an op of the same name with another signature
        return 0


def backward_flops(node, forward: int) -> int:
    """FLOPs of ``node``'s backward, given its forward's count."""
    entry = _FORWARD.get(type(node).__name__)
    if entry is None or not forward:
        return 0
    matrices = entry[1]
    if matrices is None:
        return 2 * forward
    needs = node.needs_input_grad
    return forward * sum(1 for need in needs[:matrices] if need)
