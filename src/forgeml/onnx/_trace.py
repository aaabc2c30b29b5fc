"""The tracing half of ONNX export: traced arrays, symbolic sizes and the graph being built.

While a model runs under :func:`forgeml.onnx.export`, every array it computes on is a
:class:`TracedArray`: an ``ndarray`` subclass that knows the ONNX value holding it. Ops
(``Function.apply``) are translated by the emitters of :mod:`._ops_export`; NumPy code that a
layer runs on the arrays themselves, outside any op (a padding mask inverted with ``~``, a
comparison, ``xp.where`` on masks), is traced here through ``__array_ufunc__``,
``__array_function__`` and the ndarray methods, so masks derived from the inputs stay part of
the graph.

Dynamic axes: the model runs twice, op by op. Each traced array carries a *shadow*, its value
computed from inputs whose dynamic axes are one longer. A dim whose size differs from its
shadow's depends on the dynamic axes: ``shape`` returns it as a :class:`SymInt`, an ``int``
that remembers where it came from (``Shape`` of this value, sums and products of such), so
sizes that a layer computes from ``x.shape`` (a reshape to ``(B, L, H, D)``, ``pe[:length]``)
become ``Shape``/``Gather``-style subgraphs, and every other size stays a constant.

A value that cannot be expressed (an unsupported NumPy call, an in-place write) is not an
error until an op that reaches the graph uses it: it carries the reason instead of a name.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ..tensor import Tensor
from ._errors import ExportError, UnsupportedOperatorError

__all__ = ["ExportContext", "SymInt", "TracedArray", "active", "plain", "shadow_of"]

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min

_state = threading.local()


def active() -> ExportContext | None:
    """The export running in this thread, if any."""
    return getattr(_state, "ctx", None)


def set_active(ctx: ExportContext | None) -> None:
    _state.ctx = ctx


# ---------------------------------------------------------------- symbolic sizes
class SymInt(int):
    """A size that depends on the dynamic axes: an ``int`` (its value in this trace) with its value in the
    shadow trace and the expression that computes it (``("dim", array, i)``, ``("add", a, b)``, ...)."""

    def __new__(cls, value, shadow, expr):
        obj = int.__new__(cls, value)
        obj.shadow = int(shadow)
        obj.expr = expr
        return obj

    def __repr__(self) -> str:
        return int.__repr__(self)

    __str__ = __repr__

    def __neg__(self):
        return SymInt(-int(self), -self.shadow, ("neg", self))

    def __pos__(self):
        return self


def _shadow_int(v) -> int:
    return v.shadow if isinstance(v, SymInt) else int(v)


def _sym_binary(op: str, fn):
    def method(self, other):
        if not isinstance(other, int):
            return NotImplemented
        value = fn(int(self), int(other))
        try:
            shadow = fn(self.shadow, _shadow_int(other))
        except ArithmeticError:
            shadow = value
        return SymInt(value, shadow, (op, self, other))

    def reflected(self, other):
        if not isinstance(other, int):
            return NotImplemented
        value = fn(int(other), int(self))
        try:
            shadow = fn(_shadow_int(other), self.shadow)
        except ArithmeticError:
            shadow = value
        return SymInt(value, shadow, (op, other, self))

    return method, reflected


for _op, _fn in (
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("floordiv", lambda a, b: a // b),
    ("mod", lambda a, b: a % b),
):
    _m, _r = _sym_binary(_op, _fn)
    setattr(SymInt, f"__{_op}__", _m)
    setattr(SymInt, f"__r{_op}__", _r)


# ---------------------------------------------------------------- traced arrays
_BASE_SHAPE = np.ndarray.shape
_UNTRACED = "it was made by an ndarray operation that ONNX export does not trace"


def _base(a: np.ndarray) -> np.ndarray:
    return np.ndarray.view(a, np.ndarray)


def plain(x):
    """``x`` with traced arrays as plain ndarrays and symbolic sizes as ints (through tuples, lists, slices)."""
    if isinstance(x, TracedArray):
        return _base(x)
    if isinstance(x, SymInt):
        return int(x)
    if isinstance(x, Tensor) and isinstance(x._data, TracedArray):
        return Tensor._make(_base(x._data), False, None)
    if type(x) is tuple or type(x) is list:
        return type(x)(plain(i) for i in x)
    if type(x) is slice:
        return slice(plain(x.start), plain(x.stop), plain(x.step))
    return x


def traced_view(arr):
    """The traced array whose values plain ``arr`` shows exactly (``numpy.asarray`` of a traced array gives such
    a plain view), or None."""
    ctx = active()
    if ctx is None or isinstance(arr, TracedArray) or not isinstance(arr, np.ndarray):
        return None
    return ctx.view_of(arr)


def shadow_of(x):
    """``x`` as it is in the shadow trace (traced arrays replaced by their shadows, sizes by their shadow values)."""
    if type(x) is np.ndarray:
        source = traced_view(x)
        return x if source is None else shadow_of(source)
    if isinstance(x, TracedArray):
        s = x.__dict__.get("_fm_shadow")
        return _base(x) if s is None else s
    if isinstance(x, SymInt):
        return x.shadow
    if isinstance(x, Tensor) and contains_traced(x):
        return Tensor._make(shadow_of(x._data), False, None)
    if type(x) is tuple or type(x) is list:
        return type(x)(shadow_of(i) for i in x)
    if type(x) is slice:
        return slice(shadow_of(x.start), shadow_of(x.stop), shadow_of(x.step))
    return x


def contains_traced(x) -> bool:
    if isinstance(x, Tensor):
        x = x._data
    if isinstance(x, TracedArray):
        return True
    if type(x) is np.ndarray:
        return traced_view(x) is not None
    if isinstance(x, SymInt):
        return True
    if type(x) is slice:
        return contains_traced((x.start, x.stop, x.step))
    if type(x) is tuple or type(x) is list:
        return any(contains_traced(i) for i in x)
    if isinstance(x, dict):
        return any(contains_traced(i) for i in x.values())
    return False


class TracedArray(np.ndarray):
    """An ndarray that knows the ONNX value holding it (``_fm_name``), its shadow and, when it has no ONNX
    form, why (``_fm_error``). Arrays made from it by operations this class does not trace keep the
    class defaults: no name, and the reason."""

    _fm_name = None
    _fm_error = _UNTRACED
    _fm_shadow = None

    @classmethod
    def wrap(cls, array, name, shadow, error=None) -> TracedArray:
        out = np.ndarray.view(np.asarray(array), cls)
        d = out.__dict__
        d["_fm_name"] = name
        d["_fm_shadow"] = None if shadow is None else np.asarray(shadow)
        d["_fm_error"] = error
        ctx = active()
        if ctx is not None:
            ctx.register(out)
        return out

    def onnx_name(self) -> str:
        name = self.__dict__.get("_fm_name")
        if name is None:
            error = self.__dict__.get("_fm_error") or _UNTRACED
            raise UnsupportedOperatorError(f"a value the graph needs has no ONNX form: {error}")
        return name

    # -- sizes ------------------------------------------------------------------
    @property
    def shape(self):
        dims = _BASE_SHAPE.__get__(self)
        shadow = self.__dict__.get("_fm_shadow")
        if shadow is None:
            return dims
        sdims = shadow.shape
        if sdims == dims or len(sdims) != len(dims):
            return dims
        return tuple(d if d == s else SymInt(d, s, ("dim", self, i)) for i, (d, s) in enumerate(zip(dims, sdims)))

    @shape.setter
    def shape(self, value) -> None:
        _BASE_SHAPE.__set__(self, plain(value))
        self._poison("its shape was assigned in place")

    @property
    def size(self):
        shape = self.shape
        if any(isinstance(d, SymInt) for d in shape):
            return math.prod(shape)
        return _base(self).size

    def _poison(self, why: str) -> None:
        ctx = active()
        d = self.__dict__
        d["_fm_name"] = None
        d["_fm_error"] = why + (ctx.where() if ctx is not None else "")
        if d.get("_fm_shadow") is not None and ctx is not None:
            d["_fm_shadow"] = None

    # -- NumPy protocols ----------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        outs = kwargs.pop("out", None)
        call_kwargs = dict(kwargs)
        if outs is not None:
            call_kwargs["out"] = tuple(plain(o) for o in outs)
        result = getattr(ufunc, method)(*plain(inputs), **call_kwargs)
        ctx = active()
        if ctx is None:
            if outs is not None:
                return outs[0] if len(outs) == 1 else outs
            return result
        kwargs.pop("subok", None)
        shadow_kwargs = {k: shadow_of(v) for k, v in kwargs.items()}
        results = result if isinstance(result, tuple) else (result,)
        traced = []
        for i, r in enumerate(results):

            def shadow(i=i):
                s = getattr(ufunc, method)(*shadow_of(inputs), **shadow_kwargs)
                return s[i] if isinstance(s, tuple) else s

            def emit(r=r):
                if len(results) != 1:
                    raise UnsupportedOperatorError(f"numpy.{ufunc.__name__} has several outputs")
                return ctx.emit_ufunc(ufunc, method, inputs, kwargs, r)

            if outs is not None and isinstance(outs[i], TracedArray):
                ctx.trace_into(outs[i], shadow, emit, f"numpy.{ufunc.__name__}")
                traced.append(outs[i])
            elif outs is not None:
                traced.append(outs[i])
            else:
                traced.append(ctx.traced(np.asarray(r), shadow, emit, f"numpy.{ufunc.__name__}"))
        return tuple(traced) if isinstance(result, tuple) else traced[0]

    def __array_function__(self, func, types, args, kwargs):
        ctx = active()
        handler = _ARRAY_FUNCTIONS.get(func) if ctx is not None else None
        if handler is not None:
            return handler(ctx, *args, **kwargs)
        result = super().__array_function__(func, types, args, kwargs)
        if ctx is None:
            return result
        reason = f"numpy.{getattr(func, '__name__', func)} is not traced by ONNX export" + ctx.where()
        return _poison_plain(result, reason)

    # -- ndarray methods that do not go through the protocols ----------------------
    def __getitem__(self, key):
        result = _base(self)[plain(key)]
        ctx = active()
        if ctx is None or not isinstance(result, np.ndarray):
            return result
        return ctx.traced(
            result, lambda: shadow_of(self)[shadow_of(key)], lambda: ctx.index(self, key), "indexing an array"
        )

    def __setitem__(self, key, value) -> None:
        _base(self)[plain(key)] = plain(value)
        if active() is None:
            return
        shadow = self.__dict__.get("_fm_shadow")
        if shadow is not None:
            try:
                shadow[shadow_of(key)] = shadow_of(value)
            except Exception:  # noqa: BLE001 - the shadow is only a witness; the value is poisoned anyway
                pass
        self._poison("it was written in place (x[...] = ...) outside ForgeML ops")
        self.__dict__["_fm_shadow"] = shadow

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        result = _base(self).astype(dtype, order=order, casting=casting, copy=copy)
        ctx = active()
        if ctx is None:
            return result
        if result.dtype == self.dtype:
            return self if not copy else self._same(result)
        return ctx.traced(
            result,
            lambda: shadow_of(self).astype(dtype),
            lambda: ctx.cast(ctx.name(self), result.dtype),
            "astype",
        )

    def _same(self, result) -> TracedArray:
        """``result`` (a copy or view of this array's values) under this array's name."""
        d = self.__dict__
        return TracedArray.wrap(result, d.get("_fm_name"), d.get("_fm_shadow"), d.get("_fm_error", _UNTRACED))

    def copy(self, order="C"):
        result = _base(self).copy(order=order)
        return self._same(result) if active() is not None else result

    def view(self, *args, **kwargs):
        if not args and not kwargs:
            return self._same(_base(self)) if active() is not None else _base(self)
        result = np.ndarray.view(self, *args, **kwargs)
        if isinstance(result, TracedArray):
            result._poison("its memory was reinterpreted with view()")
        return result

    def reshape(self, *shape, order="C", copy=None):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        result = _base(self).reshape(plain(shape), order=order)
        ctx = active()
        if ctx is None:
            return result
        if order != "C":
            return _poison_plain(result, "a reshape in Fortran order is not traced")
        return ctx.traced(
            result,
            lambda: shadow_of(self).reshape(shadow_of(shape)),
            lambda: ctx.reshape(self, shape),
            "reshape",
        )

    def ravel(self, order="C"):
        return self.reshape(-1, order=order)

    def flatten(self, order="C"):
        return self.reshape(-1, order=order).copy()

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        nd = self.ndim
        perm = tuple(reversed(range(nd))) if not axes else tuple(int(a) % nd for a in axes)
        result = _base(self).transpose(perm)
        ctx = active()
        if ctx is None:
            return result
        return ctx.traced(
            result,
            lambda: shadow_of(self).transpose(perm),
            lambda: ctx.node("Transpose", [ctx.name(self)], perm=list(perm)),
            "transpose",
        )

    @property
    def T(self):  # noqa: N802 - NumPy's name
        return self.transpose()

    def swapaxes(self, axis1, axis2):
        perm = list(range(self.ndim))
        a, b = int(axis1) % self.ndim, int(axis2) % self.ndim
        perm[a], perm[b] = perm[b], perm[a]
        return self.transpose(tuple(perm))

    def squeeze(self, axis=None):
        base_shape = _BASE_SHAPE.__get__(self)
        if axis is None:
            axes = tuple(i for i, d in enumerate(base_shape) if d == 1)
        else:
            axes = tuple(int(a) % self.ndim for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))
        result = _base(self).squeeze(axis=axes)
        ctx = active()
        if ctx is None:
            return result
        return ctx.traced(
            result,
            lambda: shadow_of(self).squeeze(axis=axes),
            lambda: ctx.node("Squeeze", [ctx.name(self), ctx.ints(axes)]) if axes else ctx.name(self),
            "squeeze",
        )

    def _arg(self, largest, axis=None, out=None, keepdims=False):
        if out is not None:
            raise TypeError("argmax/argmin with out= is not traced by ONNX export")
        plain_self = _base(self)
        result = np.asarray(
            plain_self.argmax(axis=axis, keepdims=keepdims)
            if largest
            else plain_self.argmin(axis=axis, keepdims=keepdims)
        )
        ctx = active()
        if ctx is None:
            return result

        def shadow():
            s = shadow_of(self)
            return np.asarray(
                s.argmax(axis=axis, keepdims=keepdims) if largest else s.argmin(axis=axis, keepdims=keepdims)
            )

        def emit():
            x, ax = ctx.name(self), axis
            if ax is None:
                x, ax = ctx.node("Reshape", [x, ctx.ints([-1])]), 0
            out = ctx.node("ArgMax" if largest else "ArgMin", [x], axis=int(ax), keepdims=int(bool(keepdims)))
            if axis is None and keepdims:
                out = ctx.node("Reshape", [out, ctx.ints([1] * self.ndim)])
            return out

        return ctx.traced(result, shadow, emit, "argmax" if largest else "argmin")

    def argmax(self, axis=None, out=None, *, keepdims=False):
        return self._arg(True, axis, out, keepdims)

    def argmin(self, axis=None, out=None, *, keepdims=False):
        return self._arg(False, axis, out, keepdims)


def _poison_plain(result, reason: str):
    """A NumPy result made from traced arrays by an untraced function: traced arrays without an ONNX form."""
    if isinstance(result, TracedArray):
        result.__dict__.update(_fm_name=None, _fm_error=reason, _fm_shadow=None)
        return result
    if isinstance(result, np.ndarray):
        return TracedArray.wrap(result, None, None, reason)
    if isinstance(result, (tuple, list)) and result and all(isinstance(r, np.ndarray) for r in result):
        return type(result)(_poison_plain(r, reason) for r in result)
    return result


class _TracingNumPy:
    """The array namespace of traced arrays (what ``namespace_of`` gives for them): NumPy, except that
    ``asarray``/``ascontiguousarray``/``array`` keep a traced array traced (NumPy's would return a plain view,
    which the graph could only know by its memory, and whose shape would hide the dynamic sizes)."""

    __name__ = "numpy"

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def _keep(a, dtype, copy):
        if not isinstance(a, TracedArray) or active() is None:
            return None
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        return a.copy() if copy else a

    def asarray(self, a, dtype=None, *args, **kwargs):
        kept = self._keep(a, dtype, kwargs.get("copy") is True)
        return kept if kept is not None else np.asarray(plain(a), dtype, *args, **kwargs)

    def ascontiguousarray(self, a, dtype=None, **kwargs):
        if isinstance(a, TracedArray) and a.ndim == 0:
            a = a.reshape(1)
        kept = self._keep(a, dtype, False)
        return kept if kept is not None else np.ascontiguousarray(plain(a), dtype, **kwargs)

    def array(self, a, dtype=None, *args, copy=True, **kwargs):
        kept = self._keep(a, dtype, copy is not False)
        return kept if kept is not None else np.array(plain(a), dtype, *args, copy=copy, **kwargs)


TRACING_NUMPY = _TracingNumPy()


# ---------------------------------------------------------------- NumPy functions with ONNX forms
_ARRAY_FUNCTIONS: dict = {}


def _handles(*funcs):
    def register(handler):
        for f in funcs:
            _ARRAY_FUNCTIONS[f] = handler
        return handler

    return register


@_handles(np.where)
def _np_where(ctx, condition, x=None, y=None):
    if x is None and y is None:
        return _poison_plain(np.where(plain(condition)), "numpy.where(condition) (nonzero) is not traced")
    result = np.asarray(np.where(plain(condition), plain(x), plain(y)))

    def emit():
        return ctx.node(
            "Where",
            [ctx.name(condition, np.dtype(bool)), ctx.name(x, result.dtype), ctx.name(y, result.dtype)],
        )

    return ctx.traced(result, lambda: np.where(shadow_of(condition), shadow_of(x), shadow_of(y)), emit, "numpy.where")


@_handles(np.concatenate)
def _np_concatenate(ctx, arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    if out is not None or axis is None:
        return _poison_plain(np.concatenate(plain(arrays), axis=axis), "numpy.concatenate with out/axis=None")
    result = np.concatenate(plain(list(arrays)), axis=axis, dtype=dtype, casting=casting)
    return ctx.traced(
        result,
        lambda: np.concatenate(shadow_of(list(arrays)), axis=axis, dtype=dtype, casting=casting),
        lambda: ctx.node("Concat", [ctx.name(a, result.dtype) for a in arrays], axis=int(axis)),
        "numpy.concatenate",
    )


@_handles(np.broadcast_to)
def _np_broadcast_to(ctx, array, shape, subok=False):
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    result = np.broadcast_to(plain(array), plain(shape))
    return ctx.traced(
        np.array(result),
        lambda: np.broadcast_to(shadow_of(array), shadow_of(shape)),
        lambda: ctx.expand(array, shape),
        "numpy.broadcast_to",
    )


@_handles(np.copy)
def _np_copy(ctx, a, *args, **kwargs):
    if isinstance(a, TracedArray) and not args and not kwargs.get("dtype"):
        return a._same(np.array(_base(a)))
    return _poison_plain(np.array(plain(a), *args, **kwargs), "numpy.array with a dtype is not traced")


@_handles(np.expand_dims)
def _np_expand_dims(ctx, a, axis):
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    nd = np.ndim(plain(a)) + len(axes)
    axes = tuple(sorted(int(x) % nd for x in axes))
    result = np.expand_dims(plain(a), axes)
    return ctx.traced(
        result,
        lambda: np.expand_dims(shadow_of(a), axes),
        lambda: ctx.node("Unsqueeze", [ctx.name(a), ctx.ints(axes)]),
        "numpy.expand_dims",
    )


@_handles(np.take)
def _np_take(ctx, a, indices, axis=None, out=None, mode="raise"):
    if out is not None or mode != "raise":
        return _poison_plain(np.take(plain(a), plain(indices), axis=axis, mode=mode), "numpy.take with out/mode")
    result = np.asarray(np.take(plain(a), plain(indices), axis=axis))

    def emit():
        x, ax = ctx.name(a), axis
        if ax is None:
            x, ax = ctx.node("Reshape", [x, ctx.ints([-1])]), 0
        return ctx.node("Gather", [x, ctx.name(indices, np.dtype(np.int64))], axis=int(ax))

    return ctx.traced(result, lambda: np.take(shadow_of(a), shadow_of(indices), axis=axis), emit, "numpy.take")


# ---------------------------------------------------------------- ufuncs
_UNARY = {
    "negative": "Neg",
    "absolute": "Abs",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "tanh": "Tanh",
    "sin": "Sin",
    "cos": "Cos",
    "floor": "Floor",
    "ceil": "Ceil",
    "sign": "Sign",
    "reciprocal": "Reciprocal",
    "rint": "Round",
    "erf": "Erf",
}
_BINARY = {
    "add": "Add",
    "subtract": "Sub",
    "multiply": "Mul",
    "true_divide": "Div",
    "divide": "Div",
    "power": "Pow",
    "maximum": "Max",
    "minimum": "Min",
    "fmax": "Max",
    "fmin": "Min",
    "matmul": "MatMul",
}
_COMPARE = {
    "equal": "Equal",
    "less": "Less",
    "less_equal": "LessOrEqual",
    "greater": "Greater",
    "greater_equal": "GreaterOrEqual",
}
_LOGICAL = {
    "logical_and": "And",
    "logical_or": "Or",
    "logical_xor": "Xor",
    "bitwise_and": "And",
    "bitwise_or": "Or",
    "bitwise_xor": "Xor",
}
_REDUCE = {"add": "ReduceSum", "multiply": "ReduceProd", "maximum": "ReduceMax", "minimum": "ReduceMin"}


def _dtype_of(x):
    if isinstance(x, Tensor):
        return x._data.dtype
    if isinstance(x, (np.ndarray, np.generic)):
        return x.dtype
    return None


# ---------------------------------------------------------------- the graph
class ExportContext:
    """The ONNX graph being built: nodes in execution order, initializers, value names, and the module the
    model is in now (for error messages and node names)."""

    def __init__(self, opset: int) -> None:
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.opset = opset
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self.module_stack: list[tuple[str, object]] = []
        self._used: set[str] = set()
        self._counts: dict[str, int] = {}
        self._consts: dict = {}
        self._keep: list = []  # objects whose id() keys a cache entry stay alive
        self._by_id: dict[int, str] = {}
        self._int1d: dict = {}
        self._views: dict = {}  # (address, shape, strides, dtype) -> the traced array with that memory
        self._owners: dict[int, TracedArray] = {}  # id of the array owning a traced array's memory -> it

    def register(self, traced: TracedArray) -> None:
        """Remember ``traced``'s memory, so that plain views of it (``numpy.asarray``) are known as it."""
        self._keep.append(traced)  # alive until the export ends: its memory is not reused meanwhile
        key = (traced.ctypes.data, _BASE_SHAPE.__get__(traced), traced.strides, traced.dtype.str)
        self._views[key] = traced
        self._owners.setdefault(id(_owner(traced)), traced)

    def view_of(self, arr: np.ndarray):
        key = (arr.ctypes.data, arr.shape, arr.strides, arr.dtype.str)
        return self._views.get(key)

    # -- names and places -----------------------------------------------------------
    def fresh(self, hint: str) -> str:
        n = self._counts.get(hint, 0)
        while True:
            name = f"{hint}_{n}" if n else hint
            n += 1
            if name not in self._used:
                self._counts[hint] = n
                self._used.add(name)
                return name

    def reserve(self, name: str) -> str:
        if name in self._used:
            raise ExportError(f"the name {name!r} is used twice in the exported graph")
        self._used.add(name)
        return name

    def module_path(self) -> tuple[str, object | None]:
        if not self.module_stack:
            return "", None
        return self.module_stack[-1]

    def describe_module(self) -> str:
        path, module = self.module_path()
        kind = type(module).__name__ if module is not None else "?"
        if not path:
            return f"the top-level module ({kind})"
        return f"module '{path}' ({kind})"

    def where(self) -> str:
        return f" (in {self.describe_module()})"

    # -- nodes ---------------------------------------------------------------------------
    def node(self, op_type: str, inputs, outputs=None, n_out: int = 1, **attrs):
        """Append an ONNX node; returns its output name (or list of names when ``n_out > 1``)."""
        if outputs is None:
            outputs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        path = self.module_path()[0]
        node_name = self.fresh(f"/{path.replace('.', '/')}/{op_type}" if path else f"/{op_type}")
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.helper.make_node(op_type, list(inputs), list(outputs), name=node_name, **attrs))
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def const(self, array, hint: str = "const") -> str:
        """An initializer holding ``array`` (small ones shared by value)."""
        arr = np.asarray(array)
        if arr.dtype == object:
            raise ExportError(f"cannot store a value of dtype object in an ONNX graph{self.where()}")
        key = None
        if arr.nbytes <= 4096:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            name = self._consts.get(key)
            if name is not None:
                return name
        name = self.fresh(hint)
        self.initializers[name] = np.array(arr, order="C")
        if key is not None:
            self._consts[key] = name
        return name

    def scalar(self, value, dtype) -> str:
        return self.const(np.asarray(value, dtype=dtype))

    def ints(self, values) -> str:
        """A 1-D int64 tensor of ``values`` (ints or symbolic sizes)."""
        values = list(values)
        if not any(isinstance(v, SymInt) for v in values):
            return self.const(np.asarray([int(v) for v in values], dtype=np.int64))
        parts, run = [], []
        for v in values:
            if isinstance(v, SymInt):
                if run:
                    parts.append(self.const(np.asarray(run, dtype=np.int64)))
                    run = []
                parts.append(self.int1d(v))
            else:
                run.append(int(v))
        if run:
            parts.append(self.const(np.asarray(run, dtype=np.int64)))
        return parts[0] if len(parts) == 1 else self.node("Concat", parts, axis=0)

    def int1d(self, v) -> str:
        """A 1-D int64 tensor of one element holding the size ``v`` (computed in the graph when symbolic)."""
        if not isinstance(v, SymInt):
            return self.const(np.asarray([int(v)], dtype=np.int64))
        key = id(v)
        name = self._int1d.get(key)
        if name is not None:
            return name
        kind = v.expr[0]
        if kind == "dim":
            _, array, i = v.expr
            dkey = ("dim", id(array), i)
            name = self._int1d.get(dkey)
            if name is None:
                name = self.node("Shape", [self.name(array)], start=i, end=i + 1)
                self._int1d[dkey] = name
                self._keep.append(array)
        elif kind == "neg":
            name = self.node("Neg", [self.int1d(v.expr[1])])
        else:
            a, b = v.expr[1], v.expr[2]
            ia, ib = self.int1d(a), self.int1d(b)
            if kind == "floordiv":
                name = self.floor_div_int(ia, ib, _nonneg(a) and _nonneg(b))
            else:
                op = {"add": "Add", "sub": "Sub", "mul": "Mul", "mod": "Mod"}[kind]
                name = self.node(op, [ia, ib], fmod=0 if op == "Mod" else None)
        self._int1d[key] = name
        self._keep.append(v)
        return name

    def floor_div_int(self, a: str, b: str, nonneg: bool) -> str:
        """Python's ``a // b`` on int64 tensors (ONNX ``Div`` truncates toward zero)."""
        q = self.node("Div", [a, b])
        if nonneg:
            return q
        r = self.node("Sub", [a, self.node("Mul", [q, b])])
        zero = self.scalar(0, np.int64)
        inexact = self.node("Not", [self.node("Equal", [r, zero])])
        signs = self.node("Xor", [self.node("Less", [a, zero]), self.node("Less", [b, zero])])
        fix = self.node("Cast", [self.node("And", [inexact, signs])], to=self.onnx.TensorProto.INT64)
        return self.node("Sub", [q, fix])

    def cast(self, name: str, to_dtype) -> str:
        return self.node("Cast", [name], to=self.onnx_type(to_dtype))

    def onnx_type(self, dtype) -> int:
        dtype = np.dtype(dtype)
        try:
            return self.helper.np_dtype_to_tensor_dtype(dtype)
        except (KeyError, TypeError, ValueError):
            raise ExportError(f"dtype {dtype} has no ONNX equivalent{self.where()}") from None

    def reduce(self, op: str, x: str, axes, keepdims: bool, **attrs) -> str:
        """``op`` (ReduceSum, ReduceMean, ReduceMax, ...) over ``axes`` (None: all), in the form of the opset."""
        inputs = [x]
        if axes is None:
            pass
        elif op == "ReduceSum" or self.opset >= 18:
            inputs.append(self.ints(axes))
        else:
            attrs["axes"] = [int(a) for a in axes]
        return self.node(op, inputs, keepdims=int(bool(keepdims)), **attrs)

    # -- values --------------------------------------------------------------------------------
    def name(self, x, dtype=None) -> str:
        """The ONNX value of ``x`` (a tensor, traced or plain array, number or symbolic size), cast to ``dtype``."""
        dtype = None if dtype is None else np.dtype(dtype)
        if isinstance(x, Tensor):
            x = x._data
        if isinstance(x, TracedArray):
            name, src = x.onnx_name(), x.dtype
        elif isinstance(x, SymInt):
            name, src = self.node("Squeeze", [self.int1d(x), self.ints([0])]), np.dtype(np.int64)
        elif isinstance(x, np.ndarray) and self.view_of(x) is not None:
            return self.name(self.view_of(x), dtype)
        elif isinstance(x, np.ndarray):
            source = self._owners.get(id(_owner(x)))
            if source is not None and source.__dict__.get("_fm_name") not in self.initializers:
                raise ExportError(
                    "a value derived from the inputs by NumPy code that ONNX export does not trace (a plain array "
                    f"made from a traced one, e.g. numpy.asarray(x)[...]){self.where()}"
                )
            key = id(x)
            name = self._by_id.get(key)
            if name is None:
                name = self.const(x)
                self._by_id[key] = name
                self._keep.append(x)
            src = x.dtype
        elif isinstance(x, np.generic):
            name, src = self.const(np.asarray(x)), x.dtype
        elif isinstance(x, (bool, int, float)):
            if dtype is None:
                dtype = np.asarray(x).dtype
            return self.const(np.asarray(x, dtype=dtype))
        elif x is None:
            raise ExportError(f"an op input is None where a value is needed{self.where()}")
        else:
            raise ExportError(f"cannot write a {type(x).__name__} into an ONNX graph{self.where()}")
        if dtype is not None and src != dtype:
            return self.cast(name, dtype)
        return name

    def shape(self, x) -> tuple:
        """The shape of ``x`` with symbolic sizes where they depend on the dynamic axes."""
        if isinstance(x, Tensor):
            x = x._data
        return tuple(np.shape(x)) if not isinstance(x, TracedArray) else x.shape

    def traced(self, result, shadow, emit, what: str) -> TracedArray:
        """``result`` as a traced array: ``shadow()`` gives its shadow, ``emit()`` the name of its ONNX value.
        Either may fail: the array then carries the reason (an error only if the graph needs it)."""
        out = TracedArray.wrap(np.asarray(result), None, None, None)
        self.trace_into(out, shadow, emit, what)
        return out

    def trace_into(self, out: TracedArray, shadow, emit, what: str) -> None:
        d = out.__dict__
        d["_fm_name"] = d["_fm_shadow"] = None
        try:
            with np.errstate(all="ignore"):
                d["_fm_shadow"] = np.asarray(shadow())
        except Exception as exc:  # noqa: BLE001 - any failure means: this value is tied to fixed sizes
            d["_fm_error"] = f"{what} fails when the dynamic axes change size ({exc}){self.where()}"
            return
        try:
            d["_fm_name"] = emit()
            d["_fm_error"] = None
        except ExportError as exc:
            d["_fm_error"] = str(exc) if self.where() in str(exc) else f"{exc}{self.where()}"

    # -- shared translations ------------------------------------------------------------------
    def same_dim(self, a, b) -> bool:
        """Whether two sizes are the same in both traces (a static size equal to a static size, or two
        symbolic ones with equal values and shadows)."""
        if isinstance(a, SymInt) != isinstance(b, SymInt):
            return False
        if isinstance(a, SymInt):
            return int(a) == int(b) and a.shadow == b.shadow
        return int(a) == int(b)

    def reshape(self, x, target) -> str:
        """``x`` reshaped to ``target`` (sizes, symbolic ones included; one may be -1)."""
        src = self.name(x)
        in_shape = self.shape(x)
        target = tuple(target)
        if -1 not in [int(t) if not isinstance(t, SymInt) else None for t in target]:
            inserted = _inserted_ones(in_shape, target, self.same_dim)
            if inserted is not None:
                return self.node("Unsqueeze", [src, self.ints(inserted)]) if inserted else self.node("Identity", [src])
            removed = _inserted_ones(target, in_shape, self.same_dim)
            if removed is not None:
                return self.node("Squeeze", [src, self.ints(removed)])
        has_minus = any(not isinstance(t, SymInt) and int(t) == -1 for t in target)
        spec = []
        for j, t in enumerate(target):
            if not isinstance(t, SymInt):
                if int(t) == 0:
                    return self.node("Reshape", [src, self.ints(target)], allowzero=1)
                spec.append(int(t))
            elif j < len(in_shape) and self.same_dim(in_shape[j], t):
                spec.append(0)
            elif not has_minus:
                spec.append(-1)
                has_minus = True
            else:
                spec.append(t)
        return self.node("Reshape", [src, self.ints(spec)])

    def expand(self, x, target) -> str:
        """``x`` broadcast to ``target`` (``numpy.broadcast_to``)."""
        in_shape = self.shape(x)
        target = tuple(target)
        lead = len(target) - len(in_shape)
        spec = []
        for j, t in enumerate(target):
            if j >= lead and self.same_dim(in_shape[j - lead], t):
                spec.append(1)  # Expand keeps the input's own size there
            else:
                spec.append(t)
        if lead == 0 and all(not isinstance(s, SymInt) and s == 1 for s in spec):
            return self.node("Identity", [self.name(x)])
        return self.node("Expand", [self.name(x), self.ints(spec)])

    def index(self, x, key) -> str:
        """``x[key]`` for NumPy's basic indexing (ints, slices, None, Ellipsis) and the usual advanced cases."""
        items = key if isinstance(key, tuple) else (key,)
        if any(_is_index_array(i) for i in items):
            return self.advanced_index(x, items)
        return self.basic_index(x, items)

    def basic_index(self, x, items) -> str:
        nd = len(self.shape(x))
        used = sum(1 for i in items if i is not None and i is not Ellipsis)
        expanded = []
        for item in items:
            if item is Ellipsis:
                expanded.extend([slice(None)] * (nd - used))
            else:
                expanded.append(item)
        if Ellipsis not in items:
            expanded.extend([slice(None)] * (nd - used))
        out = self.name(x)
        starts, ends, axes, steps, squeeze, new_axes = [], [], [], [], [], []
        axis = out_axis = 0
        for item in expanded:
            if item is None:
                new_axes.append(out_axis)
                out_axis += 1
                continue
            if isinstance(item, slice):
                if item != slice(None) and item != slice(None, None, 1):
                    step = 1 if item.step is None else item.step
                    if not isinstance(step, SymInt) and int(step) == 0:
                        raise ExportError("slice step cannot be zero")
                    negative = not isinstance(step, SymInt) and int(step) < 0
                    start = item.start if item.start is not None else (INT64_MAX if negative else 0)
                    stop = item.stop if item.stop is not None else (INT64_MIN if negative else INT64_MAX)
                    starts.append(start)
                    ends.append(stop)
                    axes.append(axis)
                    steps.append(step)
                axis += 1
                out_axis += 1
                continue
            if isinstance(item, (bool, np.bool_)):
                raise ExportError(f"a boolean scalar index is not supported by ONNX export{self.where()}")
            i = item if isinstance(item, SymInt) else int(item)
            starts.append(i)
            ends.append(i + 1 if isinstance(i, SymInt) or i != -1 else INT64_MAX)
            axes.append(axis)
            steps.append(1)
            squeeze.append(axis)
            axis += 1
        if axes:
            out = self.node("Slice", [out, self.ints(starts), self.ints(ends), self.ints(axes), self.ints(steps)])
        if squeeze:
            out = self.node("Squeeze", [out, self.ints(squeeze)])
        if new_axes:
            out = self.node("Unsqueeze", [out, self.ints(new_axes)])
        if out == self.name(x):
            out = self.node("Identity", [out])
        return out

    def advanced_index(self, x, items) -> str:
        """``x[items]`` with one index array: an integer array (``Gather``) or a boolean mask over the leading
        dims (``NonZero`` + ``GatherND``); ``gather``'s pattern (aranges and one index) is ``GatherElements``."""
        nd = len(self.shape(x))
        arrays = [(p, i) for p, i in enumerate(items) if _is_index_array(i)]
        rest_full = all(
            (isinstance(i, slice) and i == slice(None)) or i is Ellipsis
            for p, i in enumerate(items)
            if not _is_index_array(i)
        )
        if len(arrays) == 1 and rest_full and Ellipsis not in items[: arrays[0][0]]:
            pos, idx = arrays[0]
            dtype = _dtype_of(idx) if _dtype_of(idx) is not None else np.asarray(idx).dtype
            if dtype.kind == "b":
                if pos != 0:
                    raise UnsupportedOperatorError(
                        f"a boolean mask index after other dims has no ONNX form in this exporter{self.where()}"
                    )
                nz = self.node("NonZero", [self.name(idx)])
                return self.node("GatherND", [self.name(x), self.node("Transpose", [nz], perm=[1, 0])])
            return self.node("Gather", [self.name(x), self.name(idx, np.int64)], axis=pos)
        if len(items) == nd and len(arrays) == nd:
            gathered = gather_axis(items)
            if gathered is not None:
                axis, idx = gathered
                target = np.broadcast_shapes(*(np.shape(plain(i)) for _, i in arrays))
                index = self.name(idx, np.int64)
                if tuple(self.shape(idx)) != tuple(target):
                    index = self.expand(idx if not isinstance(idx, Tensor) else idx._data, target)
                    index = self.cast(index, np.int64) if _dtype_of(idx) != np.int64 else index
                return self.node("GatherElements", [self.name(x), index], axis=axis)
        raise UnsupportedOperatorError(
            "this advanced index (several index arrays, or an array beside other indices) has no ONNX form in "
            f"this exporter{self.where()}"
        )

    # -- NumPy ufuncs --------------------------------------------------------------------------
    def emit_ufunc(self, ufunc, method: str, inputs, kwargs, result) -> str:
        name = ufunc.__name__
        extra = {k for k, v in kwargs.items() if v is not None and k not in ("dtype", "casting", "order")}
        if method == "reduce":
            return self._emit_reduce(ufunc, inputs, kwargs, result)
        if method != "__call__" or extra:
            raise UnsupportedOperatorError(
                f"numpy.{name}.{method}" + (f" with {sorted(extra)}" if extra else "") + " has no ONNX form"
            )
        out_dtype = np.asarray(result).dtype
        if name in _BINARY and len(inputs) == 2:
            a, b = (self.name(i, out_dtype) for i in inputs)
            return self.node(_BINARY[name], [a, b])
        if name in _UNARY and len(inputs) == 1:
            return self.node(_UNARY[name], [self.name(inputs[0], out_dtype)])
        if name in _COMPARE or name == "not_equal":
            common = np.result_type(*(plain(i) for i in inputs))
            a, b = (self.name(i, common) for i in inputs)
            if name == "not_equal":
                return self.node("Not", [self.node("Equal", [a, b])])
            return self.node(_COMPARE[name], [a, b])
        if name in _LOGICAL and out_dtype == np.bool_:
            a, b = (self.name(i, np.bool_) for i in inputs)
            return self.node(_LOGICAL[name], [a, b])
        if name in ("logical_not", "invert", "bitwise_not") and out_dtype == np.bool_:
            return self.node("Not", [self.name(inputs[0], np.bool_)])
        if name == "positive":
            return self.node("Identity", [self.name(inputs[0], out_dtype)])
        if name == "square":
            x = self.name(inputs[0], out_dtype)
            return self.node("Mul", [x, x])
        if name == "log1p":
            x = self.name(inputs[0], out_dtype)
            return self.node("Log", [self.node("Add", [x, self.scalar(1, out_dtype)])])
        if name == "expm1":
            x = self.name(inputs[0], out_dtype)
            return self.node("Sub", [self.node("Exp", [x]), self.scalar(1, out_dtype)])
        if name == "isnan":
            return self.node("IsNaN", [self.name(inputs[0])])
        if name == "isinf":
            return self.node("IsInf", [self.name(inputs[0])])
        if name == "isfinite":
            x = self.name(inputs[0])
            return self.node("Not", [self.node("Or", [self.node("IsNaN", [x]), self.node("IsInf", [x])])])
        if name == "clip" and len(inputs) == 3:
            out = self.name(inputs[0], out_dtype)
            if inputs[1] is not None:
                out = self.node("Max", [out, self.name(inputs[1], out_dtype)])
            if inputs[2] is not None:
                out = self.node("Min", [out, self.name(inputs[2], out_dtype)])
            return out
        if name == "floor_divide" and out_dtype.kind == "f":
            a, b = (self.name(i, out_dtype) for i in inputs)
            return self.node("Floor", [self.node("Div", [a, b])])
        if name == "floor_divide" and out_dtype.kind in "iu":
            a, b = (self.name(i, out_dtype) for i in inputs)
            return self.floor_div_int(a, b, False) if out_dtype == np.int64 else self.node("Div", [a, b])
        raise UnsupportedOperatorError(f"numpy.{name} (dtype {out_dtype}) has no ONNX form in this exporter")

    def _emit_reduce(self, ufunc, inputs, kwargs, result) -> str:
        name = ufunc.__name__
        if kwargs.get("initial") is not None or kwargs.get("where", True) is not True:
            raise UnsupportedOperatorError(f"numpy.{name}.reduce with initial/where has no ONNX form")
        x = inputs[0]
        nd = len(self.shape(x))
        axis = kwargs.get("axis", 0)
        axes = tuple(range(nd)) if axis is None else tuple(int(a) % max(nd, 1) for a in np.atleast_1d(axis))
        keepdims = bool(kwargs.get("keepdims", False))
        out_dtype = np.asarray(result).dtype
        if not axes:
            return self.node("Identity", [self.name(x, out_dtype)])
        if name in ("logical_or", "logical_and"):
            ints = self.name(x, np.int32)
            op = "ReduceMax" if name == "logical_or" else "ReduceMin"
            return self.cast(self.reduce(op, ints, axes, keepdims), np.bool_)
        if name not in _REDUCE:
            raise UnsupportedOperatorError(f"numpy.{name}.reduce has no ONNX form")
        if out_dtype == np.bool_:
            ints = self.name(x, np.int32)
            return self.cast(self.reduce(_REDUCE[name], ints, axes, keepdims), np.bool_)
        return self.reduce(_REDUCE[name], self.name(x, out_dtype), axes, keepdims)


