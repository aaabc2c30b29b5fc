"""``forgeml.onnx.export``: a module as an ONNX graph, traced from the ops it runs.

The model runs on the example inputs (in eval mode, under ``no_grad``) while an op observer records
every op: each ``Function`` class has an ONNX form (:mod:`._ops_export`), so a user's own
``Module`` written with ForgeML ops exports as well as the built-in layers do. NumPy code that a
layer runs on arrays outside ops (the attention masks, comparisons) is traced too (:mod:`._trace`).
Parameters and buffers become initializers named by their ``state_dict`` keys. An op without an
ONNX form raises :class:`UnsupportedOperatorError`, naming the op and the module it ran in.

Dynamic axes: sizes that depend on them (``x.shape[0]`` in a reshape, ``pe[:length]``) are computed
in the graph from ``Shape``. Each op also runs on a *shadow* of its inputs whose dynamic axes are
longer: a dim that changes with them is dynamic, and a model whose ops do not follow (a tensor built
in ``forward`` from a size read as a plain number) is refused with :class:`ExportError` rather than
exported wrong.

What exports (opset 17 and later):

- layers: ``Linear``, ``Conv2d`` (every padding mode), ``MaxPool2d`` (indices too), ``AvgPool2d``,
  ``AdaptiveAvgPool2d``, ``BatchNorm1d/2d`` (eval: running statistics), ``Dropout`` (eval: the
  identity), ``Flatten``, ``Unflatten``, ``Embedding``, ``LayerNorm``, ``RMSNorm``,
  ``MultiHeadAttention`` (key padding masks, boolean or float attention masks, causal),
  ``TransformerEncoderLayer``/``TransformerEncoder``, ``PositionalEncoding``,
  ``LearnedPositionalEmbedding``, ``SequencePool`` (mean/max/first), the containers. A
  :class:`~forgeml.nn.MaskedBatch` input is two graph inputs (data, padding mask), a
  ``MaskedBatch`` output two outputs;
- activations: ReLU, LeakyReLU, ELU, GELU (exact and tanh), SiLU, Sigmoid, Tanh, Softplus,
  Softmax, LogSoftmax;
- ops: + - * / ** // %, maximum, minimum, where, clamp, exp, log, log1p, sqrt, rsqrt, sin, cos,
  abs, neg, reciprocal, floor/ceil/trunc/sign/round, matmul/bmm, comparisons and logic
  (== < ~ & | ^ ...), sum/mean/var/std/amax/amin/max/min (with dim)/argmax/argmin/prod/
  logsumexp/norm, reshape/view/flatten/unflatten, squeeze/unsqueeze, transpose/permute, expand,
  repeat/tile, cat, stack, split/chunk, unbind, tril/triu, flip, basic indexing, indexing with one
  index array or a leading boolean mask, gather, index_select, masked_fill, casts,
  clone/contiguous, scaled_dot_product_attention.

What does not: ops in training mode (dropout draws, batch statistics), the losses, in-place ops on
traced values (``x[i] = v``, ``add_``), ``scatter_add``, ``nonzero``, several index arrays in one
index, a user's ``Function`` without an emitter (give it one with
``forgeml.onnx._ops_export.emits``), CUDA models (export a CPU copy), and sizes read from the input
that end up as plain numbers (``float(x.shape[1])``, ``zeros(x.shape[0], 3)`` inside ``forward``:
refused with dynamic axes).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..autograd.function import OpObserver, observe_ops
from ..autograd.grad_mode import no_grad
from ..backend import device as _device
from ..tensor import Tensor
from ._errors import ExportError, UnsupportedOperatorError
from ._trace import (
    TRACING_NUMPY,
    ExportContext,
    SymInt,
    TracedArray,
    contains_traced,
    plain,
    set_active,
    shadow_of,
    traced_view,
)

__all__ = ["ExportError", "UnsupportedOperatorError", "export"]

_LOCK = threading.Lock()  # one export at a time: the op observers are process-wide


def export(
    model,
    example_inputs,
    path,
    opset_version: int = 17,
    input_names=None,
    output_names=None,
    dynamic_axes=None,
):
    """Write ``model`` as an ONNX file at ``path`` (a path or a binary file object); returns the ``ModelProto``.

    ``example_inputs`` are the arguments of one call (a tensor, a :class:`~forgeml.nn.MaskedBatch`,
    or a tuple of them; a trailing dict holds keyword arguments), as in ``torch.onnx.export``.
    Each tensor is a graph input (a ``MaskedBatch`` gives two: the data and the padding mask);
    ``input_names``/``output_names`` name them in order (default ``input``/``output``, numbered
    when there are several). ``dynamic_axes`` maps an input or output name to the axes whose size
    may change: ``{"input": {0: "batch"}}`` or ``{"input": [0]}``.

    The model runs in eval mode under ``no_grad`` (its modes are restored afterwards). The file
    passes ``onnx.checker.check_model(full_check=True)``. Raises :class:`UnsupportedOperatorError`
    for an op without an ONNX form, :class:`ExportError` for other problems, ``ImportError`` without
    the ``onnx`` extra.
    """
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f'forgeml.onnx.export needs the onnx extra: pip install "forgeml[onnx]" ({exc})') from None
    from ..nn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"export expects a forgeml.nn.Module, got {type(model).__name__}")
    if not isinstance(opset_version, int) or not 17 <= opset_version <= onnx.defs.onnx_opset_version():
        raise ValueError(
            f"opset_version must be an int from 17 (LayerNormalization) to {onnx.defs.onnx_opset_version()}, "
            f"got {opset_version!r}"
        )
    args, kwargs = _split_examples(example_inputs)
    leaves: list = []
    _flatten((args, kwargs), leaves)
    if not leaves:
        raise ExportError("example_inputs hold no tensor: the graph would have no input")
    in_names = _names(input_names, len(leaves), "input", "input_names")
    axes = _dynamic_axes(dynamic_axes)
    for name in in_names:
        if name in axes:
            rank = leaves[in_names.index(name)].ndim
            axes[name] = {_axis(a, rank, name): sym for a, sym in axes[name].items()}

    with _LOCK:
        return _export(onnx, model, args, kwargs, leaves, in_names, output_names, axes, opset_version, path)


def _export(onnx, model, args, kwargs, leaves, in_names, output_names, axes, opset, path):
    ctx = ExportContext(opset)
    _device._NAMESPACE_BY_TYPE[TracedArray] = TRACING_NUMPY  # what namespace_of() gives for traced arrays
    set_active(ctx)
    try:
        return _trace_model(onnx, ctx, model, args, kwargs, leaves, in_names, output_names, axes, opset, path)
    finally:
        set_active(None)


def _trace_model(onnx, ctx, model, args, kwargs, leaves, in_names, output_names, axes, opset, path):
    from ._ops_export import EMITTERS, PRECHECKS, SHADOW_ARGS

    for name in in_names:
        ctx.reserve(name)
    given_outputs = [str(n) for n in output_names or []]
    for name in given_outputs:
        if name in in_names:
            raise ValueError(f"{name!r} is both an input and an output name")
        ctx.reserve(name)
    graph_inputs, traced_inputs = [], []
    for name, leaf in zip(in_names, leaves):
        arr = _host(leaf, f"input {name!r}")
        dims = axes.get(name, {})
        shadow = arr
        for axis in dims:
            n = arr.shape[axis]
            if n == 0:
                raise ExportError(f"input {name!r} has size 0 on its dynamic axis {axis}: give an example of size > 0")
            shadow = np.take(shadow, np.arange(_shadow_size(n)) % n, axis=axis)
        traced_inputs.append(TracedArray.wrap(arr, name, shadow if dims else None))
        shape = [dims.get(i, d) for i, d in enumerate(arr.shape)]
        graph_inputs.append(onnx.helper.make_tensor_value_info(name, ctx.onnx_type(arr.dtype), shape))
    symbols = {}  # (size, shadow size) -> dim_param, to name the outputs' dynamic dims
    for name, arr in zip(in_names, traced_inputs):
        for axis, sym in axes.get(name, {}).items():
            key = (arr.shape[axis], arr.__dict__["_fm_shadow"].shape[axis])
            symbols[key] = sym if symbols.get(key, sym) == sym else None

    training = [(m, m.training) for m in model.modules()]
    swapped, hooks = [], []
    thread = threading.get_ident()
    tracer = _Tracer(ctx, thread, EMITTERS, PRECHECKS, SHADOW_ARGS)
    try:
        model.eval()
        for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
            for pname, tensor in named:
                if tensor is None or isinstance(tensor._data, TracedArray):
                    continue
                arr = _host(tensor, f"{kind} {pname!r}")
                init = ctx.fresh(pname) if pname in ctx._used else ctx.reserve(pname)
                ctx.initializers[init] = arr
                swapped.append((tensor, tensor._data))
                tensor._data = TracedArray.wrap(arr, init, None)
        for mpath, module in model.named_modules():
            hooks.append(module.register_forward_pre_hook(_enter(ctx, mpath)))
            hooks.append(module.register_forward_hook(_leave(ctx)))
        it = iter(Tensor._make(t, False, None) for t in traced_inputs)
        call_args, call_kwargs = _rebuild((args, kwargs), it)
        with no_grad(), observe_ops(tracer):
            result = model(*call_args, **call_kwargs)
        out_leaves: list = []
        _flatten(result, out_leaves)
        out_arrays = [leaf._data if isinstance(leaf, Tensor) else np.asarray(leaf) for leaf in out_leaves]
    finally:
        for handle in hooks:
            handle.remove()
        for tensor, data in swapped:
            tensor._data = data
        for module, mode in training:
            object.__setattr__(module, "training", mode)
    if not out_arrays:
        raise ExportError("the model returned no tensor: the graph would have no output")
    out_names = _names(output_names, len(out_arrays), "output", "output_names")
    for i in range(len(given_outputs), len(out_names)):  # default names: clear of the values already named
        while out_names[i] in ctx._used:
            out_names[i] += "_"
        ctx.reserve(out_names[i])
    unknown = sorted(set(axes) - set(in_names) - set(out_names))
    if unknown:
        raise ValueError(f"dynamic_axes names {unknown}, which are neither input nor output names")
    graph_outputs = []
    for name, arr in zip(out_names, out_arrays):
        value = ctx.name(arr)
        _bind_output(ctx, value, name, in_names)
        graph_outputs.append(_output_info(onnx, ctx, name, arr, axes.get(name, {}), symbols))
    return _finish(onnx, ctx, graph_inputs, graph_outputs, opset, path)


class _Tracer(OpObserver):
    """Runs each op on the traced arrays' values and their shadows, and has its emitter write its ONNX form."""

    def __init__(self, ctx: ExportContext, thread: int, emitters, prechecks, shadow_args) -> None:
        self.ctx, self.thread, self.emitters, self.prechecks = ctx, thread, emitters, prechecks
        self.shadow_args = shadow_args

    def forward(self, cls, args, kwargs, run):
        if threading.get_ident() != self.thread or not (contains_traced(args) or contains_traced(kwargs)):
            return run()  # another thread's op, or one on constants alone: its result is a constant
        ctx = self.ctx
        label = f"op {cls.__name__} ({cls.__module__}.{cls.__qualname__}) in {ctx.describe_module()}"
        emitter = self.emitters.get(cls)
        if emitter is None:
            raise UnsupportedOperatorError(f"{label} has no ONNX form")
        precheck = self.prechecks.get(cls)
        if precheck is not None:
            try:
                precheck(args, kwargs)
            except UnsupportedOperatorError as exc:
                raise UnsupportedOperatorError(f"{label}: {exc}") from None
        result = cls.apply(*plain(args), **{k: plain(v) for k, v in kwargs.items()})
        shadow_args = self.shadow_args.get(cls)
        s_args, s_kwargs = (
            shadow_args(args, kwargs) if shadow_args is not None else (shadow_of(args), shadow_of(kwargs))
        )
        try:
            with np.errstate(all="ignore"):  # the shadow is a witness of sizes: its float warnings are noise
                shadow = cls.apply(*s_args, **s_kwargs)
        except Exception as exc:
            raise ExportError(
                f"{label} fails when the dynamic axes change size ({type(exc).__name__}: {exc}): the model computes "
                "a value from fixed sizes outside ForgeML ops (e.g. a tensor created in forward from a size read "
                "from its input), or the dynamic axes of inputs that must match were not declared alike"
            ) from exc
        many = isinstance(result, tuple)
        results = result if many else (result,)
        shadows = shadow if many else (shadow,)
        outputs = [ctx.fresh(cls.__name__.lower()) for _ in results]
        from ._ops_export import OpCall

        try:
            emitter(ctx, OpCall(cls, args, kwargs, outputs, [r._data for r in results]))
        except ExportError as exc:
            if str(exc).startswith("op "):
                raise
            raise type(exc)(f"{label}: {exc}") from exc
        wrapped = tuple(
            Tensor._make(TracedArray.wrap(r._data, name, s._data), False, None)
            for r, s, name in zip(results, shadows, outputs)
        )
        return wrapped if many else wrapped[0]


