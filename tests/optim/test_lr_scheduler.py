"""Learning-rate schedulers against torch.optim.lr_scheduler: the same lr (and momentum) sequences, value for value."""

import math
import warnings

import numpy as np
import pytest

import forgeml as fm
from forgeml import optim
from forgeml.optim import lr_scheduler

torch = pytest.importorskip("torch")

STEPS = 45


def two_group_optimizers(name="SGD", **kwargs):
    """The same two-group optimizer (lrs 0.1 and 0.05) in both frameworks."""
    fa, fb = fm.nn.Parameter(np.ones(2)), fm.nn.Parameter(np.ones(3))
    ta, tb = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
    fopt = getattr(optim, name)([{"params": [fa]}, {"params": [fb], "lr": 0.05}], lr=0.1, **kwargs)
    topt = getattr(torch.optim, name)([{"params": [ta]}, {"params": [tb], "lr": 0.05}], lr=0.1, **kwargs)
    return fopt, topt


def momentum_of(group):
    if "betas" in group:
        return group["betas"][0]
    return group.get("momentum")


def run(fsched, tsched, fopt, topt, steps=STEPS, metrics=None):
    """Step both; compare get_last_lr() and every group's lr and momentum after each step. Returns our lrs."""
    assert fsched.get_last_lr() == tsched.get_last_lr()
    seen = [fsched.get_last_lr()]
    for t in range(steps):
        fopt.step()
        topt.step()
        if metrics is None:
            fsched.step()
            tsched.step()
        else:
            fsched.step(metrics[t])
            tsched.step(metrics[t])
        assert fsched.last_epoch == tsched.last_epoch
        assert fsched.get_last_lr() == tsched.get_last_lr(), f"step {t + 1}"
        for fg, tg in zip(fopt.param_groups, topt.param_groups):
            assert fg["lr"] == tg["lr"], f"step {t + 1}"
            assert momentum_of(fg) == momentum_of(tg), f"step {t + 1}"
        seen.append(fsched.get_last_lr())
    return seen


def both(cls_name, *args, opt="SGD", opt_kwargs=None, **kwargs):
    fopt, topt = two_group_optimizers(opt, **(opt_kwargs or {}))
    fsched = getattr(lr_scheduler, cls_name)(fopt, *args, **kwargs)
    tsched = getattr(torch.optim.lr_scheduler, cls_name)(topt, *args, **kwargs)
    return fsched, tsched, fopt, topt


def assert_varies(lrs):
    assert len({tuple(x) for x in lrs}) > 3, "the schedule should change the lr"


@pytest.mark.parametrize(
    ("cls_name", "args", "kwargs"),
    [
        ("StepLR", (7,), {"gamma": 0.5}),
        ("MultiStepLR", ([5, 12, 12, 25],), {"gamma": 0.3}),
        ("ExponentialLR", (0.9,), {}),
        ("CosineAnnealingLR", (10,), {"eta_min": 0.001}),
        ("CosineAnnealingLR", (30,), {}),
        ("LinearLR", (), {"start_factor": 0.25, "end_factor": 0.9, "total_iters": 12}),
        ("LinearLR", (), {}),
        ("LambdaLR", ([lambda e: 0.95**e, lambda e: 1.0 / (1 + e)],), {}),
        ("LambdaLR", (lambda e: (e % 5 + 1) / 5,), {}),
    ],
)
def test_lr_sequence_matches_torch(cls_name, args, kwargs):
    fsched, tsched, fopt, topt = both(cls_name, *args, **kwargs)
    assert_varies(run(fsched, tsched, fopt, topt))


@pytest.mark.parametrize(
    ("opt", "opt_kwargs", "kwargs"),
    [
        ("SGD", {"momentum": 0.9}, {"max_lr": [1.0, 0.5], "total_steps": STEPS}),
        ("SGD", {"momentum": 0.9}, {"max_lr": 0.3, "total_steps": STEPS, "anneal_strategy": "linear"}),
        ("SGD", {"momentum": 0.9}, {"max_lr": 0.3, "epochs": 5, "steps_per_epoch": 9, "three_phase": True}),
        ("Adam", {}, {"max_lr": 0.01, "total_steps": STEPS, "pct_start": 0.25, "div_factor": 10.0}),
        ("Adam", {}, {"max_lr": 0.01, "total_steps": STEPS, "three_phase": True, "anneal_strategy": "linear"}),
        ("AdamW", {}, {"max_lr": 0.01, "total_steps": STEPS, "base_momentum": [0.8, 0.7], "max_momentum": 0.9}),
        ("RMSprop", {"momentum": 0.5}, {"max_lr": 0.02, "total_steps": STEPS, "final_div_factor": 100.0}),
        ("SGD", {}, {"max_lr": 0.3, "total_steps": STEPS, "cycle_momentum": False}),
    ],
)
def test_one_cycle_matches_torch(opt, opt_kwargs, kwargs):
    fsched, tsched, fopt, topt = both("OneCycleLR", opt=opt, opt_kwargs=opt_kwargs, **kwargs)
    lrs = run(fsched, tsched, fopt, topt, steps=STEPS - 1)  # the last step of the cycle is step STEPS - 1
    assert_varies(lrs)
    if kwargs.get("cycle_momentum", True):
        assert momentum_of(fopt.param_groups[0]) == pytest.approx(kwargs.get("max_momentum", 0.95), rel=1e-12)
    for group in fopt.param_groups:
        assert group["min_lr"] == group["initial_lr"] / kwargs.get("final_div_factor", 1e4)


