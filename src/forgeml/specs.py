"""Declarative, versioned specs shared by every layer (pydantic only, no tensor stack).

``ModelSpec`` describes a network as an ordered list of layers (type name plus
keyword arguments) that ``nn`` can build and the REST API accepts as JSON;
``OptimizerSpec`` an optimizer; ``TrainingMetrics`` a run's per-epoch history.
The AI layer's typed actions and its four responses live here too, since the
trainer applies the actions and the server returns the responses.

Import this module explicitly (``from forgeml.specs import ModelSpec``); it is
not imported by ``import forgeml``, which needs NumPy alone.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

try:
    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError('forgeml.specs needs pydantic; install it with: pip install "forgeml[ai]"') from exc

__all__ = [
    "ACTION_NAMES",
    "DIAGNOSES",
    "SPEC_VERSION",
    "Action",
    "ArchitectureCandidate",
    "ArchitectureSuggestionsResponse",
    "Citation",
    "DroppedCandidate",
    "ChangeRecord",
    "EarlyStop",
    "EnableGradClipping",
    "FindLearningRate",
    "InputStats",
    "LayerStats",
    "LayerSpec",
    "ModelAnalysisResponse",
    "ModelSpec",
    "OptimizerSpec",
    "ProviderAttempt",
    "Recommendation",
    "RejectedSample",
    "ResearchInsight",
    "ResearchInsightsResponse",
    "RestoreBestCheckpoint",
    "ScaleLearningRate",
    "SetBatchSize",
    "SetDropout",
    "SetLabelSmoothing",
    "SetLRSchedule",
    "SetWeightDecay",
    "StandardizeInputs",
    "SwitchOptimizer",
    "SwitchScheduler",
    "SyntheticDataResponse",
    "SyntheticSample",
    "TrainingContext",
    "TrainingMetrics",
]

SPEC_VERSION = "1.0"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------- ModelSpec
# Layer type -> the keyword arguments it accepts (names and meaning as in forgeml.nn / torch.nn).
LAYER_ARGUMENTS: dict[str, set[str]] = {
    "Linear": {"in_features", "out_features", "bias"},
    "Identity": set(),
    "Flatten": {"start_dim", "end_dim"},
    "Unflatten": {"dim", "unflattened_size"},
    "ReLU": {"inplace"},
    "LeakyReLU": {"negative_slope", "inplace"},
    "ELU": {"alpha", "inplace"},
    "GELU": {"approximate"},
    "SiLU": {"inplace"},
    "Sigmoid": set(),
    "Tanh": set(),
    "Softplus": {"beta", "threshold"},
    "Softmax": {"dim"},
    "LogSoftmax": {"dim"},
    "Dropout": {"p", "inplace"},
    "Conv2d": {
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "bias",
        "padding_mode",
    },
    "MaxPool2d": {"kernel_size", "stride", "padding", "dilation", "ceil_mode"},
    "AvgPool2d": {"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"},
    "AdaptiveAvgPool2d": {"output_size"},
    "BatchNorm1d": {"num_features", "eps", "momentum", "affine", "track_running_stats"},
    "BatchNorm2d": {"num_features", "eps", "momentum", "affine", "track_running_stats"},
    # sequence layers (inputs: token ids [T] per sample; the mask travels in a MaskedBatch)
    "Embedding": {"num_embeddings", "embedding_dim", "padding_idx"},
    "EmbeddingLayer": {"num_embeddings", "embedding_dim", "padding_idx"},
    "PositionalEncoding": {"d_model", "max_len", "dropout"},
    "LayerNorm": {"normalized_shape", "eps", "elementwise_affine", "bias"},
    "MultiHeadAttention": {"embed_dim", "num_heads", "dropout", "bias"},
    "FeedForward": {"embed_dim", "hidden_dim", "activation", "dropout"},
    "TransformerEncoderLayer": {"d_model", "nhead", "dim_feedforward", "dropout", "activation", "norm_first"},
    "SequencePool": {"mode"},
}
# Layers a spec can build but not describe from a module (their settings live in sub-modules).
BUILD_ONLY_LAYERS = {"PositionalEncoding", "MultiHeadAttention", "FeedForward", "TransformerEncoderLayer"}
SEQUENCE_LAYERS = {
    "Embedding",
    "EmbeddingLayer",
    "PositionalEncoding",
    "LayerNorm",
    "MultiHeadAttention",
    "FeedForward",
    "TransformerEncoderLayer",
    "SequencePool",
}
REQUIRED_ARGUMENTS: dict[str, set[str]] = {
    "Linear": {"in_features", "out_features"},
    "Unflatten": {"dim", "unflattened_size"},
    "Conv2d": {"in_channels", "out_channels", "kernel_size"},
    "MaxPool2d": {"kernel_size"},
    "AvgPool2d": {"kernel_size"},
    "AdaptiveAvgPool2d": {"output_size"},
    "BatchNorm1d": {"num_features"},
    "BatchNorm2d": {"num_features"},
    "Embedding": {"num_embeddings", "embedding_dim"},
    "EmbeddingLayer": {"num_embeddings", "embedding_dim"},
    "PositionalEncoding": {"d_model"},
    "LayerNorm": {"normalized_shape"},
    "MultiHeadAttention": {"embed_dim", "num_heads"},
    "FeedForward": {"embed_dim", "hidden_dim"},
    "TransformerEncoderLayer": {"d_model", "nhead"},
}


class LayerSpec(_Strict):
    """One layer: its ForgeML type name and keyword arguments, e.g. ``{"type": "Linear", "args": {...}}``."""

    type: str
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_layer(self) -> LayerSpec:
        allowed = LAYER_ARGUMENTS.get(self.type)
        if allowed is None:
            raise ValueError(f"unknown layer type {self.type!r}; known types: {', '.join(sorted(LAYER_ARGUMENTS))}")
        unexpected = set(self.args) - allowed
        if unexpected:
            raise ValueError(f"{self.type} got unexpected arguments {sorted(unexpected)}; it accepts {sorted(allowed)}")
        missing = REQUIRED_ARGUMENTS.get(self.type, set()) - set(self.args)
        if missing:
            raise ValueError(f"{self.type} is missing required arguments {sorted(missing)}")
        for key, value in self.args.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{self.type}.{key} must be finite, got {value}")
        if self.type == "Dropout" and not 0.0 <= float(self.args.get("p", 0.5)) <= 1.0:
            raise ValueError(f"Dropout.p must be in [0, 1], got {self.args['p']}")
        for key in (
            "in_features",
            "out_features",
            "in_channels",
            "out_channels",
            "num_features",
            "num_embeddings",
            "embedding_dim",
        ):
            if key in self.args and (
                not isinstance(self.args[key], int) or isinstance(self.args[key], bool) or self.args[key] < 1
            ):
                raise ValueError(f"{self.type}.{key} must be a positive integer, got {self.args[key]!r}")
        return self


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _pool_out(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _infer(layer: LayerSpec, shape: tuple[int, ...], index: int) -> tuple[int, ...]:
    """The shape of one sample after ``layer`` (no batch dim), or ValueError naming the mismatch."""
    a, t = layer.args, layer.type
    where = f"layer {index} ({t})"
    if t == "Linear":
        if not shape or shape[-1] != a["in_features"]:
            raise ValueError(f"{where} expects {a['in_features']} input features, but receives shape {list(shape)}")
        return shape[:-1] + (a["out_features"],)
    if t == "Flatten":
        start, end = a.get("start_dim", 1) - 1, a.get("end_dim", -1)  # sample dims exclude the batch
        end = end - 1 if end > 0 else len(shape) + end
        if start < 0 or start > end or end >= len(shape):
            return shape
        return shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :]
    if t == "Unflatten":
        d = a["dim"] - 1 if a["dim"] > 0 else len(shape) + a["dim"]
        sizes = tuple(a["unflattened_size"])
        if not 0 <= d < len(shape) or math.prod(sizes) != shape[d]:
            raise ValueError(f"{where} cannot unflatten dim {a['dim']} of shape {list(shape)} into {list(sizes)}")
        return shape[:d] + sizes + shape[d + 1 :]
    if t == "Conv2d":
        if len(shape) != 3 or shape[0] != a["in_channels"]:
            raise ValueError(f"{where} expects [{a['in_channels']}, H, W] inputs, but receives shape {list(shape)}")
        kh, kw = _pair(a["kernel_size"])
        sh, sw = _pair(a.get("stride", 1))
        dh, dw = _pair(a.get("dilation", 1))
        padding = a.get("padding", 0)
        if padding == "same":
            return (a["out_channels"], shape[1], shape[2])
        ph, pw = (0, 0) if padding == "valid" else _pair(padding)
        h = _pool_out(shape[1], kh, sh, ph, dh, False)
        w = _pool_out(shape[2], kw, sw, pw, dw, False)
        if h < 1 or w < 1:
            raise ValueError(f"{where}: kernel {kh}x{kw} is larger than the padded input {list(shape)}")
        return (a["out_channels"], h, w)
    if t in ("MaxPool2d", "AvgPool2d"):
        if len(shape) != 3:
            raise ValueError(f"{where} expects [C, H, W] inputs, but receives shape {list(shape)}")
        kh, kw = _pair(a["kernel_size"])
        sh, sw = _pair(a.get("stride") or a["kernel_size"])
        ph, pw = _pair(a.get("padding", 0))
        dh, dw = _pair(a.get("dilation", 1)) if t == "MaxPool2d" else (1, 1)
        ceil = bool(a.get("ceil_mode", False))
        h, w = _pool_out(shape[1], kh, sh, ph, dh, ceil), _pool_out(shape[2], kw, sw, pw, dw, ceil)
        if h < 1 or w < 1:
            raise ValueError(f"{where}: window {kh}x{kw} is larger than the input {list(shape)}")
        return (shape[0], h, w)
    if t == "AdaptiveAvgPool2d":
        oh, ow = _pair(a["output_size"])
        return (shape[0], oh, ow)
    if t in ("BatchNorm1d", "BatchNorm2d"):
        if not shape or shape[0] != a["num_features"]:
            raise ValueError(f"{where} expects {a['num_features']} channels, but receives shape {list(shape)}")
        return shape
    if t in ("Embedding", "EmbeddingLayer"):
        if len(shape) != 1:
            raise ValueError(f"{where} expects token ids [T], but receives shape {list(shape)}")
        return shape + (a["embedding_dim"],)
    width = {
        "PositionalEncoding": "d_model",
        "MultiHeadAttention": "embed_dim",
        "FeedForward": "embed_dim",
        "TransformerEncoderLayer": "d_model",
    }.get(t)
    if width is not None and (len(shape) != 2 or shape[-1] != a[width]):
        raise ValueError(f"{where} expects [T, {a[width]}] inputs, but receives shape {list(shape)}")
    if t == "LayerNorm":
        norm = (a["normalized_shape"],) if isinstance(a["normalized_shape"], int) else tuple(a["normalized_shape"])
        if shape[len(shape) - len(norm) :] != norm:
            raise ValueError(f"{where} normalises {list(norm)}, but receives shape {list(shape)}")
    if t == "SequencePool":
        if len(shape) != 2:
            raise ValueError(f"{where} expects [T, E] inputs, but receives shape {list(shape)}")
        return shape[1:]
    return shape  # activations, dropout, identity, softmax and the sequence blocks keep the shape


class ModelSpec(_Strict):
    """A network as an ordered list of layers, run in sequence (``nn.Sequential``)."""

    spec_version: Literal["1.0"] = SPEC_VERSION
    name: str | None = None
    input_shape: list[int] | None = Field(default=None, description="shape of one sample, without the batch dim")
    layers: list[LayerSpec] = Field(min_length=1)

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, value):
        if value is not None and (not value or any(s < 1 for s in value)):
            raise ValueError(f"input_shape must list positive sizes, got {value}")
        return value

    def output_shape(self, input_shape: list[int] | tuple[int, ...] | None = None) -> tuple[int, ...]:
        """The shape of one sample's output; raises ValueError naming the first layer that does not fit."""
        shape = tuple(input_shape if input_shape is not None else (self.input_shape or ()))
        if not shape:
            raise ValueError("output_shape needs an input shape (pass one, or set input_shape)")
        for i, layer in enumerate(self.layers):
            shape = _infer(layer, shape, i)
        return shape

    def check_task(self, input_size: int | list[int], num_classes: int) -> None:
        """Raise ValueError unless the spec maps inputs of ``input_size`` to ``num_classes`` outputs."""
        shape = [input_size] if isinstance(input_size, int) else list(input_size)
        out = self.output_shape(shape)
        if out != (num_classes,):
            raise ValueError(f"the model maps input {shape} to output {list(out)}, but the task needs [{num_classes}]")

    def describe(self) -> str:
        """One line per layer, e.g. ``Linear(in_features=784, out_features=512)``."""
        return "\n".join(
            f"{layer.type}({', '.join(f'{k}={v!r}' for k, v in layer.args.items())})" for layer in self.layers
        )


