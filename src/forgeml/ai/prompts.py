"""The instructions sent to remote models, one builder per task.

Each prompt states the role, the exact JSON to return (the schema also goes to
the API as structured output), and the data as JSON. Numbers the model returns
are checked afterwards; nothing it says is executed.
"""

from __future__ import annotations

import json
import math

from ..specs import ACTION_NAMES, DIAGNOSES, LAYER_ARGUMENTS, ModelSpec, TrainingMetrics

__all__ = ["analysis_prompt", "architecture_prompt", "repair_prompt", "research_prompt", "synthetic_prompt"]

_ACTIONS_HELP = (
    "Each recommendation's 'action' is one typed object, chosen from: "
    "{'action': 'scale_learning_rate', 'factor': f} (multiply the learning rate by f), "
    "{'action': 'set_weight_decay', 'value': v}, {'action': 'set_dropout', 'p': p}, "
    "{'action': 'set_batch_size', 'n': n}, {'action': 'enable_grad_clipping', 'max_norm': m}, "
    "{'action': 'set_label_smoothing', 'x': x}, {'action': 'early_stop'}, {'action': 'restore_best_checkpoint'}, "
    "{'action': 'switch_scheduler', 'name': one of StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR, "
    "OneCycleLR, ReduceLROnPlateau, 'params': {...}}. "
    f"Valid action names: {', '.join(ACTION_NAMES)}."
)


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


def analysis_prompt(model_description: str, metrics: TrainingMetrics) -> tuple[str, str]:
    system = (
        "You are an expert in training neural networks. Diagnose the training run from its per-epoch metrics "
        f"as exactly one of: {', '.join(DIAGNOSES)}; list the evidence (quote the numbers), and recommend "
        f"concrete changes. {_ACTIONS_HELP} Give each recommendation a short rationale and a confidence in [0, 1]. "
        "Return JSON: {'diagnosis': ..., 'evidence': [...], 'recommendations': [{'action': {...}, 'rationale': ..., "
        "'confidence': ...}]} and nothing else."
    )
    history = {name: _clean(getattr(metrics, name)) for name in type(metrics).model_fields if getattr(metrics, name)}
    user = f"Model: {model_description}\nMetrics per epoch (JSON): {_dumps(history)}"
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
