"""SyncBatchNorm on a real 2-rank MPI job against torch's BatchNorm on the concatenated batch, and against
finite differences of the global loss; conversion and the world-of-one path in this process.

The ranks hold batches of different sizes (5 and 3 samples), so a statistic
that averaged the ranks' means instead of counting samples would show. What
each rank computes, and what it should equal:

- the output and the input gradient of its own rows: the rows of the full
  batch's (the all-reduced sums make the backward the gradient of the sum of
  every rank's loss);
- the weight and bias gradients: this rank's share; summed over the ranks they
  are the full batch's. (``DistributedDataParallel`` averages instead of
  summing, and each rank's loss is the mean over its own batch: the average of
  the gradients of those means is the gradient of the mean over the global
  batch when the ranks' batches have the same size, which is what
  ``tests/distributed/test_ddp.py`` checks end to end);
- the running statistics: identical on every rank, those of the full batch
  (unbiased variance over the global count).
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
import forgeml.distributed as dist
from forgeml import nn
from forgeml.distributed import SyncBatchNorm

torch = pytest.importorskip("torch")

# One BLAS thread per rank (as ``forgeml launch`` sets): ranks that each start a thread per core oversubscribe
# the machine, and the MLP jobs here then run ten times slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SIZES = (5, 3)  # rows on rank 0 and rank 1
CASES = {"2d": (3,), "3d": (3, 4), "4d": (3, 2, 3), "5d": (2, 2, 2, 2)}  # the shape after the batch dimension

RANK_SCRIPT = """
import numpy as np

import forgeml as fm
import forgeml.distributed as dist
from forgeml.distributed import SyncBatchNorm
from mpi_report import report

dist.init_process_group("mpi")
rank, ws = dist.get_rank(), dist.get_world_size()
SIZES = (5, 3)
CASES = {"2d": (3,), "3d": (3, 4), "4d": (3, 2, 3), "5d": (2, 2, 2, 2)}


def layer(c, **kwargs):
    bn = SyncBatchNorm(c, dtype=fm.float64, **kwargs)
    if bn.affine:
        rng = np.random.default_rng([c, 99])  # the same on every rank
        bn.weight._data[...] = rng.normal(1.0, 0.3, c)
        bn.bias._data[...] = rng.normal(0.0, 0.3, c)
    return bn


def grad_of(t):
    return None if t is None or t.grad is None else t.grad._data


for i, (case, rest) in enumerate(CASES.items()):
    rng = np.random.default_rng([i, rank])
    shape = (SIZES[rank],) + rest
    x_np = rng.normal(1.0 + 2 * rank, 2.0 + rank, size=shape)  # the ranks' rows differ in mean and spread
    g_np = rng.standard_normal(shape)
    x2_np = rng.normal(-1.0, 0.5, size=shape)
    bn = layer(rest[0], momentum=0.2)
    x = fm.tensor(x_np, requires_grad=True)
    out = bn(x)
    out.backward(fm.tensor(g_np))
    bn(fm.tensor(x2_np))  # a second training forward: the running statistics move again
    stats = [bn.running_mean._data.copy(), bn.running_var._data.copy(), int(bn.num_batches_tracked.item())]
    bn.eval()
    out_eval = bn(fm.tensor(x_np))
    report(**{case: {
        "x": x_np, "g": g_np, "x2": x2_np, "out": out.detach(), "x_grad": grad_of(x), "w_grad": grad_of(bn.weight),
        "b_grad": grad_of(bn.bias), "running": stats, "out_eval": out_eval.detach(),
    }})

# momentum=None: a cumulative average over the forwards
rng = np.random.default_rng([10, rank])
bn = layer(3, momentum=None)
xs = [rng.normal(rank, 1.0 + rank, size=(SIZES[rank], 3)) for _ in range(3)]
for x_np in xs:
    bn(fm.tensor(x_np))
report(cumulative={"xs": xs, "running": [bn.running_mean._data, bn.running_var._data]})

# no affine parameters, no running statistics
rng = np.random.default_rng([11, rank])
bn = layer(4, affine=False, track_running_stats=False)
x_np, g_np = rng.normal(rank, 2.0, size=(SIZES[rank], 4, 2)), rng.standard_normal((SIZES[rank], 4, 2))
x = fm.tensor(x_np, requires_grad=True)
out = bn(x)
out.backward(fm.tensor(g_np))
report(bare={"x": x_np, "g": g_np, "out": out.detach(), "x_grad": x.grad, "buffers": [b is None for b in
       (bn.running_mean, bn.running_var, bn.num_batches_tracked)]})

# finite differences of the global loss L = sum over ranks of sum(out * g), in float64
rng = np.random.default_rng([12, rank])
n = SIZES[rank] - 1  # 4 and 2 rows of 2 channels
x_np, g_np = rng.normal(rank, 1.5, size=(n, 2)), rng.standard_normal((n, 2))
bn = layer(2, track_running_stats=False)


