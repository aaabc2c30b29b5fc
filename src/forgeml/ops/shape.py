"""Shape ops: reshape/view, squeeze, transpose, permute, expand, repeat, cat, stack, split, tril ...

Ops that can return a view of their input's storage do so (``is_view``):
the result shares the input's version counter, as in PyTorch. Each op computes
through ``ctx.xp`` (or array methods), so it runs on the device of its inputs.
"""

from __future__ import annotations

import math
import numbers

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_ARRAY, HOST_XP
from ..backend.shapes import size_args
from ..tensor import Tensor
from ._util import normalize_dim, operand_result_type

__all__ = [
    "cat",
    "chunk",
    "expand",
    "flatten",
    "flip",
    "movedim",
    "permute",
    "repeat",
    "reshape",
    "size_args",
    "split",
    "squeeze",
    "stack",
    "tile",
    "transpose",
    "tril",
    "triu",
    "unbind",
    "unflatten",
    "unsqueeze",
    "view",
]


def _infer_shape(shape, numel: int, name: str) -> tuple[int, ...]:
    unknown = [i for i, s in enumerate(shape) if s == -1]
    if len(unknown) > 1:
        raise RuntimeError(f"{name}(): only one dimension can be inferred (-1), got shape {list(shape)}")
    if any(s < -1 for s in shape):
        raise RuntimeError(f"{name}(): invalid negative size in shape {list(shape)}")
    known = math.prod(s for s in shape if s != -1)
    if unknown:
        if known == 0 or numel % known:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
    return tuple(shape)


class ViewAs(ArrayFunction):
    """Reshape without copying (only called where the strides allow it: see ``_can_view``)."""

    is_view = True

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


class ReshapeCopy(ArrayFunction):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


def _can_view(x, shape) -> bool:
    if x.flags.c_contiguous:
        return True
    if type(x) is HOST_ARRAY:
        try:
            HOST_XP.reshape(x, shape, copy=False)
            return True
        except ValueError:
            return False
    return _strides_allow_view(x.shape, x.strides, shape)


def _strides_allow_view(old_shape, old_strides, new_shape) -> bool:
    """Whether a C-order reshape of an array with these strides can be a view (NumPy's and CuPy's rule).

    The dims of the new shape are matched to runs of old dims with equal
    products; each run must be contiguous in memory (each dim's stride the next
    one's stride times its size) for the run to be re-split without a copy.
    """
    if 0 in old_shape:
        return True
    old = [(n, st) for n, st in zip(old_shape, old_strides) if n != 1]
    new = [n for n in new_shape if n != 1]
    oi = ni = 0
    while oi < len(old) and ni < len(new):
        oj, nj = oi + 1, ni + 1
        op, np_ = old[oi][0], new[ni]
        while op != np_:
            if np_ < op:
                np_ *= new[nj]
                nj += 1
            else:
                op *= old[oj][0]
                oj += 1
        for k in range(oi, oj - 1):
            if old[k][1] != old[k + 1][0] * old[k + 1][1]:
                return False
        oi, ni = oj, nj
    return True


def _reshape_to(input: Tensor, shape: tuple[int, ...], *, must_view: bool, name: str) -> Tensor:
    shape = _infer_shape(shape, input._data.size, name)
    if _can_view(input._data, shape):
        return ViewAs.apply(input, shape)
    if must_view:
        raise RuntimeError(
            f"view size is not compatible with input tensor's size and stride (shape {list(input.shape)}, "
            f"strides {list(input.stride())}); use .reshape(...) instead"
        )
    return ReshapeCopy.apply(input, shape)


def reshape(input, *shape):
    """``input`` with a new shape (one size may be -1); a view when the strides allow, else a copy."""
    return _reshape_to(input, size_args(shape, "reshape"), must_view=False, name="reshape")


def view(input, *shape):
    """Like ``reshape``, but always a view: raises if the data would have to be copied."""
    if len(shape) == 1 and not isinstance(shape[0], (numbers.Integral, tuple, list)):
        from .conversion import to  # view(dtype) is PyTorch's reinterpretation; not supported

        raise TypeError(f"view(dtype) is not supported; use .to({shape[0]}) to convert (see {to.__name__})")
    return _reshape_to(input, size_args(shape, "view"), must_view=True, name="view")


def view_as(input, other):
    return view(input, other._data.shape)