def _shadow_size(n: int) -> int:
    """The size of a dynamic axis in the shadow trace: far enough from ``n`` that sizes computed from it
    (``n // 2``, ``ceil(n / 4)``) change too, not so far that a table of positions runs out."""
    return n + min(n + 3, 64)


def _enter(ctx, path):
    def hook(module, args):
        ctx.module_stack.append((path, module))

    return hook


def _leave(ctx):
    def hook(module, args, output):
        if ctx.module_stack:
            ctx.module_stack.pop()

    return hook


# ---------------------------------------------------------------- inputs and outputs
def _split_examples(example_inputs):
    if isinstance(example_inputs, list):
        example_inputs = tuple(example_inputs)
    if not isinstance(example_inputs, tuple):
        return (example_inputs,), {}
    if example_inputs and isinstance(example_inputs[-1], dict):
        return example_inputs[:-1], dict(example_inputs[-1])
    return example_inputs, {}


def _flatten(obj, leaves: list) -> None:
    """The tensors of ``obj`` in order (NumPy arrays count as tensors; a MaskedBatch gives data then mask)."""
    from ..nn.masked import MaskedBatch

    if isinstance(obj, Tensor):
        leaves.append(obj)
    elif isinstance(obj, np.ndarray):
        leaves.append(Tensor(obj))
    elif isinstance(obj, MaskedBatch):
        _flatten(obj.data, leaves)
        if obj.padding_mask is not None:
            _flatten(obj.padding_mask, leaves)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _flatten(item, leaves)
    elif isinstance(obj, dict):
        for item in obj.values():
            _flatten(item, leaves)


