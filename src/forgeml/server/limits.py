"""Resource limits of training jobs: what a job will need, estimated from its request before it starts.

``POST /v1/jobs`` (and ``resume``) estimates a job from its validated request and its dataset's size,
without building the model, and refuses it with a 422 when an estimate is over one of the server's limits
(:class:`~forgeml.server.settings.ServerSettings`): the message gives the estimate, the limit and the
setting that raises it. What the estimate cannot see (a batch size the AI changes, memory that grows with
the data) is caught at run time by the worker's memory limit (:func:`apply_memory_limit`).

The estimates, all float32 (4 bytes a value), per process (each process of a multi-process job holds a whole
replica of the model and trains on whole batches of ``batch_size``):

* **parameters**: counted per layer from the spec (``Linear``: ``in*out + out``; ``Conv2d``:
  ``out*in/groups*kh*kw + out``; ``Embedding``: ``num*dim`` (for a text dataset, the vocabulary's size,
  at most :data:`TEXT_VOCABULARY`); ``LayerNorm``/``BatchNorm``: ``2*features``; ``MultiHeadAttention``:
  ``4*E^2 + 4*E``; ``FeedForward``: ``2*E*H + E + H``; ``TransformerEncoderLayer``: attention,
  feed-forward and two LayerNorms), exactly what building it gives. Buffers (BatchNorm's running
  statistics, PositionalEncoding's ``max_len*d_model`` table) count as memory, not as parameters.
* **model state**: each parameter is held ``1 (weights) + 1 (gradients) + k (optimizer state)`` times,
  ``k`` = 2 for Adam/AdamW (3 with ``amsgrad``), 1 for Adagrad, RMSprop (2 with momentum) and SGD with
  momentum, 0 for plain SGD; plus the trainer's copy of the weights and optimizer state at the last
  epoch's end (what it restores after a diverged step), of which there are two while it is replaced,
  made from a copy of the optimizer state: ``2*(1 + k) + k``; plus one more copy of the weights for the
  AI trainer's best checkpoint, and one for the gradient buckets of a multi-process job. Adam without
  AI: ``4 + 4k`` = 12 copies, 48 bytes a parameter (measured: the peak of a run is 12.1x its weights).
* **activations** of one training batch: per sample, the input, then for each layer what it keeps for
  the backward pass (its output, and: a mask or intermediate for activations and dropout (``2x`` its
  output), the normalised input for the norms (``2x``), the im2col columns for ``Conv2d``, the indices
  for ``MaxPool2d``, Q, K, V, the heads and the ``heads*T*T`` attention probabilities (and dropout
  mask) for attention, the four ``T*dim_feedforward`` tensors of a feed-forward block), plus twice the
  largest of them (the gradients in flight during backward), times ``batch_size``, plus 1 MiB (the
  optimizer's scratch blocks and the loss's small temporaries). Evaluation (batches of
  :data:`EVAL_BATCH`, no graph kept) needs, per sample, the largest of one layer's input, temporaries
  and output; the larger of the two counts. Against tracemalloc's peak of a training step and of an
  evaluation batch (``tests/server/test_limits.py``) this is an upper bound, within about 2x.
* **data**: the dataset's rows times the values per sample, at 16 bytes a value (read, converted and
  normalised copies).
* **work**: ``epochs x training rows`` samples (``x (1 + synthetic_data_ratio)`` with AI synthetic data);
  for a resumed job, the epochs it has left.

Per process, memory is model state + activations + data; a job on N processes needs N times that, which
``max_job_memory_bytes`` bounds.

At run time each worker process runs under ``worker_memory_limit_bytes`` (:func:`apply_memory_limit`:
``RLIMIT_DATA``, which counts private writable memory, NumPy's arrays included, but not address space
that is only reserved, as ``RLIMIT_AS`` does: thread stacks, OpenBLAS's buffers and CUDA reserve that by
the gigabyte, and a limit on it breaks ordinary runs). An allocation past it raises MemoryError; the job
fails with :func:`out_of_memory_message` and the worker goes on to the next job. The ranks of a
multi-process job share the limit: each gets ``limit / processes`` (``FORGEML_RANK_MEMORY_LIMIT_BYTES``
in their environment).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..specs import LayerSpec
    from .schemas import JobCreate
    from .settings import ServerSettings

__all__ = [
    "BUILTIN_TRAIN_ROWS",
    "EVAL_BATCH",
    "RANK_LIMIT_VARIABLE",
    "SETTING_VARIABLES",
    "TEXT_VOCABULARY",
    "JobEstimate",
    "LimitExceeded",
    "apply_memory_limit",
    "check_job",
    "count_parameters",
    "dataset_size",
    "default_worker_memory_limit",
    "estimate_job",
    "format_bytes",
    "machine_memory_bytes",
    "memory_limit",
    "out_of_memory_message",
    "parse_count",
    "parse_size",
    "rank_memory_limit",
]

VALUE_BYTES = 4  # float32
DATA_VALUE_BYTES = 16  # a dataset's value: read (float64), converted and normalised (float32) copies
EVAL_BATCH = 256  # the worker evaluates on batches of 256
STEP_OVERHEAD = 1 << 20  # a training step's small allocations: the optimizer's scratch blocks, the loss's temporaries
TEXT_VOCABULARY = 20_000  # the worker's text vocabulary (max_size of forgeml.server.worker._spam): the embedding's rows
# the built-in datasets' training rows (and values per sample: spam's are its max_length token ids)
BUILTIN_TRAIN_ROWS = {"mnist": 8000, "spam": 4712}
BUILTIN_TEST_ROWS = {"mnist": 2000, "spam": 1178}
OPTIMIZER_STATE = {"sgd": 0, "adam": 2, "adamw": 2, "rmsprop": 1, "adagrad": 1}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
SETTING_VARIABLES = {
    "max_job_parameters": "FORGEML_MAX_JOB_PARAMETERS",
    "max_job_memory_bytes": "FORGEML_MAX_JOB_MEMORY_BYTES",
    "max_job_samples": "FORGEML_MAX_JOB_SAMPLES",
    "worker_memory_limit_bytes": "FORGEML_WORKER_MEMORY_LIMIT_BYTES",
}
RANK_LIMIT_VARIABLE = "FORGEML_RANK_MEMORY_LIMIT_BYTES"  # a multi-process job's share of the worker's limit, per rank
_ACTIVATIONS = {"ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softplus"}
_VIEWS = {"Identity", "Flatten", "Unflatten"}


# -- sizes, for settings and messages -----------------------------------------------------------------
_NONE_WORDS = ("", "0", "none", "off", "no", "false", "unlimited")
_SIZE = re.compile(r"^(\d+(?:\.\d*)?(?:e\d+)?)\s*(?:([kmgt])(i?)b?|b)?$")


def _positive_or_none(number: float, text) -> int | None:
    if isinstance(number, int):
        if number < 0:
            raise ValueError(f"must be a non-negative number (0 or 'none': no limit), got {text!r}")
        return number or None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"must be a non-negative number (0 or 'none': no limit), got {text!r}")
    return int(number) or None


def _parse_limit(value, what: str, parse_text) -> int | None:
    """What :func:`parse_size` and :func:`parse_count` share: None stays None, a number is taken as it is, a
    string naming no limit gives None, and any other string goes to ``parse_text(text, value)``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"must be {what}, got {value!r}")
    if isinstance(value, (int, float)):
        return _positive_or_none(value, value)
    text = str(value).strip().lower().replace("_", "").replace(",", "")
    if text in _NONE_WORDS:
        return None
    return parse_text(text, value)


