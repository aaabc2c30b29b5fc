"""Request and response models of the REST API (pydantic, validated at the edge).

The request models are strict: a value of another JSON type than the OpenAPI documents is a 422, not
coerced (``false`` for a number, ``"5"`` for an integer, ``1`` for a boolean); an integer is still a number."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..specs import ModelSpec, OptimizerSpec, TrainingContext, TrainingMetrics
from ..training.ai_trainer import AIEnhancedConfig
from .settings import DEVICE_HELP, check_device_spec

__all__ = [
    "AnalyzeRequest",
    "DatasetOut",
    "EnhanceRequest",
    "ErrorOut",
    "JobCreate",
    "JobOut",
    "JobProfile",
    "ModelOut",
    "PredictRequest",
    "PredictResponse",
    "SyntheticRequest",
    "ValidationIssue",
    "error_responses",
]

MNIST_MLP = {
    "name": "seed MNIST MLP",
    "input_shape": [784],
    "layers": [
        {"type": "Linear", "args": {"in_features": 784, "out_features": 512}},
        {"type": "ReLU"},
        {"type": "Dropout", "args": {"p": 0.2}},
        {"type": "Linear", "args": {"in_features": 512, "out_features": 256}},
        {"type": "ReLU"},
        {"type": "Dropout", "args": {"p": 0.2}},
        {"type": "Linear", "args": {"in_features": 256, "out_features": 10}},
    ],
}
SPAM_TRANSFORMER = {
    "name": "seed spam transformer",
    "input_shape": [128],
    "layers": [
        {"type": "Embedding", "args": {"num_embeddings": 20000, "embedding_dim": 64, "padding_idx": 0}},
        {"type": "PositionalEncoding", "args": {"d_model": 64, "max_len": 1024, "dropout": 0.1}},
        {
            "type": "TransformerEncoderLayer",
            "args": {"d_model": 64, "nhead": 2, "dim_feedforward": 128, "dropout": 0.1, "activation": "gelu"},
        },
        {
            "type": "TransformerEncoderLayer",
            "args": {"d_model": 64, "nhead": 2, "dim_feedforward": 128, "dropout": 0.1, "activation": "gelu"},
        },
        {"type": "SequencePool", "args": {"mode": "mean"}},
        {"type": "Linear", "args": {"in_features": 64, "out_features": 2}},
    ],
}
PRESETS: dict[str, dict[str, Any]] = {
    "mnist_mlp": {
        "model": MNIST_MLP,
        "dataset": "mnist",
        "optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 0.01},
        "epochs": 5,
        "batch_size": 64,
    },
    "mnist_ai_enhanced": {
        "model": MNIST_MLP,
        "dataset": "mnist",
        "optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 0.01},
        "epochs": 10,
        "batch_size": 64,
        "ai": {
            "synthetic_data_ratio": 0.3,
            "research_update_interval": 10,
            "optimization_guidance_frequency": 5,
            "domain": "computer_vision",
        },
    },
    "spam_transformer": {
        "model": SPAM_TRANSFORMER,
        "dataset": "spam",
        "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.01},
        "epochs": 3,
        "batch_size": 32,
        "ai": {"research_update_interval": 5, "optimization_guidance_frequency": 2, "domain": "nlp"},
    },
}


PRESET_DESCRIPTIONS = {
    "mnist_mlp": "A 784 → 512 → 256 → 10 MLP on 8,000 handwritten digits. Seconds per epoch on a CPU.",
    "mnist_ai_enhanced": "The digits MLP, with AI services analysing the run and adding synthetic samples.",
    "spam_transformer": "A two-layer transformer encoder on SpamAssassin e-mails. Slower: minutes per epoch on a CPU.",
}


def preset_catalogue() -> dict[str, dict[str, Any]]:
    """Every preset's defaults (model spec, dataset, optimizer, schedule, AI options) and a description."""
    return {name: {"description": PRESET_DESCRIPTIONS[name], "ai": None, **values} for name, values in PRESETS.items()}