def _rebuild(obj, leaves):
    """``obj`` with its tensors replaced, in order, by ``leaves``."""
    from ..nn.masked import MaskedBatch

    if isinstance(obj, (Tensor, np.ndarray)):
        return next(leaves)
    if isinstance(obj, MaskedBatch):
        data = _rebuild(obj.data, leaves)
        return MaskedBatch(data, None if obj.padding_mask is None else _rebuild(obj.padding_mask, leaves))
    if isinstance(obj, tuple):
        return tuple(_rebuild(i, leaves) for i in obj)
    if isinstance(obj, list):
        return [_rebuild(i, leaves) for i in obj]
    if isinstance(obj, dict):
        return {k: _rebuild(v, leaves) for k, v in obj.items()}
    return obj


def _host(tensor, what: str) -> np.ndarray:
    data = tensor._data if isinstance(tensor, Tensor) else tensor
    if isinstance(data, TracedArray):
        return np.ndarray.view(data, np.ndarray)
    if not isinstance(data, np.ndarray):
        raise ExportError(f"{what} is on {tensor.device}: export a CPU copy of the model and its inputs (.to('cpu'))")
    if data.dtype.kind not in "biuf" or data.dtype.name == "bfloat16":
        raise ExportError(f"{what} has dtype {data.dtype}, which this exporter does not write")
    return data


