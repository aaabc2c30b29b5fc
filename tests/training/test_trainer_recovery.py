"""Trainer: divergence recovery (DivergencePolicy), best-state tracking and per-layer statistics."""

import math

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.data import DataLoader, TensorDataset
from forgeml.optim import SGD, Adam
from forgeml.optim.lr_scheduler import StepLR
from forgeml.training import (
    Callback,
    DivergencePolicy,
    EpochMetrics,
    LambdaCallback,
    Trainer,
    TrainingDivergedError,
)


def _blobs(n=240, seed=0, shift_labels=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.5]])
    x = centers[y] + rng.standard_normal((n, 2)) * 0.6
    if shift_labels:
        y = (y + 1) % 3
    return TensorDataset(fm.tensor(x.astype(np.float32)), fm.tensor(y))


def _model(dropout=False):
    fm.manual_seed(0)
    layers = [nn.Linear(2, 16), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(0.2))
    return nn.Sequential(*layers, nn.Linear(16, 3))


def _loaders(val_shuffle=False):
    return (
        DataLoader(_blobs(), batch_size=32, shuffle=True),
        DataLoader(_blobs(seed=1), batch_size=64, shuffle=val_shuffle),
    )


def _weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class _ScaledLoss:
    """Cross-entropy times ``scale``, NaN while ``poison`` says so for the trainer's current epoch."""

    def __init__(self):
        self.scale = 1.0
        self.trainer = None
        self.poison = lambda epoch: False

    def __call__(self, output, target):
        loss = nn.functional.cross_entropy(output, target) * self.scale
        if self.poison(self.trainer.epoch):
            return loss * float("nan")
        return loss


def _trainer(loss=None, policy=None, callbacks=(), lr=0.05, **kwargs):
    model = _model()
    trainer = Trainer(
        model, Adam(model.parameters(), lr=lr), loss, divergence=policy, callbacks=list(callbacks), **kwargs
    )
    if loss is not None:
        loss.trainer = trainer
    return trainer


STEPS = math.ceil(240 / 32)


# ------------------------------------------------------------------ the policy
def test_policy_validates_its_values():
    for bad in (
        {"factor": 1.0},
        {"factor": float("inf")},
        {"lr_factor": 0.0},
        {"lr_factor": 1.5},
        {"max_recoveries": -1},
        {"max_recoveries": 1.5},
        {"on_exhausted": "ignore"},
    ):
        with pytest.raises(ValueError, match="DivergencePolicy"):
            DivergencePolicy(**bad)
    with pytest.raises(TypeError, match="DivergencePolicy"):
        _trainer(policy={"factor": 4.0})


def test_nonfinite_loss_is_retried_at_a_lower_learning_rate():
    loss = _ScaledLoss()
    fired = []

    def poison(epoch):  # epoch 2's first try only
        if epoch == 2 and not fired:
            fired.append(epoch)
            return True
        return False

    loss.poison = poison
    seen = []
    trainer = _trainer(loss, DivergencePolicy(), [LambdaCallback(on_divergence=lambda t, r: seen.append(r))])
    train, val = _loaders()
    history = trainer.fit(train, val, epochs=4)
    assert [m.epoch for m in history] == [1, 2, 3, 4]
    assert all(math.isfinite(m.train_loss) for m in history)
    assert len(trainer.recoveries) == 1 and seen == trainer.recoveries
    record = trainer.recoveries[0]
    assert record["epoch"] == 2 and not record["gave_up"] and "non-finite" in record["reason"]
    assert record["lr_before"] == pytest.approx(0.05) and record["lr_after"] == pytest.approx(0.015)
    assert trainer.learning_rate == pytest.approx(0.015) and history[1].learning_rate == pytest.approx(0.015)
    assert trainer.global_step == 4 * STEPS  # the failed try's steps are undone
    assert trainer.epoch == 4


def test_recovery_lowers_the_schedulers_base_lrs_and_restores_its_state():
    loss = _ScaledLoss()
    fired = []
    loss.poison = lambda epoch: epoch == 2 and not fired and not fired.append(1)
    model = _model()
    optimizer = SGD(model.parameters(), lr=0.1)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = Trainer(
        model, optimizer, loss, scheduler=scheduler, scheduler_interval="step", divergence=DivergencePolicy()
    )
    loss.trainer = trainer
    trainer.fit(*_loaders(), epochs=2)
    assert scheduler.base_lrs == [pytest.approx(0.03)]
    assert scheduler.last_epoch == 2 * STEPS  # counts only the completed epochs' steps
    assert trainer.learning_rate == pytest.approx(0.03 * 0.5 ** (2 * STEPS))


def test_without_a_policy_a_nonfinite_loss_still_raises():
    loss = _ScaledLoss()
    loss.poison = lambda epoch: epoch == 2
    trainer = _trainer(loss)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit(*_loaders(), epochs=3)
    assert info.value.epoch == 2 and info.value.step == 1
    assert len(trainer.history) == 1 and trainer.recoveries == []


