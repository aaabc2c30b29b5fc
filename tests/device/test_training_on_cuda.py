"""The Trainer on CUDA: same losses as on the CPU, batches moved for it, metrics read once an epoch,
checkpoints that load on either device, and mixed precision."""

from __future__ import annotations

import copy
from collections import namedtuple

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.data import DataLoader, TensorDataset
from forgeml.optim import SGD, Adam
from forgeml.training import Callback, LambdaCallback, Trainer, TrainingDivergedError

CPU = fm.device("cpu")
CUDA = fm.device("cuda")


def _blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.5]])
    x = centers[y] + rng.standard_normal((n, 2)) * 0.6
    return TensorDataset(fm.tensor(x.astype(np.float32)), fm.tensor(y))


def _model():
    fm.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def _loaders():
    return DataLoader(_blobs(), batch_size=32, shuffle=True), DataLoader(_blobs(seed=1), batch_size=64)


def _fit(device, epochs=3, **kwargs):
    model = _model()
    trainer = Trainer(model, Adam(model.parameters(), lr=0.02), device=device, **kwargs)
    fm.manual_seed(5)  # the shuffling order
    train, val = _loaders()
    trainer.fit(train, val, epochs=epochs)
    return trainer


def _host_state(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def test_fit_on_cuda_matches_the_cpu(cuda_device):
    on_cpu = _fit(None)
    on_cuda = _fit(cuda_device)
    assert on_cpu.device == CPU and on_cuda.device == CUDA
    assert all(p.device == CUDA for p in on_cuda.model.parameters())
    for a, b in zip(on_cpu.history, on_cuda.history):
        for name in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            va, vb = getattr(a, name), getattr(b, name)
            assert isinstance(vb, float), name
            assert vb == pytest.approx(va, rel=1e-5, abs=1e-6), name
    cpu_state, cuda_state = _host_state(on_cpu.model), _host_state(on_cuda.model)
    for k in cpu_state:
        np.testing.assert_allclose(cuda_state[k], cpu_state[k], rtol=1e-4, atol=1e-5, err_msg=k)
    result = on_cuda.evaluate(_loaders()[1])
    assert isinstance(result["loss"], float) and result["accuracy"] > 0.9
    assert result["loss"] == pytest.approx(on_cpu.evaluate(_loaders()[1])["loss"], rel=1e-5)
    out = on_cuda.predict(fm.randn(4, 2))  # CPU inputs are moved; outputs stay on the device
    assert out.device == CUDA and out.shape == (4, 3)


def test_device_none_trains_where_the_model_is_and_the_model_moves_for_cuda(cuda_device):
    model = _model().to(cuda_device)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1))
    assert trainer.device == CUDA
    model = _model()
    opt = SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, opt, device="cuda:0")
    assert all(p.device == CUDA for p in model.parameters())
    assert all(p.device == CUDA for g in opt.param_groups for p in g["params"])  # the same Parameter objects
    trainer.fit(_loaders()[0], epochs=1)
    assert all(p.device == CUDA for p in model.parameters())


def test_optimizer_state_moves_with_the_model(cuda_device):
    model = _model()
    opt = Adam(model.parameters(), lr=0.02)
    Trainer(model, opt).fit(_loaders()[0], epochs=1)  # Adam state on the CPU
    Trainer(model, opt, device=cuda_device).fit(_loaders()[0], epochs=1)
    for state in opt.state.values():
        for key, value in state.items():
            if isinstance(value, fm.Tensor) and key != "step":
                assert value.device == CUDA, key


Pair = namedtuple("Pair", ["input", "target"])


class _DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(2, 3)

    def forward(self, x):
        assert x["features"].device == CUDA and x["extra"][0].device == CUDA
        return self.body(x["features"] + x["extra"][0])


def test_every_kind_of_batch_is_moved_to_the_device(cuda_device):
    from forgeml.training.trainer import move_to_device

    x, y = fm.randn(4, 2), fm.tensor([0, 1, 2, 0])
    batch = {"features": x, "extra": (fm.zeros(4, 2), "label"), "n": 3}
    moved = move_to_device(batch, CUDA)
    assert moved["features"].device == CUDA and moved["extra"][0].device == CUDA
    assert moved["extra"][1] == "label" and moved["n"] == 3
    pair = move_to_device(Pair(x, y), CUDA)
    assert isinstance(pair, Pair) and pair.input.device == CUDA
    masked = move_to_device(nn.MaskedBatch(fm.zeros(2, 3), fm.tensor([[False, False, True]] * 2)), CUDA)
    assert masked.data.device == CUDA and masked.padding_mask.device == CUDA
    on_device = x.to(cuda_device)
    assert move_to_device(on_device, CUDA) is on_device  # already there: untouched

    fm.manual_seed(0)
    model = _DictModel()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), device=cuda_device)
    data = [{"input": batch, "target": y}] * 3
    trainer.fit(data, epochs=1)
    assert trainer.history[0].train_accuracy is not None