class OptimizerSpec(_Strict):
    """An optimizer and its hyper-parameters, as ``forgeml.optim`` names them."""

    spec_version: Literal["1.0"] = SPEC_VERSION
    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"] = "adam"
    lr: float = Field(default=1e-3, gt=0, lt=10)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    momentum: float | None = Field(default=None, ge=0, lt=1)
    betas: tuple[float, float] | None = None
    eps: float | None = Field(default=None, gt=0)
    amsgrad: bool | None = None
    nesterov: bool | None = None

    @field_validator("betas")
    @classmethod
    def _betas(cls, value):
        if value is not None and not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas must lie in [0, 1), got {value}")
        return value


# ------------------------------------------------------------ training metrics
class TrainingMetrics(BaseModel):
    """A run's per-epoch history; each list has one entry per epoch (None where not measured).

    NaN and inf are allowed: a diverging run has them (in JSON they are the
    strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, which parse back).
    """

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")

    train_loss: list[float | None] = Field(default_factory=list)
    val_loss: list[float | None] = Field(default_factory=list)
    train_accuracy: list[float | None] = Field(default_factory=list)
    val_accuracy: list[float | None] = Field(default_factory=list)
    learning_rate: list[float | None] = Field(default_factory=list)
    epoch_time: list[float | None] = Field(default_factory=list)
    grad_norm: list[float | None] = Field(default_factory=list)

    @property
    def num_epochs(self) -> int:
        return max(
            (len(v) for v in (self.train_loss, self.val_loss, self.train_accuracy, self.val_accuracy)), default=0
        )

    @classmethod
    def from_history(cls, history) -> TrainingMetrics:
        """From a list of per-epoch records (``Trainer.history`` entries or dicts with the same keys)."""
        rows = [h.as_dict() if hasattr(h, "as_dict") else dict(h) for h in history]
        fields = (
            "train_loss",
            "val_loss",
            "train_accuracy",
            "val_accuracy",
            "learning_rate",
            "epoch_time",
            "grad_norm",
        )
        return cls(**{f: [row.get(f) for row in rows] for f in fields})


