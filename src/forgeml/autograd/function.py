"""``Function``: one differentiable op, and the graph node it leaves behind.

Every op in ForgeML, built in or user-defined, is a :class:`Function`
subclass with a ``forward(ctx, ...)`` and a ``backward(ctx, *grads)`` side by
side. ``apply`` runs ``forward``; when grad mode is on and an input requires
grad, the ``ctx`` instance becomes the output's ``grad_fn``, remembering the
edges to its inputs' nodes and what ``forward`` saved.

Built-in ops subclass :class:`ArrayFunction`: their ``forward`` and
``backward`` work on the backing arrays directly, which keeps per-op overhead
low, and compute through ``ctx.xp``, the array namespace (NumPy or CuPy) of
their inputs, which ``apply`` finds once. ``apply`` also records the shapes of
inputs that differ from the output's, and sums each gradient ``backward``
returns back to its input's shape, so no op undoes broadcasting itself.
User-defined functions (plain ``Function`` subclasses) see and return
:class:`~forgeml.Tensor` objects, as in PyTorch.
"""

from __future__ import annotations

import weakref

from ..backend.device import HOST_ARRAY, HOST_SCALAR, namespace_for_type, namespace_of
from ..backend.shapes import sum_to_shape
from .grad_mode import state as _grad_state

_HOST_XP = namespace_for_type(HOST_ARRAY)

__all__ = [
    "AccumulateGrad",
    "ArrayFunction",
    "Function",
    "OpObserver",
    "RemovableHandle",
    "no_graph_context",
    "observe_ops",
]

# Op observers (the profiler, ONNX export's tracer): while the list is empty, which is always unless one is
# active, ``apply`` and the backward engine pay one truthiness test per op. See ``observe_ops``.
OP_OBSERVERS: list = []


class OpObserver:
    """Sees every op: subclasses override ``forward(cls, args, kwargs, run)`` (call ``run()`` to run the op, and
    return its result) and ``backward(node, grad, run)`` (``grad``: the incoming gradient array, or a list of
    them for an op with several outputs; ``run()`` runs the node's backward). Ops run while an
    observer handles one are not observed again (a user ``Function``'s inner ops count as part of it)."""

    def forward(self, cls, args, kwargs, run):
        return run()

    def backward(self, node, grad, run):
        return run()


def _observed_forward(cls, args, kwargs):
    observers = OP_OBSERVERS[:]
    OP_OBSERVERS.clear()  # the op itself runs unobserved (and its inner ops, for a user Function)
    try:
        return observers[-1].forward(cls, args, kwargs, lambda: cls.apply(*args, **kwargs))
    finally:
        OP_OBSERVERS[:] = observers


def observed_backward(node, grad):
    """``node._call_backward(grad)`` under the innermost observer (the engine calls it while one is active)."""
    observers = OP_OBSERVERS[:]
    OP_OBSERVERS.clear()
    try:
        return observers[-1].backward(node, grad, lambda: node._call_backward(grad))
    finally:
        OP_OBSERVERS[:] = observers


class observe_ops:  # noqa: N801 - a context manager, named like the function it reads as
    """``with observe_ops(observer):`` every op (forward and backward) goes through ``observer``; nests (the
    innermost observer sees the ops)."""

    def __init__(self, observer: OpObserver) -> None:
        self.observer = observer

    def __enter__(self):
        OP_OBSERVERS.append(self.observer)
        return self.observer

    def __exit__(self, *exc) -> None:
        for i in range(len(OP_OBSERVERS) - 1, -1, -1):
            if OP_OBSERVERS[i] is self.observer:
                del OP_OBSERVERS[i]
                break


# Hooks run after a leaf's gradient was accumulated into its ``.grad``, by the leaf's ``_id``
# (``Tensor.register_post_accumulate_grad_hook``); an entry goes when its tensor does.
POST_ACCUMULATE_HOOKS: dict[int, list] = {}


def register_post_accumulate_hook(tensor, hook) -> RemovableHandle:
    """Call ``hook(tensor)`` each time backward has accumulated a gradient into ``tensor.grad``."""
    hooks = POST_ACCUMULATE_HOOKS.get(tensor._id)
    if hooks is None:
        hooks = POST_ACCUMULATE_HOOKS[tensor._id] = []
        weakref.finalize(tensor, POST_ACCUMULATE_HOOKS.pop, tensor._id, None)
    hooks.append(hook)
    return RemovableHandle(hooks, hook)


