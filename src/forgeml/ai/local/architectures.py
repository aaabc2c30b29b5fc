"""Rule-based architecture variants of a ``ModelSpec``: wider, deeper, narrower, more or less dropout,
batch normalisation, a different activation, and combinations of these.

Each variant is rebuilt layer by layer with the sizes re-derived from the input
shape (``in_features``, ``in_channels``, ``num_features`` follow whatever comes
before them), then checked with ``ModelSpec.check_task``. The order of the
variants follows the problem the model description names (underfitting asks for
capacity first, overfitting for regularisation first).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from ...specs import ArchitectureCandidate, LayerSpec, ModelSpec
from ._hparams import diagnosis_hint

__all__ = ["default_mlp", "propose_architectures"]

ACTIVATIONS = ("ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softplus")
MAX_WIDTH, MAX_CHANNELS = 4096, 1024

Layers = list[dict]
Transform = Callable[[Layers, tuple[int, ...], int], tuple[Layers, str] | None]


# ----------------------------------------------------------------------- helpers
def _shape_of(input_size: int | list[int]) -> tuple[int, ...]:
    shape = (input_size,) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    if not shape or any(isinstance(s, bool) or s < 1 for s in shape):
        raise ValueError(f"input_size must be a positive int or a list of positive ints, got {input_size!r}")
    return shape


def _build(layers: Layers, shape: tuple[int, ...]) -> list[LayerSpec]:
    """The layers with every input size re-derived from ``shape``; ValueError if a layer cannot take its input."""
    out = []
    for layer in layers:
        t, a = layer["type"], dict(layer["args"])
        if t == "Linear" and shape:
            a["in_features"] = shape[-1]
        elif t in ("BatchNorm1d", "BatchNorm2d") and shape:
            a["num_features"] = shape[0]
        elif t == "Conv2d" and len(shape) == 3 and a.get("groups", 1) == 1:
            a["in_channels"] = shape[0]
        spec = LayerSpec(type=t, args=a)
        shape = ModelSpec(layers=[spec]).output_shape(shape)
        out.append(spec)
    return out


def _shapes(layers: Layers, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The output shape of each layer."""
    out = []
    for layer in layers:
        shape = ModelSpec(layers=[LayerSpec(**layer)]).output_shape(shape)
        out.append(shape)
    return out


def _params(layers: Layers) -> int:
    total = 0
    for layer in layers:
        t, a = layer["type"], layer["args"]
        if t == "Linear":
            total += a["in_features"] * a["out_features"] + (a["out_features"] if a.get("bias", True) else 0)
        elif t == "Conv2d":
            kh, kw = (a["kernel_size"],) * 2 if isinstance(a["kernel_size"], int) else a["kernel_size"]
            groups = a.get("groups", 1)
            total += a["in_channels"] // groups * a["out_channels"] * kh * kw + (
                a["out_channels"] if a.get("bias", True) else 0
            )
        elif t in ("BatchNorm1d", "BatchNorm2d") and a.get("affine", True):
            total += 2 * a["num_features"]
    return total


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _parametric(layers: Layers) -> list[int]:
    return [i for i, layer in enumerate(layers) if layer["type"] in ("Linear", "Conv2d")]


def _head(layers: Layers) -> int | None:
    idx = _parametric(layers)
    return idx[-1] if idx else None


def _hidden(layers: Layers) -> list[int]:
    """Parametric layers before the output head (their widths are free to change)."""
    return _parametric(layers)[:-1]


def _activation(layers: Layers) -> str:
    for layer in layers:
        if layer["type"] in ACTIVATIONS and layer["type"] not in ("Sigmoid", "Tanh", "Softmax"):
            return layer["type"]
    return "ReLU"


def _width_key(layer: dict) -> str:
    return "out_features" if layer["type"] == "Linear" else "out_channels"


def _copy(layers: Layers) -> Layers:
    return [{"type": layer["type"], "args": dict(layer["args"])} for layer in layers]


def _after_activation(layers: Layers, i: int) -> int:
    """The position just after the activation (and normalisation) that follows layer ``i``."""
    j = i + 1
    while j < len(layers) and layers[j]["type"] in (*ACTIVATIONS, "BatchNorm1d", "BatchNorm2d"):
        j += 1
    return j