# --------------------------------------------------------------- typed actions
class ScaleLearningRate(_Strict):
    action: Literal["scale_learning_rate"] = "scale_learning_rate"
    factor: float = Field(gt=0, le=100)


class SetWeightDecay(_Strict):
    action: Literal["set_weight_decay"] = "set_weight_decay"
    value: float = Field(ge=0, le=1)


class SetDropout(_Strict):
    action: Literal["set_dropout"] = "set_dropout"
    p: float = Field(ge=0, lt=1)


class SetBatchSize(_Strict):
    action: Literal["set_batch_size"] = "set_batch_size"
    n: int = Field(ge=1, le=1_000_000)
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        default="none",
        description="scale the learning rate with the batch: 'linear' (SGD, Goyal et al. 2017) or 'sqrt' (Adam family)",
    )


class EnableGradClipping(_Strict):
    action: Literal["enable_grad_clipping"] = "enable_grad_clipping"
    max_norm: float = Field(gt=0)


class SetLabelSmoothing(_Strict):
    action: Literal["set_label_smoothing"] = "set_label_smoothing"
    x: float = Field(ge=0, lt=1)


class EarlyStop(_Strict):
    action: Literal["early_stop"] = "early_stop"


class RestoreBestCheckpoint(_Strict):
    action: Literal["restore_best_checkpoint"] = "restore_best_checkpoint"


