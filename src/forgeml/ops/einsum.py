"""``einsum``: Einstein summation over any number of operands, with gradients.

The equation is first rewritten in explicit form without ellipsis (each
ellipsis dim gets a letter of its own, and an implicit output becomes the
letters used once, in alphabetical order, after the ellipsis dims), so that
backward can read it. Each operand's gradient is itself an einsum of the
output gradient and the other operands, followed by two fix-ups: letters only
that operand sums over are broadcast back, and letters it repeats (a
diagonal, ``'ii->i'``) are put back on the diagonal. Dims of size 1 broadcast
against the same letter elsewhere, as in PyTorch; autograd sums their
gradient back.
"""

from __future__ import annotations

import string

from ..autograd.function import ArrayFunction
from ..tensor import Tensor

__all__ = ["einsum"]

_LETTERS = string.ascii_letters


def _parse(equation: str, shapes) -> tuple[list[str], str]:
    """``equation`` as (input subscripts, output subscripts), explicit and without ellipsis."""
    eq = equation.replace(" ", "")
    if "->" in eq:
        lhs, rhs = eq.split("->", 1)
        if "->" in rhs:
            raise ValueError(f"einsum(): the equation {equation!r} has more than one '->'")
    else:
        lhs, rhs = eq, None
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(
            f"einsum(): the equation {equation!r} names {len(terms)} operands but {len(shapes)} were given"
        )
    for ch in eq.replace("->", "").replace(",", "").replace("...", ""):
        if ch not in _LETTERS:
            raise ValueError(f"einsum(): invalid subscript {ch!r} in {equation!r}; subscripts must be in [a-zA-Z]")
    if "." in eq.replace("...", ""):
        raise ValueError(f"einsum(): '.' must be part of an ellipsis '...' in {equation!r}")
    used = set(eq)
    free = [c for c in _LETTERS if c not in used]
    ell_ndim = 0
    for term, shape in zip(terms, shapes):
        if term.count("...") > 1:
            raise ValueError(f"einsum(): more than one ellipsis in the operand subscripts {term!r}")
        n_letters = len(term.replace("...", ""))
        if "..." in term:
            if n_letters > len(shape):
                raise ValueError(f"einsum(): subscripts {term!r} name more dims than the operand's {len(shape)}")
            ell_ndim = max(ell_ndim, len(shape) - n_letters)
        elif n_letters != len(shape):
            raise ValueError(
                f"einsum(): the subscripts {term!r} name {n_letters} dims but the operand has {len(shape)} "
                f"(shape {list(shape)})"
            )
    if ell_ndim > len(free):
        raise ValueError("einsum(): too many ellipsis dims for the letters left unused")
    ell = "".join(free[:ell_ndim])
    inputs = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            k = len(shape) - len(term.replace("...", ""))
            term = term.replace("...", ell[ell_ndim - k :] if k else "")
        inputs.append(term)
    if rhs is None:
        counts = {}
        for term in inputs:
            for c in term:
                counts[c] = counts.get(c, 0) + 1
        output = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        if rhs.count("...") > 1:
            raise ValueError(f"einsum(): more than one ellipsis in the output subscripts {rhs!r}")
        output = rhs.replace("...", ell)
        if len(set(output)) != len(output):
            raise ValueError(f"einsum(): output subscript repeated in {equation!r}")
        known = set("".join(inputs))
        for c in output:
            if c not in known:
                raise ValueError(f"einsum(): output subscript {c!r} does not appear in the operands of {equation!r}")
    return inputs, output


def _diagonal_mask(xp, term: str, shape):
    """1 where every letter repeated in ``term`` has equal indices at all its positions (None if none repeats)."""
    mask = None
    for letter in set(term):
        positions = [i for i, c in enumerate(term) if c == letter]
        for p in positions[1:]:
            a = xp.arange(shape[positions[0]]).reshape([-1 if i == positions[0] else 1 for i in range(len(term))])
            b = xp.arange(shape[p]).reshape([-1 if i == p else 1 for i in range(len(term))])
            eq = a == b
            mask = eq if mask is None else mask & eq
    return mask


