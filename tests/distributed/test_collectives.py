"""Collectives on tensors over real MPI jobs, checked against NumPy references built from what each rank sent.

One rank script runs every collective and reports its inputs and results; it
runs once with 2 ranks and once with 3 (an odd world shows AVG division,
reduce_scatter blocks and gather order that 2 ranks can hide), and the tests
below each read their part of those two jobs. Argument errors are checked in
this process against a fake group, and the MPI backend's own checks in one
plain process (mpi4py's world of one).
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
import forgeml.distributed as dist
from forgeml.distributed.group import ProcessGroup

FLOAT_OPS = ["SUM", "AVG", "PRODUCT", "MIN", "MAX"]
INT_OPS = FLOAT_OPS + ["BAND", "BOR", "BXOR"]
SHAPES = [(), (1,), (7,), (1001,), (3, 5)]
DTYPES = {"float32": FLOAT_OPS, "float64": FLOAT_OPS, "int64": INT_OPS}

RANK_SCRIPT = """
import time

import numpy as np

import forgeml as fm
import forgeml.distributed as dist
from forgeml.distributed import ReduceOp
from mpi_report import report

dist.init_process_group("mpi")
rank, ws = dist.get_rank(), dist.get_world_size()
report(world=[rank, ws, dist.get_backend()])
SHAPES = [(), (1,), (7,), (1001,), (3, 5)]
DTYPES = {
    "float32": ["SUM", "AVG", "PRODUCT", "MIN", "MAX"],
    "float64": ["SUM", "AVG", "PRODUCT", "MIN", "MAX"],
    "int64": ["SUM", "AVG", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR"],
}


def values(dtype, shape, op, seed):
    rng = np.random.default_rng([rank, seed])
    if dtype == "int64":
        if op in ("BAND", "BOR", "BXOR"):
            return rng.integers(-(2**62), 2**62, size=shape, dtype=np.int64)
        if op == "PRODUCT":
            return rng.integers(-3, 4, size=shape, dtype=np.int64)
        return rng.integers(-1000, 1000, size=shape, dtype=np.int64)
    if op == "PRODUCT":
        return rng.uniform(0.5, 1.5, size=shape).astype(dtype)
    return rng.standard_normal(size=shape).astype(dtype)


def tensor(array):
    return fm.Tensor(np.array(array, copy=True))


# -- all_reduce: every op, dtype and size; zero-copy and the version counter --
seed = 0
for dtype, ops in DTYPES.items():
    for op in ops:
        for shape in SHAPES:
            seed += 1
            x = values(dtype, shape, op, seed)
            t = tensor(x)
            before, version = t._data, t._version
            assert dist.all_reduce(t, op=ReduceOp[op]) is None
            report(**{f"all_reduce/{dtype}/{op}/{shape}": {
                "in": x, "out": t._data, "dtype": str(t._data.dtype), "shape": list(t._data.shape),
                "same_array": t._data is before, "versions": [version, t._version],
            }})
t = fm.zeros(0)
dist.all_reduce(t)
report(empty=list(t.shape))

# -- half precision: reduced in float32, written back in the tensor's dtype --
for dtype in ("float16", "bfloat16"):
    for op in ("SUM", "AVG", "MAX", "PRODUCT"):
        x = np.random.default_rng([rank, 99]).uniform(0.5, 1.5, size=1001).astype(np.float32)
        t = fm.tensor(x, dtype=getattr(fm, dtype))
        sent = t._data.astype(np.float32)
        before = t._data
        dist.all_reduce(t, op=ReduceOp[op])
        report(**{f"half/{dtype}/{op}": {"in": sent, "out": t._data, "dtype": str(t.dtype), "same_array": t._data is before}})

# -- non-contiguous views: the result lands in the base tensor's storage --
base = fm.Tensor(np.arange(24, dtype=np.float32).reshape(4, 6) + 100 * rank)
view = base[:, ::2]
strided = not view._data.flags.c_contiguous
version = base._version
dist.all_reduce(view)
report(strided={"base": base._data, "view": view._data, "strided": strided, "versions": [version, base._version]})
base = fm.Tensor(np.arange(12, dtype=np.float64).reshape(3, 4) * (rank + 1))
dist.all_reduce(base.T, op=ReduceOp.MAX)
report(transposed=base._data)
base = fm.tensor(np.arange(20, dtype=np.float32).reshape(4, 5) + rank, dtype=fm.float16)
dist.all_reduce(base[1:, 1:4], op=ReduceOp.AVG)
report(strided_half=base._data)
base = fm.Tensor(np.full((3, 4), rank, dtype=np.int64))
dist.broadcast(base[:, 1], src=1)
report(strided_broadcast=base._data)

# -- async_op=True: a Work to wait on --
t = fm.Tensor(np.full(5, rank + 1.0, dtype=np.float32))
work = dist.all_reduce(t, async_op=True)
is_work = isinstance(work, dist.Work)
first = work.wait()
report(async_all_reduce={
    "is_work": is_work, "wait": first, "completed": work.is_completed(), "wait_again": work.wait(), "out": t._data,
})
t = fm.tensor(np.full(7, rank + 1.0), dtype=fm.float16)
work = dist.all_reduce(t, op=ReduceOp.AVG, async_op=True)
while not work.is_completed():
    time.sleep(0.001)
report(async_half_avg=t._data)
outs = [fm.zeros(3) for _ in range(ws)]
work = dist.all_gather(outs, fm.Tensor(np.full(3, rank, dtype=np.float32)), async_op=True)
work.wait(timeout=30)
report(async_all_gather=[o._data for o in outs])

# -- broadcast and reduce to a rank other than 0 --
for name, x in [("vector", values("float32", (7,), "SUM", 500)), ("scalar", np.array(rank * 10 + 3, np.int64))]:
    t = tensor(x)
    dist.broadcast(t, src=1)
    report(**{f"broadcast/{name}": {"in": x, "out": t._data, "dtype": str(t._data.dtype)}})
for op in ("SUM", "AVG", "MAX"):
    x = values("float64", (7,), op, 600)
    t = tensor(x)
    dist.reduce(t, dst=1, op=ReduceOp[op])
    report(**{f"reduce/{op}": {"in": x, "out": t._data}})
x = values("int64", (5,), "SUM", 601)
t = tensor(x)
dist.reduce(t, 1, ReduceOp.AVG)
report(**{"reduce/int_avg": {"in": x, "out": t._data}})

# -- gathers --
x = values("float64", (2, 3), "SUM", 700)
outs = [fm.zeros(2, 3, dtype=fm.float64) for _ in range(ws)]
dist.all_gather(outs, tensor(x))
report(all_gather={"in": x, "out": [o._data for o in outs]})
outs = [fm.zeros((), dtype=fm.int64) for _ in range(ws)]
dist.all_gather(outs, fm.tensor(rank + 40, dtype=fm.int64))
report(all_gather_scalar=[o._data for o in outs])
x = values("float32", (3, 2), "SUM", 701)
flat, stacked = fm.zeros(ws * 3, 2), fm.zeros(ws, 3, 2)
before = flat._data
dist.all_gather_into_tensor(flat, tensor(x))
dist.all_gather_into_tensor(stacked, tensor(x))
report(all_gather_into_tensor={"in": x, "flat": flat._data, "stacked": stacked._data, "same_array": flat._data is before})
x = values("float32", (4,), "SUM", 702)
gathered = [fm.zeros(4) for _ in range(ws)] if rank == 1 else None
dist.gather(tensor(x), gathered, dst=1)
report(gather={"in": x, "out": [g._data for g in gathered] if gathered else None})
inputs = [fm.Tensor(np.full(3, 10.0 * r + rank, dtype=np.float32)) for r in range(ws)] if rank == 1 else None
t = fm.zeros(3)
dist.scatter(t, inputs, src=1)
report(scatter=t._data)

# -- reduce_scatter, list and tensor forms --
for op in ("SUM", "AVG", "MAX"):
    xs = [values("float32", (7,), op, 800 + r) for r in range(ws)]
    out = fm.zeros(7)
    dist.reduce_scatter(out, [tensor(x) for x in xs], op=ReduceOp[op])
    report(**{f"reduce_scatter/{op}": {"in": xs, "out": out._data}})
for dtype, op in [("float64", "SUM"), ("float64", "AVG"), ("int64", "AVG"), ("int64", "MIN")]:
    x = values(dtype, (ws * 5,), op, 900)
    out = fm.zeros(5, dtype=getattr(fm, dtype))
    before, version = out._data, out._version
    dist.reduce_scatter_tensor(out, tensor(x), op=ReduceOp[op])
    report(**{f"reduce_scatter_tensor/{dtype}/{op}": {
        "in": x, "out": out._data, "same_array": out._data is before, "versions": [version, out._version]
    }})
x = values("float32", (ws, 2, 3), "SUM", 901)
out = fm.zeros(2, 3)
dist.reduce_scatter_tensor(out, tensor(x))
report(reduce_scatter_tensor_blocks={"in": x, "out": out._data})

# -- barrier: nobody leaves before the last rank arrived --
if rank == ws - 1:
    time.sleep(0.3)
entered = time.monotonic()
dist.barrier()
report(barrier=[entered, time.monotonic()])

# -- objects --
objects = [{"from": 1, "text": "h\\u00e9llo"}, "a string", 42, None] if rank == 1 else [None] * 4
dist.broadcast_object_list(objects, src=1)
report(broadcast_object_list=objects)
gathered = [None] * ws
dist.all_gather_object(gathered, {"rank": rank, "pad": "x" * (100 * rank), "items": list(range(rank))})
report(all_gather_object=gathered)
gathered = [None] * ws if rank == 1 else None
dist.gather_object(f"rank {rank} says " + "y" * (3000 * rank), gathered, dst=1)
report(gather_object=gathered)
received = [None]
dist.scatter_object_list(received, [{"to": r, "word": "z" * r} for r in range(ws)] if rank == 1 else None, src=1)
report(scatter_object_list=received)

# -- CUDA tensors (on the CuPy stand-in of tests/checked_cuda.py): staged through the host and back --
from forgeml.backend import device as backend_device
from tests.checked_cuda import namespace

backend_device.use_cuda_namespace(namespace, device_count=1)
t = fm.Tensor(np.arange(5, dtype=np.float32) + rank).to("cuda")
before = t._data
dist.all_reduce(t, op=ReduceOp.AVG)
half = fm.tensor(np.arange(4.0) + rank, dtype=fm.float16).to("cuda")
dist.all_reduce(half, op=ReduceOp.MAX)
outs = [fm.zeros(3, device="cuda") for _ in range(ws)]
dist.all_gather(outs, fm.full((3,), float(rank), device="cuda"))
block = fm.zeros(2, device="cuda")
dist.reduce_scatter_tensor(block, fm.arange(float(ws * 2), device="cuda"))
b = fm.full((3,), float(rank), device="cuda")
dist.broadcast(b, src=1)
report(cuda={
    "avg": t.cpu()._data, "device": str(t.device), "same_array": t._data is before,
    "half_max": half.cpu()._data, "half_device": str(half.device), "all_gather": [o.cpu()._data for o in outs],
    "reduce_scatter": block.cpu()._data, "broadcast": b.cpu()._data,
})

dist.destroy_process_group()
report(initialized_after_destroy=dist.is_initialized())
"""


@pytest.fixture(scope="module", params=[2, 3], ids=["world2", "world3"])
def job(request, mpirun):
    """The rank script's reports, from a 2-rank and a 3-rank job: ``(world_size, {rank: {key: value}})``."""
    ws = request.param
    return ws, mpirun(RANK_SCRIPT, n=ws, timeout=60).check()


def sent(reports, key, field="in", dtype=None):
    """What every rank contributed to ``key``, stacked along a new first axis (rank order)."""
    return np.stack([np.asarray(reports[r][key][field], dtype=dtype) for r in sorted(reports)])


def reduce_ref(op: str, stack: np.ndarray) -> np.ndarray:
    """NumPy's answer for reducing ``stack`` over its first axis (ranks) with ``op``."""
    ws = stack.shape[0]
    if op == "SUM":
        return stack.sum(0, dtype=stack.dtype)
    if op == "AVG":
        total = stack.sum(0, dtype=stack.dtype)
        return total / np.asarray(ws, stack.dtype) if stack.dtype.kind == "f" else np.floor_divide(total, ws)
    if op == "PRODUCT":
        return stack.prod(0, dtype=stack.dtype)
    if op == "MIN":
        return stack.min(0)
    if op == "MAX":
        return stack.max(0)
    ufunc = {"BAND": np.bitwise_and, "BOR": np.bitwise_or, "BXOR": np.bitwise_xor}[op]
    return ufunc.reduce(stack, axis=0)


def assert_reduced(got, expected, dtype) -> None:
    dtype = np.dtype(dtype)
    got = np.asarray(got, dtype=dtype)
    if dtype.kind == "f":
        # Over 3 ranks MPI may add in another order than NumPy: a few ulps apart.
        rtol = {"float32": 1e-6, "float64": 1e-13}[dtype.name]
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol)
    else:
        np.testing.assert_array_equal(got, expected)


