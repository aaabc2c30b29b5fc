"""Trainer: the loop, metrics, callbacks, schedulers, checkpoints and the divergence guard."""

import math

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.data import DataLoader, TensorDataset
from forgeml.optim import SGD, Adam
from forgeml.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from forgeml.training import EarlyStopping, LambdaCallback, ModelCheckpoint, Trainer, TrainingDivergedError


def _blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.5]])
    x = centers[y] + rng.standard_normal((n, 2)) * 0.6
    return TensorDataset(fm.tensor(x.astype(np.float32)), fm.tensor(y))


def _model():
    fm.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def _loaders(shuffle=True):
    return DataLoader(_blobs(), batch_size=32, shuffle=shuffle), DataLoader(_blobs(seed=1), batch_size=64)


def test_fit_learns_and_records_history():
    model = _model()
    trainer = Trainer(model, Adam(model.parameters(), lr=0.05))
    train, val = _loaders()
    history = trainer.fit(train, val, epochs=5)
    assert [m.epoch for m in history] == [1, 2, 3, 4, 5]
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_accuracy > 0.9
    for m in history:
        assert m.learning_rate == 0.05 and m.samples_per_second > 0 and m.epoch_time > 0
        assert 0 <= m.train_accuracy <= 1 and m.val_loss is not None
    assert trainer.global_step == 5 * math.ceil(240 / 32)


def test_evaluate_matches_a_manual_computation_and_restores_mode():
    model = _model()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1))
    ds = _blobs(seed=3)
    model.train()
    result = trainer.evaluate(DataLoader(ds, batch_size=50))
    assert model.training
    x, y = ds.tensors
    with fm.no_grad():
        out = model(x)
        loss = nn.functional.cross_entropy(out, y).item()
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(float((out.numpy().argmax(1) == y.numpy()).mean()))
    assert result["samples"] == 240


def test_regression_has_no_accuracy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    ds = TensorDataset(fm.tensor(x), fm.tensor(x.sum(1, keepdims=True)))
    model = nn.Linear(3, 1)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), nn.MSELoss())
    history = trainer.fit(DataLoader(ds, batch_size=16), epochs=20)
    assert history[-1].train_accuracy is None and history[-1].train_loss < 1e-3


def test_callbacks_run_in_order():
    events = []
    cb = LambdaCallback(
        on_train_begin=lambda t: events.append("begin"),
        on_epoch_begin=lambda t, e: events.append(f"epoch{e}"),
        on_batch_end=lambda t, step, loss: events.append("batch") if step == 1 else None,
        on_epoch_end=lambda t, m: events.append(f"end{m.epoch}"),
        on_train_end=lambda t: events.append("done"),
    )
    model = _model()
    Trainer(model, SGD(model.parameters(), lr=0.1), callbacks=[cb]).fit(_loaders()[0], epochs=2)
    assert events == ["begin", "epoch1", "batch", "end1", "epoch2", "end2", "done"]
    with pytest.raises(TypeError, match="unknown callback hooks"):
        LambdaCallback(on_epoch_ending=print)


def test_early_stopping_stops_when_the_metric_stalls():
    model = _model()
    stopper = EarlyStopping(monitor="val_loss", patience=1)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.0), callbacks=[stopper])  # lr 0: nothing improves
    train, val = _loaders()
    history = trainer.fit(train, val, epochs=10)
    assert len(history) == 3 and stopper.stopped_epoch == 3
    with pytest.raises(KeyError, match="not recorded"):
        EarlyStopping(monitor="val_f1").on_epoch_end(trainer, history[-1])


def test_model_checkpoint_keeps_the_best_and_it_restores(tmp_path):
    model = _model()
    ckpt = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy", mode="max")
    trainer = Trainer(model, Adam(model.parameters(), lr=0.05), callbacks=[ckpt])
    train, val = _loaders()
    trainer.fit(train, val, epochs=3)
    assert ckpt.best_path.exists()
    best_acc = max(m.val_accuracy for m in trainer.history)
    fresh = _model()
    other = Trainer(fresh, Adam(fresh.parameters(), lr=0.05))
    other.load_checkpoint(ckpt.best_path)
    assert other.evaluate(val)["accuracy"] == pytest.approx(best_acc)
    assert len(other.history) >= 1


