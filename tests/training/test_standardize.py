"""Input standardisation folded into the first layer: exact in both directions, optimizer state mapped, and
the trained model still takes raw inputs."""

import copy

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.data import DataLoader, TensorDataset
from forgeml.optim import Adam
from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer, Trainer
from forgeml.training.callbacks import Callback
from forgeml.training.guardrails import Refused
from forgeml.training.standardize import InputStandardizer, first_layer
from tests.ai.stubs import ScriptedProvider
from tests.training.test_ai_trainer import _analysis, _orchestrator

MEAN = np.array([3.0, -2.0, 0.5, 8.0], dtype=np.float32)
STD = np.array([2.0, 0.5, 1.0, 4.0], dtype=np.float32)


def _raw(n=32, seed=0):
    return (MEAN + STD * np.random.default_rng(seed).standard_normal((n, 4))).astype(np.float32)


def _mlp():
    fm.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))


def _out(model, x):
    with fm.no_grad():
        return model(x if isinstance(x, fm.Tensor) else fm.tensor(x)).numpy().copy()


@pytest.mark.parametrize("stats", ["scalar", "per-feature"])
def test_unfold_and_fold_leave_a_linear_models_function_unchanged(stats):
    model = _mlp()
    mean, std = (float(MEAN.mean()), float(STD.mean())) if stats == "scalar" else (MEAN, STD)
    x = fm.tensor(_raw())
    before, first = _out(model, x), _out(model[0], x)
    weight = model[0].weight.detach().numpy().copy()
    s = InputStandardizer(model, model[0], mean, std)
    assert s(x) is x  # inactive: batches pass unchanged
    s.unfold(Adam(model.parameters()))
    standardised = s(x)
    np.testing.assert_allclose(standardised.numpy(), (x.numpy() - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_out(model, standardised), before, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model[0].weight.detach().numpy(), weight * std, rtol=1e-6)  # W_std = W * std
    assert not np.allclose(_out(model[0], x), first, atol=1e-2)  # the layer now expects standardised inputs
    s.fold(Adam(model.parameters()))
    assert s(x) is x
    np.testing.assert_allclose(_out(model, x), before, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model[0].weight.detach().numpy(), weight, rtol=1e-6)


def test_unfold_and_fold_are_exact_for_an_unpadded_conv2d_with_scalar_stats():
    fm.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = fm.tensor((4.0 + 3.0 * np.random.default_rng(1).standard_normal((5, 2, 6, 6))).astype(np.float32))
    before = _out(model, x)
    s = InputStandardizer(model, first_layer(model), 4.0, 3.0)
    s.unfold(Adam(model.parameters()))
    np.testing.assert_allclose(_out(model, s(x)), before, rtol=1e-4, atol=1e-4)
    s.fold(Adam(model.parameters()))
    np.testing.assert_allclose(_out(model, x), before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="per-feature statistics need a first Linear"):
        InputStandardizer(model, model[0], np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="positive std"):
        InputStandardizer(model, model[0], 0.0, 0.0)


def _adam_step(model, opt, x, y):
    opt.zero_grad()
    loss = nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    grads = {name: p.grad.numpy().astype(np.float64).copy() for name, p in model.named_parameters()}
    opt.step()
    return grads


def test_adam_state_is_mapped_with_the_gradient_so_both_coordinates_take_corresponding_steps():
    """With a pure scaling (mean 0), W_std = W * std per input column and x_std = x / std, so
    dL/dW_std = dL/dW / std: the first moment maps as m / std, the second as v / std**2, and the bias (same
    gradient in both coordinates) keeps its state. (With a mean the gradient also mixes in the bias's:
    dL/dW_std = (dL/dW - dL/db * mean) / std, which these moments do not carry over.)"""
    raw_model = _mlp()
    raw_opt = Adam(raw_model.parameters(), lr=0.01)
    x, y = fm.tensor(_raw(seed=2)), fm.tensor(np.arange(32) % 2)
    for _ in range(3):
        _adam_step(raw_model, raw_opt, x, y)
    std_model = copy.deepcopy(raw_model)
    std_opt = Adam(std_model.parameters(), lr=0.01)
    std_opt.load_state_dict(raw_opt.state_dict())
    s = InputStandardizer(std_model, std_model[0], np.zeros(4), STD)
    s.unfold(std_opt)

    def state(opt, model, name):
        p = dict(model.named_parameters())[name]
        return {k: v.numpy().astype(np.float64) for k, v in opt.state[p].items()}

    raw_w, std_w = state(raw_opt, raw_model, "0.weight"), state(std_opt, std_model, "0.weight")
    np.testing.assert_allclose(std_w["exp_avg"], raw_w["exp_avg"] / STD, rtol=1e-6)
    np.testing.assert_allclose(std_w["exp_avg_sq"], raw_w["exp_avg_sq"] / STD**2, rtol=1e-6)
    assert std_w["step"] == raw_w["step"]
    for name in ("0.bias", "2.weight", "2.bias"):
        for key, value in state(raw_opt, raw_model, name).items():
            np.testing.assert_array_equal(state(std_opt, std_model, name)[key], value)

    # one more step in each coordinate system, on the same batch
    w_std_before = std_model[0].weight.detach().numpy().astype(np.float64).copy()
    raw_grads = _adam_step(raw_model, raw_opt, x, y)
    std_grads = _adam_step(std_model, std_opt, s(x), y)
    np.testing.assert_allclose(std_grads["0.weight"], raw_grads["0.weight"] / STD, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(std_grads["0.bias"], raw_grads["0.bias"], rtol=1e-4, atol=1e-7)
    raw_w, std_w = state(raw_opt, raw_model, "0.weight"), state(std_opt, std_model, "0.weight")
    np.testing.assert_allclose(std_w["exp_avg"], raw_w["exp_avg"] / STD, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(std_w["exp_avg_sq"], raw_w["exp_avg_sq"] / STD**2, rtol=1e-4, atol=1e-12)
    # the step in standardised coordinates is Adam's step on the mapped moments: -lr * m_hat/std / (sqrt(v_hat)/std
    # + eps), i.e. the raw step's direction with eps scaled by std
    t, (b1, b2), eps, lr = float(std_w["step"]), (0.9, 0.999), 1e-8, 0.01
    m_hat, v_hat = raw_w["exp_avg"] / (1 - b1**t), raw_w["exp_avg_sq"] / (1 - b2**t)
    expected = -lr * (m_hat / STD) / (np.sqrt(v_hat) / STD + eps)
    step = std_model[0].weight.detach().numpy() - w_std_before
    np.testing.assert_allclose(step, expected, rtol=1e-3, atol=1e-8)


def test_first_layer_finds_the_layer_a_transform_folds_into_or_says_why_not():
    flat_first = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    assert first_layer(flat_first) is flat_first[1]
    unpadded = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    assert first_layer(unpadded) is unpadded[0]
    assert "padding" in first_layer(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten()))
    assert "padded" in first_layer(nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"), nn.Flatten()))
    assert "Dropout" in first_layer(nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 2)))

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    assert "not a Sequential" in first_layer(Custom())
    assert "no layers" in first_layer(nn.Sequential())


def test_the_trainer_refuses_to_standardise_through_a_padded_conv():
    fm.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    x = np.random.default_rng(0).standard_normal((16, 1, 4, 4)).astype(np.float32)
    trainer = AIEnhancedTrainer(model, Adam(model.parameters()), AIEnhancedConfig())
    trainer._train_loader(TensorDataset(fm.tensor(x), fm.tensor(np.arange(16) % 2)))
    weight = model[0].weight.detach().numpy().copy()
    with pytest.raises(Refused, match="zero padding"):
        trainer.standardize_inputs()
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), weight)


