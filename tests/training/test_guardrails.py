"""The guardrails table: each action class applies within its bounds and is refused outside them, by name."""

import math

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.data import TensorDataset
from forgeml.optim import SGD, Adam, AdamW
from forgeml.optim.lr_scheduler import StepLR
from forgeml.specs import (
    EarlyStop,
    EnableGradClipping,
    FindLearningRate,
    RestoreBestCheckpoint,
    ScaleLearningRate,
    SetBatchSize,
    SetDropout,
    SetLabelSmoothing,
    SetLRSchedule,
    SetWeightDecay,
    StandardizeInputs,
    SwitchOptimizer,
    SwitchScheduler,
)
from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer
from forgeml.training.guardrails import GUARDRAILS, Refused, guardrail_for


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = (3.0 + 2.0 * rng.standard_normal((n, 4))).astype(np.float32)
    y = (x[:, 0] > 3.0).astype(np.int64) + (x[:, 1] > 3.0).astype(np.int64)
    return TensorDataset(fm.tensor(x), fm.tensor(y))


def _trainer(optimizer="adam", lr=0.01, epochs_left=4, loss_fn=None, **config):
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))
    if optimizer == "adam":
        opt = Adam(model.parameters(), lr=lr, weight_decay=0.01)
    else:
        opt = SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.01)
    trainer = AIEnhancedTrainer(model, opt, AIEnhancedConfig(**config), loss_fn, batch_size=16)
    # what fit() sets up before the first epoch: the training data, its loader, the planned epochs
    trainer._train_loader_now = trainer._train_loader(_data())
    trainer.epochs_planned = trainer.epoch + epochs_left
    return trainer


def _steps(trainer, n=3):
    """``n`` plain optimizer steps on the training data (so the optimizer has state)."""
    for _, (x, y) in zip(range(n), trainer._train_loader_now):
        trainer.optimizer.zero_grad()
        trainer.loss_fn(trainer.model(x), y).backward()
        trainer.optimizer.step()


def _settings(trainer):
    group = trainer.optimizer.param_groups[0]
    return (
        type(trainer.optimizer),
        group["lr"],
        group.get("weight_decay"),
        trainer.model[2].p,
        trainer.batch_size,
        trainer.max_grad_norm,
        trainer.loss_fn.label_smoothing,
        trainer.scheduler,
        trainer.stop_training,
        trainer._standardizer,
        {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()},
    )


def _same(a, b):
    assert a[:-1] == b[:-1]
    for k in a[-1]:
        np.testing.assert_array_equal(a[-1][k], b[-1][k])


cfg = AIEnhancedConfig()


def _lr_halved(t, before, after):
    assert t.learning_rate == pytest.approx(0.005) and (before, after) == pytest.approx((0.01, 0.005))


def _found_lr(t, before, after):
    assert before == 0.01 and after == t.learning_rate and 1e-4 <= after <= 1.0


def _restored(t, before, after):
    assert after == "the initial weights"
    for k, v in t.model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), t.best_state[k].numpy())


def _prepare_best(t):
    t.track_initial_best(t._train_loader_now)
    _steps(t)  # the weights move away from the stored best


