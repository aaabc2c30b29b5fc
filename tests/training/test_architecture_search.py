"""``search_architectures``: one Optuna trial per candidate spec, ranked into a leaderboard."""

import sys

import numpy as np
import pytest

import forgeml as fm
from forgeml import optim
from forgeml.data import DataLoader, TensorDataset
from forgeml.specs import ModelSpec
from forgeml.training.architecture_search import search_architectures

KEYS = {"rank", "candidate", "spec", "parameters", "val_accuracy", "val_loss", "train_loss", "epochs", "pruned"}


def _xor(n: int, seed: int) -> TensorDataset:
    """Quadrants: the class is whether the first two features share a sign (no single ReLU unit can tell)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return TensorDataset(fm.tensor(x.astype(np.float32)), fm.tensor(y))


TRAIN, VAL = _xor(512, 0), _xor(256, 1)


def _mlp(width: int) -> dict:
    return {
        "name": f"width {width}",
        "input_shape": [2],
        "layers": [
            {"type": "Linear", "args": {"in_features": 2, "out_features": width}},
            {"type": "ReLU"},
            {"type": "Linear", "args": {"in_features": width, "out_features": 2}},
        ],
    }


def _adam(model):
    return optim.Adam(model.parameters(), lr=0.03)


def test_a_capable_candidate_ranks_over_a_crippled_one():
    candidates = [ModelSpec.model_validate(_mlp(1)), _mlp(32)]
    board = search_architectures(candidates, TRAIN, VAL, epochs_each=3, make_optimizer=_adam, batch_size=32)
    assert [row["rank"] for row in board] == [1, 2]
    assert [row["candidate"] for row in board] == [1, 0]
    assert all(KEYS <= set(row) for row in board)
    best, worst = board
    assert best["val_accuracy"] > 0.85 > worst["val_accuracy"]
    assert best["parameters"] == 2 * 32 + 32 + 32 * 2 + 2 and worst["parameters"] == 2 + 1 + 2 + 2
    assert best["spec"] == ModelSpec.model_validate(_mlp(32)).model_dump()
    assert best["epochs"] == worst["epochs"] == 3
    assert not best["pruned"] and not worst["pruned"]  # two trials: both are the pruner's startup trials
    assert best["val_loss"] < worst["val_loss"] and best["train_loss"] < worst["train_loss"]


def test_the_median_pruner_stops_a_hopeless_candidate_and_ranks_it_last():
    candidates = [_mlp(32), _mlp(16), _mlp(1)]
    extras = [{"rationale": f"idea {i}", "provider": "local"} for i in range(3)]
    board = search_architectures(
        candidates, TRAIN, DataLoader(VAL, batch_size=128), epochs_each=3, make_optimizer=_adam, extras=extras
    )
    last = board[-1]
    assert last["candidate"] == 2 and last["pruned"] and last["epochs"] == 2
    assert [row["pruned"] for row in board] == [False, False, True]
    assert all(row["rationale"] == f"idea {row['candidate']}" and row["provider"] == "local" for row in board)


def test_every_candidate_is_one_trial_even_without_pruning():
    board = search_architectures(
        [_mlp(1), _mlp(4), _mlp(1)], TRAIN, VAL, epochs_each=2, make_optimizer=_adam, pruner="none", seed=5
    )
    assert sorted(row["candidate"] for row in board) == [0, 1, 2]
    assert all(row["epochs"] == 2 and not row["pruned"] for row in board)
    # candidates 0 and 2 share a spec, not a seed (seed + index): each trial is its own training run
    rows = {row["candidate"]: row for row in board}
    assert rows[0]["train_loss"] != rows[2]["train_loss"]


def test_a_diverging_candidate_is_pruned_not_fatal():
    linear = _mlp(16)
    del linear["layers"][1]  # no ReLU to die: with a huge learning rate the weights blow up to inf

    def make_optimizer(model):
        if len(model) == 2:
            return optim.SGD(model.parameters(), lr=1e6, momentum=0.9)
        return _adam(model)

    board = search_architectures([_mlp(16), linear, _mlp(32)], TRAIN, VAL, epochs_each=2, make_optimizer=make_optimizer)
    assert [row["candidate"] for row in board][-1] == 1
    diverged = board[-1]
    assert diverged["pruned"] and diverged["diverged"] and diverged["epochs"] == 1
    assert diverged["val_accuracy"] is None  # no epoch of it ended well
    assert all(not row["pruned"] and row["epochs"] == 2 for row in board[:2])  # the search went on after it


def test_bad_arguments_are_named(monkeypatch):
    with pytest.raises(ValueError, match="extras"):
        search_architectures([_mlp(2)], TRAIN, VAL, epochs_each=1, make_optimizer=_adam, extras=[{}, {}])
    with pytest.raises(ValueError, match="epochs_each"):
        search_architectures([_mlp(2)], TRAIN, VAL, epochs_each=0, make_optimizer=_adam)
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r'pip install "forgeml\[tune\]"'):
        search_architectures([_mlp(2)], TRAIN, VAL, epochs_each=1, make_optimizer=_adam)