def test_per_step_losses_are_python_floats_when_a_callback_asks(cuda_device):
    seen = []
    trainer = _fit(cuda_device, epochs=1, callbacks=[LambdaCallback(on_batch_end=lambda t, s, loss: seen.append(loss))])
    assert len(seen) == 8 and all(isinstance(v, float) for v in seen)
    expected = sum(v * n for v, n in zip(seen, [32] * 7 + [16])) / 240
    assert trainer.history[0].train_loss == pytest.approx(expected, rel=1e-12)

    class Subclassed(Callback):
        def __init__(self):
            self.losses = []

        def on_batch_end(self, trainer, step, loss):
            self.losses.append(loss)

    cb = Subclassed()
    deferred = _fit(cuda_device, epochs=1)
    live = _fit(cuda_device, epochs=1, callbacks=[cb])
    assert len(cb.losses) == 8
    assert live.history[0].train_loss == deferred.history[0].train_loss  # the same sum either way


def test_a_non_finite_loss_on_cuda_names_the_step_and_restores(cuda_device):
    model = _model()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), device=cuda_device)
    train = DataLoader(_blobs(), batch_size=32)
    trainer.fit(train, epochs=1)
    good = _host_state(model)
    steps_before = trainer.global_step

    class Poisoned:
        def __len__(self):
            return len(train)

        def __iter__(self):
            for step, (x, y) in enumerate(train, 1):
                yield (x * float("nan"), y) if step == 3 else (x, y)

    with pytest.raises(TrainingDivergedError, match="epoch 2, step 3") as info:
        trainer.fit(Poisoned(), epochs=1)
    assert info.value.step == 3 and trainer.global_step == steps_before + 2
    for k, v in _host_state(model).items():
        np.testing.assert_array_equal(v, good[k])


def test_gradient_clipping_on_cuda_reports_the_norm(cuda_device):
    on_cpu = _fit(None, epochs=1, max_grad_norm=0.5)
    on_cuda = _fit(cuda_device, epochs=1, max_grad_norm=0.5)
    assert isinstance(on_cuda.history[0].grad_norm, float)
    assert on_cuda.history[0].grad_norm == pytest.approx(on_cpu.history[0].grad_norm, rel=1e-4)