def test_schedulers_step_per_epoch_or_per_batch():
    model = _model()
    opt = SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, opt, scheduler=StepLR(opt, step_size=1, gamma=0.5))
    trainer.fit(_loaders()[0], epochs=3)
    assert [m.learning_rate for m in trainer.history] == [1.0, 0.5, 0.25]
    model = _model()
    opt = SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, opt, scheduler=StepLR(opt, step_size=8, gamma=0.1), scheduler_interval="step")
    trainer.fit(_loaders()[0], epochs=2)  # 8 batches per epoch
    assert trainer.history[1].learning_rate == pytest.approx(0.1)
    model = _model()
    opt = SGD(model.parameters(), lr=0.0)
    plateau = ReduceLROnPlateau(opt, patience=0, factor=0.5)
    opt.param_groups[0]["lr"] = 0.0
    trainer = Trainer(model, opt, scheduler=plateau)
    seen = []
    plateau_step = plateau.step
    plateau.step = lambda metric: (seen.append(metric), plateau_step(metric))
    train, val = _loaders()
    trainer.fit(train, val, epochs=2)
    assert seen == [m.val_loss for m in trainer.history]


def test_non_finite_loss_restores_the_last_good_epoch_and_names_the_step():
    model = _model()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1))
    good = []
    trainer.callbacks.append(
        LambdaCallback(
            on_epoch_end=lambda t, m: good.append({k: v.numpy().copy() for k, v in model.state_dict().items()})
        )
    )
    train, _ = _loaders(shuffle=False)
    trainer.fit(train, epochs=1)

    class Poisoned:
        def __len__(self):
            return len(train)

        def __iter__(self):
            for step, (x, y) in enumerate(train, 1):
                yield (x * float("nan"), y) if step == 3 else (x, y)

    with pytest.raises(TrainingDivergedError, match="epoch 2, step 3") as info:
        trainer.fit(Poisoned(), epochs=1)
    assert info.value.epoch == 2 and info.value.step == 3
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), good[-1][k])


def test_checkpoint_resume_continues_the_same_trajectory(tmp_path):
    train, val = _loaders(shuffle=False)
    model = _model()
    straight = Trainer(model, Adam(model.parameters(), lr=0.02))
    straight.fit(train, val, epochs=3)

    model = _model()
    first = Trainer(model, Adam(model.parameters(), lr=0.02))
    first.fit(train, val, epochs=2)
    first.save_checkpoint(tmp_path / "run.safetensors")
    fresh = _model()
    resumed = Trainer(fresh, Adam(fresh.parameters(), lr=0.02))
    resumed.load_checkpoint(tmp_path / "run.safetensors")
    resumed.fit(train, val, epochs=1)
    assert resumed.epoch == 3 and len(resumed.history) == 3
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), fresh.state_dict().items()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
    assert resumed.history[-1].train_loss == pytest.approx(straight.history[-1].train_loss, rel=1e-6)


def test_gradient_clipping_records_the_norm_and_bad_batches_are_rejected():
    model = _model()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), max_grad_norm=0.5)
    trainer.fit(_loaders()[0], epochs=1)
    assert trainer.history[0].grad_norm is not None and trainer.history[0].grad_norm > 0
    with pytest.raises(TypeError, match="inputs, targets"):
        trainer.fit([fm.zeros(2, 2)], epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        trainer.fit(_loaders()[0], epochs=0)


def test_progress_bar_writes_loss_and_throughput(capsys):
    pytest.importorskip("tqdm")
    model = _model()
    Trainer(model, SGD(model.parameters(), lr=0.1), progress=True).fit(_loaders()[0], epochs=1)
    err = capsys.readouterr().err
    assert "loss=" in err and "samples_s=" in err