def _names(names, n: int, default: str, what: str) -> list[str]:
    if names is None:
        names = []
    names = [str(x) for x in names]
    if len(names) > n:
        raise ValueError(f"{what} has {len(names)} names, but there are only {n} {default}s")
    defaults = [default] if n == 1 else [f"{default}_{i}" for i in range(n)]
    for candidate in defaults[len(names) :]:
        while candidate in names:
            candidate += "_"
        names.append(candidate)
    if len(set(names)) != len(names):
        raise ValueError(f"{what} has repeated names: {names}")
    return names


def _dynamic_axes(dynamic_axes) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for name, spec in (dynamic_axes or {}).items():
        if isinstance(spec, dict):
            out[name] = {int(a): str(s) for a, s in spec.items()}
        elif isinstance(spec, (list, tuple)):
            out[name] = {int(a): f"{name}_dynamic_axes_{i + 1}" for i, a in enumerate(spec)}
        else:
            raise TypeError(f"dynamic_axes[{name!r}] must be a dict {{axis: name}} or a list of axes, got {spec!r}")
    return out


def _axis(axis: int, rank: int, name: str) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"dynamic axis {axis} of {name!r} is out of range for a tensor of {rank} dims")
    return axis % rank


def _bind_output(ctx: ExportContext, value: str, name: str, in_names) -> None:
    """Make the graph value ``value`` available as output ``name``: rename its producer's output, or add an
    Identity (for graph inputs, initializers and values already bound to another output)."""
    renamed = ctx.__dict__.setdefault("_renamed", {})
    if value in renamed:
        ctx.node("Identity", [renamed[value]], outputs=[name])
        return
    producer = next((n for n in ctx.nodes if value in n.output), None)
    if producer is None or value in in_names:
        ctx.node("Identity", [value], outputs=[name])
        return
    for node in ctx.nodes:
        for seq in (node.input, node.output):
            for i, v in enumerate(seq):
                if v == value:
                    seq[i] = name
    renamed[value] = name


