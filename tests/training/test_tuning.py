"""``forgeml.training.tuning.tune``: Optuna search under an epoch budget, on a tiny separable 2-class problem."""

import math
import sys

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.data import DataLoader, TensorDataset
from forgeml.training import Trainer
from forgeml.training.tuning import SearchSpace, TuneResult, tune


def _data(n: int, seed: int) -> TensorDataset:
    """Two Gaussian blobs, apart along the first of 4 features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)) + (2.0 * y[:, None] - 1.0) * np.array([1.5, 0.0, 0.0, 0.0])
    return TensorDataset(fm.tensor(x.astype(np.float32)), fm.tensor(y.astype(np.int64)))


TRAIN, VAL = _data(256, 0), _data(128, 1)
SMALL = SearchSpace(batch_sizes=(16, 32))


def _build(params: dict) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(params["dropout"]), nn.Linear(16, 2))


def test_respects_the_epoch_budget_and_cuts_the_last_trial_short():
    result = tune(_build, TRAIN, VAL, epochs_per_trial=3, epoch_budget=10, space=SMALL, pruner="none")
    assert isinstance(result, TuneResult)
    epochs = [t["epochs"] for t in result.trials]
    assert result.epochs_used == sum(epochs) == 10
    assert epochs == [3, 3, 3, 1]  # without pruning: three full trials, the fourth cut to the one epoch left
    assert [t["number"] for t in result.trials] == [0, 1, 2, 3]
    assert len(result.study.trials) == 4
    assert result.metric == "val_accuracy" and result.direction == "maximize"
    complete = [t for t in result.trials if t["state"] == "complete"]
    assert result.best_value == max(t["value"] for t in complete)
    assert result.trials[result.best_trial]["params"] == result.best_params
    assert result.best_value > 0.85  # the blobs separate well: the best trial must have learned them


def test_pruned_trials_count_the_epochs_they_ran():
    result = tune(_build, TRAIN, VAL, epochs_per_trial=3, epoch_budget=20, space=SMALL)
    assert result.epochs_used == sum(t["epochs"] for t in result.trials) <= 20
    assert result.epochs_used == 20  # every epoch of the budget fits one more epoch until it is spent


def test_same_seed_same_search():
    first = tune(_build, TRAIN, VAL, epochs_per_trial=2, epoch_budget=6, space=SMALL, seed=3)
    second = tune(_build, TRAIN, VAL, epochs_per_trial=2, epoch_budget=6, space=SMALL, seed=3)
    other = tune(_build, TRAIN, VAL, epochs_per_trial=2, epoch_budget=6, space=SMALL, seed=4)
    assert first.best_params == second.best_params
    assert [t["value"] for t in first.trials] == [t["value"] for t in second.trials]
    assert first.trials[0]["params"] != other.trials[0]["params"]


def test_build_best_reproduces_the_best_value():
    result = tune(_build, TRAIN, VAL, epochs_per_trial=2, epoch_budget=6, space=SMALL)
    model = result.build_best()
    assert all(isinstance(v, fm.Tensor) for v in result.best_state.values())
    measured = Trainer(model, fm.optim.SGD(model.parameters(), lr=0.1)).evaluate(DataLoader(VAL, batch_size=64))
    assert measured["accuracy"] == pytest.approx(result.best_value)
    # the state is a copy: training the rebuilt model does not change it
    before = {k: v.numpy().copy() for k, v in result.best_state.items()}
    Trainer(model, fm.optim.SGD(model.parameters(), lr=0.5)).fit(DataLoader(TRAIN, batch_size=32), epochs=1)
    assert all(np.array_equal(before[k], v.numpy()) for k, v in result.best_state.items())


def test_val_loss_metric_is_minimized():
    result = tune(
        _build,
        TRAIN,
        DataLoader(VAL, batch_size=64),
        epochs_per_trial=2,
        epoch_budget=6,
        space=SMALL,
        metric="val_loss",
    )
    assert result.direction == "minimize"
    complete = [t["value"] for t in result.trials if t["state"] == "complete"]
    assert result.best_value == min(complete)
    assert result.study.best_value == pytest.approx(result.best_value)


def test_fixed_params_stay_fixed_and_reach_build_model():
    seen = []

    def build(params):
        seen.append(dict(params))
        return _build(params)

    space = SearchSpace(batch_sizes=(16, 32, 64))
    result = tune(
        build, TRAIN, VAL, epochs_per_trial=1, epoch_budget=5, space=space, fixed={"batch_size": 32, "width": 16}
    )
    assert len(seen) == 5
    assert all(p["batch_size"] == 32 and p["width"] == 16 for p in seen)
    assert all("batch_size" not in t.params for t in result.study.trials)  # not searched at all
    assert len({p["lr"] for p in seen}) == 5  # the rest is still searched
    assert result.best_params["batch_size"] == 32


def test_a_field_set_to_none_leaves_the_search():
    space = SearchSpace(optimizers=None, dropout=None, batch_sizes=(32,))
    result = tune(_build, TRAIN, VAL, epochs_per_trial=1, epoch_budget=3, space=space)
    assert all(t["params"]["optimizer"] == "adam" and t["params"]["dropout"] == 0.0 for t in result.trials)
    assert all(set(t.params) == {"lr", "weight_decay", "batch_size"} for t in result.study.trials)


def test_median_pruner_stops_hopeless_trials_early():
    # learning rates up to 20 with SGD: many trials fall behind (or blow up) after the warm-up epoch
    space = SearchSpace(lr=(1e-3, 20.0), optimizers=("sgd", "adam"), batch_sizes=(16, 32))
    result = tune(_build, TRAIN, VAL, epochs_per_trial=3, epoch_budget=30, space=space)
    by_pruner = [t for t in result.trials if t["state"] == "pruned" and not t["diverged"]]
    assert by_pruner, "the median pruner stopped no trial"
    assert all(t["epochs"] == 2 for t in by_pruner)  # after the warm-up epoch, before the last
    assert len(result.trials) > 10  # pruned epochs went to more trials
    assert result.epochs_used == 30


def test_divergence_ends_the_trial_not_the_search():
    space = SearchSpace(lr=(0.1, 100.0), optimizers=("sgd",), batch_sizes=(16,))
    result = tune(_build, TRAIN, VAL, epochs_per_trial=2, epoch_budget=20, space=space, pruner="none")
    diverged = [t for t in result.trials if t["diverged"]]
    assert diverged, "no trial diverged: the lr range is meant to blow some up"
    assert all(t["state"] == "pruned" and t["value"] == 0.0 for t in diverged)  # the worst accuracy
    later = [t for t in result.trials if t["number"] > diverged[0]["number"]]
    assert any(t["state"] == "complete" for t in later)  # the search went on, and trained after it
    assert result.epochs_used == 20
    assert not result.trials[result.best_trial]["diverged"]
    assert all(math.isfinite(v.numpy().sum()) for v in result.best_state.values())
    assert result.to_dict()["trials"][diverged[0]["number"]]["value"] == 0.0


def test_divergence_on_val_loss_reports_no_value_in_json():
    space = SearchSpace(lr=(20.0, 100.0), optimizers=("sgd",), batch_sizes=(16,))
    result = tune(_build, TRAIN, VAL, epochs_per_trial=2, epoch_budget=4, space=space, metric="val_loss")
    assert all(t["diverged"] and t["value"] == math.inf for t in result.trials)
    assert all(t["value"] is None for t in result.to_dict()["trials"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="epoch_budget"):
        tune(_build, TRAIN, VAL, epochs_per_trial=1, epoch_budget=0)
    with pytest.raises(ValueError, match="metric"):
        tune(_build, TRAIN, VAL, epochs_per_trial=1, epoch_budget=1, metric="accuracy")
    with pytest.raises(ValueError, match="pruner"):
        tune(_build, TRAIN, VAL, epochs_per_trial=1, epoch_budget=1, pruner="hyperband")
    with pytest.raises(ValueError, match="optimizers"):
        SearchSpace(optimizers=("lion",))
    with pytest.raises(ValueError, match="lr"):
        SearchSpace(lr=(0.0, 1.0))


def test_without_optuna_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "forgeml\[tune\]"'):
        tune(_build, TRAIN, VAL, epochs_per_trial=1, epoch_budget=1)
