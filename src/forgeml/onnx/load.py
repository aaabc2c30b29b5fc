"""``forgeml.onnx.load``: an ONNX graph as a ForgeML :class:`~forgeml.nn.Module` that can be fine-tuned.

>>> import forgeml as fm, forgeml.onnx
>>> model = forgeml.onnx.load("model.onnx")              # doctest: +SKIP
>>> y = model(x)                                          # doctest: +SKIP
>>> opt = fm.optim.SGD(model.parameters(), lr=1e-3)       # doctest: +SKIP

The module interprets the graph: ``forward`` runs the nodes in order over a
dict of values, each ONNX op written with ForgeML's differentiable ops (see
``_import_ops``). Float initializers become ``Parameter``\\ s (the running
statistics of ``BatchNormalization`` become buffers), registered under their
ONNX names with every character other than letters, digits and ``_`` replaced
by ``_`` (``"0.weight"`` -> ``"0_weight"``); ``initializer_names`` maps them
back. Integer initializers (shapes, axes) stay constants, and everything
computed from constants alone (``Shape`` and the shape arithmetic after it) is
evaluated on the host with NumPy.

The graph runs as it was exported, in ``train()`` and ``eval()`` alike: an
exported graph is an inference graph, so ``Dropout`` is the identity and
``BatchNormalization`` normalises with its running statistics.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict

import numpy as np

from ..autograd.grad_mode import no_grad
from ..backend.dtypes import as_dtype, is_float
from ..nn.module import Module
from ..nn.parameter import Parameter
from ..ops.creation import tensor as _new_tensor
from ..tensor import Tensor
from ._import_ops import OPS, host_tensor, tensor_like

__all__ = ["SUPPORTED_OPS", "OnnxImportError", "OnnxModule", "UnsupportedOnnxOpsError", "load"]

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(OPS))
_DEFAULT_DOMAINS = ("", "ai.onnx")
_RETYPED = (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError)


class OnnxImportError(ValueError):
    """The file or bytes are not an ONNX model, or the model is malformed."""


class UnsupportedOnnxOpsError(NotImplementedError):
    """The graph uses ops (or forms of ops) that ForgeML cannot run; ``ops`` lists every one of them."""

    def __init__(self, ops: list[str], opset: int | None) -> None:
        self.ops = list(ops)
        self.opset = opset
        where = f" (opset {opset})" if opset is not None else ""
        super().__init__(
            f"this ONNX graph uses ops ForgeML cannot run: {', '.join(self.ops)}{where}. "
            f"ForgeML runs {len(SUPPORTED_OPS)} ONNX ops (`from forgeml.onnx.load import SUPPORTED_OPS` lists them)"
        )


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - the onnx extra is installed where this is tested
        raise ImportError('forgeml.onnx.load needs the onnx package: pip install "forgeml[onnx]"') from exc
    return onnx


# ----------------------------------------------------------------- reading the model
def _read_model(f):
    """A ``ModelProto`` from a path, bytes, a binary file object, or a ``ModelProto``."""
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    if isinstance(f, onnx.ModelProto):
        model, source = f, "the given ModelProto"
    else:
        try:
            if isinstance(f, (bytes, bytearray, memoryview)):
                source = "the given bytes"
                model = onnx.load_model_from_string(bytes(f))
            elif isinstance(f, (str, os.PathLike)):
                source = os.fspath(f)
                if not os.path.isfile(source):
                    raise FileNotFoundError(f"no ONNX model at {source!r}: the file does not exist")
                model = onnx.load(source)
            elif hasattr(f, "read"):
                source = getattr(f, "name", "the given file object")
                model = onnx.load(f)
            else:
                raise TypeError(
                    f"forgeml.onnx.load expects a path, bytes, a binary file or an onnx.ModelProto, "
                    f"got {type(f).__name__}"
                )
        except (DecodeError, UnicodeDecodeError) as exc:
            raise OnnxImportError(
                f"{source} is not an ONNX model: it does not parse as an ONNX ModelProto ({exc})"
            ) from exc
    if not model.HasField("graph") or model.ir_version <= 0:
        raise OnnxImportError(
            f"{source} is not an ONNX model: it has no graph or no IR version (ir_version={model.ir_version})"
        )
    return model


def _opset(model) -> int | None:
    for entry in model.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return int(entry.version)
    return None


def _walk_nodes(graph):
    """Every node of the graph and of the subgraphs in its attributes (If/Loop/Scan bodies)."""
    onnx = _onnx()
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _walk_nodes(g)


def _missing_ops(graph) -> set[str]:
    """The ops of ``graph`` (and its subgraphs) that have no handler, or that come from another domain."""
    return {_op_label(n) for n in _walk_nodes(graph) if n.domain not in _DEFAULT_DOMAINS or n.op_type not in OPS}


def _op_label(node) -> str:
    if node.domain in _DEFAULT_DOMAINS:
        return node.op_type
    return f"{node.op_type} (domain {node.domain})"


def _attributes(node) -> dict:
    onnx = _onnx()
    from onnx import numpy_helper

    kinds = onnx.AttributeProto
    out = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if attr.type == kinds.TENSOR:
            value = numpy_helper.to_array(value)
        elif attr.type == kinds.TENSORS:
            value = [numpy_helper.to_array(t) for t in value]
        elif attr.type == kinds.STRING:
            value = value.decode("utf-8")
        elif attr.type == kinds.STRINGS:
            value = [v.decode("utf-8") for v in value]
        elif attr.type in (kinds.INTS, kinds.FLOATS):
            value = list(value)
        out[attr.name] = value
    return out


class _Node:
    """One compiled node: what the handlers read (``op_type``, ``attrs``, ``opset``, ``n_out``)."""

    __slots__ = ("attrs", "domain", "inputs", "name", "n_out", "op_type", "opset", "outputs")

    def __init__(self, proto, opset: int | None) -> None:
        self.op_type = proto.op_type
        self.domain = proto.domain
        self.name = proto.name or proto.op_type
        self.inputs = [n or None for n in proto.input]
        while self.inputs and self.inputs[-1] is None:  # trailing optional inputs left out
            self.inputs.pop()
        self.outputs = list(proto.output)
        self.n_out = len(self.outputs)
        self.opset = opset if opset is not None else 1
        self.attrs = _attributes(proto)

    @property
    def op(self):
        """The handler (looked up by name, so that a module pickles without its functions)."""
        return OPS.get(self.op_type) if self.domain in _DEFAULT_DOMAINS else None

    def __repr__(self) -> str:
        return f"<{self.op_type} node {self.name!r}>"


def _sanitize(name: str) -> str:
    return re.sub(r"\W", "_", name, flags=re.ASCII) or "initializer"


# ----------------------------------------------------------------- the module
class OnnxModule(Module):
    """An ONNX graph run by ForgeML: its float initializers are parameters, so it trains like any module.

    ``forward(*inputs, **named_inputs)`` takes the graph inputs in order (or by
    name) as tensors or arrays and returns one tensor, or a tuple for a graph
    with several outputs. ``input_names``, ``output_names``, ``opset`` and
    ``initializer_names`` (parameter or buffer name -> ONNX name) describe the graph.
    """

    def __init__(self, model, *, strict_shapes: bool = True) -> None:
        super().__init__()
        onnx = _onnx()
        from onnx import numpy_helper

        graph = model.graph
        opset = _opset(model)
        self.opset = opset
        self.graph_name = graph.name
        self.strict_shapes = strict_shapes

        nodes = [_Node(n, opset) for n in graph.node]
        self._check_supported(graph, nodes, opset)
        if len(graph.sparse_initializer):
            raise UnsupportedOnnxOpsError(["sparse initializers"], opset)

        # Initializers: float ones that feed computation train, except the running statistics of
        # BatchNormalization (buffers); the rest (integers, and floats read only as settings such as Clip's
        # bounds or Pad's value) are constants.
        data_uses = defaultdict(set)  # initializer name -> {(op_type, input position)}
        for n in nodes:
            meta = n.op.meta if n.op is not None else frozenset()
            for i, name in enumerate(n.inputs):
                if name is not None and i not in meta:
                    data_uses[name].add((n.op_type, i))
        bn_stats = {
            name for name, uses in data_uses.items() if uses <= {("BatchNormalization", 3), ("BatchNormalization", 4)}
        }
        self._constants: dict[str, np.ndarray] = {}
        self._weights: dict[str, tuple[str, str]] = {}  # ONNX name -> ("param" | "buffer", attribute name)
        self.initializer_names: dict[str, str] = {}
        used = set(dir(self))
        for init in graph.initializer:
            array = np.array(numpy_helper.to_array(init))  # a writable copy
            if not is_float(array.dtype) or not data_uses.get(init.name):
                self._constants[init.name] = array
                continue
            attr = _sanitize(init.name)
            base, k = attr, 1
            while attr in used:
                attr, k = f"{base}_{k}", k + 1
            used.add(attr)
            self.initializer_names[attr] = init.name
            if init.name in bn_stats:
                self.register_buffer(attr, Tensor(array))
                self._weights[init.name] = ("buffer", attr)
            else:
                self.register_parameter(attr, Parameter(array))
                self._weights[init.name] = ("param", attr)

        known = set(self._constants) | set(self._weights)
        self._inputs = []  # (name, DType or None, dims: list of int | None) per runtime input
        for value_info in graph.input:
            if value_info.name in known:
                continue  # IR < 4 lists initializers among the inputs
            self._inputs.append(_input_spec(value_info, onnx))
        self.input_names = [name for name, _, _ in self._inputs]
        self.output_names = [v.name for v in graph.output]

        # Constant nodes become constants now; the rest run in a topological order.
        program = []
        for node in nodes:
            if node.op_type == "Constant" and node.op is not None:
                self._constants[node.outputs[0]] = np.asarray(node.op.fn(node))
            else:
                program.append(node)
        available = known | set(self._constants) | set(self.input_names)
        self._program = _topological(program, available)
        missing = [n for n in self.output_names if n not in available and not any(n in p.outputs for p in program)]
        if missing:
            raise OnnxImportError(f"graph output(s) {missing} are produced by no node, initializer or input")

        # After node i, the values read for the last time there are dropped (graph outputs are kept).
        last_use = {}
        for i, node in enumerate(self._program):
            for name in node.inputs:
                if name is not None:
                    last_use[name] = i
        keep = set(self.output_names)
        self._frees = defaultdict(list)
        for name, i in last_use.items():
            if name not in keep:
                self._frees[i].append(name)
        self._device_constants: dict[tuple[str, str], Tensor] = {}

    def _check_supported(self, graph, nodes, opset) -> None:
        """Raise one error that names every op (and every form of an op) the interpreter cannot run."""
        static = {init.name: tuple(init.dims) for init in graph.initializer}
        missing = _missing_ops(graph)
        for node in nodes:
            if node.op is not None and node.op.check is not None:
                reason = node.op.check(node, static.get)
                if reason:
                    missing.add(reason)
        if missing:
            raise UnsupportedOnnxOpsError(sorted(missing), opset)

    # -- running -----------------------------------------------------------------
    def forward(self, *args, **kwargs):
        env = dict(self._constants)
        registries = {"param": self._parameters, "buffer": self._buffers}
        for onnx_name, (kind, attr) in self._weights.items():
            env[onnx_name] = registries[kind][attr]
        bound = self._bind_inputs(args, kwargs)
        env.update(bound)
        like = next(iter(bound.values()), None)
        if like is None:
            like = next(iter(self._parameters.values()), None)
        for i, node in enumerate(self._program):
            values = [None if name is None else env[name] for name in node.inputs]
            out = self._run(node, values)
            if node.n_out == 1:
                env[node.outputs[0]] = out
            else:
                out = out if isinstance(out, tuple) else (out,)
                for name, value in zip(node.outputs, out):
                    if name:
                        env[name] = value
            for name in self._frees.get(i, ()):
                env.pop(name, None)
        # A constant output is copied, so that changing it in place cannot change the graph's constants.
        outputs = tuple(
            tensor_like(v if isinstance(v, Tensor) else np.array(v), like)
            for v in (env[name] for name in self.output_names)
        )
        return outputs[0] if len(outputs) == 1 else outputs

    def _run(self, node: _Node, values: list):
        spec = node.op
        like = next((v for i, v in enumerate(values) if isinstance(v, Tensor) and i not in spec.meta), None)
        try:
            if like is None:  # constants only: evaluate on the host, and the result stays a constant
                wrapped = [v if v is None or i in spec.meta else host_tensor(v) for i, v in enumerate(values)]
                with no_grad():
                    out = spec.fn(node, *wrapped)
                return _to_constant(out)
            args = [
                v if v is None or i in spec.meta or isinstance(v, Tensor) else self._on_device(node.inputs[i], v, like)
                for i, v in enumerate(values)
            ]
            return spec.fn(node, *args)
        except _RETYPED as exc:
            shapes = ", ".join(_describe(v) for v in values)
            message = f"ONNX node {node.name!r} ({node.op_type}) with inputs ({shapes}): {exc}"
            # The same exception type, with the node in the message (a RuntimeError for types built otherwise).
            error = type(exc)(message) if type(exc) in _RETYPED else RuntimeError(message)
            raise error from exc

    def _on_device(self, name: str, value, like: Tensor) -> Tensor:
        """A constant as a tensor on ``like``'s device (graph constants are copied to a device once)."""
        if like.device.type == "cpu" or name not in self._constants:
            return tensor_like(value, like)
        key = (name, str(like.device))
        found = self._device_constants.get(key)
        if found is None:
            found = self._device_constants[key] = tensor_like(value, like)
        return found

    def _bind_inputs(self, args, kwargs) -> dict:
        names = self.input_names
        if len(args) > len(names):
            raise TypeError(f"forward() takes {len(names)} graph input(s) ({', '.join(names)}), got {len(args)}")
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"forward() got an unknown input {key!r}; the graph's inputs are: {', '.join(names)}")
            if key in given:
                raise TypeError(f"forward() got input {key!r} twice (by position and by name)")
            given[key] = value
        missing = [n for n in names if n not in given]
        if missing:
            raise TypeError(f"forward() is missing graph input(s) {', '.join(missing)} (inputs: {', '.join(names)})")
        device = next((p.device for p in self.parameters()), None)
        bound = {}
        for name, dtype, dims in self._inputs:
            value = given[name]
            if not isinstance(value, Tensor):
                value = _new_tensor(np.asarray(value), dtype=dtype, device=device)
            elif dtype is not None and value.dtype != dtype:
                raise TypeError(f"graph input {name!r} must be a {dtype} tensor, got {value.dtype}")
            if self.strict_shapes and dims is not None:
                _check_shape(name, tuple(value.shape), dims)
            bound[name] = value
        return bound

    def extra_repr(self) -> str:
        n_params = sum(1 for kind, _ in self._weights.values() if kind == "param")
        return (
            f"opset={self.opset}, inputs={self.input_names}, outputs={self.output_names}, "
            f"nodes={len(self._program)}, parameters={n_params}"
        )