class JobCreate(BaseModel):
    """A training job: a preset, or a model spec with its dataset, optimizer and schedule (a preset's
    fields can be overridden). ``ai`` turns on AI guidance; leave it out for plain training."""

    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    name: str | None = Field(default=None, max_length=200)
    preset: Literal["mnist_mlp", "mnist_ai_enhanced", "spam_transformer"] | None = None
    model: ModelSpec | None = None
    dataset: str | None = Field(default=None, description="'mnist', 'spam', or the id of an uploaded CSV dataset")
    optimizer: OptimizerSpec | None = None
    epochs: int | None = Field(default=None, ge=1, le=500)
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    ai: AIEnhancedConfig | None = None
    max_length: int = Field(default=128, ge=8, le=1024, description="tokens per text, for text datasets")
    device: str | None = Field(
        default=None,
        description=f"where to train: {DEVICE_HELP}; default: the server's device (FORGEML_DEVICE). A device this "
        "machine lacks fails the job with a message that says so",
    )
    processes: int = Field(
        default=1,
        ge=1,
        le=256,
        description="train data-parallel on this many processes (MPI, forgeml.distributed), each on its share of "
        "every epoch's batches; at most the server's max_processes (FORGEML_MAX_PROCESSES)",
    )
    profile: bool = Field(
        default=False,
        description="run the first epoch (training and validation) under forgeml.profiler and keep its top ops "
        "(GET /v1/jobs/{id} answers them as 'profile'); the later epochs run unprofiled, at full speed",
    )

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value):
        return None if value is None else check_device_spec(value)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, values):
        # only a name is looked up: a dict or list is unhashable, and pydantic's Literal check answers it with a 422
        if isinstance(values, dict) and isinstance(values.get("preset"), str) and values["preset"] in PRESETS:
            merged = dict(PRESETS[values["preset"]])
            # a null field takes the preset's value, except "ai": null, which turns a preset's AI guidance off
            merged.update({k: v for k, v in values.items() if v is not None or k == "ai"})
            return merged
        return values

    @model_validator(mode="after")
    def _complete(self) -> JobCreate:
        if self.model is None:
            raise ValueError("give a preset or a model spec ('model')")
        if self.dataset is None:
            raise ValueError("give a dataset: 'mnist', 'spam' or an uploaded dataset id")
        self.optimizer = self.optimizer or OptimizerSpec()
        self.epochs = self.epochs or 5
        self.batch_size = self.batch_size or 64
        self.name = self.name or self.preset or self.model.name or "training job"
        return self


class ProfiledOp(BaseModel):
    """One op (a differentiable function's forward or backward, as the profiler names it) over a profiled epoch."""

    name: str
    calls: int
    self_cpu_ms: float = Field(description="time in the op itself, not in the ops it called")
    cpu_total_ms: float = Field(description="time in the op, the ops it called included")
    self_cpu_percent: float = Field(description="its share of all ops' self time in the epoch")


class JobProfile(BaseModel):
    """The profile of a job's first epoch (training and validation), its top ops by self time."""

    epoch: int
    wall_ms: float | None = Field(default=None, description="the profiled epoch's wall time, profiling included")
    ops_self_cpu_ms: float | None = Field(default=None, description="the self time of all ops, summed")
    distinct_ops: int | None = None
    processes: int = Field(default=1, description="the job's processes: with several, rank 0's share of the epoch")
    ops: list[ProfiledOp] = Field(default_factory=list)
    error: str | None = Field(default=None, description="why the epoch could not be profiled (training went on)")


class JobOut(BaseModel):
    id: str
    name: str
    state: str
    epochs: int
    epochs_done: int
    best_val_accuracy: float | None
    error: str | None
    model_id: str | None
    dataset: str
    ai_enabled: bool
    created: float
    started: float | None
    finished: float | None
    processes: int = 1
    request: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None
    events: list[dict[str, Any]] | None = None
    summary: dict[str, Any] | None = None
    profile: JobProfile | None = Field(
        default=None,
        description="for a job started with 'profile': true, once its first epoch has ended: the ops that took the "
        "most time of their own in that epoch",
    )