_tensor_cls = None  # bound by forgeml.tensor, which sits above this layer


def bind_tensor_class(cls) -> None:
    """Tell the autograd layer which class wraps arrays (called once by ``forgeml.tensor``)."""
    global _tensor_cls
    _tensor_cls = cls


FREED_GRAPH_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you call "
    ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the "
    "graph a second time or if you need to access saved tensors after calling backward."
)


class _AllFalse:
    """``needs_input_grad`` when no graph is recorded: every input answers False."""

    __slots__ = ()

    def __getitem__(self, index) -> bool:
        return False

    def __repr__(self) -> str:
        return "<no input needs grad>"


class _NoGraphContext:
    """The ``ctx`` that ops see when no graph is recorded: it keeps nothing but the array namespace.

    One instance is shared per namespace; what an op stores on it is never read.
    """

    needs_input_grad = _AllFalse()

    def __init__(self, xp) -> None:
        self.xp = xp

    def save_for_backward(self, *items) -> None:
        pass

    def mark_non_differentiable(self, *outputs) -> None:
        pass


_NO_GRAPH_HOST = _NoGraphContext(_HOST_XP)
_NO_GRAPH_BY_XP = {_HOST_XP: _NO_GRAPH_HOST}


def no_graph_context(xp) -> _NoGraphContext:
    """The shared record-nothing ``ctx`` for ops computing in namespace ``xp``."""
    ctx = _NO_GRAPH_BY_XP.get(xp)
    if ctx is None:
        ctx = _NO_GRAPH_BY_XP[xp] = _NoGraphContext(xp)
    return ctx


class RemovableHandle:
    """Returned by ``register_hook``; ``remove()`` unregisters the hook."""

    __slots__ = ("_hooks", "_hook")

    def __init__(self, hooks: list, hook) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        try:
            self._hooks.remove(self._hook)
        except ValueError:
            pass

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _describe(item) -> str:
    arr = item._data if isinstance(item, _tensor_cls) else item
    return f"[{arr.dtype} {list(arr.shape)}]"


def _record_versions(saved, args, arrays, out_tensor):
    """Pair each saved array that is an input's or the output's storage with that tensor's version now.

    Each entry is ``(array, version counter, version, source)``; ``source`` is the input's index, or -1 for
    the output (``create_graph`` backward turns those arrays back into tensors with history).
    """
    versions = []
    out_data = out_tensor._data if out_tensor is not None else None
    for item in saved:
        if item is None:
            continue
        if item is out_data:
            versions.append((item, out_tensor._version_counter, out_tensor._version_counter[0], -1))
            continue
        for i, (arg, arr) in enumerate(zip(args, arrays)):
            if item is arr and arg is not arr:
                counter = arg._version_counter
                versions.append((item, counter, counter[0], i))
                break
    return tuple(versions)