def reshape_as(input, other):
    return reshape(input, other._data.shape)


def flatten(input, start_dim: int = 0, end_dim: int = -1):
    nd = input._data.ndim
    if nd == 0:
        return reshape(input, (1,))
    s = normalize_dim(start_dim, nd)
    e = normalize_dim(end_dim, nd)
    if s > e:
        raise RuntimeError(f"flatten() has invalid args: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    shape = input._data.shape
    return reshape(input, shape[:s] + (math.prod(shape[s : e + 1]),) + shape[e + 1 :])


def unflatten(input, dim: int, sizes):
    d = normalize_dim(dim, input._data.ndim)
    sizes = tuple(sizes)
    inner = _infer_shape(sizes, input._data.shape[d], "unflatten")
    shape = input._data.shape
    return reshape(input, shape[:d] + inner + shape[d + 1 :])


def squeeze(input, dim=None):
    """Drop size-1 dims (all, or those in ``dim``; a named dim of another size is left alone)."""
    shape = input._data.shape
    if dim is None:
        dims = {i for i, s in enumerate(shape) if s == 1}
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        dims = {d for d in (normalize_dim(d, len(shape)) for d in dims) if shape[d] == 1} if shape else set()
    return reshape(input, tuple(s for i, s in enumerate(shape) if i not in dims))


def unsqueeze(input, dim: int):
    d = normalize_dim(dim, input._data.ndim, allow_end=True)
    shape = input._data.shape
    return reshape(input, shape[:d] + (1,) + shape[d:])


class Permute(ArrayFunction):
    is_view = True

    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = tuple(sorted(range(len(dims)), key=dims.__getitem__))
        return x.transpose(dims)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(ctx.inverse), None


def permute(input, *dims):
    dims = size_args(dims, "permute")
    nd = input._data.ndim
    if len(dims) != nd:
        raise RuntimeError(f"permute(): number of dims don't match: got {len(dims)} dims for a {nd}-d tensor")
    norm = tuple(normalize_dim(d, nd) for d in dims)
    if len(set(norm)) != nd:
        raise RuntimeError(f"permute(): repeated dim in {list(dims)}")
    return Permute.apply(input, norm)


def transpose(input, dim0: int, dim1: int):
    nd = input._data.ndim
    if nd == 0:
        return ViewAs.apply(input, ())
    d0, d1 = normalize_dim(dim0, nd), normalize_dim(dim1, nd)
    dims = list(range(nd))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(input, tuple(dims))


swapaxes = transpose


def movedim(input, source: int, destination: int):
    nd = input._data.ndim
    s, d = normalize_dim(source, nd), normalize_dim(destination, nd)
    order = [i for i in range(nd) if i != s]
    order.insert(d, s)
    return Permute.apply(input, tuple(order))


def t_(input):
    """``x.T``: all dims reversed."""
    return Permute.apply(input, tuple(reversed(range(input._data.ndim))))


def mT(input):  # noqa: N802 - PyTorch's name
    if input._data.ndim < 2:
        raise RuntimeError(
            f"tensor.mT is only supported on matrices or batches of matrices. Got {input._data.ndim}-D tensor."
        )
    return transpose(input, -2, -1)


class Expand(ArrayFunction):
    is_view = True

    @staticmethod
    def forward(ctx, x, shape):
        return ctx.xp.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return g, None  # autograd sums it back to the input's shape


def expand(input, *sizes):
    """A broadcast view of ``input`` at ``sizes`` (-1 keeps a dim); only size-1 dims can grow."""
    sizes = size_args(sizes, "expand")
    shape = input._data.shape
    if len(sizes) < len(shape):
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to the number of "
            f"dimensions in the tensor ({len(shape)})"
        )
    lead = len(sizes) - len(shape)
    target = []
    for i, s in enumerate(sizes):
        if i < lead:
            if s < 0:
                raise RuntimeError(f"expand: -1 is not allowed in a leading, non-existing dimension ({list(sizes)})")
            target.append(s)
            continue
        cur = shape[i - lead]
        if s == -1:
            target.append(cur)
        elif cur in (1, s):
            target.append(s)
        else:
            raise RuntimeError(
                f"The expanded size of the tensor ({s}) must match the existing size ({cur}) at non-singleton "
                f"dimension {i}. Target sizes: {list(sizes)}. Tensor sizes: {list(shape)}"
            )
    return Expand.apply(input, tuple(target))