class DatasetOut(BaseModel):
    id: str
    name: str
    target: str
    summary: dict[str, Any]
    created: float


class ModelOut(BaseModel):
    id: str
    name: str
    job_id: str
    kind: str
    spec: dict[str, Any]
    metrics: dict[str, Any]
    classes: list[str] | None = None
    preprocessing: dict[str, Any] | None = Field(
        default=None,
        description="what /predict does to an input before the network sees it, for clients that run the network "
        "themselves (GET /v1/models/{id}/onnx): {mean, std} for rows of numbers, which become (x - mean) / std in "
        "float32 (mean and std: a number, or one per feature); {max_length} for a text model's tokens",
    )
    created: float
    lineage: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    """An error answer: what went wrong, in words."""

    detail: str


class ValidationIssue(BaseModel):
    """One thing wrong with a request, as a 422's ``detail`` lists them (FastAPI's ``ValidationError`` shape):
    where (``loc``: ``["body", "inputs"]``, ``["query", "limit"]``), what (``msg``) and its kind (``type``)."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` (for a route's ``responses=``): each status code answered with an :class:`ErrorOut`
    body, with what it means on that route."""
    return {code: {"model": ErrorOut, "description": text} for code, text in descriptions.items()}


# A union's length limits go on each of its list types: set on the union, pydantic documents them as a string's
# (minLength, maxLength), which OpenAPI clients and schema-driven tools take for no limit on the list at all.
SampleRows = Annotated[list[list[float]], Field(min_length=1, max_length=10_000)]
SampleRecords = Annotated[list[dict[str, Any]], Field(min_length=1, max_length=10_000)]
TrainingRows = Annotated[list[list[float]], Field(max_length=10_000)]
TrainingRecords = Annotated[list[dict[str, Any]], Field(max_length=10_000)]


class PredictRequest(BaseModel):
    """Batched inputs: rows of numbers (image pixels in [0, 1], 784 per digit, or tabular features), or raw strings for a text model."""

    model_config = ConfigDict(extra="forbid", strict=True)

    inputs: Annotated[list[list[float]], Field(min_length=1)] | Annotated[list[str], Field(min_length=1)]


class PredictResponse(BaseModel):
    model_id: str
    classes: list[str]
    predictions: list[str]
    probabilities: list[list[float]]


class EnhanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    ai_providers: list[Literal["openai", "anthropic", "perplexity", "gemini", "xai", "local"]] | None = None
    synthetic_data_ratio: float = Field(default=0.3, ge=0, le=10)
    model_type: str = "classifier"
    domain: str = "general"


class EnhanceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    model_description: str = Field(min_length=1, max_length=4000)
    training_data: TrainingRows | TrainingRecords = Field(default_factory=list)
    performance_metrics: TrainingMetrics | dict[str, Any] = Field(default_factory=dict)
    config: EnhanceConfig = Field(default_factory=EnhanceConfig)


class SyntheticRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    model_type: str = "classifier"
    existing_data_sample: SampleRows | SampleRecords
    target_count: int = Field(default=100, ge=0, le=100_000)


class AnalyzeRequest(BaseModel):
    """``POST /v1/ai/analyze``: a run's per-epoch metrics and, optionally, its training context."""

    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    model_description: str = Field(min_length=1, max_length=4000)
    performance_metrics: TrainingMetrics | dict[str, Any] = Field(default_factory=dict)
    context: TrainingContext | dict[str, Any] | None = Field(
        default=None,
        description="what the curves do not show: optimizer, learning rate, weight decay and whether it is "
        "decoupled, batch size, regularisation, input statistics, the latest per-layer gradient norms and update "
        "ratios, the changes already tried with their verdicts, and the epochs after which the loss's definition "
        "changed (a TrainingContext; one that does not validate is a 422). Every provider asked gets it, and it is "
        "part of the cache key",
    )
