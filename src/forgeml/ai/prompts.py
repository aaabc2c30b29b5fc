"""The instructions sent to remote models, one builder per task.

Each prompt states the role, the exact JSON to return (the schema also goes to
the API as structured output), and the data as JSON. Numbers the model returns
are checked afterwards; nothing it says is executed.
"""

from __future__ import annotations

import json
import math
from types import UnionType
from typing import Literal, Union, get_args, get_origin

from ..specs import ACTION_NAMES, DIAGNOSES, LAYER_ARGUMENTS, Action, ModelSpec, TrainingContext, TrainingMetrics

__all__ = ["analysis_prompt", "architecture_prompt", "repair_prompt", "research_prompt", "synthetic_prompt"]

# What each action does, in words; its fields (names, ranges, defaults) are read from the specs themselves.
_ACTION_MEANING = {
    "scale_learning_rate": "multiply the learning rate by factor",
    "set_weight_decay": "set the optimizer's weight decay",
    "set_dropout": "set every dropout layer's probability",
    "set_batch_size": "change the batch size; lr_scaling also scales the learning rate with it "
    "(linear for SGD, sqrt for the Adam family)",
    "enable_grad_clipping": "clip the global gradient norm at max_norm",
    "set_label_smoothing": "set the cross-entropy's label smoothing",
    "early_stop": "stop training now",
    "restore_best_checkpoint": "go back to the weights of the best epoch",
    "switch_scheduler": "replace the learning-rate scheduler (params are its constructor's arguments)",
    "switch_optimizer": "change the optimizer's class keeping its hyper-parameters (and, with keep_state, its "
    "moment estimates), e.g. adam with coupled L2 decay -> adamw",
    "standardize_inputs": "standardise the inputs to zero mean and unit variance (mean/std measured on the "
    "training data when left out)",
    "set_lr_schedule": "a schedule over the remaining epochs from the current learning rate",
    "find_learning_rate": "a learning-rate range test, then the rate set a decade below the loss's minimum",
}


def _field_help(name: str, info) -> str:
    """One field of an action, e.g. ``'kind': one of cosine, warmup_cosine`` or ``'factor': number (> 0, <= 100)``."""
    annotation = info.annotation
    types = (
        [t for t in get_args(annotation) if t is not type(None)]
        if get_origin(annotation) in (Union, UnionType)
        else [annotation]
    )
    if len(types) == 1 and get_origin(types[0]) is Literal:
        text = f"'{name}': one of {', '.join(map(str, get_args(types[0])))}"
    else:
        kind = {float: "number", int: "integer", bool: "true/false"}.get(types[0], "object")
        text = f"'{name}': {kind}"
    notes = [
        f"{op} {getattr(bound, attr)}"
        for bound in info.metadata
        for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
        if getattr(bound, attr, None) is not None
    ]
    if not info.is_required():
        default = info.get_default(call_default_factory=True)
        notes.append(f"default {json.dumps(default)}" if default is not None else "optional")
    return text + (f" ({', '.join(notes)})" if notes else "")


def _actions_help() -> str:
    """Every action in :data:`ACTION_NAMES`, with its fields and what it does, read from the ``Action`` union."""
    classes = {cls.model_fields["action"].default: cls for cls in get_args(get_args(Action)[0])}
    items = []
    for name in ACTION_NAMES:
        fields = [_field_help(f, info) for f, info in classes[name].model_fields.items() if f != "action"]
        body = ", ".join([f"'action': '{name}'", *fields])
        meaning = _ACTION_MEANING.get(name)
        items.append(f"{{{body}}}" + (f" ({meaning})" if meaning else ""))
    return "Each recommendation's 'action' is one typed object, chosen from: " + "; ".join(items) + "."


_ACTIONS_HELP = _actions_help()


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)


def _clean(values):
    """NaN and inf as strings, so the JSON stays valid and the model still sees them."""
    out = []
    for v in values:
        if v is None:
            out.append(None)
        elif isinstance(v, float) and not math.isfinite(v):
            out.append("NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity"))
        else:
            out.append(round(float(v), 6))
    return out


def synthetic_prompt(model_type: str, data: dict, count: int, labels: list) -> tuple[str, str]:
    system = (
        "You generate synthetic training data for a machine-learning model. Study the sample rows and statistics, "
        "then produce new, realistic rows that follow the same per-class distributions without copying rows. "
        "Return JSON: {'samples': [{'features': [numbers...], 'label': ...}, ...]} and nothing else."
    )
    label_rule = (
        f"Every label must be one of {labels}; keep the classes in the sample's proportions."
        if labels
        else "Use 'label': null for unlabelled data (or the target value for a regressor)."
    )
    user = (
        f"Model type: {model_type}. Each row has exactly {data['num_features']} features. {label_rule} "
        f"Produce exactly {count} new samples.\nSample (JSON): {_dumps(data)}"
    )
    return system, user


