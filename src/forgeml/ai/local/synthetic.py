"""Synthetic rows from a real sample: SMOTE-style interpolation or a fitted Gaussian, per class.

Classification (labels given, model type not a regressor): each class is
generated from its own rows, in the class proportions of the sample.
``method="smote"`` picks a real row, one of its ``k`` nearest same-class
neighbours (distances on standardised features), a point at a uniform position on
the segment between them, then adds Gaussian noise of ``noise`` times each
feature's std within the class and clips to the class's observed range.
``method="gaussian"`` fits a diagonal Gaussian per class instead.

Regression (``model_type="regressor"``, or a model type that is neither a
classifier nor a regressor whose labels are continuous numbers): rows and their targets are
interpolated together (neighbours found on features and target), so each
synthetic target sits between two real targets; the Gaussian option fits a
full-covariance Gaussian over features and target, which keeps their relation.
Unlabelled data (``labels=None``) is handled like regression without a target.

Columns that hold only whole numbers in the sample (counts, one-hot flags) are
rounded after generation so they stay whole; the notes say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...specs import SyntheticSample

__all__ = ["SyntheticResult", "generate_synthetic"]

METHODS = ("smote", "gaussian")
CLASSIFIER_TYPES = ("classifier", "classification")
REGRESSION_TYPES = ("regressor", "regression")
_CHUNK = 512  # rows of a distance block: memory is _CHUNK x n floats, whatever the width


@dataclass
class SyntheticResult:
    """Generated samples and notes on what was done, dropped or assumed."""

    samples: list[SyntheticSample]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- checks
def _looks_continuous(labels) -> bool:
    """Labels that read as a regression target: all numeric, with fractional values or mostly distinct values."""
    values = np.asarray(labels, dtype=object).reshape(-1)
    if not all(isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_) for v in values):
        return False
    y = np.asarray(values, dtype=np.float64)
    y = y[np.isfinite(y)]
    if len(y) == 0:
        return False
    return bool(np.any(y != np.round(y))) or (len(y) >= 10 and len(np.unique(y)) > len(y) / 2)


def _check_arguments(model_type, target_count, method, k_neighbors, noise) -> tuple[bool, str]:
    if not isinstance(model_type, str):
        raise ValueError(f"model_type must be a string such as 'classifier' or 'regressor', got {model_type!r}")
    if isinstance(target_count, bool) or not isinstance(target_count, int | np.integer) or target_count < 0:
        raise ValueError(f"target_count must be a non-negative integer, got {target_count!r}")
    method_name = str(method).strip().lower()
    if method_name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(k_neighbors, bool) or not isinstance(k_neighbors, int | np.integer) or k_neighbors < 1:
        raise ValueError(f"k_neighbors must be a positive integer, got {k_neighbors!r}")
    if (
        isinstance(noise, bool)
        or not isinstance(noise, int | float | np.number)
        or not math.isfinite(noise)
        or noise < 0
    ):
        raise ValueError(f"noise must be a finite number >= 0 (a fraction of each feature's std), got {noise!r}")
    return model_type.strip().lower() in REGRESSION_TYPES, method_name


def _as_matrix(features) -> np.ndarray:
    try:
        x = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"features must be numeric rows (a 2-D array of numbers): {exc}") from exc
    if x.ndim != 2:
        raise ValueError(
            f"features must be a 2-D array [n_samples, n_features], got shape {list(x.shape)}"
            + ("; use features.reshape(-1, 1) for a single feature" if x.ndim == 1 else "")
        )
    if x.shape[0] == 0:
        raise ValueError("empty sample: features has no rows; synthetic data needs at least one real row to start from")
    if x.shape[1] == 0:
        raise ValueError(f"features has {x.shape[0]} rows but no columns; each row needs at least one feature")
    return x


def _python_label(value):
    """A label as a plain Python int, float or str (whole floats become ints); None when missing."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() else value
    if isinstance(value, int | str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise ValueError(f"class labels must be ints, floats or strings, got {type(value).__name__} {value!r}")


def _labels_list(labels, n: int) -> list:
    arr = np.asarray(labels, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"labels must be one label per row (1-D), got shape {list(arr.shape)}")
    if len(arr) != n:
        raise ValueError(f"labels has {len(arr)} entries but features has {n} rows; they must match one to one")
    return [_python_label(v) for v in arr]


def _describe_rows(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in rows[:10])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > 10 else "")


# ---------------------------------------------------------------------- generators
def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """``total`` split in proportion to ``counts`` (largest remainder, ties to the earlier class)."""
    raw = counts / counts.sum() * total
    out = np.floor(raw).astype(np.int64)
    short = total - int(out.sum())
    if short:
        order = np.argsort(-(raw - out), kind="stable")
        out[order[:short]] += 1
    return out


