"""Optimizer and scheduler errors: PyTorch's messages, naming the offending value."""

import re

import numpy as np
import pytest

import forgeml as fm
from forgeml import optim
from forgeml.optim import lr_scheduler


@pytest.fixture
def p():
    return fm.nn.Parameter(np.ones(3))


def test_empty_parameter_list():
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        optim.Adam(fm.nn.Sequential().parameters())


def test_params_must_be_an_iterable_not_a_tensor(p):
    with pytest.raises(TypeError, match=re.escape("iterable of Tensors or dicts, but got forgeml.Parameter")):
        optim.SGD(p, lr=0.1)


def test_params_must_be_tensors(p):
    with pytest.raises(
        TypeError, match=re.escape("optimizer can only optimize Tensors, but one of the params is numpy.ndarray")
    ):
        optim.Adam([p, np.ones(3)])


def test_non_leaf_tensors_are_refused(p):
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        optim.SGD([p * 2], lr=0.1)


def test_a_parameter_in_two_groups(p):
    q = fm.nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        optim.SGD([{"params": [p, q]}, {"params": [p]}], lr=0.1)
    opt = optim.SGD([q], lr=0.1)
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        opt.add_param_group({"params": [q]})
    assert len(opt.param_groups) == 1


def test_a_duplicate_in_one_group_warns(p):
    with pytest.warns(UserWarning, match="duplicate parameters"):
        optim.SGD([p, p], lr=0.1)


def test_sets_are_refused(p):
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD({p}, lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD([{"params": {p}}], lr=0.1)


def test_add_param_group_needs_a_dict(p):
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([fm.nn.Parameter(np.ones(1))])


def test_required_hyperparameter(p):
    class Custom(optim.Optimizer):
        def __init__(self, params, lr=optim.required):
            super().__init__(params, {"lr": lr})

    with pytest.raises(ValueError, match="didn't specify a value of required optimization parameter lr"):
        Custom([p])
    assert Custom([{"params": [p], "lr": 0.1}]).param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda ps: optim.SGD(ps, lr=-0.1), "Invalid learning rate: -0.1"),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
        (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1e-4), "Invalid weight_decay value: -0.0001"),
        (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
        (
            lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            r"Nesterov momentum requires a momentum and zero dampening \(got momentum=0.9, dampening=0.1\)",
        ),
        (lambda ps: optim.Adam(ps, lr=-1.0), "Invalid learning rate: -1.0"),
        (lambda ps: optim.Adam(ps, eps=-1e-8), "Invalid epsilon value: -1e-08"),
        (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), r"Invalid beta parameter at index 1: -0.1"),
        (lambda ps: optim.Adam(ps, betas=(0.9,)), r"betas should be a pair"),
        (lambda ps: optim.Adam(ps, weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (lambda ps: optim.AdamW(ps, betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
        (lambda ps: optim.AdamW(ps, lr=-2), "Invalid learning rate: -2"),
        (lambda ps: optim.RMSprop(ps, alpha=-0.5), "Invalid alpha value: -0.5"),
        (lambda ps: optim.RMSprop(ps, momentum=-0.1), "Invalid momentum value: -0.1"),
        (lambda ps: optim.RMSprop(ps, eps=-1.0), "Invalid epsilon value: -1.0"),
        (lambda ps: optim.Adagrad(ps, lr_decay=-0.1), "Invalid lr_decay value: -0.1"),
        (lambda ps: optim.Adagrad(ps, initial_accumulator_value=-1), "Invalid initial_accumulator_value value: -1"),
        (lambda ps: optim.Adagrad(ps, eps=-1e-10), "Invalid epsilon value: -1e-10"),
    ],
)
def test_invalid_hyperparameters_name_the_value(p, factory, message):
    with pytest.raises(ValueError, match=message):
        factory([p])


def test_scheduler_errors(p):
    sgd = optim.SGD([p], lr=0.1)
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        lr_scheduler.StepLR([p], step_size=3)
    with pytest.raises(ValueError, match="Starting multiplicative factor expected to be greater than 0"):
        lr_scheduler.LinearLR(sgd, start_factor=0)
    with pytest.raises(ValueError, match=re.escape("end_factor=1.5")):
        lr_scheduler.LinearLR(sgd, end_factor=1.5)
    with pytest.raises(ValueError, match="Expected 1 lr_lambdas, but got 2"):
        lr_scheduler.LambdaLR(sgd, [lambda e: 1.0, lambda e: 1.0])
    with pytest.raises(ValueError, match="You must define either total_steps OR"):
        lr_scheduler.OneCycleLR(sgd, max_lr=1.0)
    with pytest.raises(ValueError, match="Expected positive integer total_steps, but got 0"):
        lr_scheduler.OneCycleLR(sgd, max_lr=1.0, total_steps=0)
    with pytest.raises(ValueError, match=re.escape("Expected float between 0 and 1 pct_start, but got 1.5")):
        lr_scheduler.OneCycleLR(sgd, max_lr=1.0, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="anneal_strategy must be one of 'cos' or 'linear', instead got exp"):
        lr_scheduler.OneCycleLR(sgd, max_lr=1.0, total_steps=10, anneal_strategy="exp")
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        lr_scheduler.OneCycleLR(optim.Adagrad([p]), max_lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match=re.escape("max_lr must have the same length as optimizer.param_groups")):
        lr_scheduler.OneCycleLR(sgd, max_lr=[1.0, 2.0], total_steps=10)
    with pytest.raises(ValueError, match=re.escape("Factor should be < 1.0, got factor=2")):
        lr_scheduler.ReduceLROnPlateau(sgd, factor=2)
    with pytest.raises(ValueError, match="mode 'up' is unknown"):
        lr_scheduler.ReduceLROnPlateau(sgd, mode="up")
    with pytest.raises(ValueError, match="threshold mode 'pct' is unknown"):
        lr_scheduler.ReduceLROnPlateau(sgd, threshold_mode="pct")
    with pytest.raises(ValueError, match="expected 1 min_lrs, got 2"):
        lr_scheduler.ReduceLROnPlateau(sgd, min_lr=[0.1, 0.2])
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(optim.SGD([fm.nn.Parameter(np.ones(1))], lr=0.1), step_size=2, last_epoch=3)


def test_one_cycle_refuses_to_step_past_its_total(p):
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=5)
    for _ in range(5):
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match=re.escape("Tried to step 6 times. The specified number of total steps is 5")):
        sched.step()


def test_scheduler_stepped_before_the_optimizer_warns(p):
    opt = optim.SGD([p], lr=0.1)
    sched = lr_scheduler.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match=r"`lr_scheduler.step\(\)` before `optimizer.step\(\)`"):
        sched.step()


def test_get_lr_outside_step_warns(p):
    sched = lr_scheduler.ExponentialLR(optim.SGD([p], lr=0.1), gamma=0.5)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()