class Function:
    """Base class of every differentiable op; subclass it for a custom op.

    Write ``forward(ctx, *args, **kwargs)`` and ``backward(ctx, *grad_outputs)``
    as static methods, call the op with ``MyOp.apply(*args)``. In ``forward``,
    ``ctx.save_for_backward(*tensors)`` keeps what ``backward`` needs and
    ``ctx.needs_input_grad`` says which inputs want a gradient; ``backward``
    returns one gradient (or ``None``) per input of ``forward``.
    """

    _raw = False  # ArrayFunction (the built-in ops) computes on arrays
    _reduce_to = None  # [(input index, input shape), ...] where the input's shape differs from the output's
    is_view = False  # the output shares the first input's storage
    _n_outputs = 1
    _saved: tuple = ()
    _saved_versions: tuple = ()
    _freed = False
    _pre_hooks = None  # {output_nr: [hook, ...]} for non-leaf tensor hooks
    next_edges: tuple = ()
    needs_input_grad: tuple = ()

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("a Function subclass must implement forward(ctx, *args)")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("a Function subclass must implement backward(ctx, *grad_outputs)")

    # -- the ctx API ------------------------------------------------------
    def save_for_backward(self, *items) -> None:
        """Keep ``items`` for ``backward``; modifying one in place afterwards makes backward raise."""
        if self._raw:
            self._saved = items
            return
        kept, versions = [], []
        for item in items:
            if isinstance(item, _tensor_cls):
                versions.append((item._data, item._version_counter, item._version_counter[0], item))
                item = item._alias()
            elif item is not None:
                raise TypeError(f"save_for_backward can only save tensors or None, got {type(item).__name__}")
            kept.append(item)
        self._saved = tuple(kept)
        self._saved_versions = tuple(versions)

    @property
    def saved_tensors(self) -> tuple:
        """What ``forward`` saved, after checking none of it was modified in place since."""
        if self._freed:
            raise RuntimeError(FREED_GRAPH_MESSAGE)
        for item, counter, version, _ in self._saved_versions:
            if counter[0] != version:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by an "
                    f"inplace operation: {_describe(item)}, which is output 0 of {self.name()}'s input "
                    f"or output, is at version {counter[0]}; expected version {version} instead."
                )
        return self._saved

    def mark_non_differentiable(self, *outputs) -> None:
        """Declare outputs of ``forward`` that never carry a gradient (indices, masks)."""
        self._non_differentiable = {id(o) for o in outputs}

    def name(self) -> str:
        return type(self).__name__ + "Backward"

    def register_prehook(self, output_nr: int, hook) -> RemovableHandle:
        if self._pre_hooks is None:
            self._pre_hooks = {}
        hooks = self._pre_hooks.setdefault(output_nr, [])
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def __repr__(self) -> str:
        return f"<{self.name()} object at {id(self):#x}>"

    def _release(self) -> None:
        """Free what ``forward`` saved (after a backward without ``retain_graph``)."""
        if self._saved:
            self._saved = ()
            self._saved_versions = ()
            self._freed = True

    # -- running the op ---------------------------------------------------
    @classmethod
    def apply(cls, *args, **kwargs):
        """Run the op on ``args``; record a graph node when grad mode is on and an input requires grad."""
        if OP_OBSERVERS:
            return _observed_forward(cls, args, kwargs)
        if not cls._raw:
            return _apply_user_function(cls, args, kwargs)
        tensor_cls = _tensor_cls
        arrays = []
        needs = []
        array_type = None
        for arg in args:
            if isinstance(arg, tensor_cls):
                data = arg._data
                if array_type is None:
                    array_type = type(data)
                elif type(data) is not array_type:
                    _raise_device_mismatch(cls, args)
                arrays.append(data)
                needs.append(arg._requires_grad)
            else:
                arrays.append(arg)
                needs.append(False)
        xp = _HOST_XP if array_type is HOST_ARRAY else _namespace_of_inputs(cls, args, arrays, array_type)
        if not (True in needs and _grad_state.enabled):
            out = cls.forward(_NO_GRAPH_HOST if xp is _HOST_XP else no_graph_context(xp), *arrays, **kwargs)
            if type(out) is not array_type:
                if type(out) is tuple:
                    return _wrap_many(cls, out, args[0], None, xp)
                out = _as_array(out, xp)
            if cls.is_view:
                return tensor_cls._make_view(out, args[0], False, None)
            return tensor_cls._make(out, False, None)
        ctx = cls.__new__(cls)
        ctx.needs_input_grad = tuple(needs)
        if xp is not _HOST_XP:  # ArrayFunction's class attribute answers for the host
            ctx.xp = xp
        out = cls.forward(ctx, *arrays, **kwargs)
        many = False
        if type(out) is not array_type:
            if type(out) is tuple:
                many = True
            else:
                out = _as_array(out, xp)
        out_shape = out[0].shape if many else out.shape
        edges = []
        reduce_to = None
        for arg, need, data in zip(args, needs, arrays):
            if need:
                if arg._base is not None and arg._version_counter[0] != arg._view_version:
                    _raise_stale_view(arg)
                fn = arg.grad_fn
                edges.append((fn, arg._output_nr) if fn is not None else (arg._accumulator(), 0))
                shape = data.shape
                if shape != out_shape:
                    if reduce_to is None:
                        reduce_to = []
                    reduce_to.append((len(edges) - 1, shape))
            else:
                edges.append(None)
        ctx.next_edges = tuple(edges)
        if reduce_to is not None:
            ctx._reduce_to = reduce_to
        if many:
            ctx._n_outputs = len(out)
            return _wrap_many(cls, out, args[0], ctx, xp)
        if cls.is_view:
            result = tensor_cls._make_view(out, args[0], True, ctx)
        else:
            result = tensor_cls._make(out, True, ctx)
        if ctx._saved:
            ctx._saved_versions = _record_versions(ctx._saved, args, arrays, result)
        return result

    def _call_backward(self, grad):
        """Run ``backward`` on arrays; returns one array (or None) per input, each of its input's shape."""
        if self._raw:
            grads = self.backward(self, *grad) if self._n_outputs > 1 else self.backward(self, grad)
            if type(grads) is not tuple:
                grads = (grads,)
            if self._reduce_to is not None:
                grads = _sum_to_inputs(self, grads)
            return grads
        return _call_user_backward(self, grad)