def _classification(n, seed):
    rng = np.random.default_rng(seed)
    x = (MEAN + STD * rng.standard_normal((n, 4))).astype(np.float32)
    y = (((x - MEAN) / STD)[:, :2].sum(1) > 0).astype(np.int64)
    return TensorDataset(fm.tensor(x), fm.tensor(y))


class Outputs(Callback):
    """The model's outputs on raw inputs at the end of each epoch, through the trainer (which standardises)."""

    def __init__(self, x):
        self.x, self.at = x, {}

    def on_epoch_end(self, trainer, metrics):
        self.at[metrics.epoch] = trainer.predict(self.x).numpy().copy()


def _standardising_run(epochs=3):
    train, val, test = _classification(256, 0), _classification(64, 1), _classification(64, 2)
    provider = ScriptedProvider(
        "anthropic", [_analysis({"action": "standardize_inputs"}, diagnosis="misconfigured"), _analysis()]
    )
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    outputs = Outputs(val.tensors[0])
    trainer = AIEnhancedTrainer(
        model,
        Adam(model.parameters(), lr=0.03),
        AIEnhancedConfig(
            optimization_guidance_frequency=100, research_update_interval=100, wait_for_ai=True, keep_or_revert=False
        ),
        orchestrator=_orchestrator(provider),
        batch_size=32,
        callbacks=[outputs],
    )
    trainer.untrained = Trainer(model, None).evaluate(DataLoader(test, batch_size=64))
    metrics = trainer.fit(train, val, epochs=epochs, test_data=test)
    return trainer, metrics, outputs, test