def test_world(job):
    ws, reports = job
    assert sorted(reports) == list(range(ws))
    for r in range(ws):
        assert reports[r]["world"] == [r, ws, "mpi"]
        assert reports[r]["initialized_after_destroy"] is False


@pytest.mark.parametrize(("dtype", "op"), [(dtype, op) for dtype, ops in DTYPES.items() for op in ops], ids=str)
def test_all_reduce(job, dtype, op):
    ws, reports = job
    for shape in SHAPES:
        key = f"all_reduce/{dtype}/{op}/{shape}"
        expected = reduce_ref(op, sent(reports, key, dtype=dtype))
        for r in range(ws):
            result = reports[r][key]
            assert result["dtype"] == dtype, key
            assert tuple(result["shape"]) == shape, key
            assert_reduced(result["out"], expected, dtype)


def test_all_reduce_is_zero_copy_and_bumps_the_version(job):
    ws, reports = job
    for r in range(ws):
        for key, result in reports[r].items():
            if key.startswith("all_reduce/"):
                assert result["same_array"] is True, f"{key}: all_reduce replaced tensor._data on rank {r}"
                before, after = result["versions"]
                assert after > before, f"{key}: the version counter did not move on rank {r}"
        assert reports[r]["empty"] == [0]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["SUM", "AVG", "MAX", "PRODUCT"])