def expand_as(input, other):
    return expand(input, other._data.shape)


def broadcast_to(input, shape):
    return expand(input, tuple(shape))


class Repeat(ArrayFunction):
    @staticmethod
    def forward(ctx, x, reps):
        padded = (1,) * (len(reps) - x.ndim) + x.shape
        ctx.meta = (x.shape, padded, reps)
        return ctx.xp.tile(x.reshape(padded), reps)

    @staticmethod
    def backward(ctx, g):
        in_shape, padded, reps = ctx.meta
        interleaved = []
        for r, s in zip(reps, padded):
            interleaved += [r, s]
        g = g.reshape(interleaved).sum(axis=tuple(range(0, 2 * len(reps), 2)))
        return g.reshape(in_shape), None


def repeat(input, *sizes):
    """Tile ``input``: ``sizes`` has at least as many entries as ``input`` has dims (``torch.Tensor.repeat``)."""
    sizes = size_args(sizes, "repeat")
    if len(sizes) < input._data.ndim:
        raise RuntimeError(
            "Number of dimensions of repeat dims can not be smaller than number of dimensions of tensor "
            f"({len(sizes)} < {input._data.ndim})"
        )
    if any(s < 0 for s in sizes):
        raise RuntimeError(f"repeat: sizes must be non-negative, got {list(sizes)}")
    return Repeat.apply(input, sizes)


def tile(input, dims):
    dims = size_args((dims,), "tile")
    if len(dims) < input._data.ndim:
        dims = (1,) * (input._data.ndim - len(dims)) + dims
    return Repeat.apply(input, dims)


class Cat(ArrayFunction):
    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.meta = (dim, [a.shape[dim] for a in arrays])
        return ctx.xp.concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        dim, sizes = ctx.meta
        n = ctx.needs_input_grad
        out, start = [], 0
        for i, size in enumerate(sizes):
            if n[i]:
                index = [slice(None)] * g.ndim
                index[dim] = slice(start, start + size)
                out.append(g[tuple(index)])
            else:
                out.append(None)
            start += size
        return tuple(out)


def _tensor_list(tensors, name):
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{name}() expects a list or tuple of Tensors, got {type(tensors).__name__}")
    if not tensors:
        raise RuntimeError(f"{name}() expects a non-empty list of Tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}(): expected a Tensor at position {i}, got {type(t).__name__}")
    dtype = operand_result_type(*tensors)
    return [t.to(dtype) if t._data.dtype != dtype.numpy else t for t in tensors]


def cat(tensors, dim: int = 0):
    """Join tensors along an existing ``dim``; all other sizes must match."""
    tensors = _tensor_list(tensors, "cat")
    ref = next((t for t in tensors if t._data.ndim), tensors[0])
    nd = ref._data.ndim
    if nd == 0:
        raise RuntimeError("zero-dimensional tensor cannot be concatenated")
    d = normalize_dim(dim, nd)
    tensors = [t for t in tensors if not (t._data.ndim == 1 and t._data.shape[0] == 0) or nd == 1]
    for i, t in enumerate(tensors):
        s = t._data.shape
        if len(s) != nd or any(s[k] != ref._data.shape[k] for k in range(nd) if k != d):
            raise RuntimeError(
                f"Sizes of tensors must match except in dimension {d}. Expected {list(ref.shape)} "
                f"(except dim {d}) but got {list(s)} for tensor number {i} in the list"
            )
    return Cat.apply(*tensors, dim=d)


concat = concatenate = cat


class Stack(ArrayFunction):
    @staticmethod
    def forward(ctx, *arrays, dim):
        ctx.dim = dim
        return ctx.xp.stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        take = ctx.xp.take
        return tuple(take(g, i, axis=ctx.dim) if n[i] else None for i in range(g.shape[ctx.dim]))


def stack(tensors, dim: int = 0):
    """Join same-shape tensors along a new ``dim``."""
    tensors = _tensor_list(tensors, "stack")
    shape = tensors[0]._data.shape
    for i, t in enumerate(tensors):
        if t._data.shape != shape:
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {list(shape)} at entry 0 and "
                f"{list(t.shape)} at entry {i}"
            )
    d = normalize_dim(dim, len(shape), allow_end=True)
    return Stack.apply(*tensors, dim=d)


