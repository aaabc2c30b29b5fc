"""Training-data samples in and synthetic samples out: parsing, capping, summarising, checking.

Whatever a model returns is data, never code: it is parsed into numbers and
each sample is checked (shape, finite values, a known label, a plausible range)
before anything uses it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..specs import RejectedSample, SyntheticSample
from .local.synthetic import power_of_two_scale

__all__ = ["DataSample", "check_synthetic", "parse_sample"]

CLASSIFIER_TYPES = ("classifier", "classification")


@dataclass
class DataSample:
    """A training-data sample as arrays: features ``[n, d]`` and labels ``[n]`` (None when unlabelled)."""

    features: np.ndarray
    labels: np.ndarray | None
    notes: list[str] = field(default_factory=list)

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def label_set(self) -> list:
        return [] if self.labels is None else sorted(set(self.labels.tolist()), key=str)


def _as_label(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_sample(model_type: str, sample, labels=None) -> DataSample:
    """Accept rows of numbers (the last column is the label for a classifier), a list of
    ``{"features": [...], "label": ...}`` objects, or features with ``labels=`` separately."""
    classifier = model_type.lower() in CLASSIFIER_TYPES
    if sample is None or (hasattr(sample, "__len__") and len(sample) == 0):
        raise ValueError("the training-data sample is empty: give at least one row")
    if isinstance(sample, (list, tuple)) and isinstance(sample[0], dict):
        try:
            rows = [[float(v) for v in item["features"]] for item in sample]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"each sample object needs a 'features' list of numbers ({exc})") from None
        found = [_as_label(item.get("label")) for item in sample]
        labels = found if any(v is not None for v in found) else labels
        features = np.asarray(rows, dtype=np.float64)
    else:
        try:
            matrix = np.asarray(sample, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the training-data sample must be rows of numbers ({exc})") from None
        if matrix.ndim == 1:
            matrix = matrix.reshape(-1, 1)
        if matrix.ndim != 2:
            raise ValueError(
                f"the training-data sample must be a table (rows of numbers), got {matrix.ndim} dimensions"
            )
        if labels is None and classifier:
            if matrix.shape[1] < 2:
                raise ValueError("a classifier sample needs at least one feature column and a label column")
            features, labels = matrix[:, :-1], [_as_label(v) for v in matrix[:, -1].tolist()]
        else:
            features = matrix
    label_array = None
    if labels is not None:
        label_array = np.asarray([_as_label(v) for v in np.asarray(labels, dtype=object).tolist()], dtype=object)
        if len(label_array) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(label_array)} labels")
    finite = np.isfinite(features).all(axis=1)
    notes = []
    if not finite.all():
        notes.append(f"dropped {int((~finite).sum())} sample rows with non-finite values")
        features = features[finite]
        label_array = label_array[finite] if label_array is not None else None
    if len(features) == 0:
        raise ValueError("no usable rows in the training-data sample (all had non-finite values)")
    return DataSample(features, label_array, notes)


def _stratified_rows(sample: DataSample, limit: int, rng) -> np.ndarray:
    n = len(sample.features)
    if sample.labels is None:
        return np.sort(rng.choice(n, size=limit, replace=False))
    chosen = []
    labels = sample.labels
    classes = sample.label_set
    for cls in classes:
        idx = np.flatnonzero(labels == cls)
        take = max(1, round(limit * len(idx) / n))
        chosen.extend(rng.choice(idx, size=min(take, len(idx)), replace=False).tolist())
    return np.sort(np.asarray(chosen[:limit] if len(chosen) > limit else chosen))


def _round(values, digits: int = 4):
    return [float(f"{v:.{digits}g}") for v in values]


def summarise_for_prompt(sample: DataSample, max_rows: int, max_bytes: int, seed: int = 0) -> tuple[dict, list[str]]:
    """What a provider sees of the sample: at most ``max_rows`` rows (stratified) within ``max_bytes``
    of JSON, plus per-class statistics when rows were cut. Returns the payload and notes on the cuts."""
    rng = np.random.default_rng(seed)
    n = len(sample.features)
    notes = list(sample.notes)
    rows = np.arange(n) if n <= max_rows else _stratified_rows(sample, max_rows, rng)

    def payload(selected):
        out = {
            "num_features": sample.num_features,
            "rows": [
                {"features": _round(sample.features[i]), "label": None if sample.labels is None else sample.labels[i]}
                for i in selected
            ],
        }
        if len(selected) < n:
            out["statistics"] = statistics(sample)
        return out

    body = payload(rows)
    while len(json.dumps(body, default=str)) > max_bytes and len(rows) > 1:
        rows = rows[: max(1, len(rows) // 2)]
        body = payload(rows)
    if len(rows) < n:
        notes.append(f"sent {len(rows)} of {n} sample rows to the provider, with per-class statistics")
    return body, notes


def statistics(sample: DataSample) -> dict:
    """Per-class (or overall) count, mean, std, min and max of each feature."""
    groups = (
        {"all": np.arange(len(sample.features))}
        if sample.labels is None
        else {str(c): np.flatnonzero(sample.labels == c) for c in sample.label_set}
    )
    out = {}
    for name, idx in groups.items():
        x = sample.features[idx]
        scale = power_of_two_scale(x)
        out[name] = {
            "count": len(idx),
            "mean": _round((x / scale).mean(axis=0) * scale),
            "std": _round((x / scale).std(axis=0) * scale),
            "min": _round(x.min(axis=0)),
            "max": _round(x.max(axis=0)),
        }
    return out


def check_synthetic(
    candidates, sample: DataSample, classifier: bool, *, margin: float = 0.5
) -> tuple[list[SyntheticSample], list[RejectedSample]]:
    """Keep the candidates that have the sample's width, finite values, a known label (classifiers)
    and features within the observed range widened by ``margin`` of its span; reject the rest with a reason."""
    low = sample.features.min(axis=0)
    high = sample.features.max(axis=0)
    with np.errstate(over="ignore"):  # a range widened past the float limit is unbounded there: inf is right
        span = np.where(high > low, high - low, np.maximum(np.abs(high), 1.0))
        lo, hi = low - margin * span, high + margin * span
    known = set(sample.label_set)
    kept, rejected = [], []
    for i, cand in enumerate(candidates):
        features = list(getattr(cand, "features", []) or [])
        label = _as_label(getattr(cand, "label", None))
        if len(features) != sample.num_features:
            rejected.append(
                RejectedSample(index=i, reason=f"has {len(features)} features, expected {sample.num_features}")
            )
            continue
        values = np.asarray(features, dtype=np.float64)
        if not np.isfinite(values).all():
            rejected.append(RejectedSample(index=i, reason="contains a non-finite value"))
            continue
        if classifier and label not in known:
            rejected.append(
                RejectedSample(
                    index=i, reason=f"label {label!r} is not one of the known labels {sorted(known, key=str)}"
                )
            )
            continue
        outside = np.flatnonzero((values < lo) | (values > hi))
        if outside.size:
            j = int(outside[0])
            rejected.append(
                RejectedSample(
                    index=i,
                    reason=f"feature {j} = {values[j]:.4g} is outside the plausible range [{lo[j]:.4g}, {hi[j]:.4g}]",
                )
            )
            continue
        if label is not None and isinstance(label, float) and not math.isfinite(label):
            rejected.append(RejectedSample(index=i, reason="the label is not finite"))
            continue
        kept.append(SyntheticSample(features=values.tolist(), label=label))
    return kept, rejected
