"""The learning-rate range test: it restores everything, and its suggestion trains."""

import math

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.data import DataLoader, TensorDataset
from forgeml.optim import SGD, Adam
from forgeml.training import LRRangeTest, Trainer, find_learning_rate


def _data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8))
    w = rng.standard_normal((8, 4))
    y = (x @ w + 0.3 * rng.standard_normal((n, 4))).argmax(1)
    x = (x - x.mean(0)) / x.std(0)  # standardized inputs
    return TensorDataset(fm.tensor(x.astype(np.float32)), fm.tensor(y))


def _setup(lr=1e-3, optimizer=Adam, seed_loader=3):
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4))
    trainer = Trainer(model, optimizer(model.parameters(), lr=lr))
    loader = DataLoader(_data(), batch_size=32, shuffle=True, generator=fm.Generator().manual_seed(seed_loader))
    return trainer, loader


def _weights(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _optimizer_arrays(optimizer):
    state = optimizer.state_dict()
    arrays = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            arrays[(index, key)] = np.array(value.numpy() if hasattr(value, "numpy") else value, copy=True)
    return arrays, [dict((k, v) for k, v in g.items() if k != "params") for g in state["param_groups"]]


def _history(trainer):
    return [(m.train_loss, m.train_accuracy) for m in trainer.history]


def _run(with_test: bool, epochs_before: int):
    """Train ``epochs_before`` epochs, run the range test (or not), then train 2 more epochs: each run seeds
    the global random state itself, so two runs draw the same unless the test leaves a trace."""
    trainer, loader = _setup()
    if epochs_before:
        trainer.fit(loader, epochs=epochs_before)
    if with_test:
        find_learning_rate(trainer, loader, steps=40)
    trainer.fit(loader, epochs=2)
    return _history(trainer), _weights(trainer.model)


def test_the_range_test_restores_weights_and_optimizer_state_bit_for_bit():
    trainer, loader = _setup()
    trainer.fit(loader, epochs=1)  # the optimizer has state to restore
    weights = _weights(trainer.model)
    arrays, groups = _optimizer_arrays(trainer.optimizer)
    assert arrays

    result = trainer.find_lr(loader, steps=60)
    assert isinstance(result, LRRangeTest) and len(result.lrs) > 10

    got = _weights(trainer.model)
    assert all(np.array_equal(got[k], weights[k]) for k in weights)
    got_arrays, got_groups = _optimizer_arrays(trainer.optimizer)
    assert got_arrays.keys() == arrays.keys()
    assert all(np.array_equal(got_arrays[k], arrays[k]) for k in arrays)
    assert got_groups == groups and trainer.learning_rate == 1e-3
    assert trainer.model.training


@pytest.mark.parametrize("epochs_before", [0, 1])
def test_training_after_the_range_test_is_unchanged(epochs_before):
    # the random state (global and the loader's own generator) is restored too: training goes on exactly
    # as it would have without the test, from a fresh optimizer or a used one
    history, weights = _run(True, epochs_before)
    reference, ref_weights = _run(False, epochs_before)
    assert history == reference
    assert all(np.array_equal(weights[k], ref_weights[k]) for k in weights)


def test_the_suggestion_is_sensible_and_trains():
    trainer, loader = _setup()
    result = trainer.find_lr(loader, min_lr=1e-6, max_lr=1.0, steps=100)
    lrs = np.asarray(result.lrs)
    assert lrs[0] == pytest.approx(1e-6) and np.all(np.diff(lrs) > 0)
    assert np.allclose(lrs[1:] / lrs[:-1], (1.0 / 1e-6) ** (1 / 99))  # geometric
    assert all(math.isfinite(v) for v in result.losses)
    assert 1e-4 <= result.suggested_lr <= 1e-1
    assert result.suggested_lr == pytest.approx(result.min_loss_lr / 10)
    assert result.losses[result.lrs.index(result.min_loss_lr)] == min(result.losses)
    assert 1e-6 <= result.steepest_lr <= result.min_loss_lr

    fresh, fresh_loader = _setup(lr=result.suggested_lr)
    history = fresh.fit(fresh_loader, epochs=3)
    assert history[-1].train_loss < 0.8 * history[0].train_loss


def test_a_loss_that_blows_up_stops_the_test_early():
    trainer, loader = _setup(lr=0.01, optimizer=SGD)
    result = trainer.find_lr(loader, min_lr=1e-3, max_lr=1e4, steps=100)
    assert result.stopped_early and len(result.lrs) < 100
    assert result.min_loss_lr < result.lrs[-1]
    assert trainer.learning_rate == 0.01


def test_the_loader_is_cycled_when_shorter_than_the_test():
    trainer, _ = _setup()
    short = DataLoader(_data(n=64), batch_size=32)  # two batches
    result = trainer.find_lr(short, min_lr=1e-5, max_lr=1e-3, steps=12)
    assert len(result.lrs) == 12 and not result.stopped_early


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 1}, "steps"),
        ({"steps": 10.0}, "steps"),
        ({"min_lr": 0.0}, "min_lr"),
        ({"min_lr": 1e-2, "max_lr": 1e-3}, "max_lr"),
        ({"max_lr": float("inf")}, "max_lr"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"smoothing": 1.5}, "smoothing"),
        ({"diverge_factor": 1.0}, "diverge_factor"),
    ],
)
def test_arguments_are_validated(kwargs, match):
    trainer, loader = _setup()
    with pytest.raises(ValueError, match=match):
        trainer.find_lr(loader, **kwargs)


def test_an_empty_loader_is_an_error():
    trainer, _ = _setup()
    weights = _weights(trainer.model)
    with pytest.raises(ValueError, match="no batches"):
        trainer.find_lr([], steps=5)
    assert all(np.array_equal(_weights(trainer.model)[k], weights[k]) for k in weights)
