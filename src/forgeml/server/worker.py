"""One training job, run in a worker process: data, model, trainer, and everything persisted as it happens.

Each finished epoch writes its metrics and the AI events since the last epoch
to the database and a checkpoint (model, optimizer, history) to
``<data_dir>/jobs/<id>/checkpoint.safetensors``; a resumed job continues from
that checkpoint. A job whose ``cancel_requested`` flag is set stops at the next
epoch boundary. The finished model's weights, vocabulary and metadata become a
``models`` row, usable for prediction.

A job trains on the device it names (``device`` in its request), else on the
server's (``FORGEML_DEVICE``, resolved by the server: a GPU when there is one).
The data stay on the host; the trainer moves each batch to the device. A job
that names a device this machine lacks fails with a message that says so.
"""

from __future__ import annotations

import math
import os
import threading
import time
import traceback
from pathlib import Path

import numpy as np

__all__ = ["run_job", "select_device"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _mnist():
    import forgeml as fm
    from forgeml.data import TensorDataset
    from forgeml.data.datasets import MNIST

    def split(name):
        digits = MNIST(name, flatten=True)
        pixels = digits.data.reshape(-1, 784).astype(np.float32) / 255.0
        x = ((pixels - MNIST_MEAN) / MNIST_STD).astype(np.float32)
        return TensorDataset(fm.tensor(x), fm.tensor(digits.targets.astype(np.int64)))

    extras = {"input": "image", "mean": MNIST_MEAN, "std": MNIST_STD, "classes": [str(i) for i in range(10)]}
    return split("train"), split("test"), extras


def _spam(max_length: int):
    from forgeml.data.datasets import SpamAssassin
    from forgeml.data.text import TextClassificationDataset

    train_raw, test_raw = SpamAssassin("train"), SpamAssassin("test")
    train = TextClassificationDataset(
        train_raw.texts, train_raw.labels, min_freq=2, max_size=20_000, max_length=max_length
    )
    test = TextClassificationDataset(test_raw.texts, test_raw.labels, vocab=train.vocab, max_length=max_length)
    return train, test, {"input": "text", "classes": ["ham", "spam"], "max_length": max_length, "vocab": train.vocab}


def _csv(row, data_dir: Path):
    import forgeml as fm
    from forgeml.data import TensorDataset
    from forgeml.data.datasets import CSVDataset

    full = CSVDataset(data_dir / row.path, target=row.target)
    x = full.data.astype(np.float32)
    y = np.asarray(full.targets).astype(np.int64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    x = ((x - mean) / std).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    cut = max(1, int(0.8 * len(x)))
    train_idx, test_idx = order[:cut], order[cut:] if cut < len(x) else order[:1]
    classes = row.summary.get("classes")
    extras = {"input": "tabular", "mean": mean.tolist(), "std": std.tolist(), "classes": classes, "features": len(mean)}
    return (
        TensorDataset(fm.tensor(x[train_idx]), fm.tensor(y[train_idx])),
        TensorDataset(fm.tensor(x[test_idx]), fm.tensor(y[test_idx])),
        extras,
    )


def _optimizer(spec, params):
    from forgeml import optim

    kwargs = {"lr": spec.lr, "weight_decay": spec.weight_decay}
    if spec.name in ("sgd", "rmsprop") and spec.momentum is not None:
        kwargs["momentum"] = spec.momentum
    if spec.name in ("adam", "adamw"):
        if spec.betas is not None:
            kwargs["betas"] = spec.betas
        if spec.amsgrad is not None:
            kwargs["amsgrad"] = spec.amsgrad
    if spec.name == "sgd" and spec.nesterov:
        kwargs["nesterov"] = True
    if spec.eps is not None and spec.name != "sgd":
        kwargs["eps"] = spec.eps
    cls = {
        "sgd": optim.SGD,
        "adam": optim.Adam,
        "adamw": optim.AdamW,
        "rmsprop": optim.RMSprop,
        "adagrad": optim.Adagrad,
    }
    return cls[spec.name](params, **kwargs)


def select_device(requested: str | None, server_device: str | None = None) -> str:
    """The device a job trains on: the one its request names, else the server's (``'auto'`` when unset),
    checked against this machine (``'cpu'`` or ``'cuda:N'``). Raises
    :class:`~forgeml.server.settings.DeviceUnavailableError` for a device this machine lacks."""
    from forgeml.server.settings import resolve_device

    return resolve_device(requested or server_device or "auto")


def run_job(job_id: str, db_url: str, data_dir: str, device: str | None = None) -> str:
    """Train job ``job_id`` to completion (or cancellation) on ``device`` (the server's: ``'cpu'``,
    ``'cuda:N'`` or ``'auto'``; the job's own ``device`` wins); returns its final state. Never raises."""
    from forgeml.server.db import Database, JobRow

    db = Database(db_url)
    try:
        return _run(job_id, db, Path(data_dir), device)
    except Exception as exc:  # noqa: BLE001 - a job's failure is recorded, never lost
        with db.session() as s:
            job = s.get(JobRow, job_id)
            if job is not None:
                job.state = "failed"
                job.error = f"{type(exc).__name__}: {exc}"[:2000]
                job.finished = time.time()
        traceback.print_exc()
        return "failed"
    finally:
        db.dispose()


def _run(job_id: str, db, data_dir: Path, server_device: str | None = None) -> str:
    import forgeml as fm
    from forgeml.data import DataLoader
    from forgeml.nn import build
    from forgeml.server.db import AICallRow, AIEventRow, DatasetRow, EpochRow, JobRow, ModelRow, new_id
    from forgeml.server.observability import outcome_label
    from forgeml.server.schemas import JobCreate
    from forgeml.training import AIEnhancedTrainer, Callback, Trainer

    with db.session() as s:
        job = s.get(JobRow, job_id)
        if job is None:
            return "missing"
        request = JobCreate.model_validate(job.request)
        job.state, job.started, job.error, job.cancel_requested = "running", job.started or time.time(), None, False
        resume_from = job.checkpoint
        dataset_row = s.get(DatasetRow, request.dataset) if request.dataset not in ("mnist", "spam") else None
    device = select_device(request.device, server_device)  # before any work: an unavailable device fails the job
    fm.manual_seed(0)
    if request.dataset == "mnist":
        train, test, extras = _mnist()
    elif request.dataset == "spam":
        train, test, extras = _spam(request.max_length)
    elif dataset_row is not None:
        train, test, extras = _csv(dataset_row, data_dir)
    else:
        raise ValueError(f"unknown dataset {request.dataset!r}")

    spec = request.model.model_copy(deep=True)
    if extras["input"] == "text":  # the vocabulary decides the embedding table's size
        for layer in spec.layers:
            if layer.type in ("Embedding", "EmbeddingLayer"):
                layer.args["num_embeddings"] = len(extras["vocab"])
                break
    model = build(spec)
    optimizer = _optimizer(request.optimizer, model.parameters())
    job_dir = data_dir / "jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = job_dir / "checkpoint.safetensors"

    server_pid = os.getppid()

    class Persist(Callback):
        def __init__(self) -> None:
            self.events_saved = 0
            self.calls: list = []  # the orchestrator's audit records since the last save
            self.calls_lock = threading.Lock()

        def record_call(self, record) -> None:
            """An orchestrator listener (runs on the trainer's event loop thread)."""
            with self.calls_lock:
                self.calls.append(record)

        def on_epoch_end(self, trainer, metrics) -> None:
            if os.getppid() != server_pid:  # the server died: stop rather than write behind the next one's back
                os._exit(1)  # the pool's watchdog would end this process within a second anyway
            trainer.save_checkpoint(checkpoint)
            with db.session() as s:
                s.add(EpochRow(job_id=job_id, epoch=metrics.epoch, metrics=metrics.as_dict()))
                self.save_events(trainer, s)
                row = s.get(JobRow, job_id)
                row.epochs_done = metrics.epoch
                row.checkpoint = str(checkpoint.relative_to(data_dir))
                if metrics.val_accuracy is not None:
                    row.best_val_accuracy = max(row.best_val_accuracy or 0.0, metrics.val_accuracy)
                if row.cancel_requested:
                    trainer.stop_training = True

        def save_events(self, trainer, session) -> None:
            """AI events not stored yet (advice that arrived after the last epoch is stored when training ends)."""
            events = getattr(trainer, "events", [])
            for event in events[self.events_saved :]:
                session.add(AIEventRow(job_id=job_id, epoch=event.epoch, event=event.model_dump(mode="json")))
            self.events_saved = len(events)
            with self.calls_lock:
                calls, self.calls = self.calls, []
            for c in calls:
                session.add(
                    AICallRow(
                        job_id=job_id,
                        provider=c.provider,
                        task=c.task,
                        outcome=outcome_label(c.outcome),
                        input_tokens=c.input_tokens,
                        output_tokens=c.output_tokens,
                        cost_usd=c.cost_usd if math.isfinite(c.cost_usd) else 0.0,
                    )
                )

    persist = Persist()
    if request.ai is not None:
        trainer = AIEnhancedTrainer(
            model, optimizer, request.ai, batch_size=request.batch_size, callbacks=[persist], device=device
        )
        trainer.orchestrator.listeners.append(persist.record_call)
    else:
        trainer = Trainer(model, optimizer, callbacks=[persist], device=device)
    if resume_from and (data_dir / resume_from).exists():
        trainer.load_checkpoint(data_dir / resume_from)  # events stored before stay; new ones are appended
    remaining = request.epochs - trainer.epoch
    train_loader = DataLoader(train, batch_size=request.batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=256)
    summary = None
    if remaining > 0:
        if request.ai is not None:
            metrics = trainer.fit(train_loader, test_loader, epochs=remaining)
            summary = metrics.model_dump(mode="json", exclude={"history", "events"})
        else:
            trainer.fit(train_loader, test_loader, epochs=remaining)

    with db.session() as s:
        persist.save_events(trainer, s)
        row = s.get(JobRow, job_id)
        cancelled = row.cancel_requested and trainer.epoch < request.epochs
    if cancelled:
        with db.session() as s:
            row = s.get(JobRow, job_id)
            row.state, row.finished = "cancelled", time.time()
        return "cancelled"

    final = trainer.evaluate(test_loader)
    model_id = new_id("mdl")
    model_dir = data_dir / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = model_dir / f"{model_id}.safetensors"
    fm.save(model.state_dict(), weights)
    model_extras = {k: v for k, v in extras.items() if k != "vocab"}
    if "vocab" in extras:
        vocab_path = model_dir / f"{model_id}.vocab.json"
        extras["vocab"].save(vocab_path)
        model_extras["vocab"] = str(vocab_path.relative_to(data_dir))
    with db.session() as s:
        s.add(
            ModelRow(
                id=model_id,
                name=request.name,
                job_id=job_id,
                kind=extras["input"],
                spec=spec.model_dump(mode="json"),
                metrics={"test_loss": final["loss"], "test_accuracy": final["accuracy"], "epochs": trainer.epoch},
                weights=str(weights.relative_to(data_dir)),
                extras=model_extras,
            )
        )
        row = s.get(JobRow, job_id)
        row.state, row.finished, row.model_id = "completed", time.time(), model_id
        row.summary = {**(summary or {"final_test": final}), "device": device}
    return "completed"