def test_all_reduce_half_precision_goes_through_float32(job, dtype, op):
    ws, reports = job
    key = f"half/{dtype}/{op}"
    expected = reduce_ref(op, sent(reports, key, dtype=np.float32))
    if dtype == "float16":
        expected = expected.astype(np.float16)
    for r in range(ws):
        result = reports[r][key]
        assert result["dtype"] == f"forgeml.{dtype}"
        assert result["same_array"] is True  # staged through float32, but written back into the same storage
        tol = 2e-3 if dtype == "float16" else 1e-2  # one rounding to the half type at the end
        np.testing.assert_allclose(np.asarray(result["out"], np.float32), expected, rtol=tol, atol=tol)


def test_all_reduce_of_strided_views_writes_into_the_base(job):
    ws, reports = job
    bases = [np.arange(24, dtype=np.float32).reshape(4, 6) + 100 * r for r in range(ws)]
    summed = sum(b[:, ::2] for b in bases)
    for r in range(ws):
        result = reports[r]["strided"]
        assert result["strided"] is True
        expected = bases[r].copy()
        expected[:, ::2] = summed
        np.testing.assert_array_equal(result["base"], expected)
        np.testing.assert_array_equal(result["view"], summed)
        before, after = result["versions"]
        assert after > before, "a view's all_reduce must bump its base's version counter"

        base = np.arange(12, dtype=np.float64).reshape(3, 4)
        np.testing.assert_array_equal(reports[r]["transposed"], base * ws)  # MAX of base * (rank + 1)

        halves = [(np.arange(20, dtype=np.float32).reshape(4, 5) + q).astype(np.float16) for q in range(ws)]
        expected = halves[r].copy()
        expected[1:, 1:4] = (sum(h[1:, 1:4].astype(np.float32) for h in halves) / ws).astype(np.float16)
        np.testing.assert_array_equal(np.asarray(reports[r]["strided_half"], np.float16), expected)

        expected = np.full((3, 4), r, dtype=np.int64)
        expected[:, 1] = 1
        np.testing.assert_array_equal(reports[r]["strided_broadcast"], expected)


