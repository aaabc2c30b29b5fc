"""``build(spec)`` and ``to_spec(module)``: between a declarative ``ModelSpec`` and an ``nn.Sequential``.

A :class:`forgeml.specs.ModelSpec` lists layers by type name and keyword
arguments, e.g. ``{"type": "Linear", "args": {"in_features": 784, "out_features": 512}}``.
``build`` turns one (or its dict or JSON form) into a ``Sequential`` whose
children are named ``"0"``, ``"1"``, ...; ``to_spec`` describes such a model as
a spec again. Only the layer types of ``forgeml.specs.LAYER_ARGUMENTS`` take
part. pydantic is imported on first use, so ``import forgeml.nn`` needs NumPy alone.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .container import Sequential
from .module import Module

if TYPE_CHECKING:
    from ..specs import ModelSpec

__all__ = ["build", "to_spec"]

# Conv2d stores these as pairs whatever it was given, so a default of 1 reads back as (1, 1).
_PAIR_ARGUMENTS = {"Conv2d": ("kernel_size", "stride", "padding", "dilation")}
# Pools store ``stride=None`` (the default) as ``kernel_size``.
_POOLS = ("MaxPool2d", "AvgPool2d")
# Spec-built attention layers take MaskedBatch / [batch, time, E] input: batch-first, not PyTorch's default.
_BATCH_FIRST_LAYERS = ("MultiHeadAttention", "TransformerEncoderLayer")


def _as_model_spec(spec) -> ModelSpec:
    from ..specs import ModelSpec

    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, (str, bytes, bytearray)):
        return ModelSpec.model_validate_json(spec)
    if isinstance(spec, Mapping):
        return ModelSpec.model_validate(dict(spec))
    raise TypeError(f"build expects a ModelSpec, a dict or a JSON string, got {type(spec).__name__}")


def _tuples(value):
    """Lists (as JSON gives them) become the tuples the constructors expect, nested ones too."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _plain(value):
    """Tuples become lists and NumPy scalars Python numbers, so the spec is plain JSON."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if type(value) not in (bool, int, float, str) and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()  # a NumPy scalar or 0-d array
    return value


def _check_shapes(spec: ModelSpec) -> None:
    if spec.input_shape is None:
        return
    try:
        spec.output_shape()
    except ValueError as exc:
        raise ValueError(f"input_shape {spec.input_shape} does not flow through the layers: {exc}") from exc


def build(spec: ModelSpec | Mapping | str | bytes) -> Sequential:
    """An ``nn.Sequential`` with one layer per entry of ``spec`` (a ``ModelSpec``, its dict or its JSON).

    The spec is validated first (pydantic's errors name the bad field), and
    when it has an ``input_shape`` that shape must flow through every layer:
    otherwise a ValueError names the first layer that does not fit.
    """
    from .. import nn
    from ..specs import LAYER_ARGUMENTS

    model_spec = _as_model_spec(spec)
    _check_shapes(model_spec)
    layers = []
    for index, layer in enumerate(model_spec.layers):
        if layer.type not in LAYER_ARGUMENTS:  # only reachable for a spec made without validation
            raise ValueError(
                f"layer {index}: unknown layer type {layer.type!r}; known types: {sorted(LAYER_ARGUMENTS)}"
            )
        cls = getattr(nn, layer.type)
        args = {key: _tuples(value) for key, value in layer.args.items()}
        if layer.type in _BATCH_FIRST_LAYERS:
            args.setdefault("batch_first", True)
        try:
            layers.append(cls(**args))
        except ValueError as exc:
            raise ValueError(f"layer {index} ({layer.type}): {exc}") from exc
        except TypeError as exc:
            raise TypeError(f"layer {index} ({layer.type}): {exc}") from exc
    return Sequential(*layers)


def _leaves(module: Module, path: str):
    """(dotted path, layer) for each layer, nested Sequentials (that keep Sequential's forward) flattened."""
    if isinstance(module, Sequential) and type(module).forward is Sequential.forward:
        for name, child in module._modules.items():
            if child is not None:
                yield from _leaves(child, f"{path}.{name}" if path else name)
    else:
        yield path, module


def _unsupported_settings(module: Module, kind: str) -> str | None:
    """Why a supported layer type is configured beyond what a ModelSpec can say, or None."""
    if kind in ("BatchNorm1d", "BatchNorm2d") and module.affine and module.bias is None:
        return "bias=False (a ModelSpec's BatchNorm always has a bias when affine)"
    if kind == "MaxPool2d" and module.return_indices:
        return "return_indices=True"
    if kind == "AvgPool2d" and module.divisor_override is not None:
        return f"divisor_override={module.divisor_override}"
    return None


def _is_default(kind: str, name: str, value, default, module: Module) -> bool:
    if default is inspect.Parameter.empty:
        return False
    if kind in _POOLS and name == "stride":
        return value == _plain(module.kernel_size)
    if name in _PAIR_ARGUMENTS.get(kind, ()) and isinstance(default, int):
        default = [default, default]
    return type(value) is type(default) and value == default


def _layer_spec(module: Module, path: str) -> dict:
    from .. import nn
    from ..specs import BUILD_ONLY_LAYERS, LAYER_ARGUMENTS, REQUIRED_ARGUMENTS

    kind = type(module).__name__
    where = f"{kind} at {path!r}" if path else kind
    if kind in BUILD_ONLY_LAYERS:
        raise TypeError(
            f"to_spec cannot describe {where}: a ModelSpec can build it, but its settings live in sub-modules"
        )
    if kind not in LAYER_ARGUMENTS or type(module) is not getattr(nn, kind, None):
        raise TypeError(
            f"to_spec cannot describe {where}: a ModelSpec holds only the layers "
            f"{', '.join(sorted(LAYER_ARGUMENTS))} (and Sequentials of them)"
        )
    problem = _unsupported_settings(module, kind)
    if problem is not None:
        raise ValueError(f"to_spec cannot describe {where}: a ModelSpec has no way to say {problem}")
    allowed, required = LAYER_ARGUMENTS[kind], REQUIRED_ARGUMENTS.get(kind, set())
    args = {}
    for name, parameter in inspect.signature(type(module).__init__).parameters.items():
        if name not in allowed:
            continue
        value = module.bias is not None if name == "bias" else _plain(getattr(module, name))
        if name in required or not _is_default(kind, name, value, parameter.default, module):
            args[name] = value
    return {"type": kind, "args": args}


def to_spec(module: Module, input_shape=None, name: str | None = None) -> ModelSpec:
    """Describe ``module`` (a ``Sequential`` of supported layers, or one such layer) as a ``ModelSpec``.

    Each argument is read back from the layer (``bias`` is whether it has a
    bias parameter) and left out when it equals the constructor's default;
    nested Sequentials are flattened in order. A layer type the spec cannot
    hold raises TypeError. With ``input_shape`` (one sample, no batch dim) the
    spec records it, and a ValueError names the first layer it does not fit.
    """
    from ..specs import ModelSpec

    if not isinstance(module, Module):
        raise TypeError(f"to_spec expects an nn.Module, got {type(module).__name__}")
    layers = [_layer_spec(layer, path) for path, layer in _leaves(module, "")]
    if not layers:
        raise ValueError("to_spec got an empty Sequential; a ModelSpec needs at least one layer")
    shape = None if input_shape is None else [int(s) for s in input_shape]
    spec = ModelSpec(name=name, input_shape=shape, layers=layers)
    _check_shapes(spec)
    return spec