class SwitchScheduler(_Strict):
    action: Literal["switch_scheduler"] = "switch_scheduler"
    name: Literal[
        "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "OneCycleLR", "ReduceLROnPlateau"
    ]
    params: dict[str, float | int | list[int] | str | bool] = Field(default_factory=dict)


class SwitchOptimizer(_Strict):
    """Change the optimizer's class, keeping its hyper-parameters and (``keep_state``) its per-parameter state:
    Adam with coupled L2 decay -> AdamW with decoupled decay keeps the moment estimates (Loshchilov & Hutter 2019)."""

    action: Literal["switch_optimizer"] = "switch_optimizer"
    name: Literal["adamw", "adam", "sgd"]
    keep_state: bool = True
    weight_decay: float | None = Field(
        default=None, ge=0, le=1, description="the new optimizer's weight decay (None: the current value)"
    )


class StandardizeInputs(_Strict):
    """Standardise the inputs to zero mean and unit variance (statistics measured on the training data when not
    given); the trainer folds the transform into the first layer at the end, so the model keeps its raw inputs."""

    action: Literal["standardize_inputs"] = "standardize_inputs"
    mean: float | None = None
    std: float | None = Field(default=None, gt=0)


class SetLRSchedule(_Strict):
    """A schedule over the run's remaining epochs from the current learning rate: ``cosine`` annealing,
    ``warmup_cosine`` (linear warm-up for ``warmup_epochs``, then cosine) or ``one_cycle`` (Smith & Topin 2019)."""

    action: Literal["set_lr_schedule"] = "set_lr_schedule"
    kind: Literal["cosine", "warmup_cosine", "one_cycle"]
    warmup_epochs: float = Field(default=0.0, ge=0, le=100)
    min_lr_ratio: float = Field(default=0.01, ge=0, le=1)