def test_async_op_returns_a_work(job):
    ws, reports = job
    total = sum(range(1, ws + 1))
    for r in range(ws):
        result = reports[r]["async_all_reduce"]
        assert result["is_work"] is True
        assert result["wait"] is True and result["completed"] is True and result["wait_again"] is True
        np.testing.assert_array_equal(result["out"], np.full(5, total, np.float32))
        np.testing.assert_allclose(reports[r]["async_half_avg"], np.full(7, total / ws), rtol=1e-3)
        np.testing.assert_array_equal(reports[r]["async_all_gather"], [np.full(3, q) for q in range(ws)])


def test_broadcast_from_rank_1(job):
    ws, reports = job
    for name, dtype in [("vector", "float32"), ("scalar", "int64")]:
        key = f"broadcast/{name}"
        source = np.asarray(reports[1][key]["in"], dtype)
        for r in range(ws):
            assert reports[r][key]["dtype"] == dtype
            np.testing.assert_array_equal(np.asarray(reports[r][key]["out"], dtype), source)
    assert reports[0]["broadcast/scalar"]["out"] == 13


@pytest.mark.parametrize("op", ["SUM", "AVG", "MAX"])
def test_reduce_to_rank_1(job, op):
    ws, reports = job
    key = f"reduce/{op}"
    expected = reduce_ref(op, sent(reports, key, dtype=np.float64))
    assert_reduced(reports[1][key]["out"], expected, np.float64)
    for r in range(ws):
        if r != 1:  # the other ranks' tensors are left as they were
            np.testing.assert_array_equal(reports[r][key]["out"], reports[r][key]["in"])