_READING_CONTEXT = (
    "The run's training context (JSON) tells you how it is configured and what was already tried; read it so: "
    "'layers' gives each parameter tensor's update_ratio (||step|| / ||weight|| per step): around 1e-3 is healthy "
    "for Adam, above 1e-2 the steps are too large, below 1e-4 too small; name the layers when they differ. "
    "'decoupled_weight_decay': false with an Adam optimizer and weight_decay > 0 means coupled L2 decay, which "
    "adaptive steps weaken: suggest switch_optimizer to adamw with keep_state true. 'inputs' are statistics of the "
    "training inputs: a mean far from 0 or a std far from 1 (and not 'integer' or 'standardized') means "
    "un-standardised inputs: suggest standardize_inputs. 'changes' are the changes already made with their "
    "verdicts: never propose again a change that was 'reverted', and do not change a setting whose change is "
    "still 'on_trial' (its effect is not measured yet). 'loss_changed_at' lists epochs after which the loss's "
    "definition changed (label smoothing switched on raises the loss): a jump in the loss right after one of them "
    "is not divergence. A configuration error the context shows (like coupled decay with Adam, or raw inputs) is "
    "the diagnosis 'misconfigured'. "
)
_ONE_HYPOTHESIS = (
    "Propose at most two changes, ranked, the most promising first: one hypothesis at a time, so the effect of "
    "each change can be measured before the next."
)


def _compact(value):
    """``value`` (a ``model_dump``) without nulls and empties, with NaN and inf as strings."""
    if isinstance(value, dict):
        items = ((k, _compact(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not None and v not in ([], {}, "")}
    if isinstance(value, list | tuple):
        return [_compact(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return _clean([value])[0]
    return value


def analysis_prompt(
    model_description: str, metrics: TrainingMetrics, context: TrainingContext | None = None
) -> tuple[str, str]:
    """The system and user messages that ask a model to diagnose a run from its ``metrics`` and, when given,
    its ``context`` (sent as JSON without nulls or empties, with instructions on how to read it)."""
    system = (
        "You are an expert in training neural networks. Diagnose the training run from its per-epoch metrics "
        f"as exactly one of: {', '.join(DIAGNOSES)}; list the evidence (quote the numbers), and recommend "
        f"concrete changes. {_ACTIONS_HELP} {_READING_CONTEXT if context is not None else ''}{_ONE_HYPOTHESIS} "
        "Give each recommendation a short rationale and a confidence in [0, 1]. "
        "Return JSON: {'diagnosis': ..., 'evidence': [...], 'recommendations': [{'action': {...}, 'rationale': ..., "
        "'confidence': ...}]} and nothing else."
    )
    history = {name: _clean(getattr(metrics, name)) for name in type(metrics).model_fields if getattr(metrics, name)}
    user = f"Model: {model_description}\nMetrics per epoch (JSON): {_dumps(history)}"
    if context is not None:
        user += f"\nTraining context (JSON): {_dumps(_compact(context.model_dump()))}"
    return system, user


def research_prompt(domain: str, recency: str, question: str | None, diagnosis: str | None) -> tuple[str, str]:
    system = (
        "You are a machine-learning research assistant. Find techniques from recent and established research that "
        "help with the situation described, each with a summary, the situation it applies to, an optional typed "
        f"action, and citations (title, url or arXiv id, year). {_ACTIONS_HELP} "
        "Return JSON: {'insights': [{'technique': ..., 'summary': ..., 'applies_when': ..., 'action': {...} or null, "
        "'citations': [{'title': ..., 'url': ..., 'arxiv_id': ..., 'year': ...}]}]} and nothing else."
    )
    parts = [f"Domain: {domain}.", f"Prefer work from the last {recency}, plus the established methods it builds on."]
    if diagnosis:
        parts.append(f"The current training run is diagnosed as: {diagnosis}.")
    if question:
        parts.append(f"Question: {question}")
    return system, " ".join(parts)


def architecture_prompt(model_description: str, current: ModelSpec | None, input_size, num_classes: int, k: int):
    layers = ", ".join(f"{name}({', '.join(sorted(args))})" for name, args in sorted(LAYER_ARGUMENTS.items()))
    system = (
        "You design neural-network architectures as declarative layer lists run in sequence. Use only these layer "
        f"types and arguments: {layers}. Propose architectures likely to train better than the current one. "
        "Return JSON: {'candidates': [{'spec': {'layers': [{'type': ..., 'args': {...}}, ...]}, 'rationale': ...}]} "
        "and nothing else."
    )
    current_text = current.model_dump_json(exclude_none=True) if current is not None else "none given"
    user = (
        f"Task: inputs of shape {input_size} (one sample, no batch dim), {num_classes} output classes; the last layer "
        f"must output {num_classes} values. Model description: {model_description}. Current spec: {current_text}. "
        f"Propose {k} distinct candidates."
    )
    return system, user


def repair_prompt(error: str) -> str:
    return (
        "Your previous reply could not be used: "
        f"{error[:2000]}\nReply again with one corrected JSON object that matches the schema, and nothing else."
    )