def global_loss(x_local):
    with fm.no_grad():
        local = float((bn(fm.tensor(x_local)) * fm.tensor(g_np)).sum().item())
    total = [None] * ws
    dist.all_gather_object(total, local)
    return sum(total)


x = fm.tensor(x_np, requires_grad=True)
(bn(x) * fm.tensor(g_np)).sum().backward()
analytic_x = x.grad._data.copy()
analytic_wb = np.concatenate([bn.weight.grad._data, bn.bias.grad._data])
t = fm.tensor(analytic_wb.copy())
dist.all_reduce(t)
analytic_wb = t._data
h = 1e-6
numeric_x = np.zeros_like(x_np)
sizes = [None] * ws
dist.all_gather_object(sizes, x_np.size)
for owner in range(ws):
    for j in range(sizes[owner]):
        values = []
        for sign in (1, -1):
            x_try = x_np.copy()
            if rank == owner:
                x_try.flat[j] += sign * h
            values.append(global_loss(x_try))
        if rank == owner:
            numeric_x.flat[j] = (values[0] - values[1]) / (2 * h)
numeric_wb = np.zeros(4)
for j in range(4):
    values = []
    for sign in (1, -1):
        p = bn.weight if j < 2 else bn.bias
        p._data[j % 2] += sign * h
        values.append(global_loss(x_np))
        p._data[j % 2] -= sign * h
    numeric_wb[j] = (values[0] - values[1]) / (2 * h)
report(finite_differences={"x": [analytic_x, numeric_x], "weight_bias": [analytic_wb, numeric_wb]})

# a float64 input into a float32 layer is an error on the distributed path
try:
    SyncBatchNorm(3)(fm.tensor(np.ones((2, 3))))
    message = "no error"
except TypeError as exc:
    message = str(exc)
report(dtype_error=message)
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def job(mpirun):
    return mpirun(RANK_SCRIPT, n=2, env=ONE_THREAD, timeout=60).check()


def _cat(job, case, key):
    return np.concatenate([np.asarray(job[r][case][key], np.float64) for r in (0, 1)])


def _torch_bn(ndim, c, **kwargs):
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[ndim]
    bn = cls(c, dtype=torch.float64, **kwargs)
    if bn.affine:
        rng = np.random.default_rng([c, 99])
        with torch.no_grad():
            bn.weight.copy_(torch.from_numpy(rng.normal(1.0, 0.3, c)))
            bn.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.3, c)))
    return bn


def _close(ours, theirs, what):
    np.testing.assert_allclose(np.asarray(ours, np.float64), theirs, rtol=1e-11, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("case", list(CASES))
def test_training_forward_and_backward_equal_batchnorm_on_the_whole_batch(job, case):
    x, g, x2 = _cat(job, case, "x"), _cat(job, case, "g"), _cat(job, case, "x2")
    bn = _torch_bn(x.ndim, x.shape[1], momentum=0.2)
    xt = torch.from_numpy(x).requires_grad_(True)
    out = bn(xt)
    out.backward(torch.from_numpy(g))
    with torch.no_grad():
        bn(torch.from_numpy(x2))
    _close(_cat(job, case, "out"), out.detach().numpy(), f"{case}: outputs")
    _close(_cat(job, case, "x_grad"), xt.grad.numpy(), f"{case}: input gradients")
    for key, expected in (("w_grad", bn.weight.grad), ("b_grad", bn.bias.grad)):
        total = sum(np.asarray(job[r][case][key]) for r in (0, 1))  # each rank's share; their sum is the whole's
        _close(total, expected.numpy(), f"{case}: {key} summed over the ranks")
        assert not np.allclose(job[0][case][key], expected.numpy())  # a share, not the whole on each rank
    for r in (0, 1):
        mean, var, count = job[r][case]["running"]
        _close(mean, bn.running_mean.numpy(), f"{case}: running_mean on rank {r}")
        _close(var, bn.running_var.numpy(), f"{case}: running_var (unbiased over the global count) on rank {r}")
        assert count == 2 == int(bn.num_batches_tracked)


@pytest.mark.parametrize("case", list(CASES))
def test_eval_mode_uses_the_running_statistics_on_each_rank_alone(job, case):
    x, x2 = _cat(job, case, "x"), _cat(job, case, "x2")
    bn = _torch_bn(x.ndim, x.shape[1], momentum=0.2)
    with torch.no_grad():
        bn(torch.from_numpy(x))
        bn(torch.from_numpy(x2))
        bn.eval()
        expected = bn(torch.from_numpy(x)).numpy()
    _close(_cat(job, case, "out_eval"), expected, f"{case}: eval outputs")
    # each rank's rows alone give the same rows: no batch statistics in eval
    assert not np.allclose(_cat(job, case, "out_eval"), _cat(job, case, "out"))


def test_momentum_none_is_a_cumulative_average_over_the_global_batches(job):
    xs = [np.concatenate([np.asarray(job[r]["cumulative"]["xs"][i]) for r in (0, 1)]) for i in range(3)]
    bn = _torch_bn(2, 3, momentum=None)
    with torch.no_grad():
        for x in xs:
            bn(torch.from_numpy(x))
    for r in (0, 1):
        mean, var = job[r]["cumulative"]["running"]
        _close(mean, bn.running_mean.numpy(), "running_mean")
        _close(var, bn.running_var.numpy(), "running_var")


def test_without_affine_parameters_or_running_statistics(job):
    x, g = _cat(job, "bare", "x"), _cat(job, "bare", "g")
    bn = _torch_bn(3, 4, affine=False, track_running_stats=False)
    xt = torch.from_numpy(x).requires_grad_(True)
    out = bn(xt)
    out.backward(torch.from_numpy(g))
    _close(_cat(job, "bare", "out"), out.detach().numpy(), "outputs")
    _close(_cat(job, "bare", "x_grad"), xt.grad.numpy(), "input gradients")
    assert job[0]["bare"]["buffers"] == [True, True, True]


def test_backward_matches_finite_differences_of_the_global_loss(job):
    for r in (0, 1):
        fd = job[r]["finite_differences"]
        analytic, numeric = (np.asarray(a) for a in fd["x"])
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=f"input gradient on rank {r}")
        analytic, numeric = (np.asarray(a) for a in fd["weight_bias"])
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7, err_msg=f"weight and bias on rank {r}")


