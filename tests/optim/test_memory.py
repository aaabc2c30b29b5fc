"""Steps after the first allocate no parameter-sized arrays: state buffers are preallocated and updated in place."""

import tracemalloc

import numpy as np
import pytest

import forgeml as fm
from forgeml import optim

SHAPES = [(400, 500), (500,), (50, 400)]  # the first is 1.6 MB in float64
LIMIT = 64 * 1024  # far below one parameter (1.6 MB) and below one 128 KiB block

FACTORIES = {
    "SGD": lambda ps: optim.SGD(ps, lr=0.01),
    "SGD-momentum": lambda ps: optim.SGD(ps, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01),
    "SGD-dampening-maximize": lambda ps: optim.SGD(ps, lr=0.01, momentum=0.9, dampening=0.1, maximize=True),
    "Adam": optim.Adam,
    "Adam-all": lambda ps: optim.Adam(ps, amsgrad=True, weight_decay=0.1, maximize=True),
    "AdamW": lambda ps: optim.AdamW(ps, amsgrad=True),
    "RMSprop": optim.RMSprop,
    "RMSprop-all": lambda ps: optim.RMSprop(ps, centered=True, momentum=0.9, weight_decay=0.1, maximize=True),
    "Adagrad": lambda ps: optim.Adagrad(ps, lr_decay=0.01, weight_decay=0.1),
}


def setup(name, dtype=np.float64):
    rng = np.random.default_rng(0)
    params = [fm.nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]
    for p in params:
        p.grad = fm.Tensor(rng.standard_normal(p.shape).astype(dtype))
    return params, FACTORIES[name](params)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_steps_do_not_allocate_parameter_sized_memory(name):
    _, opt = setup(name)
    opt.step()  # the first step creates the state and the scratch blocks
    opt.step()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(5):
            opt.step()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < LIMIT, f"{name}: a step allocated up to {peak - base} bytes"
    assert current - base < LIMIT


def test_tracemalloc_sees_numpy_temporaries():
    """The check above can fail: a step that made parameter-sized temporaries would be seen."""
    params, _ = setup("SGD")
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for p in params:
            p._data -= 0.01 * p.grad._data  # one temporary the size of the parameter
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base >= 400 * 500 * 8


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_buffers_keep_their_identity(name):
    params, opt = setup(name, np.float32)
    opt.step()
    arrays = {(id(p), k): v._data for p in params for k, v in opt.state[p].items()}
    data = [p._data for p in params]
    for _ in range(3):
        opt.step()
    for p in params:
        for k, v in opt.state[p].items():
            assert v._data is arrays[(id(p), k)], k
    assert all(p._data is d for p, d in zip(params, data))