def parse_size(value) -> int | None:
    """A size in bytes from a setting: an integer, or a string like ``8589934592``, ``8GiB``, ``8G`` (1024-based),
    ``8GB`` (1000-based), ``512MiB``. ``0``, ``none``, ``off`` or ``unlimited``: None (no limit)."""

    def from_text(text: str, value) -> int | None:
        match = _SIZE.match(text)
        if match is None:
            raise ValueError(
                f"must be a size in bytes (e.g. 8589934592, 8GiB, 512MiB, 8GB), or 0/none for no limit; got {value!r}"
            )
        number, unit, binary = match.groups()
        if not unit and number.isdigit():
            return _positive_or_none(int(number), value)
        scale = 1
        if unit:
            scale = (1024 if binary or not text.endswith(f"{unit}b") else 1000) ** ("kmgt".index(unit) + 1)
        return _positive_or_none(float(number) * scale, value)

    return _parse_limit(value, "a size in bytes", from_text)


def parse_count(value) -> int | None:
    """A count from a setting: an integer (``100000000``, ``1e8``, ``100_000_000``); ``0`` or ``none``: None."""

    def from_text(text: str, value) -> int | None:
        try:
            number = int(text) if text.isdigit() else float(text)
        except ValueError:
            raise ValueError(
                f"must be a whole number (e.g. 100000000 or 1e8), or 0/none for no limit; got {value!r}"
            ) from None
        return _positive_or_none(number, value)

    return _parse_limit(value, "a whole number", from_text)