def _owner(arr: np.ndarray) -> np.ndarray:
    """The array that owns ``arr``'s memory (the end of its chain of bases)."""
    while isinstance(arr.base, np.ndarray):
        arr = arr.base
    return arr


def _nonneg(v) -> bool:
    return int(v) >= 0 and _shadow_int(v) >= 0


def _is_index_array(item) -> bool:
    if isinstance(item, Tensor):
        return True
    return isinstance(item, (np.ndarray, list)) and not isinstance(item, (bool, np.bool_))


def _inserted_ones(short, long, same) -> tuple | None:
    """Positions in ``long`` of size-1 dims that, removed, leave ``short`` (None when ``long`` is not that)."""
    if len(long) < len(short):
        return None
    inserted, j = [], 0
    for i, d in enumerate(long):
        if j < len(short) and same(short[j], d):
            j += 1
        elif not isinstance(d, SymInt) and int(d) == 1:
            inserted.append(i)
        else:
            return None
    return tuple(inserted) if j == len(short) else None


def gather_axis(items):
    """For ``gather``'s index ``(arange, ..., index, ..., arange)``: ``(axis, index)``; else None."""
    axis = None
    for d, item in enumerate(items):
        arr = np.asarray(plain(item._data if isinstance(item, Tensor) else item))
        if arr.dtype.kind not in "iu":
            return None
        n = arr.size
        expected = np.arange(n).reshape((1,) * d + (n,) + (1,) * (len(items) - d - 1))
        if arr.shape == expected.shape and np.array_equal(arr, expected) and not isinstance(item, TracedArray):
            continue
        if axis is not None:
            return None
        axis = d
    if axis is None:
        return None
    return axis, items[axis]
