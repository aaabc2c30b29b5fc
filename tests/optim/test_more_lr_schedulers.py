"""PolynomialLR, CosineAnnealingWarmRestarts, SequentialLR and ChainedScheduler against torch: the same lrs."""

import pickle

import numpy as np
import pytest

import forgeml as fm
from forgeml import optim
from forgeml.optim import lr_scheduler

torch = pytest.importorskip("torch")

STEPS = 30


def make(lib, name="SGD", **kwargs):
    """A two-group optimizer (lrs 0.1 and 0.05) of ``lib`` (forgeml or torch)."""
    a = lib.nn.Parameter(lib.ones(2)) if lib is fm else torch.ones(2, requires_grad=True)
    b = lib.nn.Parameter(lib.ones(3)) if lib is fm else torch.ones(3, requires_grad=True)
    return getattr(lib.optim, name)([{"params": [a]}, {"params": [b], "lr": 0.05}], lr=0.1, **kwargs)


def build(lib, spec):
    """``spec(lib, opt)`` builds the scheduler of ``lib`` on a fresh optimizer; returns (optimizer, scheduler)."""
    opt = make(lib)
    return opt, spec(lib.optim.lr_scheduler, opt)


SPECS = {
    "poly": lambda L, o: L.PolynomialLR(o),
    "poly-power2": lambda L, o: L.PolynomialLR(o, total_iters=12, power=2.0),
    "poly-sqrt": lambda L, o: L.PolynomialLR(o, total_iters=7, power=0.5),
    "warm-restarts": lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=7),
    "warm-restarts-mult": lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.001),
    "sequential": lambda L, o: L.SequentialLR(
        o, [L.LinearLR(o, start_factor=0.1, total_iters=5), L.CosineAnnealingLR(o, T_max=20)], milestones=[5]
    ),
    "sequential-3": lambda L, o: L.SequentialLR(
        o,
        [L.LinearLR(o, 0.5, 0.5, 3), L.ExponentialLR(o, gamma=0.9), L.StepLR(o, step_size=4)],
        milestones=[4, 12],
    ),
    "chained": lambda L, o: L.ChainedScheduler(
        [L.ExponentialLR(o, gamma=0.95), L.MultiStepLR(o, milestones=[4, 9, 20], gamma=0.5)]
    ),
    "chained-with-opt": lambda L, o: L.ChainedScheduler(
        [L.LinearLR(o, start_factor=0.2, total_iters=6), L.PolynomialLR(o, total_iters=25, power=1.5)], optimizer=o
    ),
}


def lrs(opt):
    return [g["lr"] for g in opt.param_groups]


@pytest.mark.parametrize("key", list(SPECS))
def test_lr_sequence_matches_torch(key):
    spec = SPECS[key]
    fopt, fs = build(fm, spec)
    topt, ts = build(torch, spec)
    assert fs.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-14)
    seen = set()
    for t in range(STEPS):
        fopt.step()
        topt.step()
        fs.step()
        ts.step()
        np.testing.assert_allclose(fs.get_last_lr(), ts.get_last_lr(), rtol=1e-13, err_msg=f"step {t + 1}")
        np.testing.assert_allclose(lrs(fopt), lrs(topt), rtol=1e-13, err_msg=f"step {t + 1}")
        assert getattr(fs, "last_epoch", None) == getattr(ts, "last_epoch", None)
        seen.add(round(lrs(fopt)[0], 12))
    assert len(seen) > 3  # the schedule really moves


def test_warm_restarts_fractional_epochs_match_torch():
    _, fs = build(fm, SPECS["warm-restarts-mult"])
    _, ts = build(torch, SPECS["warm-restarts-mult"])
    iters = 4
    for epoch in range(12):
        for i in range(iters):
            e = epoch + i / iters
            fs.step(e)
            ts.step(e)
            np.testing.assert_allclose(fs.get_last_lr(), ts.get_last_lr(), rtol=1e-13, err_msg=f"epoch {e}")
            assert fs.T_i == ts.T_i and fs.T_cur == pytest.approx(ts.T_cur) and fs.last_epoch == ts.last_epoch
    with pytest.raises(ValueError, match="non-negative epoch"):
        fs.step(-1)


def test_warm_restarts_restart_to_the_initial_lr():
    opt, s = build(fm, SPECS["warm-restarts"])
    for _ in range(7):
        opt.step()
        s.step()
    assert s.get_last_lr() == pytest.approx([0.1, 0.05])


@pytest.mark.parametrize("key", ["poly-power2", "warm-restarts-mult", "sequential", "chained"])
def test_state_dict_round_trip_continues_identically(key):
    opt, s = build(fm, SPECS[key])
    for _ in range(8):
        opt.step()
        s.step()
    saved = pickle.loads(pickle.dumps(s.state_dict()))
    saved_opt = opt.state_dict()
    expected = []
    for _ in range(10):
        opt.step()
        s.step()
        expected.append(s.get_last_lr())
    opt2, s2 = build(fm, SPECS[key])
    opt2.load_state_dict(saved_opt)
    s2.load_state_dict(saved)
    got = []
    for _ in range(10):
        opt2.step()
        s2.step()
        got.append(s2.get_last_lr())
    assert got == expected


def test_composite_state_dict_holds_the_children():
    _, s = build(fm, SPECS["sequential"])
    sd = s.state_dict()
    assert "optimizer" not in sd and len(sd["_schedulers"]) == 2
    assert all("optimizer" not in child for child in sd["_schedulers"])
    s.load_state_dict(sd)
    assert "_schedulers" in sd  # the dict passed in is left as it was


def test_errors_name_the_problem():
    opt, other = make(fm), make(fm)
    L = lr_scheduler
    with pytest.raises(ValueError, match="number of milestone"):
        L.SequentialLR(opt, [L.StepLR(opt, 2), L.StepLR(opt, 3)], milestones=[])
    with pytest.raises(ValueError, match="same optimizer"):
        L.ChainedScheduler([L.StepLR(opt, 2), L.StepLR(other, 3)])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        L.ChainedScheduler([L.ReduceLROnPlateau(opt)])
    with pytest.raises(ValueError, match="at least one"):
        L.SequentialLR(opt, [], milestones=[])
    with pytest.raises(ValueError, match="T_0"):
        L.CosineAnnealingWarmRestarts(opt, T_0=0)
    with pytest.raises(ValueError, match="T_mult"):
        L.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=0)


def test_exported_from_optim():
    for name in ("SequentialLR", "ChainedScheduler", "CosineAnnealingWarmRestarts", "PolynomialLR"):
        assert getattr(optim, name) is getattr(lr_scheduler, name)