class FindLearningRate(_Strict):
    """A learning-rate range test (Smith 2017): ``steps`` mini-batches with the rate rising geometrically from
    ``min_lr`` to ``max_lr``, then the weights are put back and the rate set a decade below the loss's minimum."""

    action: Literal["find_learning_rate"] = "find_learning_rate"
    min_lr: float = Field(default=1e-6, gt=0)
    max_lr: float = Field(default=1.0, gt=0)
    steps: int = Field(default=100, ge=10, le=10_000)


Action = Annotated[
    Union[  # noqa: UP007 - a discriminated union reads best spelled out
        ScaleLearningRate,
        SetWeightDecay,
        SetDropout,
        SetBatchSize,
        EnableGradClipping,
        SetLabelSmoothing,
        EarlyStop,
        RestoreBestCheckpoint,
        SwitchScheduler,
        SwitchOptimizer,
        StandardizeInputs,
        SetLRSchedule,
        FindLearningRate,
    ],
    Field(discriminator="action"),
]
ACTION_NAMES = (
    "scale_learning_rate",
    "set_weight_decay",
    "set_dropout",
    "set_batch_size",
    "enable_grad_clipping",
    "set_label_smoothing",
    "early_stop",
    "restore_best_checkpoint",
    "switch_scheduler",
    "switch_optimizer",
    "standardize_inputs",
    "set_lr_schedule",
    "find_learning_rate",
)

DIAGNOSES = ("healthy", "diverging", "plateau", "overfitting", "underfitting", "noisy", "misconfigured", "unknown")
Diagnosis = Literal[
    "healthy", "diverging", "plateau", "overfitting", "underfitting", "noisy", "misconfigured", "unknown"
]


# ---------------------------------------------------------- training context
class InputStats(_Strict):
    """Statistics of a sample of the training inputs (over all features)."""

    mean: float
    std: float
    min: float
    max: float
    features: int = Field(ge=0, description="values per sample")
    integer: bool = Field(default=False, description="integer inputs (token ids, categories): not standardisable")
    standardized: bool = Field(default=False, description="the trainer already standardises them")