def test_reduce_avg_of_integers_floors(job):
    ws, reports = job
    expected = np.floor_divide(sent(reports, "reduce/int_avg", dtype=np.int64).sum(0), ws)
    np.testing.assert_array_equal(reports[1]["reduce/int_avg"]["out"], expected)


def test_all_gather(job):
    ws, reports = job
    contributed = sent(reports, "all_gather", dtype=np.float64)
    for r in range(ws):
        np.testing.assert_array_equal(reports[r]["all_gather"]["out"], contributed)
        assert reports[r]["all_gather_scalar"] == [40 + q for q in range(ws)]


def test_all_gather_into_tensor(job):
    ws, reports = job
    contributed = sent(reports, "all_gather_into_tensor", dtype=np.float32)
    for r in range(ws):
        result = reports[r]["all_gather_into_tensor"]
        np.testing.assert_array_equal(np.asarray(result["flat"], np.float32), contributed.reshape(ws * 3, 2))
        np.testing.assert_array_equal(np.asarray(result["stacked"], np.float32), contributed)
        assert result["same_array"] is True


def test_gather_to_rank_1(job):
    ws, reports = job
    contributed = sent(reports, "gather", dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(reports[1]["gather"]["out"], np.float32), contributed)
    for r in range(ws):
        if r != 1:
            assert reports[r]["gather"]["out"] is None


def test_scatter_from_rank_1(job):
    ws, reports = job
    for r in range(ws):
        np.testing.assert_array_equal(reports[r]["scatter"], np.full(3, 10.0 * r + 1))


@pytest.mark.parametrize("op", ["SUM", "AVG", "MAX"])
def test_reduce_scatter_list(job, op):
    ws, reports = job
    key = f"reduce_scatter/{op}"
    contributed = sent(reports, key, dtype=np.float32)  # [sender, block, 7]
    for r in range(ws):
        assert_reduced(reports[r][key]["out"], reduce_ref(op, contributed[:, r]), np.float32)