def test_an_input_of_another_dtype_than_the_parameters_is_refused(job):
    message = job[0]["dtype_error"]
    assert "float64" in message and "float32" in message


# -- in this process: conversion and a world of one --------------------------------------------------
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
        self.norm = nn.BatchNorm2d(2, momentum=0.3, eps=1e-3)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.features(x))


def test_convert_sync_batchnorm_keeps_parameters_buffers_settings_and_order():
    fm.manual_seed(0)
    net = _Net()
    with fm.no_grad():
        net.features[1].running_mean.fill_(0.5)
    net.norm.eval()
    old_bn, old_norm = net.features[1], net.norm
    order = [n for n, _ in net.named_parameters()]
    state = {k: v._data.copy() for k, v in net.state_dict().items()}
    x = fm.tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    expected = net(x)._data.copy()

    converted = SyncBatchNorm.convert_sync_batchnorm(net)
    assert converted is net
    assert [type(m).__name__ for m in net.features] == ["Linear", "SyncBatchNorm", "ReLU", "Linear"]
    new_bn, new_norm = net.features[1], net.norm
    assert isinstance(new_bn, SyncBatchNorm) and isinstance(new_norm, SyncBatchNorm)
    assert new_bn.weight is old_bn.weight and new_bn.bias is old_bn.bias
    assert new_bn.running_mean is old_bn.running_mean and new_bn.num_batches_tracked is old_bn.num_batches_tracked
    assert (new_norm.momentum, new_norm.eps, new_norm.training) == (0.3, 1e-3, False)
    assert new_norm.weight is old_norm.weight and new_norm.running_var is old_norm.running_var
    assert [n for n, _ in net.named_parameters()] == order, "conversion must not reorder the parameters"
    assert list(net.state_dict()) == list(state)
    # no process group: plain batch norm (the same output as before the conversion)
    np.testing.assert_array_equal(net(x)._data, expected)

    bn = nn.BatchNorm1d(3)
    top = SyncBatchNorm.convert_sync_batchnorm(bn)
    assert isinstance(top, SyncBatchNorm) and top.weight is bn.weight
    assert SyncBatchNorm.convert_sync_batchnorm(top) is top


def test_world_of_one_is_plain_batchnorm_and_checks_dimensions():
    assert not dist.is_initialized()
    assert nn.SyncBatchNorm is SyncBatchNorm
    rng = np.random.default_rng(1)
    for shape, plain_cls in (((6, 3), nn.BatchNorm1d), ((6, 3, 5), nn.BatchNorm1d), ((4, 3, 2, 2), nn.BatchNorm2d)):
        x = rng.normal(2.0, 3.0, size=shape).astype(np.float32)
        sync, plain = SyncBatchNorm(3), plain_cls(3)
        xs, xp = fm.tensor(x, requires_grad=True), fm.tensor(x, requires_grad=True)
        (sync(xs) ** 2).sum().backward()
        (plain(xp) ** 2).sum().backward()
        np.testing.assert_array_equal(xs.grad._data, xp.grad._data)
        np.testing.assert_array_equal(sync.running_var._data, plain.running_var._data)
    with pytest.raises(ValueError, match=r"SyncBatchNorm: expected 2D or 3D or 4D or 5D input \(got 1D"):
        SyncBatchNorm(3)(fm.ones(3))