class Einsum(ArrayFunction):
    @staticmethod
    def forward(ctx, *operands, inputs, output):
        xp = ctx.xp
        equation = ",".join(inputs) + "->" + output
        ctx.save_for_backward(*operands)
        ctx.meta = (inputs, output)
        return xp.einsum(equation, *operands, optimize=len(operands) > 1)

    @staticmethod
    def backward(ctx, g):
        operands = ctx.saved_tensors
        inputs, output = ctx.meta
        xp = ctx.xp
        grads = []
        for i, (term, x) in enumerate(zip(inputs, operands)):
            if not ctx.needs_input_grad[i]:
                grads.append(None)
                continue
            others = [(t, o) for j, (t, o) in enumerate(zip(inputs, operands)) if j != i]
            available = set(output).union(*(set(t) for t, _ in others))
            unique = "".join(dict.fromkeys(term))
            target = "".join(c for c in unique if c in available)
            equation = ",".join([output] + [t for t, _ in others]) + "->" + target
            gi = xp.einsum(equation, g, *(o for _, o in others), optimize=len(others) > 0)
            # letters only this operand sums over: the gradient is constant along them
            size = {c: x.shape[k] for k, c in enumerate(term)}
            size.update({c: gi.shape[k] for k, c in enumerate(target)})  # size-1 letters broadcast elsewhere
            gi = xp.reshape(gi, [size[c] if c in target else 1 for c in unique])
            if len(unique) != len(term):  # repeated letters: place the gradient on the diagonal
                gi = xp.reshape(gi, [size[c] if term.index(c) == k and c in target else 1 for k, c in enumerate(term)])
                shape = [size[c] for c in term]
                gi = xp.broadcast_to(gi, shape) * _diagonal_mask(xp, term, shape)
            else:
                gi = xp.broadcast_to(gi, [size[c] for c in term])
            if gi.shape != x.shape:  # dims broadcast from size 1 in this operand
                axes = tuple(k for k, (a, b) in enumerate(zip(gi.shape, x.shape)) if a != b)
                gi = gi.sum(axis=axes, keepdims=True)
            grads.append(xp.ascontiguousarray(gi).astype(x.dtype, copy=False))
        return tuple(grads)


def einsum(equation: str, *operands):
    """Sum products of the operands' elements over the indices the ``equation`` names (``torch.einsum``).

    Operands may be given one by one or as one list. Supports implicit and
    explicit output, ellipsis (``'...ij,...jk->...ik'``), repeated subscripts
    (diagonals, traces) and size-1 broadcasting; all operands must share a dtype.
    """
    if not isinstance(equation, str):
        raise TypeError(f"einsum(): argument 'equation' must be a str, not {type(equation).__name__}")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise ValueError("einsum(): must provide at least one operand")
    for k, op in enumerate(operands):
        if not isinstance(op, Tensor):
            raise TypeError(f"einsum(): operand {k} must be a Tensor, not {type(op).__name__}")
    dtype = operands[0]._data.dtype
    for op in operands[1:]:
        if op._data.dtype != dtype:
            raise RuntimeError(
                f"einsum(): expected scalar type {operands[0].dtype} but found {op.dtype}; "
                "convert the operands to one dtype first"
            )
    inputs, output = _parse(equation, [op._data.shape for op in operands])
    for term, op in zip(inputs, operands):
        if len(set(term)) != len(term):
            sizes = {}
            for c, n in zip(term, op._data.shape):
                if sizes.setdefault(c, n) != n:
                    raise RuntimeError(
                        f"einsum(): subscript {c!r} is repeated for operand of shape {list(op.shape)} "
                        "but the sizes don't match"
                    )
    return Einsum.apply(*operands, inputs=inputs, output=output)
