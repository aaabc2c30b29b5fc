"""Stored models as ONNX files: ``GET /v1/models/{id}/onnx`` and ``forgeml export`` share this.

A model is rebuilt from its row (:func:`~forgeml.server.predictor.load_model`) and exported with
:func:`forgeml.onnx.export` at opset :data:`OPSET`. The file holds the network alone, from what
``predict`` feeds it to the logits; the caller applies ``predict``'s preprocessing (the model's
``preprocessing``: ``(x - mean) / std`` for rows of numbers) and a softmax:

- image and tabular models: one input ``input``, float32 ``[batch, features]``;
- text models: ``ids`` (int64 ``[batch, sequence]``, the vocabulary's token ids) and ``padding_mask``
  (bool ``[batch, sequence]``, True at padding), as a :class:`~forgeml.nn.MaskedBatch` holds them;
- one output ``logits``, float32 ``[batch, classes]``.

The batch axis (and a text model's sequence axis) is dynamic. The file's metadata
(``metadata_props``) records the model id, its input kind, classes and preprocessing.

The export is cached next to the weights (``models/<id>.opset17.onnx``): a model never changes once
stored. It is written to a temporary name and renamed into place, so that a server and a
``forgeml export`` running at once never see half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path

__all__ = ["OPSET", "ExportError", "ExportUnavailable", "UnsupportedModel", "export_onnx", "onnx_path"]

OPSET = 17
EXAMPLE_BATCH = 2  # not 1: a size-1 dim could be mistaken for a broadcast one while tracing
EXAMPLE_SEQUENCE = 8


class ExportError(RuntimeError):
    """A model could not be exported."""


class UnsupportedModel(ExportError):
    """The model has an op (or a layer) that ONNX export cannot write (the route answers 409)."""


class ExportUnavailable(ExportError):
    """ONNX export is not installed on this server (the ``onnx`` extra; the route answers 503)."""


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def onnx_path(row, data_dir: Path) -> Path:
    """Where the export of model ``row`` is cached: beside its weights."""
    return (Path(data_dir) / row.weights).with_name(f"{row.id}.opset{OPSET}.onnx")


def _lock(model_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(model_id, threading.Lock())


def signature(row):
    """``(example_inputs, input_names, dynamic_axes)`` for exporting model ``row``."""
    import numpy as np

    import forgeml as fm

    if row.kind == "text":
        from forgeml.nn import MaskedBatch

        ids = np.arange(1, 1 + EXAMPLE_BATCH * EXAMPLE_SEQUENCE, dtype=np.int64).reshape(EXAMPLE_BATCH, -1) % 7 + 2
        mask = np.zeros_like(ids, dtype=bool)
        mask[1, EXAMPLE_SEQUENCE // 2 :] = True  # the second text is shorter: padding is traced too
        ids[mask] = 0
        example = (MaskedBatch(fm.from_numpy(ids), fm.from_numpy(mask)),)
        names = ["ids", "padding_mask"]
        axes = {"ids": {0: "batch", 1: "sequence"}, "padding_mask": {0: "batch", 1: "sequence"}}
    else:
        width = 784 if row.kind == "image" else int(row.extras.get("features") or row.spec["input_shape"][0])
        x = np.random.default_rng(0).standard_normal((EXAMPLE_BATCH, width)).astype(np.float32)
        example = (fm.from_numpy(x),)
        names = ["input"]
        axes = {"input": {0: "batch"}}
    axes["logits"] = {0: "batch"}
    return example, names, axes


def _metadata(row) -> dict[str, str]:
    from .predictor import preprocessing

    return {
        "forgeml.model_id": row.id,
        "forgeml.name": row.name,
        "forgeml.input": row.kind,
        "forgeml.classes": json.dumps(row.extras.get("classes")),
        "forgeml.preprocessing": json.dumps(preprocessing(row.kind, row.extras)),
    }


def _finish(path: Path, row) -> None:
    """Add the model's metadata to the exported file (and keep its IR version no newer than its opset needs,
    for runtimes a release behind, as onnxruntime-web often is)."""
    import onnx

    proto = onnx.load(str(path))
    minimum = onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    proto.ir_version = min(proto.ir_version, max(minimum, 8))
    present = {p.key for p in proto.metadata_props}
    for key, value in _metadata(row).items():
        if key not in present:
            proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def export_onnx(row, data_dir: Path) -> Path:
    """The ONNX file of model ``row`` (a ``models`` row), exported on first use and cached beside its weights.

    Raises :class:`FileNotFoundError` when the weights are missing, :class:`UnsupportedModel` when the network
    has an op ONNX export cannot write, :class:`ExportUnavailable` without the ``onnx`` extra."""
    path = onnx_path(row, data_dir)
    if path.exists():
        return path
    with _lock(row.id):  # one export per model at a time in this process; other processes rename atomically
        if path.exists():
            return path
        weights = Path(data_dir) / row.weights
        if not weights.exists():
            raise FileNotFoundError(f"the weights of model {row.id} are missing from the data directory")
        try:
            import onnx  # noqa: F401 - the extra that export needs

            from forgeml.onnx.export import export as to_onnx
        except ImportError as exc:
            raise ExportUnavailable(f'ONNX export needs the onnx extra: pip install "forgeml[onnx]" ({exc})') from None
        from .predictor import load_model

        model = load_model(row, data_dir)
        example, names, axes = signature(row)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            try:
                to_onnx(
                    model,
                    example,
                    str(tmp),
                    opset_version=OPSET,
                    input_names=names,
                    output_names=["logits"],
                    dynamic_axes=axes,
                )
            except _unsupported_errors() as exc:
                raise UnsupportedModel(f"model {row.id} cannot be exported to ONNX: {exc}") from exc
            _finish(tmp, row)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return path


def _unsupported_errors() -> tuple[type[BaseException], ...]:
    """The exceptions with which :func:`forgeml.onnx.export` says a model has something it cannot write."""
    import forgeml.onnx
    import forgeml.onnx.export

    errors: list[type[BaseException]] = [NotImplementedError]
    for module in (forgeml.onnx, sys.modules["forgeml.onnx.export"]):
        for name in ("UnsupportedOperatorError", "UnsupportedOpError", "ExportError", "OnnxExportError"):
            cls = vars(module).get(name)
            if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in errors:
                errors.append(cls)
    return tuple(errors)