@pytest.mark.parametrize(("dtype", "op"), [("float64", "SUM"), ("float64", "AVG"), ("int64", "AVG"), ("int64", "MIN")])
def test_reduce_scatter_tensor(job, dtype, op):
    ws, reports = job
    key = f"reduce_scatter_tensor/{dtype}/{op}"
    reduced = reduce_ref(op, sent(reports, key, dtype=dtype))
    for r in range(ws):
        result = reports[r][key]
        assert_reduced(result["out"], reduced[5 * r : 5 * r + 5], dtype)
        assert result["same_array"] is True
        assert result["versions"][1] > result["versions"][0]
    blocks = sent(reports, "reduce_scatter_tensor_blocks", dtype=np.float32).sum(0)
    for r in range(ws):
        assert_reduced(reports[r]["reduce_scatter_tensor_blocks"]["out"], blocks[r], np.float32)


def test_barrier_waits_for_the_last_rank(job):
    ws, reports = job
    last_arrival = max(reports[r]["barrier"][0] for r in range(ws))
    for r in range(ws):
        assert reports[r]["barrier"][1] >= last_arrival, f"rank {r} left the barrier before rank {ws - 1} entered it"


def test_object_collectives(job):
    ws, reports = job
    for r in range(ws):
        assert reports[r]["broadcast_object_list"] == [{"from": 1, "text": "h\u00e9llo"}, "a string", 42, None]
        assert reports[r]["all_gather_object"] == [
            {"rank": q, "pad": "x" * (100 * q), "items": list(range(q))} for q in range(ws)
        ]
        assert reports[r]["scatter_object_list"] == [{"to": r, "word": "z" * r}]
        expected = [f"rank {q} says " + "y" * (3000 * q) for q in range(ws)] if r == 1 else None
        assert reports[r]["gather_object"] == expected


def test_cuda_tensors_are_staged_through_the_host(job):
    ws, reports = job
    for r in range(ws):
        result = reports[r]["cuda"]
        assert result["device"] == "cuda:0" and result["half_device"] == "cuda:0"
        assert result["same_array"] is True  # the result is copied back into the tensor's device array
        np.testing.assert_allclose(result["avg"], np.arange(5) + (ws - 1) / 2, rtol=1e-6)
        np.testing.assert_array_equal(result["half_max"], np.arange(4.0) + ws - 1)
        np.testing.assert_array_equal(result["all_gather"], [np.full(3, q) for q in range(ws)])
        np.testing.assert_array_equal(result["reduce_scatter"], ws * np.arange(2.0 * r, 2.0 * r + 2))
        np.testing.assert_array_equal(result["broadcast"], np.ones(3))


# -- one process: MPI's world of one, and the backend's own argument checks -----------------------
SINGLETON_SCRIPT = """
import numpy as np

import forgeml as fm
import forgeml.distributed as dist
from forgeml.distributed import ReduceOp
from mpi_report import report

group = dist.init_process_group("mpi", timeout=5)
report(world=[dist.get_rank(), dist.get_world_size(), type(group).__name__])


def error(call):
    try:
        call()
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    return None


t = fm.tensor([1.0, 2.0, 3.0])
dist.all_reduce(t, op=ReduceOp.AVG)
i = fm.tensor([7, 9], dtype=fm.int64)
dist.all_reduce(i, op=ReduceOp.BXOR)
outs = [fm.zeros(3)]
dist.all_gather(outs, t)
objects = [None]
dist.all_gather_object(objects, {"a": 1})
report(results=[t._data, i._data, outs[0]._data, objects])
report(errors={
    "bitwise_float": error(lambda: dist.all_reduce(fm.ones(3), op=ReduceOp.BAND)),
    "bool": error(lambda: dist.all_reduce(fm.tensor([True, False]))),
    "op_string": error(lambda: dist.all_reduce(fm.ones(3), op="sum")),
    "scatter_object_length": error(lambda: dist.scatter_object_list([None], [1, 2], src=0)),
    "init_twice": error(lambda: dist.init_process_group("mpi")),
})
dist.destroy_process_group()
report(bad_world_size=error(lambda: dist.init_process_group("mpi", world_size=2)))
"""