class Split(ArrayFunction):
    """One op, several outputs: views of consecutive pieces along ``dim``."""

    is_view = True

    @staticmethod
    def forward(ctx, x, dim, bounds):
        ctx.meta = (x.shape, x.dtype, dim, bounds)
        pieces = []
        for start, stop in bounds:
            index = [slice(None)] * x.ndim
            index[dim] = slice(start, stop)
            pieces.append(x[tuple(index)])
        return tuple(pieces)

    @staticmethod
    def backward(ctx, *grads):
        shape, dtype, dim, bounds = ctx.meta
        parts = []
        for g, (start, stop) in zip(grads, bounds):
            if g is None:
                piece_shape = list(shape)
                piece_shape[dim] = stop - start
                g = ctx.xp.zeros(piece_shape, dtype=dtype)
            parts.append(g)
        return ctx.xp.concatenate(parts, axis=dim), None, None


class Select(ArrayFunction):
    """``unbind``'s pieces: index ``i`` along ``dim`` (a view without that dim)."""

    is_view = True

    @staticmethod
    def forward(ctx, x, dim, count):
        ctx.meta = (x.shape, x.dtype, dim)
        return tuple(x[(slice(None),) * dim + (i,)] for i in range(count))

    @staticmethod
    def backward(ctx, *grads):
        shape, dtype, dim = ctx.meta
        piece = shape[:dim] + shape[dim + 1 :]
        xp = ctx.xp
        parts = [g if g is not None else xp.zeros(piece, dtype=dtype) for g in grads]
        return xp.stack(parts, axis=dim), None, None


def split(tensor, split_size_or_sections, dim: int = 0):
    """Pieces of ``tensor`` along ``dim``: of size ``split_size`` (the last may be smaller), or of the given sizes."""
    input = tensor
    d = normalize_dim(dim, input._data.ndim)
    n = input._data.shape[d]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise RuntimeError(
                f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's size at dimension {d}), "
                f"but got split_sizes={sizes}"
            )
    else:
        size = int(split_size_or_sections)
        if size <= 0 and n > 0:
            raise RuntimeError(f"split expects split_size be positive, but got split_size={size}")
        sizes = [min(size, n - i) for i in range(0, n, size)] if n else [0]
    bounds, start = [], 0
    for s in sizes:
        bounds.append((start, start + s))
        start += s
    return Split.apply(input, d, tuple(bounds))


def chunk(input, chunks: int, dim: int = 0):
    """Split into ``chunks`` pieces of size ``ceil(n / chunks)`` (fewer when they run out)."""
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    d = normalize_dim(dim, input._data.ndim)
    n = input._data.shape[d]
    size = max(-(-n // chunks), 1)
    return split(input, size, d)


def unbind(input, dim: int = 0):
    """The slices of ``input`` along ``dim``, each without that dim."""
    d = normalize_dim(dim, input._data.ndim)
    result = Select.apply(input, d, input._data.shape[d])
    return result if isinstance(result, tuple) else (result,)


class Tri(ArrayFunction):
    @staticmethod
    def forward(ctx, x, diagonal, lower):
        ctx.meta = (diagonal, lower)
        xp = ctx.xp
        return xp.tril(x, diagonal) if lower else xp.triu(x, diagonal)

    @staticmethod
    def backward(ctx, g):
        diagonal, lower = ctx.meta
        xp = ctx.xp
        return (xp.tril(g, diagonal) if lower else xp.triu(g, diagonal)), None, None


def tril(input, diagonal: int = 0):
    if input._data.ndim < 2:
        raise RuntimeError(f"tril: input tensor must have at least 2 dimensions, got {input._data.ndim}")
    return Tri.apply(input, diagonal, True)


def triu(input, diagonal: int = 0):
    if input._data.ndim < 2:
        raise RuntimeError(f"triu: input tensor must have at least 2 dimensions, got {input._data.ndim}")
    return Tri.apply(input, diagonal, False)


class Flip(ArrayFunction):
    """A copy, as PyTorch's ``flip`` is (NumPy's would be a view with negative strides)."""

    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return ctx.xp.ascontiguousarray(ctx.xp.flip(x, dims))

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.flip(g, ctx.dims), None


def flip(input, dims):
    dims = dims if isinstance(dims, (list, tuple)) else (dims,)
    return Flip.apply(input, tuple(normalize_dim(d, input._data.ndim) for d in dims))