def _output_info(onnx, ctx, name, arr, declared: dict, symbols: dict):
    dims = []
    arr = traced_view(arr) if traced_view(arr) is not None else arr
    shape = arr.shape if isinstance(arr, TracedArray) else np.shape(arr)
    for i, d in enumerate(shape):
        if i in declared or i - len(shape) in declared:
            dims.append(declared.get(i, declared.get(i - len(shape))))
        elif isinstance(d, SymInt):
            dims.append(symbols.get((int(d), d.shadow)) or f"{name}_dim_{i}")
        else:
            dims.append(int(d))
    return onnx.helper.make_tensor_value_info(name, ctx.onnx_type(np.asarray(arr).dtype), dims)


def _without_identities(nodes, outputs: set) -> list:
    """``nodes`` with the Identity nodes that emitters chain (``x -> y``) dropped and ``y`` read as ``x``,
    except where ``y`` is a graph output."""
    alias: dict[str, str] = {}
    kept = []
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
        if node.op_type == "Identity" and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    producers = {o: n for n in kept for o in n.output}
    uses: dict[str, int] = {}
    for node in kept:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    final = []
    for node in kept:  # an output that is an Identity of a value used nowhere else: rename the value instead
        src = node.input[0] if node.op_type == "Identity" else None
        if src in producers and uses.get(src) == 1 and src not in outputs:
            producer = producers[src]
            producer.output[list(producer.output).index(src)] = node.output[0]
            continue
        final.append(node)
    return final


def _finish(onnx, ctx: ExportContext, graph_inputs, graph_outputs, opset: int, path):
    needed = {o.name for o in graph_outputs}
    kept = []
    for node in reversed(_without_identities(ctx.nodes, set(needed))):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    initializers = []
    for name, arr in ctx.initializers.items():
        if name in needed:
            initializers.append(onnx.numpy_helper.from_array(arr, name))
    from .. import __version__

    graph = onnx.helper.make_graph(kept, "forgeml", graph_inputs, graph_outputs, initializer=initializers)
    opsets = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="forgeml", producer_version=__version__)
    proto.ir_version = max(onnx.helper.find_min_ir_version_for(opsets), 8)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph does not pass onnx.checker: {exc}") from exc
    if isinstance(path, (str, os.PathLike)):
        onnx.save(proto, os.fspath(path))
    elif hasattr(path, "write"):
        path.write(proto.SerializeToString())
    else:
        raise TypeError(f"path must be a file path or a binary file object, got {type(path).__name__}")
    return proto