def format_bytes(n: float) -> str:
    """``n`` bytes for a person: ``512 MiB``, ``31.4 GiB``."""
    if n >= 1 << 80:  # an absurd request's estimate (and past a float beyond 1e308)
        return f"{_count(n)} bytes"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{int(n)} bytes"


def _count(n: float) -> str:
    if n < 1e6:
        return f"{n:,.0f}"
    if isinstance(n, int) and n.bit_length() > 1000:  # more than a float holds
        return f"about 1e{len(str(n)) - 1}"
    return f"{n:.3g}".replace("e+0", "e").replace("e+", "e")


def machine_memory_bytes() -> int | None:
    """This machine's memory, or the container's (cgroup) limit when that is lower; None when unknown."""
    total = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(path).read_text().strip()
            if text.isdigit() and int(text) < (1 << 60):
                total = min(total or int(text), int(text))
    return total if total and total > 0 else None


def default_worker_memory_limit() -> int | None:
    """The default memory limit of a worker process: 75 % of this machine's (or container's) memory."""
    total = machine_memory_bytes()
    return None if total is None else (total * 3 // 4) >> 20 << 20


# -- the estimate --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LayerCost:
    parameters: int = 0
    buffers: int = 0  # values of non-trainable buffers (memory, not parameters)
    saved: int = 0  # values per sample kept for the backward pass
    largest: int = 0  # the largest single tensor per sample (a gradient of this size is in flight in backward)
    temporary: int = 0  # values per sample alive only inside the layer's forward (evaluation's peak)
    n_in: int = 0  # values per sample of its input and output
    n_out: int = 0


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _attention(t: int, e: int, heads: int, dropout: float) -> tuple[int, int]:
    """(saved values, largest tensor) per sample of self-attention over ``t`` positions of width ``e``:
    Q, K, V and their head layouts, the attention output, the merged heads and the projection (9 ``t*e``),
    and per head the ``t*t`` probabilities, the scores, and with dropout its mask and the dropped weights."""
    matrices = heads * t * t
    return 9 * t * e + (2 + (2 if dropout > 0 else 0)) * matrices, max(3 * t * e, matrices)


def _layer_cost(layer: LayerSpec, shape: tuple[int, ...], out: tuple[int, ...], text: bool) -> _LayerCost:
    a, kind = layer.args, layer.type
    n_in, n_out = math.prod(shape), math.prod(out)
    if kind == "Linear":
        params = a["in_features"] * a["out_features"] + (a["out_features"] if a.get("bias", True) else 0)
        return _LayerCost(params, saved=n_out, largest=n_out)
    if kind == "Conv2d":
        kh, kw = _pair(a["kernel_size"])
        groups = int(a.get("groups", 1))
        params = a["out_channels"] * (a["in_channels"] // groups) * kh * kw
        params += a["out_channels"] if a.get("bias", True) else 0
        cols = (a["in_channels"] // groups) * kh * kw * out[1] * out[2]  # im2col: kept for the weight's gradient
        # forward also makes the padded input, the product, its NCHW copy and the bias added
        return _LayerCost(params, saved=n_out + cols, largest=max(n_out, cols), temporary=n_in + cols + 3 * n_out)
    if kind in ("MaxPool2d", "AvgPool2d"):
        kh, kw = _pair(a["kernel_size"])
        window = out[0] * kh * kw * out[1] * out[2]
        extra = 2 * n_out if kind == "MaxPool2d" else 0  # the argmax indices (int64)
        return _LayerCost(saved=n_out + extra + window, largest=max(n_out, window), temporary=window)
    if kind == "AdaptiveAvgPool2d":
        return _LayerCost(saved=n_out, largest=n_in, temporary=n_in)
    if kind in ("BatchNorm1d", "BatchNorm2d"):
        c = a["num_features"]
        params = 2 * c if a.get("affine", True) else 0
        buffers = 2 * c if a.get("track_running_stats", True) else 0
        return _LayerCost(params, buffers, saved=2 * n_out, largest=n_out, temporary=n_out)
    if kind in _ACTIVATIONS or kind == "Dropout":
        return _LayerCost(saved=2 * n_out, largest=n_out, temporary=n_out)
    if kind in ("Softmax", "LogSoftmax"):
        return _LayerCost(saved=n_out, largest=n_out, temporary=n_out)
    if kind in _VIEWS:
        return _LayerCost()
    if kind in ("Embedding", "EmbeddingLayer"):
        rows = TEXT_VOCABULARY if text else a["num_embeddings"]
        return _LayerCost(rows * a["embedding_dim"], saved=n_out, largest=n_out)
    if kind == "PositionalEncoding":
        # the table: built in float64, kept in float32 (12 bytes a value while it is built: 3 float32 values)
        table = int(a.get("max_len", 5000)) * a["d_model"]
        return _LayerCost(buffers=3 * table, saved=3 * n_out, largest=n_out, temporary=n_out)
    if kind == "LayerNorm":
        norm = a["normalized_shape"]
        width = norm if isinstance(norm, int) else math.prod(norm)
        affine = a.get("elementwise_affine", True)
        params = width * (1 + bool(a.get("bias", True))) if affine else 0
        return _LayerCost(params, saved=2 * n_out, largest=n_out, temporary=n_out)
    if kind == "MultiHeadAttention":
        e, t = a["embed_dim"], shape[0]
        params = 4 * e * e + (4 * e if a.get("bias", True) else 0)
        saved, largest = _attention(t, e, a["num_heads"], float(a.get("dropout", 0.0)))
        return _LayerCost(params, saved=saved, largest=largest, temporary=saved)
    if kind == "FeedForward":
        e, h, t = a["embed_dim"], a["hidden_dim"], shape[0]
        params = 2 * e * h + e + h
        saved = 5 * t * h + t * e  # linear1, the activation (and its intermediate), dropout (and mask); linear2
        return _LayerCost(params, saved=saved, largest=t * h, temporary=saved)
    if kind == "TransformerEncoderLayer":
        d, t, f = a["d_model"], shape[0], int(a.get("dim_feedforward", 2048))
        params = (4 * d * d + 4 * d) + (2 * d * f + d + f) + 4 * d
        saved, largest = _attention(t, d, a["nhead"], float(a.get("dropout", 0.1)))
        saved += 11 * t * d + 5 * t * f  # dropouts, residuals and norms of width d; the feed-forward block's four
        return _LayerCost(params, saved=saved, largest=max(largest, t * f), temporary=saved)
    if kind == "SequencePool":
        return _LayerCost(saved=n_in + n_out, largest=n_in, temporary=n_in)
    return _LayerCost(saved=n_out, largest=n_out, temporary=n_out)  # a layer type added later: its output


def _walk(spec, input_shape, text: bool) -> list[_LayerCost]:
    from ..specs import _infer

    shape = tuple(input_shape)
    costs = []
    for index, layer in enumerate(spec.layers):
        out = _infer(layer, shape, index)
        cost = _layer_cost(layer, shape, out, text)
        costs.append(replace(cost, n_in=math.prod(shape), n_out=math.prod(out)))
        if layer.type in ("Embedding", "EmbeddingLayer"):
            text = False  # the worker sizes the first embedding to the vocabulary, the others as they are
        shape = out
    return costs


def count_parameters(spec, input_shape, *, text: bool = False) -> int:
    """The trainable parameters of ``spec`` (a :class:`~forgeml.specs.ModelSpec`) on inputs of ``input_shape``
    (one sample), as building it gives; ``text``: its embedding gets the text vocabulary's rows."""
    return sum(c.parameters for c in _walk(spec, input_shape, text))


@dataclass(frozen=True)
class JobEstimate:
    """What a job needs, per process unless said otherwise (see the module's docstring for the formulas)."""

    parameters: int
    optimizer: str
    state_copies: int  # copies of the parameters held: weights, gradients, optimizer state, the trainer's copies
    model_bytes: int  # the parameters' copies and the buffers
    batch_size: int
    activation_bytes: int  # one training batch (or evaluation batch, when larger)
    data_bytes: int
    processes: int
    epochs: int  # the epochs to run (a resumed job's remaining ones)
    train_rows: int
    samples: int  # epochs x training rows (x 1 + synthetic ratio)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def memory_bytes(self) -> int:
        """One process's memory: model state, activations and data."""
        return self.model_bytes + self.activation_bytes + self.data_bytes

    @property
    def job_memory_bytes(self) -> int:
        """The whole job's memory: every process's."""
        return self.memory_bytes * self.processes

    def as_dict(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "model_bytes": self.model_bytes,
            "activation_bytes": self.activation_bytes,
            "data_bytes": self.data_bytes,
            "memory_bytes": self.memory_bytes,
            "processes": self.processes,
            "job_memory_bytes": self.job_memory_bytes,
            "samples": self.samples,
        }


def estimate_job(
    body: JobCreate,
    input_shape,
    train_rows: int,
    *,
    test_rows: int = 0,
    epochs: int | None = None,
) -> JobEstimate:
    """Estimate ``body`` (a validated :class:`~forgeml.server.schemas.JobCreate` whose model fits its task) on
    samples of ``input_shape`` with ``train_rows`` training rows (and ``test_rows`` test rows); ``epochs``: the
    epochs it will run (default: the request's). Allocates nothing."""
    text = body.dataset == "spam"
    costs = _walk(body.model, input_shape, text)
    parameters = sum(c.parameters for c in costs)
    buffers = sum(c.buffers for c in costs)
    opt = body.optimizer
    k = OPTIMIZER_STATE[opt.name]
    if opt.name in ("adam", "adamw") and opt.amsgrad:
        k += 1
    if opt.name in ("sgd", "rmsprop") and (opt.momentum or 0) > 0:
        k += 1
    # weights, gradients, optimizer state; the trainer's last-epoch copy, twice while it is replaced, and the
    # optimizer's state_dict() copy of its state that the replacement is made from
    copies = 2 + k + 2 * (1 + k) + k
    if body.ai is not None:
        copies += 1  # the AI trainer's best weights
    if body.processes > 1:
        copies += 1  # gradient buckets, the first broadcast
    model_bytes = VALUE_BYTES * (parameters * copies + buffers)

    values_in = math.prod(input_shape) * (2 if text else 1)  # token ids are int64
    classes_out = 3 * math.prod(body.model.output_shape(list(input_shape)))  # the loss: logits' softmax, gradient
    largest = max(c.largest for c in costs)  # no gradient flows into the data: the input is not among them
    train_values = values_in + sum(c.saved for c in costs) + classes_out + 2 * largest
    # evaluation keeps no graph: a layer's input, its temporaries and its output are alive at once
    eval_values = values_in + max(c.n_in + c.temporary + c.n_out for c in costs)
    train_activations = VALUE_BYTES * body.batch_size * train_values + STEP_OVERHEAD
    eval_activations = VALUE_BYTES * EVAL_BATCH * eval_values
    activation_bytes = max(train_activations, eval_activations)

    data_bytes = DATA_VALUE_BYTES * (train_rows + test_rows) * math.prod(input_shape)
    run_epochs = body.epochs if epochs is None else epochs
    ratio = body.ai.synthetic_data_ratio if body.ai is not None else 0.0
    samples = math.ceil(run_epochs * train_rows * (1.0 + ratio))
    return JobEstimate(
        parameters=parameters,
        optimizer=OPTIMIZER_NAMES.get(opt.name, opt.name),
        state_copies=copies,
        model_bytes=model_bytes,
        batch_size=body.batch_size,
        activation_bytes=activation_bytes,
        data_bytes=data_bytes,
        processes=body.processes,
        epochs=run_epochs,
        train_rows=train_rows,
        samples=samples,
        details={
            "evaluation": eval_activations > train_activations,
            "train_activation_bytes": train_activations,
            "eval_activation_bytes": eval_activations,
            "synthetic_ratio": ratio,
        },
    )


def dataset_size(body: JobCreate, summary: dict | None) -> tuple[int, int]:
    """(training rows, test rows) of the job's dataset: a built-in one's, or an upload's (``summary``: its
    DatasetRow.summary), split 80/20 as the worker splits it."""
    if body.dataset in BUILTIN_TRAIN_ROWS:
        return BUILTIN_TRAIN_ROWS[body.dataset], BUILTIN_TEST_ROWS[body.dataset]
    rows = int((summary or {}).get("rows") or 0)
    train = max(1, int(0.8 * rows))
    return train, max(1, rows - train)


# -- the check -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LimitExceeded:
    """One limit a job is over: the request field to change, what it needs, and the setting that raises it."""

    field: str  # "model", "batch_size" or "epochs"
    setting: str  # the ServerSettings field
    limit: int
    estimate: int
    message: str

    @property
    def variable(self) -> str:
        """The environment variable of :attr:`setting`."""
        return SETTING_VARIABLES[self.setting]


def check_job(estimate: JobEstimate, settings: ServerSettings, *, what: str = "the job") -> list[LimitExceeded]:
    """The limits of ``settings`` that ``estimate`` is over (empty: the job may run)."""
    found = []
    e = estimate
    optimizer_state = f"gradients, {e.optimizer} state" if e.state_copies > 2 else "gradients"
    copies = f"{optimizer_state} and the trainer's copies: {e.state_copies} values a parameter"
    limit = settings.max_job_parameters
    if limit and e.parameters > limit:
        found.append(
            LimitExceeded(
                "model",
                "max_job_parameters",
                limit,
                e.parameters,
                f"the model has {_count(e.parameters)} parameters ({format_bytes(e.parameters * VALUE_BYTES)} of "
                f"float32 weights, {format_bytes(e.model_bytes)} with {copies}), over this server's limit of "
                f"{_count(limit)} parameters; {SETTING_VARIABLES['max_job_parameters']} raises it",
            )
        )
    limit = settings.max_job_memory_bytes
    if limit and e.job_memory_bytes > limit:
        batch = "an evaluation batch of 256" if e.details.get("evaluation") else f"a batch of {e.batch_size}"
        parts = (
            f"{format_bytes(e.model_bytes)} for the model's {_count(e.parameters)} parameters with {copies}, "
            f"{format_bytes(e.activation_bytes)} of activations for {batch}, {format_bytes(e.data_bytes)} of data"
        )
        if e.processes > 1:
            total = (
                f"about {format_bytes(e.memory_bytes)} per process ({parts}), "
                f"{format_bytes(e.job_memory_bytes)} for its {e.processes} processes"
            )
        else:
            total = f"about {format_bytes(e.memory_bytes)} ({parts})"
        activations_dominate = e.activation_bytes > e.model_bytes and not e.details.get("evaluation")
        hint = "; a smaller batch_size needs less" if activations_dominate else ""
        found.append(
            LimitExceeded(
                "batch_size" if activations_dominate else "model",
                "max_job_memory_bytes",
                limit,
                e.job_memory_bytes,
                f"{what} needs {total}, over this server's limit of {format_bytes(limit)} "
                f"({SETTING_VARIABLES['max_job_memory_bytes']} raises it{hint})",
            )
        )
    limit = settings.max_job_samples
    if limit and e.samples > limit:
        synthetic = e.details.get("synthetic_ratio") or 0.0
        plus = f" x {1 + synthetic:g} with synthetic data" if synthetic else ""
        found.append(
            LimitExceeded(
                "epochs",
                "max_job_samples",
                limit,
                e.samples,
                f"{what} would train on {_count(e.samples)} samples ({e.epochs} epochs x {e.train_rows:,} rows{plus}), "
                f"over this server's limit of {_count(limit)}; {SETTING_VARIABLES['max_job_samples']} raises it",
            )
        )
    return found


# -- the run-time limit --------------------------------------------------------------------------------------
def _resource():
    try:
        import resource
    except ImportError:  # not on this platform (Windows): no limit
        return None
    return resource if hasattr(resource, "RLIMIT_DATA") else None


def apply_memory_limit(limit: int | None) -> bool:
    """Limit this process's data memory to ``limit`` bytes (``RLIMIT_DATA``, the soft limit: since Linux 4.7
    it counts every private writable mapping, NumPy's arrays included, but not shared libraries or address
    space merely reserved, which ``RLIMIT_AS`` counts and CuPy and thread stacks reserve by the gigabyte). An
    allocation past it fails with MemoryError instead of the kernel's OOM killer ending a process.
    ``limit`` None or 0, or no such limit on this platform: nothing is changed. Returns whether a limit
    was set. A limit above the hard limit is clamped to it."""
    resource = _resource()
    if not limit or resource is None or limit >= 1 << 62:  # past any machine's memory: no limit to set
        return False
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (int(limit), hard))
    return True


def memory_limit() -> int | None:
    """This process's data memory limit in bytes (``RLIMIT_DATA``'s soft limit), None when unlimited."""
    resource = _resource()
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_DATA)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def rank_memory_limit(processes: int) -> int | None:
    """Each rank's share of this (worker) process's memory limit, for a job on ``processes`` processes."""
    limit = memory_limit()
    return None if limit is None else max(1, limit // max(1, processes))


def out_of_memory_message(exc: BaseException | None = None, *, processes: int = 1) -> str:
    """The error of a job that ran out of memory: the worker's limit when there is one (and the setting),
    else the machine's memory."""
    limit = memory_limit()
    detail = f" ({exc})" if exc is not None and str(exc) else ""
    detail = detail if len(detail) < 300 else detail[:297] + "...)"
    if limit is None:
        return (
            "out of memory: the job needed more memory than this machine could give it"
            f"{detail}; a smaller model or batch_size needs less"
        )
    if processes > 1:
        needed = (
            f"a process of the job needed more than its share of the worker's limit: {format_bytes(limit)} of "
            f"{format_bytes(limit * processes)} for its {processes} processes"
        )
    else:
        needed = f"the job needed more than the worker's limit of {format_bytes(limit)}"
    return (
        f"out of memory: {needed} ({SETTING_VARIABLES['worker_memory_limit_bytes']} raises it; a smaller model "
        f"or batch_size needs less){detail}"
    )