# ----------------------------------------------------------------- helpers
def _input_spec(value_info, onnx):
    """``(name, DType or None, dims or None)``: a dim is an int when fixed, None when symbolic or unknown."""
    t = value_info.type
    if not t.HasField("tensor_type"):
        raise UnsupportedOnnxOpsError([f"non-tensor graph input {value_info.name!r}"], None)
    dtype = None
    if t.tensor_type.elem_type:
        try:
            dtype = as_dtype(onnx.helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type))
        except TypeError:
            dtype = None
    dims = None
    if t.tensor_type.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]
    return value_info.name, dtype, dims


def _check_shape(name: str, shape: tuple, dims: list) -> None:
    fixed = [(i, d) for i, d in enumerate(dims) if d is not None]
    bad = [i for i, d in fixed if i < len(shape) and shape[i] != d]
    if len(shape) != len(dims) or bad:
        declared = [d if d is not None else "?" for d in dims]
        hint = ""
        if bad:
            hint = (
                f"; dim(s) {bad} are fixed in the graph (export with dynamic axes to vary them, or load with "
                "strict_shapes=False to try anyway)"
            )
        raise ValueError(f"graph input {name!r} has shape {list(shape)}, the graph declares {declared}{hint}")


def _topological(nodes: list[_Node], available: set) -> list[_Node]:
    """``nodes`` in an order where each runs after the nodes that produce its inputs (the given order if it is one)."""
    ready = set(available)
    ordered, pending = [], list(nodes)
    while pending:
        progress, rest = False, []
        for node in pending:
            if all(name is None or name in ready for name in node.inputs):
                ordered.append(node)
                ready.update(n for n in node.outputs if n)
                progress = True
            else:
                rest.append(node)
        if not progress:
            node = rest[0]
            absent = [n for n in node.inputs if n is not None and n not in ready]
            raise OnnxImportError(
                f"ONNX node {node.name!r} ({node.op_type}) reads {absent}, which no node, initializer or graph input "
                "produces (or the graph has a cycle)"
            )
        pending = rest
    return ordered