# class: (within, check after applying it, outside, words the refusal must contain, preparation)
CASES = {
    ScaleLearningRate: (
        ScaleLearningRate(factor=0.5),
        _lr_halved,
        ScaleLearningRate(factor=3.0),
        f"[{cfg.lr_factor_range[0]}, {cfg.lr_factor_range[1]}]",
        None,
    ),
    FindLearningRate: (
        FindLearningRate(min_lr=1e-4, max_lr=1.0, steps=12),
        _found_lr,
        None,  # outside: see test_a_learning_rate_outside_the_bounds_is_refused
        None,
        None,
    ),
    SetWeightDecay: (
        SetWeightDecay(value=0.05),
        lambda t, b, a: t.optimizer.param_groups[0]["weight_decay"] == 0.05 and (b, a) == (0.01, 0.05),
        SetWeightDecay(value=0.5),
        str(cfg.weight_decay_range),
        None,
    ),
    SwitchOptimizer: (
        SwitchOptimizer(name="adamw"),
        lambda t, b, a: type(t.optimizer) is AdamW and b == "Adam" and a.startswith("AdamW"),
        SwitchOptimizer(name="sgd"),
        "only Adam <-> AdamW",
        None,
    ),
    SetDropout: (
        SetDropout(p=0.3),
        lambda t, b, a: t.model[2].p == 0.3 and b == 0.1,
        SetDropout(p=0.7),
        str(cfg.dropout_range),
        None,
    ),
    SetBatchSize: (
        SetBatchSize(n=32),
        lambda t, b, a: t.batch_size == 32 and t.rebuild_loader and t.learning_rate == 0.01,
        SetBatchSize(n=4),
        str(cfg.batch_size_range),
        None,
    ),
    EnableGradClipping: (
        EnableGradClipping(max_norm=1.0),
        lambda t, b, a: t.max_grad_norm == 1.0 and b is None,
        EnableGradClipping(max_norm=0.01),
        str(cfg.grad_clip_range),
        None,
    ),
    SetLabelSmoothing: (
        SetLabelSmoothing(x=0.1),
        lambda t, b, a: t.loss_fn.label_smoothing == 0.1 and t.loss_changed_at == [t.epoch],
        SetLabelSmoothing(x=0.5),
        str(cfg.label_smoothing_range),
        None,
    ),
    SwitchScheduler: (
        SwitchScheduler(name="StepLR", params={"step_size": 2, "gamma": 0.5}),
        lambda t, b, a: isinstance(t.scheduler, StepLR) and t.scheduler_interval == "epoch",
        SwitchScheduler(name="CosineAnnealingLR", params={"bogus": 1}),
        "CosineAnnealingLR({'bogus': 1}) cannot be built",
        None,
    ),
    SetLRSchedule: (
        SetLRSchedule(kind="cosine"),
        lambda t, b, a: t.scheduler_interval == "step" and "4 epochs" in a,
        SetLRSchedule(kind="cosine"),
        "at least 2 epochs left, 1 remain",
        lambda t: setattr(t, "epochs_planned", t.epoch + 1),
    ),
    StandardizeInputs: (
        StandardizeInputs(),
        lambda t, b, a: t._standardizer is not None and t._standardizer.active,
        StandardizeInputs(),
        "already standardised",
        lambda t: t.standardize_inputs(),
    ),
    EarlyStop: (EarlyStop(), lambda t, b, a: t.stop_training, None, None, None),
    RestoreBestCheckpoint: (
        RestoreBestCheckpoint(),
        _restored,
        RestoreBestCheckpoint(),
        "no best checkpoint yet",
        "best",
    ),
}


def test_every_action_class_has_a_guardrail_and_a_case_here():
    assert set(CASES) == set(GUARDRAILS)
    assert not GUARDRAILS[EarlyStop].on_trial and not GUARDRAILS[RestoreBestCheckpoint].on_trial
    assert all(rail.on_trial for cls, rail in GUARDRAILS.items() if cls not in (EarlyStop, RestoreBestCheckpoint))

    class Unknown:
        pass

    with pytest.raises(Refused, match="no guardrail for the action Unknown"):
        guardrail_for(Unknown())


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_an_action_within_bounds_is_applied(cls):
    within, check, _, _, prepare = CASES[cls]
    trainer = _trainer()
    if prepare == "best":
        _prepare_best(trainer)
    before, after = guardrail_for(within).apply(trainer, within)
    result = check(trainer, before, after)
    assert result is None or result is True