@pytest.mark.parametrize(("save_on", "load_on"), [("cuda", "cpu"), ("cpu", "cuda"), ("cuda", "cuda")])
def test_checkpoints_resume_on_either_device(tmp_path, cuda_device, save_on, load_on):
    straight = _fit(None, epochs=3)

    model = _model()
    first = Trainer(model, Adam(model.parameters(), lr=0.02), device=None if save_on == "cpu" else cuda_device)
    fresh = _model()  # built before the shuffling seed: _model() reseeds
    resumed = Trainer(fresh, Adam(fresh.parameters(), lr=0.02), device=load_on)
    fm.manual_seed(5)
    train, val = _loaders()
    first.fit(train, val, epochs=2)
    first.save_checkpoint(tmp_path / "run.safetensors")

    resumed.load_checkpoint(tmp_path / "run.safetensors")
    assert all(p.device == fm.device(load_on) for p in fresh.parameters())
    for state in resumed.optimizer.state.values():
        assert all(v.device == fm.device(load_on) for k, v in state.items() if isinstance(v, fm.Tensor) and k != "step")
    resumed.fit(train, val, epochs=1)  # the loader's iterator continues the same shuffle stream
    assert resumed.epoch == 3 and len(resumed.history) == 3
    assert resumed.history[-1].train_loss == pytest.approx(straight.history[-1].train_loss, rel=1e-5)
    want = _host_state(straight.model)
    for k, v in _host_state(fresh).items():
        np.testing.assert_allclose(v, want[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_unavailable_device_is_a_clear_error():
    if fm.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    model = _model()
    with pytest.raises((ImportError, RuntimeError), match="CUDA"):  # ImportError: no CuPy; RuntimeError: no GPU
        Trainer(model, SGD(model.parameters(), lr=0.1), device="cuda")
    assert all(p.device == CPU for p in model.parameters())


def test_amp_float16_with_grad_scaler_on_cuda(cuda_device):
    trainer = _fit(cuda_device, epochs=2, amp=True)
    assert trainer.scaler is not None and trainer.scaler.is_enabled()
    assert all(p.dtype == fm.float32 for p in trainer.model.parameters())  # float32 master weights
    reference = _fit(None, epochs=2)
    assert trainer.history[-1].train_loss == pytest.approx(reference.history[-1].train_loss, rel=0.05)
    assert trainer.history[-1].val_accuracy > 0.9
    assert "scaler" in trainer.state_dict()


def test_amp_bfloat16_on_the_cpu_and_its_checkpoint(tmp_path):
    pytest.importorskip("ml_dtypes")
    trainer = _fit(None, epochs=2, amp=True)
    assert trainer.scaler is None  # bfloat16 needs no loss scaling
    assert trainer.history[-1].val_accuracy > 0.9
    trainer.save_checkpoint(tmp_path / "amp.safetensors")
    model = _model()
    again = Trainer(model, Adam(model.parameters(), lr=0.02), amp=True, autocast_dtype=fm.bfloat16)
    again.load_checkpoint(tmp_path / "amp.safetensors")
    assert again.epoch == 2
    with pytest.raises(ValueError, match="amp=True"):
        Trainer(model, Adam(model.parameters(), lr=0.02), autocast_dtype=fm.float16)


def test_ai_trainer_passes_the_device_through(cuda_device):
    pytest.importorskip("pydantic")
    from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer

    model = _model()
    # no set-up review: Adam at lr 0.02 is outside its usual range, and a tenfold cut would slow this 2-epoch run
    config = AIEnhancedConfig(
        optimization_guidance_frequency=1,
        research_update_interval=100,
        wait_for_ai=True,
        synthetic_data_ratio=0.2,
        review_setup=False,
    )
    trainer = AIEnhancedTrainer(model, Adam(model.parameters(), lr=0.02), config, batch_size=32, device=cuda_device)
    assert trainer.device == CUDA and all(p.device == CUDA for p in model.parameters())
    train = _blobs()
    result = trainer.fit(train, _blobs(seed=1), epochs=2)
    assert len(result.history) == 2 and result.best_val_accuracy > 0.8
    assert all(p.device == CUDA for p in model.parameters())


def test_ai_trainer_mixes_synthetic_data_into_a_cuda_dataset(cuda_device):
    pytest.importorskip("pydantic")
    from forgeml.training import AIEnhancedTrainer
    from forgeml.training.ai_context import sample_arrays

    host = _blobs(40)
    on_device = TensorDataset(*(t.to(cuda_device) for t in host.tensors))
    fx, fy, shape = sample_arrays(on_device, 10)
    hx, hy, _ = sample_arrays(host, 10)
    np.testing.assert_array_equal(fx, hx)
    np.testing.assert_array_equal(fy, hy)
    assert shape == (2,)

    model = _model()
    trainer = AIEnhancedTrainer(model, Adam(model.parameters(), lr=0.02), device=cuda_device)
    trainer._train_dataset = on_device
    Sample = namedtuple("Sample", ["features", "label"])
    trainer._mix_in([Sample([0.5, 0.5], 1), Sample([1.0, -1.0], 2)])
    mixed = trainer._train_dataset
    assert len(mixed) == 42 and all(t.device == CUDA for t in mixed.tensors)
    np.testing.assert_array_equal(mixed.tensors[1].cpu().numpy()[-2:], [1, 2])


def test_explore_architectures_trains_candidates_on_the_device(cuda_device):
    pytest.importorskip("pydantic")
    import asyncio

    from forgeml.training import AIEnhancedTrainer

    model = _model()
    trainer = AIEnhancedTrainer(model, Adam(model.parameters(), lr=0.02), device=cuda_device)
    board = asyncio.run(
        trainer.explore_architectures(
            k=2, epochs_each=1, training_data=_blobs(), validation_data=_blobs(seed=1), num_classes=3
        )
    )
    assert board and all(isinstance(r["val_loss"], float) for r in board)


def test_a_trained_cuda_model_deepcopies_on_the_device(cuda_device):
    trainer = _fit(cuda_device, epochs=1)
    twin = copy.deepcopy(trainer.model)
    assert all(p.device == CUDA for p in twin.parameters())