class LayerStats(_Strict):
    """One parameter tensor at the end of an epoch: its norm, its gradient's norm and the size of its updates
    relative to it (``update_ratio`` = ||step|| / ||weight||, healthy around 1e-3 for Adam-trained networks)."""

    name: str
    dims: int | None = Field(default=None, description="the tensor's number of dimensions (1: a bias or norm scale)")
    weight_norm: float
    grad_norm: float | None = None
    update_ratio: float | None = None


class ChangeRecord(_Strict):
    """A change the trainer made on advice, and what it did to the monitored metric."""

    epoch: int = Field(description="the epoch boundary at which it was applied (0: before training)")
    action: dict[str, Any]
    provider: str = ""
    metric: str = "val_loss"
    before: float | None = Field(default=None, description="the metric's best value before the change")
    after: float | None = Field(default=None, description="its best value during the trial")
    verdict: Literal["on_trial", "kept", "reverted", "final"] = "on_trial"
    reason: str = ""


class TrainingContext(BaseModel):
    """What an analyst needs besides the curves: the optimizer and its weight-decay mode, the regularisation in
    force, input statistics, per-layer gradient and update statistics, and the changes already tried."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")

    optimizer: str | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    decoupled_weight_decay: bool | None = None
    batch_size: int | None = None
    dropout: float | None = None
    label_smoothing: float | None = None
    max_grad_norm: float | None = None
    scheduler: str | None = None
    epochs_planned: int | None = None
    epochs_done: int = 0
    num_classes: int | None = None
    train_samples: int | None = None
    inputs: InputStats | None = None
    layer_types: dict[str, int] = Field(
        default_factory=dict,
        description="how many modules of each class the model is built from, e.g. {'Conv2d': 2, 'BatchNorm2d': 2}",
    )
    layers: list[LayerStats] = Field(default_factory=list, description="the latest epoch's per-layer statistics")
    changes: list[ChangeRecord] = Field(default_factory=list)
    loss_changed_at: list[int] = Field(
        default_factory=list, description="epochs after which the loss's definition changed (label smoothing)"
    )


# ------------------------------------------------------------------ responses
class ProviderAttempt(_Strict):
    """One provider tried for a task: ``answered``, or why it did not (``not_configured``, ``failed: ...``)."""

    provider: str
    outcome: str
    detail: str = ""


class _Provenance(BaseModel):
    provider: str = Field(description="the provider that answered, e.g. 'anthropic' or 'local'")
    model: str = Field(description="the model that answered ('offline-advisor' for local)")
    offline: bool = Field(default=False, description="True when ForgeML's built-in offline advisor answered")
    attempts: list[ProviderAttempt] = Field(default_factory=list)
    cached: bool = False


class SyntheticSample(_Strict):
    features: list[float]
    label: int | float | str | None = None


class RejectedSample(_Strict):
    index: int = Field(description="position in the provider's output")
    reason: str


class SyntheticDataResponse(_Provenance):
    samples: list[SyntheticSample]
    requested: int = Field(ge=0)
    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    rejections: list[RejectedSample] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="what was capped or summarised, and why")


class Recommendation(_Strict):
    action: Action
    rationale: str
    confidence: float = Field(ge=0, le=1)


class ModelAnalysisResponse(_Provenance):
    diagnosis: Diagnosis
    evidence: list[str] = Field(default_factory=list)
    recommendations: list[Recommendation] = Field(default_factory=list)


class Citation(_Strict):
    title: str
    url: str | None = None
    arxiv_id: str | None = None
    year: int | None = None


class ResearchInsight(_Strict):
    technique: str
    summary: str
    applies_when: str
    action: Action | None = None
    citations: list[Citation] = Field(default_factory=list)


class ResearchInsightsResponse(_Provenance):
    domain: str
    insights: list[ResearchInsight]
    citations: list[Citation] = Field(default_factory=list, description="the provider's own source list, intact")
    search_results: list[dict[str, Any]] = Field(default_factory=list, description="raw search results, when given")


class ArchitectureCandidate(_Strict):
    spec: ModelSpec
    rationale: str


class DroppedCandidate(_Strict):
    reason: str
    raw: Any = None


class ArchitectureSuggestionsResponse(_Provenance):
    candidates: list[ArchitectureCandidate]
    dropped: list[DroppedCandidate] = Field(default_factory=list)