def power_of_two_scale(x: np.ndarray) -> np.ndarray:
    """Per column, a power of two that brings the column's largest magnitude into [1, 2) (1/2 for a zero column).

    Dividing by it is exact, and the column's spans, variances and distances then stay finite even for values
    near the float limit."""
    _, exponent = np.frexp(np.abs(x).max(axis=0))  # peak = m * 2**exponent with m in [0.5, 1)
    return np.ldexp(1.0, exponent - 1)


def _std(z: np.ndarray) -> np.ndarray:
    return z.std(axis=0) if len(z) > 1 else np.zeros(z.shape[1])


def _nearest(z: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """For each index in ``rows``, the indices of its ``k`` nearest other rows of ``z`` (standardised distance)."""
    scale = _std(z)
    zs = (z - z.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    sq = np.einsum("ij,ij->i", zs, zs)
    out = np.empty((len(rows), k), dtype=np.int64)
    for start in range(0, len(rows), _CHUNK):
        idx = rows[start : start + _CHUNK]
        d = sq[idx, None] + sq[None, :] - 2.0 * (zs[idx] @ zs.T)
        d[np.arange(len(idx)), idx] = np.inf  # a row is not its own neighbour
        out[start : start + len(idx)] = np.argpartition(d, k - 1, axis=1)[:, :k]
    return out


def _smote(rng, z: np.ndarray, m: int, k: int) -> np.ndarray:
    """``m`` points on segments between rows of ``z`` and one of their ``k`` nearest neighbours (no noise)."""
    base = rng.integers(0, len(z), size=m)
    uniq, inverse = np.unique(base, return_inverse=True)
    table = _nearest(z, uniq, k)
    partner = table[inverse, rng.integers(0, k, size=m)]
    gap = rng.random((m, 1))
    return z[base] + gap * (z[partner] - z[base])


def _jitter(rng, points: np.ndarray, std: np.ndarray) -> np.ndarray:
    # Always draw, so the same seed gives the same base points whatever the noise level.
    return points + rng.normal(size=points.shape) * std


def _full_gaussian(rng, z: np.ndarray, m: int) -> np.ndarray:
    mean = z.mean(axis=0)
    cov = np.atleast_2d(np.cov(z, rowvar=False, ddof=1))
    w, v = np.linalg.eigh(cov)
    w = np.clip(w, 0.0, None)
    return mean + (rng.normal(size=(m, len(mean))) * np.sqrt(w)) @ v.T


def _round_whole_columns(out: np.ndarray, whole: np.ndarray) -> np.ndarray:
    if np.any(whole):
        out[:, whole] = np.round(out[:, whole])
    return out


# ------------------------------------------------------------------------ entry point
def generate_synthetic(
    rng: np.random.Generator,
    model_type: str,
    features,
    labels,
    target_count: int,
    *,
    method: str = "smote",
    k_neighbors: int = 5,
    noise: float = 0.05,
) -> SyntheticResult:
    """See the module docstring. Raises ValueError naming what is wrong with the input."""
    regression, method = _check_arguments(model_type, target_count, method, k_neighbors, noise)
    x = _as_matrix(features)
    n_rows, n_features = x.shape
    notes: list[str] = []
    kind = model_type.strip().lower()
    if labels is not None and not regression and kind not in CLASSIFIER_TYPES and _looks_continuous(labels):
        regression = True
        notes.append(f"model_type {model_type!r} with continuous numeric labels: treated as regression targets")

    # Labels: targets for a regressor, classes otherwise, or none at all.
    y: np.ndarray | None = None
    classes: list | None = None
    keep = np.isfinite(x).all(axis=1)
    if labels is not None and regression:
        try:
            y = np.asarray(labels, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a regressor's labels must be numbers: {exc}") from exc
        if len(y) != n_rows:
            raise ValueError(f"labels has {len(y)} entries but features has {n_rows} rows; they must match one to one")
        keep &= np.isfinite(y)
    elif labels is not None:
        classes = _labels_list(labels, n_rows)
        missing = np.array([c is None for c in classes])
        if missing.any():
            keep &= ~missing
            notes.append(
                f"dropped {int(missing.sum())} rows with a missing or non-finite label (rows {_describe_rows(np.flatnonzero(missing))})"
            )
    elif not regression:
        notes.append("no labels given: rows were generated from the whole sample, without classes")

    nonfinite = ~np.isfinite(x).all(axis=1) | (~np.isfinite(y) if y is not None else False)
    if nonfinite.any():
        notes.append(
            f"dropped {int(nonfinite.sum())} of {n_rows} rows with non-finite values (rows {_describe_rows(np.flatnonzero(nonfinite))})"
        )
    if not keep.any():
        raise ValueError(f"no usable rows: all {n_rows} rows have non-finite values or missing labels")
    x = x[keep]
    y = y[keep] if y is not None else None
    if classes is not None:
        classes = [c for c, k in zip(classes, keep) if k]

    if target_count == 0:
        notes.append("target_count is 0: nothing generated")
        return SyntheticResult(samples=[], notes=notes)

    # Everything the generators work on: features, plus the target column for a regressor.
    z = x if y is None else np.column_stack([x, y])
    whole = np.all(z == np.round(z), axis=0) & (z.max(axis=0) > z.min(axis=0))
    # Work on columns scaled by a power of two to below 2 in magnitude: exact (the same samples as
    # unscaled, bit for bit), and spans, variances and distances of values near the float limit stay finite.
    scale = power_of_two_scale(z)
    z = z / scale
    global_lo, global_hi, global_std = z.min(axis=0), z.max(axis=0), _std(z)
    noise_mask = np.ones(z.shape[1])
    if y is not None:
        noise_mask[-1] = 0.0  # targets are interpolated, never jittered

    def make(group: np.ndarray, m: int, name: str) -> np.ndarray:
        if len(group) == 1:
            notes.append(
                f"{name} has a single row: its {m} samples are that row plus Gaussian noise of {noise:g} x the "
                "sample's per-feature std, clipped to the sample's range"
            )
            out = _jitter(rng, np.repeat(group, m, axis=0), noise * global_std * noise_mask)
            return np.clip(out, global_lo, global_hi)
        if method == "gaussian":
            if classes is None:
                out = _full_gaussian(rng, group, m)
            else:
                out = group.mean(axis=0) + rng.normal(size=(m, group.shape[1])) * group.std(axis=0, ddof=1)
        else:
            k = min(int(k_neighbors), len(group) - 1)
            out = _jitter(rng, _smote(rng, group, m, k), noise * _std(group) * noise_mask)
        return np.clip(out, group.min(axis=0), group.max(axis=0))

    if classes is None:
        generated = make(z, target_count, "the sample")
        out_labels: list = [None] * target_count if y is None else []
        if len(z) > 1 and method == "smote":
            k = min(int(k_neighbors), len(z) - 1)
            notes.append(
                f"SMOTE over {len(z)} rows: each sample interpolates between a real row and one of its k={k} nearest "
                f"neighbours{' (found on features and target; the target is interpolated too)' if y is not None else ''}, "
                f"plus noise of {noise:g} x each feature's std, clipped to the observed range"
            )
        elif len(z) > 1:
            notes.append(
                f"Gaussian over {len(z)} rows: mean and full covariance of the "
                f"{'features and target' if y is not None else 'features'}, samples clipped to the observed range"
            )
    else:
        order: dict = {}
        for i, c in enumerate(classes):
            order.setdefault(c, []).append(i)
        names = list(order)
        counts = np.array([len(order[c]) for c in names], dtype=np.float64)
        alloc = _allocate(counts, int(target_count))
        parts, out_labels = [], []
        for c, m in zip(names, alloc):
            if m == 0:
                continue
            parts.append(make(z[np.asarray(order[c])], int(m), f"class {c!r}"))
            out_labels.extend([c] * int(m))
        generated = np.concatenate(parts, axis=0)
        share = ", ".join(f"{c!r}: {int(n)} real -> {int(m)} new" for c, n, m in zip(names, counts, alloc))
        notes.append(f"class proportions of the sample kept ({share})")
        if method == "smote":
            notes.append(
                f"SMOTE per class: each sample interpolates between a real row and one of its k<={int(k_neighbors)} "
                f"nearest same-class neighbours, plus noise of {noise:g} x the class's per-feature std, clipped to the "
                "class's observed range"
            )
        else:
            notes.append("Gaussian per class: a diagonal Gaussian fitted to each class, samples clipped to its range")

    generated = _round_whole_columns(generated * scale, whole)
    if np.any(whole[:n_features]):
        cols = np.flatnonzero(whole[:n_features])
        notes.append(f"feature columns {_describe_rows(cols)} hold whole numbers in the sample, so they were rounded")
    if y is not None and whole[-1]:
        notes.append("targets are whole numbers in the sample, so synthetic targets were rounded")

    perm = rng.permutation(len(generated))
    samples = []
    for i in perm:
        row = generated[i]
        if y is not None:
            samples.append(SyntheticSample(features=row[:-1].tolist(), label=float(row[-1])))
        else:
            samples.append(SyntheticSample(features=row.tolist(), label=out_labels[i]))
    return SyntheticResult(samples=samples, notes=notes)