def _good_epoch_copy():
    copies = {}
    return copies, LambdaCallback(on_epoch_end=lambda t, m: copies.__setitem__(m.epoch, _weights(t.model)))


def test_exhausted_recoveries_raise_with_the_last_good_state():
    loss = _ScaledLoss()
    loss.poison = lambda epoch: epoch >= 2
    copies, keeper = _good_epoch_copy()
    trainer = _trainer(loss, DivergencePolicy(max_recoveries=2), [keeper])
    with pytest.raises(TrainingDivergedError):
        trainer.fit(*_loaders(), epochs=3)
    assert [r["gave_up"] for r in trainer.recoveries] == [False, False, True]
    assert trainer.learning_rate == pytest.approx(0.05 * 0.3**2)
    assert trainer.recoveries[-1]["lr_after"] == trainer.recoveries[-1]["lr_before"]
    assert _same_weights(_weights(trainer.model), copies[1])
    assert trainer.epoch == 1 and len(trainer.history) == 1


def test_exhausted_recoveries_can_stop_instead():
    loss = _ScaledLoss()
    loss.poison = lambda epoch: epoch >= 2
    copies, keeper = _good_epoch_copy()
    trainer = _trainer(loss, DivergencePolicy(max_recoveries=1, on_exhausted="stop"), [keeper])
    history = trainer.fit(*_loaders(), epochs=5)
    assert len(history) == 1 and trainer.stop_training
    assert [r["gave_up"] for r in trainer.recoveries] == [False, True]
    assert _same_weights(_weights(trainer.model), copies[1])


class _Blowup(Callback):
    """Multiplies every weight by 10 at the start of ``epoch`` (its first try only)."""

    def __init__(self, epoch):
        self.epoch, self.done = epoch, False

    def on_epoch_begin(self, trainer, epoch):
        if epoch == self.epoch and not self.done:
            self.done = True
            with fm.no_grad():
                for p in trainer.model.parameters():
                    p.mul_(10.0)


def test_an_exploding_train_loss_is_detected_and_recovered():
    unguarded = _trainer(callbacks=[_Blowup(3)])
    history = unguarded.fit(*_loaders(), epochs=4)
    assert history[2].train_loss > 4 * min(m.train_loss for m in history[:2])  # the jump really happens

    trainer = _trainer(policy=DivergencePolicy(), callbacks=[_Blowup(3)])
    history = trainer.fit(*_loaders(), epochs=4)
    assert [m.epoch for m in history] == [1, 2, 3, 4]
    assert len(trainer.recoveries) == 1
    assert trainer.recoveries[0]["epoch"] == 3 and "exceeded" in trainer.recoveries[0]["reason"]
    assert history[2].train_loss <= 4 * min(m.train_loss for m in history[:2])


def _scale_switch(loss, at_epoch, note):
    def on_epoch_end(trainer, metrics):
        if metrics.epoch == at_epoch:
            loss.scale = 10.0
            if note:
                trainer.note_loss_changed()

    return LambdaCallback(on_epoch_end=on_epoch_end)


def test_note_loss_changed_prevents_a_false_explosion():
    loss = _ScaledLoss()
    trainer = _trainer(loss, DivergencePolicy(max_recoveries=1, on_exhausted="stop"), [_scale_switch(loss, 2, False)])
    trainer.fit(*_loaders(), epochs=4)
    assert trainer.recoveries  # without the note, the rescaled loss looks like an explosion

    loss = _ScaledLoss()
    trainer = _trainer(loss, DivergencePolicy(max_recoveries=1, on_exhausted="stop"), [_scale_switch(loss, 2, True)])
    history = trainer.fit(*_loaders(), epochs=4)
    assert trainer.recoveries == [] and len(history) == 4
    assert trainer.loss_changed_at == [2]
    assert history[2].train_loss > 4 * history[1].train_loss


# ------------------------------------------------------------------ unchanged training
def _run(**kwargs):
    model = _model(dropout=True)
    optimizer = Adam(model.parameters(), lr=0.02)
    trainer = Trainer(model, optimizer, scheduler=StepLR(optimizer, step_size=2, gamma=0.5), **kwargs)
    train, val = _loaders(val_shuffle=True)
    history = trainer.fit(train, val, epochs=4)
    return [(m.train_loss, m.val_loss, m.train_accuracy, m.learning_rate) for m in history], _weights(model)


def test_options_do_not_change_training():
    reference, ref_weights = _run()
    again, again_weights = _run()
    assert again == reference and _same_weights(again_weights, ref_weights)
    for options in ({"divergence": DivergencePolicy()}, {"track_best": True, "layer_stats": True}):
        got, weights = _run(**options)
        assert got == reference, options
        assert _same_weights(weights, ref_weights), options


