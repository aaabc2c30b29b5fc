"""Synthetic data, mixed in only when it measurably helps: an A/B from the same state on held-out data.

:class:`SyntheticDataMixin` is the part of ``AIEnhancedTrainer`` that asks for
synthetic samples, and when they arrive trains a short stretch (a share of an
epoch) from the same state twice, on the same shuffle and dropout draws: on the
real data alone and with the samples mixed in. The samples join the training
data (never the validation data) only when validation says they helped; the
event log records both arms' figures either way.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..backend import random as _random
from ..data.dataloader import DataLoader
from ..data.dataset import ConcatDataset, TensorDataset
from ..tensor import Tensor
from .ai_context import sample_arrays
from .events import SyntheticDataStats

__all__ = ["SyntheticDataMixin"]


class SyntheticDataMixin:
    """Synthetic data for ``AIEnhancedTrainer`` (it supplies the state this reads and writes)."""

    def _use_synthetic_data(self, response, task: str = "synthetic_data") -> None:
        self.synthetic = SyntheticDataStats(
            requested=response.requested,
            accepted=response.accepted,
            rejected=response.rejected,
            provider=response.provider,
            rejection_reasons=[r.reason for r in response.rejections[:50]],
            notes=response.notes,
        )
        self._event(
            task,
            "synthetic_data",
            response.provider,
            reason=f"{response.accepted} accepted, {response.rejected} rejected of {response.requested} requested; "
            + ("to be tested against the real data alone" if response.accepted and not self._finished else "not used"),
        )
        if response.accepted and not self._finished:
            self._synthetic_candidates = response.samples  # the A/B runs at this epoch boundary

    def _synthetic_ab(self) -> None:
        """Train a short stretch from the same state with and without the synthetic samples, on the same
        shuffles and dropout draws, and mix them in only when validation says they helped."""
        samples, self._synthetic_candidates = self._synthetic_candidates, None
        if self._val_loader is None:
            self._event(
                "synthetic_data", "experiment", "trainer", reason="no validation data to test them on: not mixed in"
            )
            return
        steps = self.steps_per_epoch or 50
        steps = max(1, round(self.config.synthetic_ab_fraction * steps))
        start = self._capture()
        rng = self._rng_state()
        seed = int(_random.default_generator.numpy.integers(2**31))
        mixed = self._mixed_dataset(samples)
        self._load_rng_state(rng)  # both arms draw the same dropout masks (from before the seed was drawn)
        self._train_steps(self._train_dataset, steps, seed)
        real, real_state = self._evaluate_figures(self._val_loader), self._capture()
        self._restore(start)
        self._load_rng_state(rng)
        self._train_steps(mixed, steps, seed)
        synth = self._evaluate_figures(self._val_loader)
        helped = _better(synth, real)
        text = f"{steps} steps each from the same state: with synthetic {_figures(synth)}, real only {_figures(real)}"
        if helped:
            self._train_dataset = mixed
            self.rebuild_loader = True
            self.synthetic.mixed_in_at_epoch = self.epoch
            self.synthetic_range = (len(start["train_dataset"]), len(mixed))
            self._event("synthetic_data", "experiment", "trainer", applied=True, reason=f"{text}: mixed in")
        else:
            self._restore(real_state)
            self._event("synthetic_data", "experiment", "trainer", reason=f"{text}: no gain, not mixed in")
        self._snapshot()

    def _train_steps(self, dataset, steps: int, seed: int) -> None:
        self._extra_steps += steps
        generator = _random.Generator().manual_seed(seed)
        loader = DataLoader(
            dataset, batch_size=self.batch_size, shuffle=True, collate_fn=self._collate, generator=generator
        )
        scheduler, self.scheduler = self.scheduler, None  # the A/B does not advance the schedule
        try:
            self._train_epoch(_Limited(loader, steps), None)
        finally:
            self.scheduler = scheduler

    def _evaluate_figures(self, loader) -> dict:
        result = self.evaluate(loader)
        return {"val_loss": result["loss"], "val_accuracy": result["accuracy"]}

    async def _request_synthetic(self, dataset):
        features, labels, _ = sample_arrays(dataset, 400)
        classifier = labels is not None and labels.dtype.kind in "iu"
        target = round(self.config.synthetic_data_ratio * len(dataset))
        return await self.orchestrator.generate_synthetic_data(
            "classifier" if classifier else "regressor",
            features.tolist(),
            target,
            labels=labels.tolist() if labels is not None else None,
        )

    def _mixed_dataset(self, samples):
        """The training data with the synthetic samples added (never the validation data), tagged by position."""
        base = self._train_dataset
        x0, y0 = base[0]
        shape = tuple(x0.shape)
        xs = np.asarray([s.features for s in samples], dtype=x0._data.dtype).reshape((len(samples),) + shape)
        y_dtype = y0._data.dtype if isinstance(y0, Tensor) else np.asarray(y0).dtype
        ys = np.asarray([s.label for s in samples]).astype(y_dtype)
        device = x0.device if isinstance(x0, Tensor) else None  # the real samples' device (a CUDA dataset stays there)
        synthetic = TensorDataset(Tensor(xs).to(device), Tensor(ys).to(device))
        if isinstance(base, TensorDataset) and len(base.tensors) == 2:
            from ..ops.shape import cat

            return TensorDataset(
                cat([base.tensors[0], synthetic.tensors[0]]), cat([base.tensors[1], synthetic.tensors[1]])
            )
        return ConcatDataset([base, synthetic])

    def _mix_in(self, samples) -> None:
        """Mix ``samples`` into the training data (a decision replayed on the other ranks of a distributed run)."""
        self._train_dataset = self._mixed_dataset(samples)
        self.rebuild_loader = True


class _Limited:
    """The first ``steps`` batches of a loader (with a length, for the training loop)."""

    def __init__(self, loader, steps: int) -> None:
        self.loader, self.steps = loader, steps

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.steps)

    def __len__(self) -> int:
        try:
            return min(self.steps, len(self.loader))
        except TypeError:
            return self.steps


def _better(a: dict, b: dict) -> bool:
    """Whether validation figures ``a`` beat ``b``: higher accuracy, or (equal accuracy) lower loss."""
    if a.get("val_accuracy") is not None and b.get("val_accuracy") is not None:
        if a["val_accuracy"] != b["val_accuracy"]:
            return a["val_accuracy"] > b["val_accuracy"]
    return a["val_loss"] < b["val_loss"]


def _figures(f: dict) -> str:
    text = f"val loss {f['val_loss']:.4g}"
    return text + (f", accuracy {f['val_accuracy']:.2%}" if f.get("val_accuracy") is not None else "")