def _to_constant(out):
    if isinstance(out, tuple):
        return tuple(_to_constant(o) for o in out)
    if isinstance(out, Tensor):
        return out._data
    return None if out is None else np.asarray(out)


def _describe(value) -> str:
    if value is None:
        return "-"
    kind = "tensor" if isinstance(value, Tensor) else "constant"
    dtype = value.dtype if isinstance(value, Tensor) else np.asarray(value).dtype
    return f"{kind} {list(value.shape)} {dtype}"


# ----------------------------------------------------------------- the entry point
def load(f, *, check: bool = True, strict_shapes: bool = True) -> OnnxModule:
    """Load an ONNX model (a path, bytes, a binary file or an ``onnx.ModelProto``) as a trainable ForgeML module.

    Every op the graph uses that ForgeML cannot run is named in one
    :class:`UnsupportedOnnxOpsError` before anything is built. ``check`` runs
    ``onnx.checker`` on the model first; ``strict_shapes`` refuses inputs whose
    rank or fixed dims differ from the graph's declared input shapes (as ONNX
    Runtime does). A file that is not an ONNX model raises :class:`OnnxImportError`.
    """
    onnx = _onnx()
    model = _read_model(f)
    unsupported = _missing_ops(model.graph)
    if unsupported:  # before the checker, which may refuse the same nodes less clearly
        raise UnsupportedOnnxOpsError(sorted(unsupported), _opset(model))
    if check:
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise OnnxImportError(f"the ONNX model is invalid: {exc}") from exc
    return OnnxModule(model, strict_shapes=strict_shapes)