class ArrayFunction(Function):
    """Base class of the built-in ops: ``forward``/``backward`` take and return arrays, computed with ``ctx.xp``.

    ``backward`` may return a gradient with the broadcast shape of the output;
    autograd sums it back to the input's shape. A subclass sets ``is_view``
    when its output shares the first input's storage.
    """

    _raw = True
    xp = _HOST_XP  # the namespace of host ops; ``apply`` sets it on the ctx of ops on other devices


def _namespace_of_inputs(cls, args, arrays, array_type):
    """The namespace of a non-host op: the tensors' (all on one device), else that of any array argument."""
    if array_type is None:
        for a in arrays:
            if hasattr(a, "shape") and hasattr(a, "dtype"):
                return namespace_of(a)
        return _HOST_XP
    xp = namespace_for_type(array_type)
    first = None
    for arg in args:
        if isinstance(arg, _tensor_cls):
            index = arg._data.device.id
            if first is None:
                first = index
            elif index != first:
                _raise_device_mismatch(cls, args)
    return xp


def _sum_to_inputs(node, grads):
    """Sum each gradient that has the output's broadcast shape back to its input's shape."""
    changed = None
    for i, shape in node._reduce_to:
        g = grads[i] if i < len(grads) else None
        if g is None or g.shape == shape:
            continue
        try:
            g = sum_to_shape(g, shape)
        except ValueError:
            raise RuntimeError(
                f"{node.name()} returned a gradient of shape {list(g.shape)} for input {i}, whose shape is "
                f"{list(shape)}; a gradient must have the input's shape or broadcast from it"
            ) from None
        if changed is None:
            changed = list(grads)
        changed[i] = g
    return grads if changed is None else tuple(changed)


def _wrap_many(cls, outs, source, ctx, xp):
    """Tensors for a raw op with several outputs (output ``i`` is edge ``(ctx, i)``)."""
    tensor_cls = _tensor_cls
    results = []
    for nr, out in enumerate(outs):
        if type(out) is not HOST_ARRAY:
            out = _as_array(out, xp)
        if cls.is_view:
            t = tensor_cls._make_view(out, source, ctx is not None, ctx)
        else:
            t = tensor_cls._make(out, ctx is not None, ctx)
        t._output_nr = nr
        results.append(t)
    return tuple(results)