@pytest.mark.parametrize("cls", [c for c in CASES if CASES[c][2] is not None], ids=lambda c: c.__name__)
def test_an_action_outside_bounds_is_refused_naming_the_bound_and_changes_nothing(cls):
    _, _, outside, words, prepare = CASES[cls]
    trainer = _trainer()
    if callable(prepare):
        prepare(trainer)
    settings = _settings(trainer)
    with pytest.raises(Refused) as refusal:
        guardrail_for(outside).apply(trainer, outside)
    assert words in str(refusal.value)
    _same(_settings(trainer), settings)


def test_a_learning_rate_outside_the_bounds_is_refused():
    trainer = _trainer(max_learning_rate=0.015)
    with pytest.raises(Refused, match=r"the learning rate 0.02 would leave \[1e-07, 0.015\]"):
        guardrail_for(ScaleLearningRate(factor=2.0)).apply(trainer, ScaleLearningRate(factor=2.0))
    assert trainer.learning_rate == 0.01
    # the range test's suggestion is at least its min_lr: above a max_learning_rate of 1e-4 it is refused
    trainer = _trainer(max_learning_rate=1e-4, min_learning_rate=1e-6)
    weights = {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}
    action = FindLearningRate(min_lr=1e-3, max_lr=1.0, steps=12)
    with pytest.raises(Refused, match=r"suggested learning rate .* is outside \[1e-06, 0.0001\]"):
        guardrail_for(action).apply(trainer, action)
    assert trainer.learning_rate == 0.01
    for k, v in trainer.model.state_dict().items():  # the range test put the weights back
        np.testing.assert_array_equal(v.numpy(), weights[k])


def test_label_smoothing_needs_cross_entropy_and_weight_decay_a_setting():
    trainer = _trainer(loss_fn=nn.MSELoss())
    with pytest.raises(Refused, match="needs a CrossEntropyLoss, the loss is MSELoss"):
        guardrail_for(SetLabelSmoothing(x=0.1)).apply(trainer, SetLabelSmoothing(x=0.1))
    assert trainer.loss_changed_at == []
    model = nn.Sequential(nn.Linear(4, 3))
    trainer = AIEnhancedTrainer(model, SGD(model.parameters(), lr=0.1), AIEnhancedConfig())
    with pytest.raises(Refused, match="no Dropout layer"):
        guardrail_for(SetDropout(p=0.2)).apply(trainer, SetDropout(p=0.2))


def test_switching_adam_to_adamw_keeps_the_moments_bit_exact_and_steps_as_adamw():
    trainer = _trainer()
    _steps(trainer, 3)
    old = trainer.optimizer
    trainer.scheduler = StepLR(old, step_size=1)
    params = list(trainer.model.parameters())
    saved = {i: {k: v.numpy().copy() for k, v in old.state[p].items()} for i, p in enumerate(params)}
    before, after = guardrail_for(SwitchOptimizer(name="adamw")).apply(trainer, SwitchOptimizer(name="adamw"))
    new = trainer.optimizer
    assert type(new) is AdamW and new is not old and after == "AdamW (moments kept)" and before == "Adam"
    assert trainer.scheduler.optimizer is new
    group = new.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.01 and group["decoupled_weight_decay"] is True
    assert group["betas"] == old.param_groups[0]["betas"] and group["eps"] == old.param_groups[0]["eps"]
    for i, p in enumerate(params):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            np.testing.assert_array_equal(new.state[p][key].numpy(), saved[i][key])
    assert float(new.state[params[0]]["step"].item()) == 3.0

    # one more step: against a fresh AdamW loaded with the same state, and against the AdamW formula
    reference_params = [nn.Parameter(fm.tensor(p.detach().numpy().copy())) for p in params]
    reference = AdamW(reference_params, lr=0.01, weight_decay=0.01)
    reference.load_state_dict(new.state_dict())
    x, y = next(iter(trainer._train_loader_now))
    new.zero_grad()
    trainer.loss_fn(trainer.model(x), y).backward()
    grads = [p.grad.numpy().astype(np.float64) for p in params]
    start = [p.detach().numpy().astype(np.float64) for p in params]
    for rp, g in zip(reference_params, grads):
        rp.grad = fm.tensor(g.astype(np.float32))
    new.step()
    reference.step()
    lr, wd, (b1, b2), eps = 0.01, 0.01, group["betas"], group["eps"]
    for i, (p, rp) in enumerate(zip(params, reference_params)):
        np.testing.assert_array_equal(p.detach().numpy(), rp.detach().numpy())
        m = b1 * saved[i]["exp_avg"] + (1 - b1) * grads[i]
        v = b2 * saved[i]["exp_avg_sq"] + (1 - b2) * grads[i] ** 2
        t = float(saved[i]["step"]) + 1
        theta = start[i] * (1 - lr * wd)  # decoupled: the decay does not enter the moments
        theta = theta - lr / (1 - b1**t) * m / (np.sqrt(v) / math.sqrt(1 - b2**t) + eps)
        np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(new.state[p]["exp_avg"].numpy(), m, rtol=1e-5, atol=1e-9)


