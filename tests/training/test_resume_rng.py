"""A resumed run continues the uninterrupted run's trajectory exactly: the checkpoint holds every generator's state.

Both runs train an MLP with Dropout on a shuffling DataLoader, so the shuffle order and the dropout masks of
each epoch come from the random state; a checkpoint without it would replay epoch 1's draws after a resume.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.data import DataLoader, TensorDataset
from forgeml.optim import Adam
from forgeml.training import Trainer

EPOCHS, SPLIT = 4, 2


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, :2].sum(1) > 0).astype(np.int64)
    return TensorDataset(fm.tensor(x), fm.tensor(y))


def _setup(own_generator: bool):
    """Model, trainer and loaders, built the way a job builds them: seed, then the model, then the loaders."""
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
    trainer = Trainer(model, Adam(model.parameters(), lr=0.01))
    generator = fm.Generator().manual_seed(5) if own_generator else None
    train = DataLoader(_data(), batch_size=16, shuffle=True, generator=generator)
    val = DataLoader(_data(60, seed=1), batch_size=32)
    return trainer, train, val


def _outcome(trainer):
    losses = [m.train_loss for m in trainer.history]
    weights = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}
    return losses, weights


def _scramble():
    """Leave the global random state nowhere near the checkpoint's, as a new process would."""
    fm.manual_seed(123)
    fm.rand(17)
    fm.randn(3, 5)


def _resume(path, own_generator: bool, epochs: int):
    """A fresh model, optimizer, trainer and loaders that resume from ``path`` and train ``epochs`` more."""
    trainer, train, val = _setup(own_generator)
    _scramble()
    if own_generator:
        train.generator.manual_seed(999)  # the new loader's generator starts somewhere else too
    trainer.load_checkpoint(path)
    trainer.fit(train, val, epochs=epochs)
    return trainer


def _uninterrupted(own_generator: bool):
    trainer, train, val = _setup(own_generator)
    trainer.fit(train, val, epochs=EPOCHS)
    return _outcome(trainer)


def _interrupted(tmp_path, own_generator: bool):
    trainer, train, val = _setup(own_generator)
    trainer.fit(train, val, epochs=SPLIT)
    path = tmp_path / "run.safetensors"
    trainer.save_checkpoint(path)
    return path


def _assert_same(expected, got):
    exp_losses, exp_weights = expected
    losses, weights = got
    assert losses == exp_losses  # bitwise, epoch by epoch
    assert weights.keys() == exp_weights.keys()
    for name in exp_weights:
        np.testing.assert_array_equal(weights[name], exp_weights[name], err_msg=name)


@pytest.mark.parametrize("own_generator", [False, True], ids=["default_generator", "loader_generator"])
def test_resume_in_the_same_process_matches_the_uninterrupted_run(tmp_path, own_generator):
    expected = _uninterrupted(own_generator)
    assert len(set(expected[0])) == EPOCHS
    path = _interrupted(tmp_path, own_generator)
    resumed = _resume(path, own_generator, EPOCHS - SPLIT)
    assert resumed.epoch == EPOCHS
    _assert_same(expected, _outcome(resumed))


_CHILD = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("resume_rng_child", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
trainer = mod._resume(sys.argv[2], sys.argv[3] == "1", mod.EPOCHS - mod.SPLIT)
losses, weights = mod._outcome(trainer)
np.savez(sys.argv[4], losses=np.array(losses, dtype=np.float64), **{"w_" + k: v for k, v in weights.items()})
"""


@pytest.mark.parametrize("own_generator", [False, True], ids=["default_generator", "loader_generator"])
def test_resume_in_a_new_process_matches_the_uninterrupted_run(tmp_path, own_generator):
    """The killed-and-restarted job: the checkpoint is all the new process has."""
    expected = _uninterrupted(own_generator)
    path = _interrupted(tmp_path, own_generator)
    out = tmp_path / "child.npz"
    src = Path(fm.__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-c", _CHILD, __file__, str(path), "1" if own_generator else "0", str(out)],
        check=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(src)},
        timeout=120,
    )
    with np.load(out) as saved:
        losses = saved["losses"].tolist()
        weights = {k[2:]: saved[k] for k in saved.files if k.startswith("w_")}
    _assert_same(expected, (losses, weights))


def test_checkpoint_holds_every_generator_state_and_restores_it(tmp_path):
    trainer, train, val = _setup(own_generator=True)
    trainer.fit(train, val, epochs=1)
    rng = trainer.state_dict()["rng"]
    assert rng["cpu"] == fm.get_rng_state()
    assert rng["loader"] == [train.generator.get_state()]
    trainer.save_checkpoint(tmp_path / "a.safetensors")

    other, other_train, _ = _setup(own_generator=True)
    _scramble()
    other.load_checkpoint(tmp_path / "a.safetensors")
    assert fm.get_rng_state() == rng["cpu"]
    # the loader is not known until an epoch runs on it; until then the checkpoint's state is carried over
    assert other.state_dict()["rng"]["loader"] == rng["loader"]
    other._run_epoch(other_train, None)
    assert other._pending_loader_rng is None


def test_a_checkpoint_without_random_state_still_loads(tmp_path):
    trainer, train, _ = _setup(own_generator=False)
    trainer.fit(train, epochs=1)
    state = trainer.state_dict()
    del state["rng"]
    fm.save(state, tmp_path / "old.safetensors")
    before = fm.get_rng_state()
    other, _, _ = _setup(own_generator=False)
    other.load_checkpoint(tmp_path / "old.safetensors")
    assert other.epoch == 1 and fm.get_rng_state() != before


def test_a_malformed_random_state_is_refused():
    trainer, _, _ = _setup(own_generator=False)
    state = trainer.state_dict()
    state["rng"] = {"cuda": {}}
    with pytest.raises(ValueError, match="rng"):
        trainer.load_state_dict(state)


def test_ai_enhanced_trainer_state_round_trips_with_the_random_state(tmp_path):
    from forgeml.ai import AIServiceOrchestrator, AISettings, LocalAdvisor
    from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer

    def build():
        fm.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
        orchestrator = AIServiceOrchestrator(
            AISettings.from_env(env={}, cache_enabled=False), local=LocalAdvisor(seed=7)
        )
        cfg = AIEnhancedConfig(optimization_guidance_frequency=100, research_update_interval=100, wait_for_ai=True)
        return AIEnhancedTrainer(
            model, Adam(model.parameters(), lr=0.01), cfg, orchestrator=orchestrator, batch_size=16
        )

    trainer = build()
    trainer.fit(_data(), _data(60, seed=1), epochs=2)
    trainer.save_checkpoint(tmp_path / "ai.safetensors")
    saved = trainer.state_dict()

    other = build()
    _scramble()
    other.load_checkpoint(tmp_path / "ai.safetensors")
    assert other.epoch == 2 and [m.train_loss for m in other.history] == [m.train_loss for m in trainer.history]
    assert fm.get_rng_state() == saved["rng"]["cpu"]
    for name, value in saved["model"].items():
        np.testing.assert_array_equal(other.model.state_dict()[name].numpy(), value.numpy(), err_msg=name)
