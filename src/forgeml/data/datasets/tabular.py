"""``CSVDataset``: a table of numbers in a CSV file, one sample per row.

``ds = CSVDataset("iris.csv", target="species")`` reads the other columns as
float32 features: ``ds[0]`` is ``(x, y)``, ``x`` of shape ``[4]`` and ``y`` an
int64 class index into ``ds.classes`` (``['setosa', 'versicolor', 'virginica']``).
"""

from __future__ import annotations

import csv
import operator
import os
from pathlib import Path

import numpy as np

from ...backend.dtypes import as_dtype, float32
from ...tensor import Tensor
from ..dataset import Dataset, _check_in_range, _overrides_getitem, batch_to_samples, index_array

__all__ = ["CSVDataset"]


def _parse_column(path, values: list[str], lines: list[int], column: str, dtype) -> np.ndarray:
    """``values`` parsed as numbers of ``dtype``; the error names the line and column of the first bad value."""
    try:
        parsed = np.asarray(values, dtype=str).astype(np.float64)
    except ValueError:
        parsed = None
    if parsed is None:  # find the culprit with Python's float(), which NumPy's parser matches
        out = np.empty(len(values), dtype=np.float64)
        for k, (value, line) in enumerate(zip(values, lines)):
            try:
                out[k] = float(value)
            except ValueError:
                what = "an empty value" if not value.strip() else f"{value!r}, which is not a number"
                raise ValueError(f"{path}, line {line}, column {column!r}: {what}") from None
        parsed = out
    np_dtype = dtype.numpy
    if np_dtype.kind in "iu":
        bad = np.flatnonzero(~np.isfinite(parsed) | (parsed != np.round(parsed)))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{path}, line {lines[k]}, column {column!r}: {values[k]!r} is not an integer")
    return parsed.astype(np_dtype)


class CSVDataset(Dataset):
    """Rows of a CSV file with a header row; items are ``(features, target)``.

    Args:
        path: the CSV file. Its first row names the columns.
        target: the name (or 0-based position) of the column to predict.
        features: the names of the feature columns, in the order wanted; default:
            every column except ``target``. Every feature value must be a number.
        dtype: the floating dtype of the features (default ``forgeml.float32``).
        target_dtype: the target's dtype. By default it is inferred: a column of
            integers gives int64, a column of other numbers gives ``dtype``, and a
            column with any value that is not a number is read as string class
            labels, mapped to int64 class indices in sorted order (``.classes``).
        delimiter, encoding: as for :func:`csv.reader` and :func:`open`.

    Attributes:
        data: the features, an array ``[N, F]`` of ``dtype``.
        targets: the targets, an array ``[N]``.
        feature_names, target_name: the columns used.
        classes: the sorted string labels when the target column holds them, else ``None``.

    Batches are built vectorised (``get_batch``): one fancy index into ``data``
    and one into ``targets``.
    """

    def __init__(
        self,
        path,
        target,
        features=None,
        dtype=float32,
        *,
        target_dtype=None,
        delimiter: str = ",",
        encoding: str = "utf-8",
    ) -> None:
        self.path = path = Path(os.fspath(path))
        self.dtype = as_dtype(dtype)
        if not self.dtype.is_floating_point:
            raise TypeError(f"CSVDataset: dtype must be a floating dtype, got {self.dtype}")
        header, rows, lines = self._read(path, delimiter, encoding)
        columns = {name: j for j, name in enumerate(header)}

        def lookup(name, role):
            if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
                if not 0 <= name < len(header):
                    raise ValueError(f"{path}: {role} column position {name} is out of range ({len(header)} columns)")
                return int(name)
            if name not in columns:
                raise ValueError(
                    f"{path}: no {role} column {name!r}; the available columns are: {', '.join(map(repr, header))}"
                )
            return columns[name]

        target_j = lookup(target, "target")
        if features is None:
            feature_js = [j for j in range(len(header)) if j != target_j]
        else:
            if isinstance(features, (str, bytes)):
                raise TypeError("CSVDataset: features must be a list of column names, not a single string")
            feature_js = [lookup(name, "feature") for name in features]
            if target_j in feature_js:
                raise ValueError(f"{path}: the target column {header[target_j]!r} is also listed among the features")
            if len(set(feature_js)) != len(feature_js):
                raise ValueError(f"{path}: a feature column is listed twice in features={list(features)}")
        self.feature_names = [header[j] for j in feature_js]
        self.target_name = header[target_j]

        x = np.empty((len(rows), len(feature_js)), dtype=self.dtype.numpy)
        for k, j in enumerate(feature_js):
            x[:, k] = _parse_column(path, [r[j] for r in rows], lines, header[j], self.dtype)
        self.data = x
        self.classes = None
        self.targets = self._parse_target(path, [r[target_j].strip() for r in rows], lines, target_dtype)

    @staticmethod
    def _read(path: Path, delimiter: str, encoding: str):
        if not path.is_file():
            raise FileNotFoundError(f"CSVDataset: no such file {path}")
        with open(path, newline="", encoding=encoding) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: the file is empty; expected a header row naming the columns")
            header = [h.strip() for h in header]
            seen = set()
            for name in header:
                if name in seen:
                    raise ValueError(f"{path}: the header names column {name!r} twice")
                seen.add(name)
            rows, lines = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(header):
                    raise ValueError(
                        f"{path}, line {reader.line_num}: {len(row)} values, but the header has {len(header)} columns"
                    )
                rows.append(row)
                lines.append(reader.line_num)
        return header, rows, lines

    def _parse_target(self, path, values: list[str], lines: list[int], target_dtype) -> np.ndarray:
        name = self.target_name
        if target_dtype is not None:
            return _parse_column(path, values, lines, name, as_dtype(target_dtype))
        strings = np.asarray(values, dtype=str)
        try:
            return strings.astype(np.int64)
        except (ValueError, OverflowError):
            pass
        try:
            return strings.astype(np.float64).astype(self.dtype.numpy)
        except ValueError:
            pass
        for value, line in zip(values, lines):
            if not value:
                raise ValueError(f"{path}, line {line}, column {name!r}: an empty target value")
        self.classes, codes = np.unique(strings, return_inverse=True)
        self.classes = self.classes.tolist()
        return codes.astype(np.int64).reshape(-1)

    @property
    def class_to_idx(self) -> dict[str, int] | None:
        return None if self.classes is None else {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        i = operator.index(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for CSVDataset of {n} rows")
        return Tensor._make(self.data[i].copy(), False, None), Tensor._make(np.array(self.targets[i]), False, None)

    def get_batch(self, indices):
        """``[features, targets]`` for ``indices``, by one fancy index each."""
        if _overrides_getitem(self, CSVDataset):
            return NotImplemented
        idx = index_array(indices)
        _check_in_range(idx, len(self), "CSVDataset")
        return [Tensor._make(self.data[idx], False, None), Tensor._make(self.targets[idx], False, None)]

    def __getitems__(self, indices) -> list:
        batch = self.get_batch(indices)
        if batch is NotImplemented:
            return [self[i] for i in indices]
        return batch_to_samples(batch)

    def __repr__(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes is not None else str(self.targets.dtype)
        return (
            f"CSVDataset({str(self.path)!r}, {len(self)} rows, features={self.feature_names}, "
            f"target={self.target_name!r} ({kind}))"
        )