def _as_array(value, xp):
    """Ops may produce NumPy scalars (from 0-d reductions) or Python numbers; tensors always hold arrays."""
    if isinstance(value, HOST_ARRAY):
        return value
    if isinstance(value, (HOST_SCALAR, int, float, bool)):  # NumPy or Python scalars
        return xp.asarray(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value
    raise TypeError(f"an op produced {type(value).__name__}, not an array")


def _raise_stale_view(view):
    raise RuntimeError(
        f"a view of shape {list(view._data.shape)} is used after its storage was modified in place "
        f"(version {view._view_version} when the view was made, {view._version_counter[0]} now), so its "
        "recorded history no longer describes its values; take the view again after the in-place op, "
        "or clone() it before modifying the base"
    )


def _raise_device_mismatch(cls, args):
    devices = sorted({str(a.device) for a in args if isinstance(a, _tensor_cls)})
    raise RuntimeError(
        f"Expected all tensors to be on the same device, but found at least two devices, "
        f"{' and '.join(devices)} (in {cls.__name__})"
    )


class AccumulateGrad:
    """The graph node of a leaf tensor that requires grad: adds incoming gradients into ``.grad``."""

    __slots__ = ("variable", "__weakref__")
    next_edges = ()
    _n_outputs = 1
    _pre_hooks = None
    _freed = False

    def __init__(self, variable) -> None:
        self.variable = variable

    def name(self) -> str:
        return "AccumulateGrad"

    def __repr__(self) -> str:
        return f"<AccumulateGrad object at {id(self):#x}>"


# -- user-defined functions: Tensors in, Tensors out ----------------------
def _apply_user_function(cls, args, kwargs):
    tensor_cls = _tensor_cls
    needs = tuple(isinstance(a, tensor_cls) and a._requires_grad for a in args)
    record = _grad_state.enabled and any(needs)
    ctx = cls.__new__(cls)
    ctx.needs_input_grad = needs
    prev = _grad_state.enabled
    _grad_state.enabled = False
    try:
        outputs = cls.forward(ctx, *args, **kwargs)
    finally:
        _grad_state.enabled = prev
    is_tuple = isinstance(outputs, tuple)
    outs = outputs if is_tuple else (outputs,)
    non_diff = getattr(ctx, "_non_differentiable", ())
    results = []
    meta = []
    for nr, out in enumerate(outs):
        if isinstance(out, tensor_cls):
            if any(out is a for a in args):
                out = out._alias()
            if record and out.dtype.is_floating_point and id(out) not in non_diff:
                out._requires_grad = True
                out.grad_fn = ctx
                out._output_nr = nr
            meta.append((out._data.shape, out._data.dtype, type(out._data)))
        else:
            meta.append(None)
        results.append(out)
    if ctx._saved_versions:
        _unlink_saved_outputs(ctx, results)
    if record:
        edges = []
        for arg, need in zip(args, needs):
            if need:
                fn = arg.grad_fn
                edges.append((fn, arg._output_nr) if fn is not None else (arg._accumulator(), 0))
            else:
                edges.append(None)
        ctx.next_edges = tuple(edges)
        ctx._n_outputs = len(outs)
        ctx._output_meta = meta
        ctx._input_meta = [(a._data.shape, a._data.dtype, type(a._data)) if n else None for a, n in zip(args, needs)]
        ctx._input_is_tensor = [isinstance(a, tensor_cls) for a in args]
    return tuple(results) if is_tuple else results[0]


def _unlink_saved_outputs(ctx, outputs) -> None:
    """A saved output is remembered by its index, not the tensor, so that no cycle ties it to its ``grad_fn``."""
    versions = list(ctx._saved_versions)
    for k, (data, counter, version, source) in enumerate(versions):
        for nr, out in enumerate(outputs):
            if source is out or (isinstance(out, _tensor_cls) and source._data is out._data):
                versions[k] = (data, counter, version, -1 - nr)
                break
    ctx._saved_versions = tuple(versions)


def _call_user_backward(node, grad):
    tensor_cls = _tensor_cls
    grads = grad if node._n_outputs > 1 else [grad]
    wrapped = []
    for g, meta in zip(grads, node._output_meta):
        if g is None and meta is not None:  # PyTorch materialises missing output grads as zeros
            g = namespace_for_type(meta[2]).zeros(meta[0], dtype=meta[1])
        wrapped.append(None if g is None else tensor_cls._make(g, False, None))
    prev = _grad_state.enabled
    _grad_state.enabled = False
    try:
        result = type(node).backward(node, *wrapped)
    finally:
        _grad_state.enabled = prev
    if not isinstance(result, tuple):
        result = (result,)
    expected = len(node.needs_input_grad)
    if len(result) < expected or any(r is not None for r in result[expected:]):
        raise RuntimeError(
            f"function {node.name()} returned an incorrect number of gradients (expected {expected}, got {len(result)})"
        )
    arrays = []
    for i, (r, need, meta) in enumerate(zip(result, node.needs_input_grad, node._input_meta)):
        if r is None:
            arrays.append(None)
            continue
        if meta is None and not node._input_is_tensor[i]:
            raise RuntimeError(
                f"function {node.name()} returned a gradient different than None at position {i + 1}, "
                "but the corresponding forward input was not a Tensor"
            )
        if not need:
            arrays.append(None)
            continue
        arr = r._data if isinstance(r, tensor_cls) else _as_array(r, namespace_for_type(meta[2]))
        if arr.shape != meta[0]:
            arr = _sum_to_input(arr, meta[0], node.name(), i)
        if arr.dtype != meta[1]:
            arr = arr.astype(meta[1])
        arrays.append(arr)
    return tuple(arrays)


def _sum_to_input(arr, shape, name, index):
    """A gradient with extra broadcast dims is summed down to the input's shape, as PyTorch does."""
    try:
        return sum_to_shape(arr, shape)
    except ValueError:
        raise RuntimeError(
            f"function {name} returned an invalid gradient at index {index} - got {list(arr.shape)} "
            f"but expected shape compatible with {list(shape)}"
        ) from None


def weak(tensor):
    """A weak reference to ``tensor`` (used by ``retain_grad``)."""
    return weakref.ref(tensor)