def test_world_of_one_in_a_plain_process(mpirun):
    reports = mpirun(SINGLETON_SCRIPT, n=1, mpiexec=False, timeout=60).check()[0]
    assert reports["world"] == [0, 1, "MPIBackend"]
    t, i, gathered, objects = reports["results"]
    np.testing.assert_array_equal(t, [1.0, 2.0, 3.0])
    assert i == [7, 9] and objects == [{"a": 1}]
    np.testing.assert_array_equal(gathered, [1.0, 2.0, 3.0])
    errors = reports["errors"]
    assert errors["bitwise_float"][0] == "TypeError" and "BAND" in errors["bitwise_float"][1]
    assert "integer" in errors["bitwise_float"][1]
    assert errors["bool"][0] == "TypeError" and "bool" in errors["bool"][1]
    assert errors["op_string"][0] == "TypeError" and "ReduceOp" in errors["op_string"][1]
    assert errors["scatter_object_length"][0] == "DistributedError"
    assert errors["init_twice"][0] == "DistributedError" and "already initialized" in errors["init_twice"][1]
    assert reports["bad_world_size"][0] == "DistributedError" and "world_size=2" in reports["bad_world_size"][1]


# -- argument errors: raised before any backend call, checked in this process --------------------
class FakeGroup(ProcessGroup):
    """Rank 0 of a world of 3 whose collectives must never be reached: argument checks come first."""

    name = "fake"

    def __init__(self, rank: int = 0, world_size: int = 3) -> None:
        super().__init__(rank, world_size, timeout=5)

    def _unreachable(self, *args, **kwargs):
        raise AssertionError("the collective reached the backend; the argument check should have raised first")

    all_reduce = broadcast = reduce = all_gather = reduce_scatter = gather = scatter = barrier = _unreachable
    broadcast_object = all_gather_object = gather_object = scatter_object = _unreachable

    def abort(self, code: int = 1) -> None:  # never end the test process
        raise AssertionError(f"abort({code}) was called")


@pytest.fixture
def fake():
    assert not dist.is_initialized(), "a test left a default process group behind"
    return FakeGroup()


def test_collectives_before_init_process_group_say_so():
    assert not dist.is_initialized()
    assert dist.get_rank() == 0 and dist.get_world_size() == 1
    for call in (
        lambda: dist.all_reduce(fm.ones(3)),
        lambda: dist.broadcast(fm.ones(3), src=0),
        dist.barrier,
        lambda: dist.all_gather_object([None], 1),
        dist.get_backend,
    ):
        with pytest.raises(dist.DistributedError, match="init_process_group"):
            call()


def test_init_process_group_arguments(fake):
    with pytest.raises(ValueError, match="unknown backend 'gloo'"):
        dist.init_process_group("gloo")
    group = dist.init_process_group(fake)
    try:
        assert group is fake and dist.is_initialized()
        assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 3, "fake")
        with pytest.raises(dist.DistributedError, match="already initialized"):
            dist.init_process_group(FakeGroup())
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()
    with pytest.raises(dist.DistributedError, match="rank=2 was given"):
        dist.init_process_group(FakeGroup(), rank=2)
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="timeout must be positive"):
        ProcessGroup(0, 1, timeout=0)


def test_non_tensor_inputs(fake):
    array = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="tensor must be a forgeml Tensor, got ndarray"):
        dist.all_reduce(array, group=fake)
    with pytest.raises(TypeError, match="forgeml Tensor"):
        dist.broadcast([1.0], src=0, group=fake)
    with pytest.raises(TypeError, match="output_tensor must be a forgeml Tensor"):
        dist.all_gather_into_tensor(array, fm.ones(1), group=fake)
    with pytest.raises(TypeError, match=r"tensor_list\[1\] must be a forgeml Tensor"):
        dist.all_gather([fm.ones(3), array, fm.ones(3)], fm.ones(3), group=fake)
    with pytest.raises(TypeError, match="object_list must be a list"):
        dist.broadcast_object_list(("a", "b"), src=0, group=fake)


@pytest.mark.parametrize("bad", [-1, 3, 1.0, True, None, "0"])
def test_bad_src_and_dst_ranks(fake, bad):
    t = fm.ones(3)
    for call in (
        lambda: dist.broadcast(t, src=bad, group=fake),
        lambda: dist.reduce(t, dst=bad, group=fake),
        lambda: dist.gather(t, [fm.ones(3)] * 3, dst=bad, group=fake),
        lambda: dist.scatter(t, [fm.ones(3)] * 3, src=bad, group=fake),
        lambda: dist.broadcast_object_list([None], src=bad, group=fake),
        lambda: dist.gather_object(1, [None] * 3, dst=bad, group=fake),
        lambda: dist.scatter_object_list([None], [1, 2, 3], src=bad, group=fake),
    ):
        with pytest.raises(ValueError, match=r"must be a rank in \[0, 3\)"):
            call()


