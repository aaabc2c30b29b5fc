"""Read the hyper-parameters a free-text model description mentions (``"dropout=0.2, lr=1e-3"``).

Nothing here is required: every field is ``None`` unless the description names it
with a plausible value, and the advisor falls back to common defaults.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "ADAM_FAMILY",
    "COUPLED_L2_MIN",
    "HyperParams",
    "coupled_l2",
    "diagnosis_hint",
    "parse_hparams",
    "with_context",
]

ADAM_FAMILY = ("adam", "adamw", "nadam", "radam", "adamax")
_COUPLED_ADAM = ("adam", "nadam", "radam", "adamax")  # their weight_decay argument adds L2 to the gradient
COUPLED_L2_MIN = 1e-4  # weight decay from which coupled L2 in an Adam-family optimizer matters

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_SEP = r"\s*(?:[:=]|\bof\b|\bis\b|\bat\b)?\s*"

_PATTERNS: dict[str, re.Pattern[str]] = {
    "lr": re.compile(r"\b(?:lr|learning[_ -]?rate)" + _SEP + _NUM, re.IGNORECASE),
    "dropout": re.compile(
        r"\bdropout(?:[_ ]?(?:p|rate|prob(?:ability)?))?\s*(?:[:=(]|\bof\b)?\s*(?:p\s*=\s*)?" + _NUM, re.IGNORECASE
    ),
    "weight_decay": re.compile(r"\b(?:weight[_ -]?decay|wd|l2)" + _SEP + _NUM, re.IGNORECASE),
    "batch_size": re.compile(r"\b(?:batch[_ -]?size|bs)" + _SEP + r"(\d+)\b", re.IGNORECASE),
    "label_smoothing": re.compile(r"\blabel[_ -]?smoothing" + _SEP + _NUM, re.IGNORECASE),
    "momentum": re.compile(r"\bmomentum" + _SEP + _NUM, re.IGNORECASE),
    "max_norm": re.compile(
        r"\b(?:max[_ -]?norm|clip[_ -]?grad[_ -]?norm|grad(?:ient)?[_ -]?clip(?:ping)?(?:[_ -]?norm)?)" + _SEP + _NUM,
        re.IGNORECASE,
    ),
}
_NUM_CLASSES = (
    re.compile(r"\b(?:num[_ -]?classes|n[_ -]?classes|classes)" + _SEP + r"(\d+)\b", re.IGNORECASE),
    re.compile(r"\b(\d+)[- ](?:way|classes|class)\b", re.IGNORECASE),
)
_OPTIMIZER = re.compile(r"\b(adamw|adam|nadam|radam|adamax|sgd|rmsprop|adagrad)\b", re.IGNORECASE)

_RANGES = {
    "lr": (0.0, 10.0),
    "dropout": (0.0, 1.0),
    "weight_decay": (0.0, 1.0),
    "batch_size": (1.0, 1_000_000.0),
    "label_smoothing": (0.0, 1.0),
    "max_norm": (0.0, 1e6),
    "momentum": (0.0, 1.0),
}


@dataclass
class HyperParams:
    """What the description says; ``None`` where it says nothing usable."""

    lr: float | None = None
    dropout: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    label_smoothing: float | None = None
    max_norm: float | None = None
    num_classes: int | None = None
    optimizer: str | None = None
    momentum: float | None = None
    # known only from a TrainingContext
    decoupled_weight_decay: bool | None = None
    scheduler: str | None = None
    epochs_planned: int | None = None
    epochs_done: int = 0


_CONTEXT_FIELDS = {
    "lr": "learning_rate",
    "weight_decay": "weight_decay",
    "dropout": "dropout",
    "batch_size": "batch_size",
    "label_smoothing": "label_smoothing",
    "max_norm": "max_grad_norm",
    "num_classes": "num_classes",
    "optimizer": "optimizer",
    "decoupled_weight_decay": "decoupled_weight_decay",
    "scheduler": "scheduler",
    "epochs_planned": "epochs_planned",
    "epochs_done": "epochs_done",
}


def with_context(hp: HyperParams, context) -> HyperParams:
    """``hp`` with every fact the ``TrainingContext`` states taking precedence over the description's."""
    merged = HyperParams(**vars(hp))
    for name, source in _CONTEXT_FIELDS.items():
        value = getattr(context, source, None)
        if value is not None:
            setattr(merged, name, value)
    momentum = getattr(context, "momentum", None)  # not a declared field; a trainer may still send it
    if isinstance(momentum, int | float) and not isinstance(momentum, bool):
        merged.momentum = float(momentum)
    if merged.optimizer:
        merged.optimizer = merged.optimizer.strip().lower().rsplit(".", 1)[-1]  # "torch.optim.AdamW" -> "adamw"
    if isinstance(merged.scheduler, str) and merged.scheduler.strip().lower() in ("", "none", "constant"):
        merged.scheduler = None
    return merged


def coupled_l2(hp: HyperParams) -> bool:
    """An Adam-family optimizer whose weight decay is L2 added to the gradient (PyTorch's ``Adam(weight_decay=)``)
    rather than decoupled (AdamW): the decay is then divided by Adam's per-parameter scale."""
    return (
        (hp.optimizer or "") in _COUPLED_ADAM
        and (hp.weight_decay or 0.0) >= COUPLED_L2_MIN
        and hp.decoupled_weight_decay is not True
    )


def parse_hparams(description: str | None) -> HyperParams:
    """The hyper-parameters ``description`` mentions with values in their valid ranges."""
    hp = HyperParams()
    if not description:
        return hp
    for name, pattern in _PATTERNS.items():
        for match in pattern.finditer(description):
            try:
                value = float(match.group(1))
            except ValueError:  # pragma: no cover - the pattern only matches numbers
                continue
            lo, hi = _RANGES[name]
            inclusive_lo = name in ("dropout", "weight_decay", "label_smoothing", "batch_size", "momentum")
            if not math.isfinite(value) or value > hi or value < lo or (value == lo and not inclusive_lo):
                continue
            setattr(hp, name, int(value) if name == "batch_size" else value)
            break
    for pattern in _NUM_CLASSES:
        match = pattern.search(description)
        if match and int(match.group(1)) >= 2:
            hp.num_classes = int(match.group(1))
            break
    match = _OPTIMIZER.search(description)
    if match:
        hp.optimizer = match.group(1).lower()
    return hp


_HINTS = (
    ("diverging", re.compile(r"diverg|explod|\bnan\b|\binf\b|blow(?:s|ing)? up", re.IGNORECASE)),
    ("overfitting", re.compile(r"overfit|over-fit|memori[sz]", re.IGNORECASE)),
    ("underfitting", re.compile(r"underfit|under-fit|too simple|high bias|low capacity", re.IGNORECASE)),
    ("noisy", re.compile(r"noisy|oscillat|unstable|jitter", re.IGNORECASE)),
    ("plateau", re.compile(r"plateau|stall|stuck|not improving|no longer improv", re.IGNORECASE)),
)


def diagnosis_hint(description: str | None) -> str | None:
    """The training problem a description names ("overfitting", "plateaued", ...), if any."""
    if not description:
        return None
    for name, pattern in _HINTS:
        if pattern.search(description):
            return name
    return None