def test_after_fit_the_standardised_model_takes_raw_inputs():
    trainer, metrics, _, test = _standardising_run()
    (change,) = metrics.changes
    assert change.action["action"] == "standardize_inputs" and change.epoch == 0
    assert trainer._standardizer is not None and not trainer._standardizer.active  # folded back
    assert trainer.inputs_summary().standardized is False or trainer._inputs is None
    x_test, y_test = test.tensors
    direct = _out(trainer.model, x_test)
    np.testing.assert_allclose(trainer.predict(x_test).numpy(), direct, rtol=1e-6)
    via_trainer = trainer.evaluate(DataLoader(test, batch_size=64))
    plain = Trainer(trainer.model, None).evaluate(DataLoader(test, batch_size=64))  # knows nothing of it
    assert via_trainer["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert via_trainer["accuracy"] == plain["accuracy"] == metrics.final_test["accuracy"]
    assert plain["accuracy"] == np.mean(direct.argmax(1) == y_test.numpy())
    assert plain["loss"] < 0.8 * trainer.untrained["loss"]  # and it learned


def test_the_best_state_stays_in_the_coordinates_the_model_is_in():
    trainer, _, outputs, _ = _standardising_run(epochs=3)
    best = trainer.best_epoch
    assert best in outputs.at  # stored while the inputs were standardised
    assert trainer.restore_best()
    np.testing.assert_allclose(_out(trainer.model, outputs.x), outputs.at[best], rtol=1e-4, atol=1e-5)
    # standardise again (as a second fit would): the stored best moves into the new coordinates with the model
    trainer.standardize_inputs()
    with fm.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.5)  # the current weights move away from the best
    assert not np.allclose(trainer.predict(outputs.x).numpy(), outputs.at[best], atol=1e-2)
    trainer.restore_best()
    np.testing.assert_allclose(trainer.predict(outputs.x).numpy(), outputs.at[best], rtol=1e-4, atol=1e-5)


def test_with_a_mean_the_first_weights_optimizer_state_starts_afresh_and_the_biases_carries_over():
    """dL/dW_std = (dL/dW - dL/db * mean) / std: no second moment maps through that, so the weight's moments are
    dropped (Adam starts them again at step 1) while the bias, whose gradient is unchanged, keeps its own."""
    model = _mlp()
    opt = Adam(model.parameters(), lr=0.01)
    x, y = fm.tensor(_raw(seed=3)), fm.tensor(np.arange(32) % 2)
    for _ in range(2):
        _adam_step(model, opt, x, y)
    bias_state = {k: v.numpy().copy() for k, v in opt.state[model[0].bias].items()}
    s = InputStandardizer(model, model[0], np.full(4, 0.5), STD)
    s.unfold(opt)
    assert model[0].weight not in opt.state or not opt.state[model[0].weight]
    for key, value in opt.state[model[0].bias].items():
        np.testing.assert_array_equal(value.numpy(), bias_state[key])
    _adam_step(model, opt, s(x), y)
    assert float(opt.state[model[0].weight]["step"]) == 1.0