def test_switching_without_state_keeps_the_hyper_parameters_only():
    trainer = _trainer()
    _steps(trainer)
    guardrail_for(SwitchOptimizer(name="adamw")).apply(trainer, SwitchOptimizer(name="adamw", keep_state=False))
    assert type(trainer.optimizer) is AdamW and not any(trainer.optimizer.state.values())
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.01 and trainer.learning_rate == 0.01


@pytest.mark.parametrize(
    ("optimizer", "target", "words"),
    [("adam", "sgd", "switching Adam to sgd"), ("sgd", "adamw", "switching SGD to adamw"), ("adam", "adam", "already")],
)
def test_switches_other_than_adam_adamw_are_refused(optimizer, target, words):
    trainer = _trainer(optimizer)
    old = trainer.optimizer
    with pytest.raises(Refused, match=words):
        guardrail_for(SwitchOptimizer(name=target)).apply(trainer, SwitchOptimizer(name=target))
    assert trainer.optimizer is old


# the schedules are stepped here without optimizer steps in between
no_step_warning = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`:UserWarning")


def _lr_after(trainer, steps):
    lr0 = trainer.learning_rate
    for _ in range(steps):
        trainer.scheduler.step()
    return trainer.learning_rate / lr0


@no_step_warning
def test_a_cosine_schedule_runs_from_the_current_rate_to_its_floor_over_the_remaining_steps():
    trainer = _trainer(epochs_left=4)  # 64 samples at batch 16: 4 steps an epoch, 16 in all
    assert trainer.steps_per_epoch == 4
    action = SetLRSchedule(kind="cosine", min_lr_ratio=0.1)
    guardrail_for(action).apply(trainer, action)
    lr0 = 0.01
    assert trainer.learning_rate == pytest.approx(lr0)  # step 0: multiplier 1
    assert _lr_after(trainer, 8) == pytest.approx(0.1 + 0.9 * 0.5)  # the middle: halfway down the cosine
    for _ in range(8):
        trainer.scheduler.step()
    assert trainer.learning_rate == pytest.approx(0.1 * lr0)  # the end: the floor
    trainer.scheduler.step()
    assert trainer.learning_rate == pytest.approx(0.1 * lr0)  # and it stays there


@no_step_warning
def test_warmup_cosine_and_one_cycle_start_low():
    trainer = _trainer(epochs_left=4)
    action = SetLRSchedule(kind="warmup_cosine", warmup_epochs=1.0, min_lr_ratio=0.0)
    guardrail_for(action).apply(trainer, action)
    assert trainer.learning_rate == pytest.approx(0.01 / 5)  # (t + 1) / (warm-up + 1) with 4 warm-up steps
    for _ in range(4):
        trainer.scheduler.step()
    assert trainer.learning_rate == pytest.approx(0.01)  # the warm-up is over: the top of the cosine
    trainer = _trainer(epochs_left=4)
    action = SetLRSchedule(kind="one_cycle", min_lr_ratio=0.0)
    guardrail_for(action).apply(trainer, action)
    assert trainer.learning_rate == pytest.approx(0.001)  # a tenth of the rate, rising
    for _ in range(5):  # 30% of 16 steps: the peak, 10x... of the tenth
        trainer.scheduler.step()
    assert trainer.learning_rate == pytest.approx(0.01)


@pytest.mark.parametrize(("scaling", "factor"), [("none", 1.0), ("sqrt", 2.0), ("linear", 4.0)])
def test_a_batch_size_change_scales_the_learning_rate(scaling, factor):
    trainer = _trainer(lr=0.01)
    before, after = guardrail_for(SetBatchSize(n=64)).apply(trainer, SetBatchSize(n=64, lr_scaling=scaling))
    assert trainer.batch_size == 64 and before == 16 and trainer.rebuild_loader
    assert trainer.learning_rate == pytest.approx(0.01 * factor)
    assert (scaling in str(after)) == (scaling != "none")


def test_a_batch_size_whose_lr_scaling_leaves_the_bounds_is_refused_whole():
    trainer = _trainer(lr=0.01, max_learning_rate=0.03)
    with pytest.raises(Refused, match="would leave"):
        guardrail_for(SetBatchSize(n=64)).apply(trainer, SetBatchSize(n=64, lr_scaling="linear"))
    assert trainer.batch_size == 16 and trainer.learning_rate == 0.01 and not trainer.rebuild_loader


def test_switching_to_adamw_can_set_its_weight_decay_within_the_bounds():
    trainer = _trainer()
    _steps(trainer, 2)
    moments = {id(p): trainer.optimizer.state[p]["exp_avg"].numpy().copy() for p in trainer.model.parameters()}
    action = SwitchOptimizer(name="adamw", weight_decay=0.05)
    before, after = guardrail_for(action).apply(trainer, action)
    assert (before, after) == ("Adam (weight decay 0.01)", "AdamW (moments kept), weight decay 0.05")
    assert type(trainer.optimizer) is AdamW
    assert all(g["weight_decay"] == 0.05 and g["decoupled_weight_decay"] for g in trainer.optimizer.param_groups)
    for p in trainer.model.parameters():
        np.testing.assert_array_equal(trainer.optimizer.state[p]["exp_avg"].numpy(), moments[id(p)])

    trainer = _trainer(weight_decay_range=(0.0, 0.02))
    settings = _settings(trainer)
    outside = SwitchOptimizer(name="adamw", weight_decay=0.05)
    with pytest.raises(Refused, match=r"weight decay 0.05 is outside \(0.0, 0.02\)"):
        guardrail_for(outside).apply(trainer, outside)
    _same(_settings(trainer), settings)  # refused before the switch: still Adam with its L2 0.01


def test_a_range_test_that_suggests_the_current_rate_changes_nothing_and_says_so(monkeypatch):
    from forgeml.training import lr_finder

    trainer = _trainer(lr=0.01)
    settings = _settings(trainer)
    real = lr_finder.find_learning_rate

    def flat(trainer_, loader, **kwargs):  # the real test, then a minimum a decade above the current rate
        result = real(trainer_, loader, **kwargs)
        result.min_loss_lr, result.suggested_lr = 0.1, 0.01
        return result

    monkeypatch.setattr(lr_finder, "find_learning_rate", flat)
    action = FindLearningRate(min_lr=0.01, max_lr=0.3, steps=10)
    with pytest.raises(Refused, match=r"the range test suggests 0\.01, the rate already in use"):
        guardrail_for(action).apply(trainer, action)
    _same(_settings(trainer), settings)
    (event,) = [e for e in trainer.events if e.kind == "experiment"]
    assert event.task == "lr_range_test" and "over 10 steps from 0.01 to 0.3" in event.reason
    assert "suggested 0.01" in event.reason