METRICS = [
    1.0, 0.9, 0.8, 0.8, 0.8, 0.8, 0.79995, 0.8, 0.7, 0.7,
    0.7, 0.7, 0.7, 0.69, 0.69, 0.69, 0.69, 0.69, 0.6, 0.6,
    0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6,
    0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6,
]  # fmt: skip


@pytest.mark.parametrize(
    ("metrics", "kwargs"),
    [
        (METRICS, {"patience": 2}),
        (METRICS, {"patience": 2, "threshold": 0.0}),
        (METRICS, {"patience": 1, "factor": 0.5, "cooldown": 2, "min_lr": [0.01, 0.02]}),
        (METRICS, {"patience": 0, "threshold": 0.05, "threshold_mode": "abs", "min_lr": 1e-3}),
        ([2 - m for m in METRICS], {"mode": "max", "patience": 2, "threshold": 0.01}),
        ([-m for m in METRICS], {"mode": "max", "patience": 1, "threshold": 0.01, "threshold_mode": "abs"}),
        (METRICS, {"patience": 0, "factor": 0.9, "eps": 0.005}),
    ],
)
def test_reduce_lr_on_plateau_matches_torch(metrics, kwargs):
    fsched, tsched, fopt, topt = both("ReduceLROnPlateau", **kwargs)
    lrs = run(fsched, tsched, fopt, topt, steps=len(metrics), metrics=metrics)
    assert lrs[-1] != lrs[0]
    assert fsched.best == tsched.best and fsched.num_bad_epochs == tsched.num_bad_epochs


def test_reduce_lr_on_plateau_accepts_a_tensor_metric():
    fopt, _ = two_group_optimizers()
    sched = lr_scheduler.ReduceLROnPlateau(fopt, patience=0)
    sched.step(fm.tensor(1.0))
    sched.step(fm.tensor(2.0))
    assert sched.get_last_lr() == [0.1 * 0.1, 0.05 * 0.1]


def test_cosine_annealing_is_recursive_like_torch():
    """An lr changed from outside between steps carries into the recursive formula, as in PyTorch."""
    fsched, tsched, fopt, topt = both("CosineAnnealingLR", 20)
    for t in range(25):
        fopt.step()
        topt.step()
        if t == 6:
            fopt.param_groups[0]["lr"] *= 0.5
            topt.param_groups[0]["lr"] *= 0.5
        fsched.step()
        tsched.step()
        assert fsched.get_last_lr() == tsched.get_last_lr()
        if t == 9:  # epoch 10: half of the closed form, since the halving carries through the recursion
            closed_form = 0.1 * (1 + math.cos(math.pi * 10 / 20)) / 2
            assert fsched.get_last_lr()[0] == pytest.approx(closed_form / 2, rel=1e-12)


def test_epoch_argument_uses_the_closed_form():
    for name, args in [("StepLR", (3,)), ("MultiStepLR", ([2, 6],)), ("ExponentialLR", (0.5,)), ("LinearLR", ())]:
        fsched, tsched, fopt, topt = both(name, *args)
        for epoch in (4, 9, 1):
            fopt.step()
            topt.step()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tsched.step(epoch)
            with pytest.warns(UserWarning, match="epoch parameter"):
                fsched.step(epoch)
            assert fsched.get_last_lr() == tsched.get_last_lr(), (name, epoch)


def test_construction_sets_initial_lr_and_the_first_value():
    fopt, _ = two_group_optimizers()
    sched = lr_scheduler.LinearLR(fopt, start_factor=0.5, total_iters=4)
    assert sched.last_epoch == 0
    assert sched.base_lrs == [0.1, 0.05]
    assert [g["initial_lr"] for g in fopt.param_groups] == [0.1, 0.05]
    assert sched.get_last_lr() == [0.05, 0.025]


def test_scheduler_state_dict_round_trip():
    fopt, _ = two_group_optimizers()
    sched = lr_scheduler.MultiStepLR(fopt, milestones=[3, 6], gamma=0.5)
    for _ in range(4):
        fopt.step()
        sched.step()
    sd = sched.state_dict()
    assert "optimizer" not in sd and sd["last_epoch"] == 4

    fopt2, _ = two_group_optimizers()
    sched2 = lr_scheduler.MultiStepLR(fopt2, milestones=[1], gamma=0.9)
    sched2.load_state_dict(sd)
    fopt2.load_state_dict(fopt.state_dict())
    for _ in range(4):
        fopt.step()
        fopt2.step()
        sched.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
    assert sched.get_last_lr() == [0.1 * 0.25, 0.05 * 0.25]


def test_lambda_lr_state_dict_keeps_callable_objects_state():
    class Warmup:
        def __init__(self, steps):
            self.steps = steps

        def __call__(self, epoch):
            return min(1.0, (epoch + 1) / self.steps)

    fopt, _ = two_group_optimizers()
    sched = lr_scheduler.LambdaLR(fopt, [Warmup(4), lambda e: 1.0])
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [{"steps": 4}, None]
    fopt2, _ = two_group_optimizers()
    sched2 = lr_scheduler.LambdaLR(fopt2, [Warmup(10), lambda e: 1.0])
    sched2.load_state_dict(sd)
    assert sched2.lr_lambdas[0].steps == 4