# ------------------------------------------------------------------ best state
def test_track_best_keeps_the_best_epochs_weights():
    copies, keeper = _good_epoch_copy()

    class Scramble(Callback):  # epoch 4 starts from weights with their signs flipped: a worse epoch
        def on_epoch_begin(self, trainer, epoch):
            if epoch == 4:
                with fm.no_grad():
                    for p in trainer.model.parameters():
                        p.mul_(-1.0)

    model = _model()
    trainer = Trainer(model, Adam(model.parameters(), lr=0.01), callbacks=[keeper, Scramble()], track_best=True)
    history = trainer.fit(*_loaders(), epochs=4)
    val_losses = [m.val_loss for m in history]
    best = int(np.argmin(val_losses)) + 1
    assert best != 4 and history[3].val_loss > history[best - 1].val_loss
    assert trainer.best_epoch == best and trainer.best_metric == val_losses[best - 1]
    assert _same_weights({k: v.numpy() for k, v in trainer.best_state.items()}, copies[best])
    assert not _same_weights(_weights(model), copies[best])
    assert trainer.restore_best()
    assert _same_weights(_weights(model), copies[best])


def test_track_best_records_the_untrained_model_as_epoch_zero():
    model = _model()
    initial = _weights(model)
    trainer = Trainer(model, Adam(model.parameters(), lr=0.05), track_best=True)
    wrong = DataLoader(_blobs(shift_labels=True), batch_size=32, shuffle=True)  # training makes it worse
    val = DataLoader(_blobs(seed=1), batch_size=64)
    expected = trainer.evaluate(val)["loss"]
    history = trainer.fit(wrong, val, epochs=2)
    assert all(m.val_loss > expected for m in history)
    assert trainer.best_epoch == 0 and trainer.best_metric == expected
    assert trainer.restore_best() and _same_weights(_weights(model), initial)


def test_restore_best_without_a_best_state_and_state_dict_round_trip():
    trainer = _trainer()
    assert trainer.restore_best() is False
    trainer.track_best = True
    trainer.fit(*_loaders(), epochs=2)
    state = trainer.state_dict()
    assert state["best_epoch"] == trainer.best_epoch and state["best_metric"] == trainer.best_metric
    other = _trainer()
    other.load_state_dict(state)
    assert (other.best_epoch, other.best_metric) == (trainer.best_epoch, trainer.best_metric)
    for key in ("best_epoch", "best_metric"):
        del state[key]
    other.load_state_dict(state)  # a state written before best tracking
    assert other.best_epoch is None and other.best_metric is None


# ------------------------------------------------------------------ per-layer statistics
def test_layer_stats_are_recorded_with_sane_values():
    trainer = _trainer(layer_stats=True)
    history = trainer.fit(*_loaders(), epochs=2)
    names = [name for name, _ in trainer.model.named_parameters()]
    for m in history:
        assert [row["name"] for row in m.layers] == names
        for row in m.layers:
            assert set(row) == {"name", "dims", "weight_norm", "grad_norm", "update_ratio"}
            assert row["dims"] == dict(trainer.model.named_parameters())[row["name"]].ndim
            assert 0 < row["update_ratio"] < 1 and math.isfinite(row["update_ratio"])
            assert 0 < row["grad_norm"] < math.inf and 0 < row["weight_norm"] < math.inf
        assert m.grad_norm is not None and m.grad_norm > 0
        assert m.as_dict()["layers"] == m.layers
    params = dict(trainer.model.named_parameters())
    for row in history[-1].layers:
        assert row["weight_norm"] == pytest.approx(
            float(np.linalg.norm(params[row["name"]].detach().numpy())), rel=1e-5
        )

    plain = _trainer()
    for m in plain.fit(*_loaders(), epochs=1):
        assert m.layers is None and m.grad_norm is None


def test_layer_stats_match_a_single_sgd_step():
    model = _model()
    lr = 0.1
    trainer = Trainer(model, SGD(model.parameters(), lr=lr), layer_stats=True)
    one_batch = DataLoader(_blobs(n=32), batch_size=32)  # one step per epoch: that step is sampled
    before = _weights(model)
    (metrics,) = trainer.fit(one_batch, epochs=1)
    after = _weights(model)
    total = 0.0
    for row in metrics.layers:
        step = float(np.linalg.norm(after[row["name"]] - before[row["name"]]))
        assert row["grad_norm"] * lr == pytest.approx(step, rel=1e-4)
        assert row["update_ratio"] == pytest.approx(step / float(np.linalg.norm(before[row["name"]])), rel=1e-4)
        total += row["grad_norm"] ** 2
    assert metrics.grad_norm == pytest.approx(math.sqrt(total), rel=1e-5)


def test_layer_stats_with_a_loader_of_unknown_length():
    class Stream:
        def __init__(self, loader):
            self.loader = loader

        def __iter__(self):
            return iter(self.loader)

    trainer = _trainer(layer_stats=True)
    (metrics,) = trainer.fit(Stream(_loaders()[0]), epochs=1)
    assert len(metrics.layers) == 4 and all(row["update_ratio"] > 0 for row in metrics.layers)


def test_epoch_metrics_positional_construction_still_works():
    m = EpochMetrics(1, 0.5, None, None, None, 0.1, 1.0, 100.0, None)
    assert m.layers is None and m.as_dict()["layers"] is None