def default_mlp(input_size: int | list[int], num_classes: int) -> Layers:
    """A two-hidden-layer ReLU MLP sized from the task (flattening image-like inputs first)."""
    shape = _shape_of(input_size)
    features = math.prod(shape)
    hidden = int(min(512, max(32, 2 ** round(math.log2(max(features, num_classes) * 2 / 3 + 1)))))
    layers: Layers = [{"type": "Flatten", "args": {}}] if len(shape) > 1 else []
    layers += [
        {"type": "Linear", "args": {"in_features": features, "out_features": hidden}},
        {"type": "ReLU", "args": {}},
        {"type": "Linear", "args": {"in_features": hidden, "out_features": max(16, hidden // 2)}},
        {"type": "ReLU", "args": {}},
        {"type": "Linear", "args": {"in_features": max(16, hidden // 2), "out_features": num_classes}},
    ]
    return layers


# -------------------------------------------------------------------- transforms
def _scale_width(layers: Layers, factor: float, num_classes: int) -> tuple[Layers, list[str]] | None:
    out = _copy(layers)
    changes = []
    grouped = any(layer["type"] == "Conv2d" and layer["args"].get("groups", 1) != 1 for layer in layers)
    for i in _hidden(out):
        layer = out[i]
        if layer["type"] == "Conv2d" and grouped:
            continue
        key = _width_key(layer)
        old = layer["args"][key]
        cap = MAX_WIDTH if layer["type"] == "Linear" else MAX_CHANNELS
        if factor >= 1:
            new = max(old, min(cap, round(old * factor)))
        else:
            new = max(min(old, max(8, num_classes)), round(old * factor))
        if new != old:
            layer["args"][key] = new
            changes.append(f"{old}->{new}")
    return (out, changes) if changes else None


def _wider(layers: Layers, shape: tuple[int, ...], num_classes: int):
    r = _scale_width(layers, 2.0, num_classes)
    if r is None:
        return None
    return r[0], f"doubles the hidden widths ({', '.join(r[1])})"


def _narrower(layers: Layers, shape: tuple[int, ...], num_classes: int):
    r = _scale_width(layers, 0.5, num_classes)
    if r is None:
        return None
    return r[0], f"halves the hidden widths ({', '.join(r[1])})"


def _deeper(layers: Layers, shape: tuple[int, ...], num_classes: int):
    head = _head(layers)
    if head is None:
        return None
    out = _copy(layers)
    shapes = _shapes(layers, shape)
    incoming = shape if head == 0 else shapes[head - 1]
    act = _activation(layers)
    if out[head]["type"] == "Linear":
        if len(incoming) != 1:
            return None
        hidden = _hidden(layers)
        width = (
            out[hidden[-1]]["args"][_width_key(out[hidden[-1]])]
            if hidden and out[hidden[-1]]["type"] == "Linear"
            else None
        )
        width = width or int(min(256, max(32, 2 ** round(math.log2(math.sqrt(incoming[0] * num_classes))))))
        block = [{"type": "Linear", "args": {"in_features": incoming[0], "out_features": width}}]
        if any(layer["type"] == "BatchNorm1d" for layer in layers):
            block.append({"type": "BatchNorm1d", "args": {"num_features": width}})
        block.append({"type": act, "args": {}})
        drops = [layer["args"].get("p", 0.5) for layer in layers if layer["type"] == "Dropout"]
        if drops:
            block.append({"type": "Dropout", "args": {"p": drops[-1]}})
        what = f"adds a hidden block Linear({width}) + {act} before the output layer"
    else:
        if len(incoming) != 3:
            return None
        c = incoming[0]
        block = [{"type": "Conv2d", "args": {"in_channels": c, "out_channels": c, "kernel_size": 3, "padding": 1}}]
        if any(layer["type"] == "BatchNorm2d" for layer in layers):
            block.append({"type": "BatchNorm2d", "args": {"num_features": c}})
        block.append({"type": act, "args": {}})
        what = f"adds a 3x3 Conv2d({c}) + {act} block before the output layer"
    return out[:head] + block + out[head:], what


def _more_dropout(layers: Layers, shape: tuple[int, ...], num_classes: int):
    out = _copy(layers)
    drops = [i for i, layer in enumerate(out) if layer["type"] == "Dropout"]
    if drops:
        changes = []
        for i in drops:
            p = float(out[i]["args"].get("p", 0.5))
            new = round(min(p + 0.2, 0.6), 2)
            if new > p:
                out[i]["args"]["p"] = new
                changes.append(f"{p:g}->{new:g}")
        return (out, f"raises dropout ({', '.join(changes)})") if changes else None
    hidden = [i for i in _hidden(out) if out[i]["type"] == "Linear"]
    if hidden:
        for i in reversed(hidden):
            out.insert(_after_activation(out, i), {"type": "Dropout", "args": {"p": 0.2}})
        return out, f"adds Dropout(p=0.2) after each of the {len(hidden)} hidden Linear blocks"
    head = _head(out)
    if head is None:
        return None
    out.insert(head, {"type": "Dropout", "args": {"p": 0.2}})
    return out, "adds Dropout(p=0.2) before the output layer"


def _less_dropout(layers: Layers, shape: tuple[int, ...], num_classes: int):
    out, changes = [], []
    for layer in _copy(layers):
        if layer["type"] == "Dropout":
            p = float(layer["args"].get("p", 0.5))
            if p <= 0.1:
                changes.append(f"removes Dropout(p={p:g})")
                continue
            layer["args"]["p"] = round(p / 2, 2)
            changes.append(f"{p:g}->{layer['args']['p']:g}")
        out.append(layer)
    return (out, f"lowers dropout ({', '.join(changes)})") if changes else None


def _batchnorm(layers: Layers, shape: tuple[int, ...], num_classes: int):
    out = _copy(layers)
    shapes = _shapes(layers, shape)
    added = 0
    for i in reversed(_hidden(layers)):
        nxt = layers[i + 1]["type"] if i + 1 < len(layers) else None
        if nxt in ("BatchNorm1d", "BatchNorm2d"):
            continue
        if layers[i]["type"] == "Linear" and len(shapes[i]) == 1:
            out.insert(i + 1, {"type": "BatchNorm1d", "args": {"num_features": shapes[i][0]}})
            added += 1
        elif layers[i]["type"] == "Conv2d" and len(shapes[i]) == 3:
            out.insert(i + 1, {"type": "BatchNorm2d", "args": {"num_features": shapes[i][0]}})
            added += 1
    return (out, f"adds batch normalisation after {added} hidden layer(s), before the activation") if added else None


def _swap_activation(layers: Layers, shape: tuple[int, ...], num_classes: int):
    present = {layer["type"] for layer in layers if layer["type"] in ACTIVATIONS}
    swappable = present - {"Sigmoid", "Tanh", "Softmax", "GELU"}
    if not present:
        return None
    target = "GELU" if swappable else "SiLU"
    out = []
    for layer in _copy(layers):
        if layer["type"] in (swappable or {"GELU"}):
            layer = {"type": target, "args": {}}
        out.append(layer)
    if out == layers:
        return None
    return out, f"swaps {', '.join(sorted(swappable or {'GELU'}))} for {target}"


def _compose(*transforms: Transform) -> Transform:
    def run(layers: Layers, shape: tuple[int, ...], num_classes: int):
        notes = []
        for t in transforms:
            r = t(layers, shape, num_classes)
            if r is None:
                return None
            layers = [{"type": s.type, "args": s.args} for s in _build(r[0], shape)]
            notes.append(r[1])
        return layers, "; ".join(notes)

    return run


_WHY = {
    "wider": "more units per layer add capacity, the first remedy when training loss stays high (underfitting)",
    "deeper": "an extra non-linear layer lets the model compose features, adding capacity where it underfits",
    "narrower": "fewer parameters mean less capacity to memorise the training set, which counters overfitting",
    "more_dropout": "dropout regularises the hidden units, which counters overfitting",
    "less_dropout": "less dropout frees capacity when the model underfits",
    "batchnorm": "normalised pre-activations allow larger, steadier learning rates and speed convergence (helps divergence, noise and plateaus)",
    "gelu": "a smooth activation avoids dead ReLU units and often trains a little better",
    "wider+deeper": "both more width and depth, for a model that clearly underfits",
    "wider+batchnorm": "more capacity, with normalisation to keep the larger model stable",
    "deeper+batchnorm": "a deeper model stays trainable when each layer is normalised",
    "narrower+more_dropout": "less capacity and stronger regularisation together, for clear overfitting",
    "wider+more_dropout": "more capacity held in check by dropout: a bigger but regularised model",
    "batchnorm+more_dropout": "normalisation for stability and dropout against overfitting",
    "gelu+batchnorm": "a smooth activation and normalised layers, for steadier optimisation",
    "wider+wider": "four times the hidden width, for a model far too small for its data",
    "deeper+deeper": "two extra hidden layers, for a model far too shallow for its data",
    "deeper+gelu": "an extra layer with smooth activations throughout",
}
_TRANSFORMS: dict[str, Transform] = {
    "wider": _wider,
    "deeper": _deeper,
    "narrower": _narrower,
    "more_dropout": _more_dropout,
    "less_dropout": _less_dropout,
    "batchnorm": _batchnorm,
    "gelu": _swap_activation,
}
for _name in [n for n in _WHY if "+" in n]:
    _TRANSFORMS[_name] = _compose(*(_TRANSFORMS[part] for part in _name.split("+")))

_ORDER = {
    "underfitting": [
        "wider",
        "deeper",
        "wider+deeper",
        "less_dropout",
        "gelu",
        "wider+batchnorm",
        "deeper+batchnorm",
        "wider+wider",
    ],
    "overfitting": [
        "more_dropout",
        "narrower",
        "narrower+more_dropout",
        "batchnorm+more_dropout",
        "wider+more_dropout",
    ],
    "diverging": ["batchnorm", "gelu+batchnorm", "narrower", "deeper+batchnorm"],
    "noisy": ["batchnorm", "more_dropout", "gelu+batchnorm"],
    "plateau": ["batchnorm", "gelu", "wider", "deeper", "wider+batchnorm"],
}
_DEFAULT_ORDER = ["wider", "batchnorm", "deeper", "more_dropout", "gelu", "narrower", "less_dropout"]


def propose_architectures(
    model_description: str | None,
    current: ModelSpec | None,
    input_size: int | list[int],
    num_classes: int,
    k: int = 3,
) -> list[ArchitectureCandidate]:
    """Up to ``k`` distinct variants of ``current`` (or of a default MLP), each valid for the task."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    shape = _shape_of(input_size)
    preface = ""
    if current is not None:
        try:
            current.check_task(list(shape), num_classes)
            base = [{"type": layer.type, "args": dict(layer.args)} for layer in current.layers]
            base_name = current.name or "model"
        except ValueError as exc:
            base, base_name = None, "mlp"
            preface = f"The current spec does not fit the task ({exc}), so this starts from a default MLP. "
    else:
        base, base_name = None, "mlp"
    if base is None:
        base = default_mlp(list(shape), num_classes)
        preface = preface or "No current model was given, so this starts from a default MLP. "
    base = [{"type": s.type, "args": s.args} for s in _build(base, shape)]

    hint = diagnosis_hint(model_description)
    order = list(dict.fromkeys(_ORDER.get(hint, []) + _DEFAULT_ORDER + list(_WHY)))
    seen = {json.dumps(base, sort_keys=True)}
    before = _params(base)
    out: list[ArchitectureCandidate] = []
    for name in order:
        if len(out) == k:
            break
        result = _TRANSFORMS[name](base, shape, num_classes)
        if result is None:
            continue
        try:
            layers = _build(result[0], shape)
            spec = ModelSpec(
                name=f"{base_name}-{name.replace('+', '-').replace('_', '-')}", input_shape=list(shape), layers=layers
            )
            spec.check_task(list(shape), num_classes)
        except ValueError:
            continue
        dumped = [{"type": s.type, "args": s.args} for s in spec.layers]
        key = json.dumps(dumped, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        why = _WHY[name]
        if hint and name in _ORDER.get(hint, []):
            why += f"; the description reports {hint}"
        rationale = (
            f"{preface}{name.replace('_', ' ').capitalize()}: {result[1]} "
            f"(parameters {_fmt_params(before)} -> {_fmt_params(_params(dumped))}). Why: {why}."
        )
        out.append(ArchitectureCandidate(spec=spec, rationale=rationale))
    return out