def test_wrong_list_lengths(fake):
    t = fm.ones(3)
    for call, name in (
        (lambda: dist.all_gather([fm.ones(3)] * 2, t, group=fake), "tensor_list"),
        (lambda: dist.all_gather([fm.ones(3)] * 4, t, group=fake), "tensor_list"),
        (lambda: dist.all_gather(fm.ones(3, 3), t, group=fake), "tensor_list"),
        (lambda: dist.reduce_scatter(t, [fm.ones(3)] * 2, group=fake), "input_list"),
        (lambda: dist.gather(t, [fm.ones(3)] * 2, dst=0, group=fake), "gather_list"),
        (lambda: dist.gather(t, None, dst=0, group=fake), "gather_list"),
        (lambda: dist.scatter(t, [fm.ones(3)], src=0, group=fake), "scatter_list"),
    ):
        with pytest.raises(ValueError, match=rf"{name} must be a list of 3 tensors \(one per rank\)"):
            call()
    with pytest.raises(ValueError, match="object_list must be a list of 3 items"):
        dist.all_gather_object([None] * 2, 1, group=fake)
    with pytest.raises(ValueError, match="object_gather_list must be a list of 3 items on rank 0"):
        dist.gather_object(1, [None], dst=0, group=fake)
    with pytest.raises(ValueError, match="scatter_object_output_list must be a non-empty list"):
        dist.scatter_object_list([], [1, 2, 3], src=0, group=fake)


def test_lists_only_on_the_root(fake):
    t = fm.ones(3)
    with pytest.raises(ValueError, match=r"gather_list must be None .* on rank 0: only dst=1 receives"):
        dist.gather(t, [fm.ones(3)] * 3, dst=1, group=fake)
    with pytest.raises(ValueError, match=r"scatter_list must be None .* on rank 0: only src=2 sends"):
        dist.scatter(t, [fm.ones(3)] * 3, src=2, group=fake)


def test_wrong_dtype_or_shape_in_lists(fake):
    t = fm.ones(3)
    with pytest.raises(ValueError, match=r"tensor_list\[1\] has shape \[4\] and dtype forgeml.float32; expected \[3\]"):
        dist.all_gather([fm.ones(3), fm.ones(4), fm.ones(3)], t, group=fake)
    with pytest.raises(ValueError, match=r"input_list\[2\] has shape \[3\] and dtype forgeml.float64"):
        dist.reduce_scatter(t, [fm.ones(3), fm.ones(3), fm.ones(3, dtype=fm.float64)], group=fake)
    with pytest.raises(ValueError, match=r"gather_list\[0\] has shape \[1, 3\]"):
        dist.gather(t, [fm.ones(1, 3), fm.ones(3), fm.ones(3)], dst=0, group=fake)
    with pytest.raises(ValueError, match=r"scatter_list\[1\] .* dtype forgeml.int64"):
        dist.scatter(t, [fm.ones(3), fm.ones(3, dtype=fm.int64), fm.ones(3)], src=0, group=fake)


def test_into_tensor_sizes_and_dtypes(fake):
    with pytest.raises(ValueError, match=r"output_tensor has 8 elements; expected world_size \(3\) times 2 = 6"):
        dist.all_gather_into_tensor(fm.zeros(8), fm.ones(2), group=fake)
    with pytest.raises(TypeError, match="dtypes differ"):
        dist.all_gather_into_tensor(fm.zeros(6, dtype=fm.float64), fm.ones(2), group=fake)
    with pytest.raises(ValueError, match=r"input has 7 elements; expected world_size \(3\) times 2 = 6"):
        dist.reduce_scatter_tensor(fm.zeros(2), fm.ones(7), group=fake)
    with pytest.raises(TypeError, match="dtypes differ"):
        dist.reduce_scatter_tensor(fm.zeros(2, dtype=fm.int64), fm.ones(6), group=fake)
