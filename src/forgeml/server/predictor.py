"""Trained models, loaded once and kept warm for ``predict``.

A :class:`Predictor` rebuilds a model from its stored spec and safetensors
weights, in eval mode, and turns API inputs into what the model takes: image
pixels in [0, 1] and tabular rows are normalised as in training, strings are
tokenised with the job's vocabulary into a :class:`~forgeml.nn.MaskedBatch`.

Each predictor runs on one device (the server's, ``FORGEML_DEVICE``): the
model is moved there once, each batch is prepared on the host and copied
there, and the logits come back to the host (one transfer) for the JSON.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

__all__ = ["InputError", "Predictor", "PredictorCache", "load_model", "preprocessing"]


INLINE_MULTIPLY_ADDS = 2_000_000  # about 0.1 ms of BLAS work on one core


class InputError(ValueError):
    """The inputs do not fit the model (answered with 422)."""


def load_model(row, data_dir: Path):
    """The network of a ``models`` row: rebuilt from its spec, with its trained weights, in eval mode, on the
    CPU. Predictions and ONNX export both start here."""
    import forgeml as fm
    from forgeml.nn import build
    from forgeml.specs import ModelSpec

    model = build(ModelSpec.model_validate(row.spec))
    model.load_state_dict(fm.load(Path(data_dir) / row.weights))
    return model.eval()


def preprocessing(kind: str, extras: dict) -> dict | None:
    """What ``predict`` does to an input before the network sees it, for clients that run the network
    themselves (the dashboard's in-browser inference, an exported ONNX file): rows of numbers become
    ``(x - mean) / std`` in float32; a text is tokenised (``max_length`` tokens at most)."""
    if kind == "text":
        return {"max_length": int(extras.get("max_length", 128))}
    return {"mean": extras.get("mean", 0.0), "std": extras.get("std", 1.0)}


class Predictor:
    def __init__(self, row, data_dir: Path, device: str = "cpu") -> None:
        from forgeml.backend.device import as_device

        self.model_id = row.id
        self.kind = row.kind
        self.extras = dict(row.extras)
        self.device = as_device(device)
        self.model = load_model(row, data_dir)
        if self.device.type != "cpu":
            self.model.to(self.device)  # the trained weights, copied over once
        self.parameter_count = sum(int(p.numel()) for p in self.model.parameters())
        self.vocab = None
        if self.kind == "text":
            from forgeml.data.text import Vocabulary

            self.vocab = Vocabulary.load(data_dir / self.extras["vocab"])
        self._lock = threading.Lock()  # modules hold per-call state; one forward at a time per model

    def is_cheap(self, rows: int) -> bool:
        """Whether a forward pass over ``rows`` inputs costs less than handing it to a thread (a few tenths
        of a millisecond): a dense model's multiply-adds are about its parameter count per row. On a GPU,
        never: reading the outputs back waits for the device, which must not block the event loop."""
        return self.kind != "text" and self.device.type == "cpu" and rows * self.parameter_count <= INLINE_MULTIPLY_ADDS

    def classes(self, width: int) -> list[str]:
        names = self.extras.get("classes")
        return list(names) if names and len(names) == width else [str(i) for i in range(width)]

    def _prepare(self, inputs):
        import forgeml as fm

        if self.kind == "text":
            if not all(isinstance(x, str) for x in inputs):
                raise InputError("this is a text model: send 'inputs' as a list of strings")
            from forgeml.data.text import pad_sequences
            from forgeml.nn import MaskedBatch

            max_length = int(self.extras.get("max_length", 128))
            encoded = [self.vocab.encode(text, max_length=max_length) or [self.vocab.unk_id] for text in inputs]
            ids, mask = pad_sequences(encoded, self.vocab.pad_id, max_length)
            return MaskedBatch(ids, mask)
        if any(isinstance(x, str) for x in inputs):
            raise InputError(f"this is an {self.kind} model: send 'inputs' as rows of numbers, not strings")
        rows = {len(x) for x in inputs}
        width = 784 if self.kind == "image" else int(self.extras.get("features", 0))
        if rows != {width}:
            raise InputError(f"each input row must have {width} numbers, got rows of {sorted(rows)}")
        x = np.asarray(inputs, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InputError("inputs contain NaN or infinity")
        if self.kind == "image":
            self._check_range(x)
        mean = np.asarray(self.extras.get("mean", 0.0), dtype=np.float32)
        std = np.asarray(self.extras.get("std", 1.0), dtype=np.float32)
        return fm.from_numpy(np.ascontiguousarray((x - mean) / std, dtype=np.float32))

    def _check_range(self, x: np.ndarray) -> None:
        """An image model saw pixels in [0, 1] in training (its ``input_range`` where recorded): raw 0-255
        pixels would be normalised far outside what it learned, and answer confident nonsense."""
        low, high = (float(v) for v in self.extras.get("input_range", (0.0, 1.0)))
        found_low, found_high = float(x.min()), float(x.max())
        slack = 1e-6 * max(1.0, high - low)
        if found_low < low - slack or found_high > high + slack:
            hint = "; divide 0-255 pixels by 255" if (low, high) == (0.0, 1.0) and found_high > 1.0 else ""
            raise InputError(
                f"this image model was trained on pixels in [{low:g}, {high:g}]; the inputs range from "
                f"{found_low:g} to {found_high:g}{hint}"
            )

    def predict(self, inputs, *, wait: bool = True) -> tuple[list[str], list[str], list[list[float]]] | None:
        """``(classes, predicted class per input, probabilities per input)``; with ``wait=False``, None
        instead of waiting while another request has the model (so the event loop never blocks on it)."""
        import forgeml as fm
        from forgeml.backend.device import to_host
        from forgeml.training.trainer import device_scope, move_to_device

        batch = self._prepare(inputs)
        if self.device.type != "cpu":
            batch = move_to_device(batch, self.device)
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            with fm.no_grad(), device_scope(self.device):  # a thread of the pool: make the model's GPU current
                logits = self.model(batch)
        finally:
            self._lock.release()
        z = np.asarray(to_host(logits._data), dtype=np.float64)  # one transfer back from a GPU
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        classes = self.classes(p.shape[1])
        return classes, [classes[i] for i in p.argmax(axis=1)], np.round(p, 6).tolist()


class PredictorCache:
    """The ``capacity`` most recently used models, built on first use."""

    def __init__(self, data_dir: Path, capacity: int = 8, device: str = "cpu") -> None:
        self.data_dir, self.capacity, self.device = Path(data_dir), capacity, device
        self._items: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, model_id: str) -> Predictor | None:
        """The loaded predictor for ``model_id``, or None (a model never changes once stored)."""
        with self._lock:
            predictor = self._items.get(model_id)
            if predictor is not None:
                self._items.move_to_end(model_id)
            return predictor

    def predict_inline(self, model_id: str, inputs):
        """``Predictor.predict`` here and now for a loaded model cheap for ``inputs``; None when the model is not
        loaded, the batch is not cheap, or another request has the model (the caller then waits off the loop)."""
        loaded = self.cached(model_id)
        if loaded is None or not loaded.is_cheap(len(inputs)):
            return None
        return loaded.predict(inputs, wait=False)

    def get(self, row) -> Predictor:
        with self._lock:
            predictor = self._items.get(row.id)
            if predictor is not None:
                self._items.move_to_end(row.id)
                return predictor
        predictor = Predictor(row, self.data_dir, self.device)
        with self._lock:
            self._items[row.id] = predictor
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return predictor
