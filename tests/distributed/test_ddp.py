"""DistributedDataParallel on real MPI jobs: replicas that never diverge and train like one process.

One 2-rank job runs every multi-process check and reports what each rank saw;
the tests below each read their part of it (each mpiexec launch costs about a
second of imports, so checks share launches). A second, tiny 2-rank job lets a
construction error go uncaught (the job must end, not hang), and a 3-rank job
covers an odd world size (pre-division by 3). Argument errors, the state_dict
and bucket planning are checked in this process, on a world of one.

Parity with one process. Two ranks on batches of B train, with Adam, to the
same parameters as one process on the concatenated 2B batch starting from rank
0's initial weights. In float64 the two agree to ~1e-15, so the test demands
1e-10. In float32 they differ by rounding: the ranks' averaged gradient
``g0/2 + g1/2`` and the single process's mean over 2B add in different orders,
and over 20 steps the last-bit differences grow (a ReLU input near zero can
switch sides for one sample, changing that unit's whole update). The tests pin this down two ways:

- one process doing DDP's arithmetic (each half of the batch on its own, then
  ``g0 * 0.5 + g1 * 0.5``) lands on DDP's float32 parameters bit for bit, so
  the gap to the plain one-process run is summation order and nothing else;
- the tolerance against that plain run is the float32 noise of the computation
  itself, measured in the same job: the gap between the one-process float32 run
  and the one-process float64 run from the same weights. DDP's float32 result
  must be no further from the float64 result than twice that, and no further
  from the one-process float32 result than twice that either (two float32 runs,
  each that far from float64 in its own direction, can be twice as far from
  each other), with a floor of a few float32 ulps for tensors float32 happens
  to get nearly right.

Measured for the seed MLP after 20 steps at lr 1e-3 (weights of size ~0.19):
DDP vs one process 8.8e-7 at most with one BLAS thread (5.6e-6 with two),
float32 vs float64 2.4e-5 at most (7.0e-5 with two); float64 DDP vs one
process 4.7e-15 (with OPENBLAS_CORETYPE as this machine's environment sets it;
without it OpenBLAS picks other kernels, and the gaps were 1.9e-5 and 9.8e-6). The BatchNorm model is compared with SyncBatchNorm (plain
BatchNorm under DDP normalises each rank's batch alone and cannot match),
running statistics and ``num_batches_tracked`` included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import forgeml as fm
import forgeml.distributed as dist
from forgeml import nn
from forgeml.distributed import ReduceOp
from forgeml.distributed.ddp import FIRST_BUCKET_BYTES, DistributedDataParallel, MiB, _plan_buckets
from forgeml.distributed.group import CompletedWork, ProcessGroup

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STEPS = 20
# One BLAS thread per rank (as ``forgeml launch`` sets): ranks that each start a thread per core oversubscribe
# the machine, and the MLP jobs here then run ten times slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
F32_EPS = float(np.finfo(np.float32).eps)

COMMON = """
import hashlib
import sys

import numpy as np

import forgeml as fm
import forgeml.distributed as dist
import forgeml.nn.functional as F
from forgeml import nn
from forgeml.distributed import DistributedDataParallel as DDP, SyncBatchNorm
from forgeml.optim import SGD, Adam
from mpi_report import report

sys.path.insert(0, sys.argv[1])  # examples/
from mnist_mlp import build_model

dist.init_process_group("mpi")
rank, ws = dist.get_rank(), dist.get_world_size()


def gather(obj):
    out = [None] * ws
    dist.all_gather_object(out, obj)
    return out


def digest(module, params=True, buffers=True):
    # sha256 of the bytes of every parameter and buffer: equal digests, bitwise equal replicas
    h = hashlib.sha256()
    tensors = (list(module.parameters()) if params else []) + (list(module.buffers()) if buffers else [])
    for t in tensors:
        h.update(np.ascontiguousarray(t._data).tobytes())
    return h.hexdigest()


def state(module):
    return {k: v._data.copy() for k, v in module.state_dict().items()}


def load(module, arrays, dtype):
    module.load_state_dict({k: fm.tensor(v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in arrays.items()})


def no_dropout(module):
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return module


def local_grads(module):
    return [None if p.grad is None else p.grad._data.copy() for p in module.parameters()]


def mean_of(per_rank):
    # the mean over ranks of per-rank gradients (None: that rank had none, counts as zeros; None everywhere: None)
    out = []
    for grads in zip(*per_rank):
        present = [g for g in grads if g is not None]
        out.append(None if not present else sum(present) / len(grads))
    return out


def max_diff(a, b):
    if a is None or b is None:
        return None if a is None and b is None else float("inf")
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))
"""

RANK_SCRIPT = (
    COMMON
    + """
B = 32
STEPS = int(sys.argv[2])


def batch(name, step, n, features, dtype):
    rng = np.random.default_rng([len(name), step])
    x = rng.normal(0.5, 1.5, size=(n, features)).astype(dtype)  # off-centre: BatchNorm's statistics matter
    return x, rng.integers(0, 10, n)


def seed_mlp():
    return no_dropout(build_model())  # the seed's 784-512-256-10 with its Dropout(0.2) layers at p=0


def bn_net():
    # No bias before the BatchNorm: its exact gradient is zero, so its float gradient is rounding noise, which Adam
    # turns into steps of +-lr in random directions (and the running mean follows): no two float32 runs agree there.
    return no_dropout(
        nn.Sequential(
            nn.Linear(20, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10)
        )
    )


def parity(name, make, features, sync_bn=False, check_grads=False):
    runs = {}
    for dtype in ("float32", "float64"):
        fm.manual_seed(100 + rank)  # every rank starts from other weights: DDP must broadcast rank 0's
        model = make()
        if dtype == "float64":
            model.double()
        if sync_bn:
            model = SyncBatchNorm.convert_sync_batchnorm(model)
            with fm.no_grad():  # rank-specific running statistics too: construction broadcasts the buffers
                for m in model.modules():
                    if isinstance(m, SyncBatchNorm):
                        m.running_mean.fill_(float(rank))
        before = gather(digest(model))
        ddp = DDP(model)
        after = gather(digest(model))
        init = state(model)
        opt = Adam(model.parameters(), lr=1e-3)
        hashes, grads = [], {}
        for step in range(STEPS):
            x, y = batch(name, step, ws * B, features, dtype)
            lo = rank * B
            opt.zero_grad()
            F.cross_entropy(ddp(fm.tensor(x[lo : lo + B])), fm.tensor(y[lo : lo + B])).backward()
            if check_grads and step == 0:
                # the same step without DDP on a plain copy: the mean of the ranks' own gradients
                plain = make()
                if dtype == "float64":
                    plain.double()
                plain.load_state_dict(model.state_dict())
                F.cross_entropy(plain(fm.tensor(x[lo : lo + B])), fm.tensor(y[lo : lo + B])).backward()
                expected = mean_of(gather(local_grads(plain)))
                got = local_grads(model)
                grads = {
                    "bitwise_equal_to_mean": all(np.array_equal(g, e) for g, e in zip(got, expected)),
                    "max_diff_to_mean": max(max_diff(g, e) for g, e in zip(got, expected)),
                    "digests": gather(hashlib.sha256(b"".join(g.tobytes() for g in got)).hexdigest()),
                }
            opt.step()
            hashes.append(gather(digest(model)))  # every step: the replicas are bitwise equal
        runs[dtype] = {
            "init": init, "final": state(model), "before": before, "after": after, "hashes": hashes,
            "grads": grads, "stats": ddp.communication_stats(),
        }

    # One process on the concatenated batch from rank 0's initial weights: in float32 on rank 0 and in float64
    # on rank 1 (at the same time). The float64 DDP run started from the same weights (checked below).
    init = runs["float32"]["init"]
    ref_dtype = "float32" if rank == 0 else "float64"
    fm.manual_seed(0)
    ref = make()
    if ref_dtype == "float64":
        ref.double()
    load(ref, init, ref_dtype)
    opt = Adam(ref.parameters(), lr=1e-3)
    for step in range(STEPS):
        x, y = batch(name, step, ws * B, features, ref_dtype)
        opt.zero_grad()
        F.cross_entropy(ref(fm.tensor(x)), fm.tensor(y)).backward()
        opt.step()
    refs = [None] * ws if rank == 0 else None
    dist.gather_object(state(ref), refs, dst=0)
    compare = {}
    emulated_equal = None
    if rank == 0 and check_grads:
        # One process doing DDP's arithmetic: each rank's half of the batch on its own, then g0 * 0.5 + g1 * 0.5.
        # Same operations in the same order as the ranks and the all-reduce: the very same float32 bits.
        emu = make()
        load(emu, init, "float32")
        opt = Adam(emu.parameters(), lr=1e-3)
        for step in range(STEPS):
            x, y = batch(name, step, ws * B, features, "float32")
            halves = []
            for r in range(ws):
                emu.zero_grad()
                F.cross_entropy(emu(fm.tensor(x[r * B : (r + 1) * B])), fm.tensor(y[r * B : (r + 1) * B])).backward()
                halves.append(local_grads(emu))
            for param, *gs in zip(emu.parameters(), *halves):
                total = gs[0] * (1.0 / ws)
                for g in gs[1:]:
                    total = total + g * (1.0 / ws)
                param.grad = fm.tensor(total)
            opt.step()
        final = runs["float32"]["final"]
        emulated_equal = {k: bool(np.array_equal(v, final[k])) for k, v in state(emu).items()}
    if rank == 0:
        ref32, ref64 = refs
        ddp32, ddp64 = runs["float32"]["final"], runs["float64"]["final"]
        for key in init:
            if init[key].dtype.kind != "f":
                compare[key] = {"equal": bool(np.array_equal(ddp32[key], ref32[key]) and
                                              np.array_equal(ddp64[key], ref64[key]) and
                                              np.array_equal(ref32[key], ref64[key])), "value": ddp32[key]}
                continue
            compare[key] = {
                "ddp32_ref32": max_diff(ddp32[key], ref32[key]),
                "ref32_ref64": max_diff(ref32[key], ref64[key]),
                "ddp32_ref64": max_diff(ddp32[key], ref64[key]),
                "ddp64_ref64": max_diff(ddp64[key], ref64[key]),
                "moved": max_diff(ref64[key], init[key]),
                "scale": float(np.max(np.abs(ref64[key]))),
            }
    same_start = all(
        np.array_equal(runs["float64"]["init"][k], v.astype(runs["float64"]["init"][k].dtype)) for k, v in init.items()
    )
    report(**{f"parity/{name}": {
        "compare": compare, "same_start": same_start, "emulated_equal": emulated_equal,
        **{f"{dtype}/{k}": runs[dtype][k] for dtype in runs for k in ("before", "after", "hashes", "grads", "stats")},
    }})


parity("mlp", seed_mlp, 784, check_grads=True)
parity("bn", bn_net, 20, sync_bn=True)


# -- no_sync: a local accumulation, then one synchronised backward averages the sum --
def small(seed, features=8):
    fm.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, 4)).double()


def loss_of(out, seed):
    target = np.random.default_rng([rank, seed]).standard_normal(out.shape)
    return ((out - fm.tensor(target)) ** 2).mean()


def inputs(seed, n=5, features=8):
    return fm.tensor(np.random.default_rng([rank, seed, 1]).standard_normal((n, features)))


net = small(300)
ddp = DDP(net)
plain = small(300)
plain.load_state_dict(net.state_dict())
with ddp.no_sync():
    loss_of(ddp(inputs(1)), 1).backward()
    flag_inside = ddp.require_backward_grad_sync
after_first = local_grads(net)
loss_of(plain(inputs(1)), 1).backward()
first_local = local_grads(plain)
loss_of(ddp(inputs(2)), 2).backward()
loss_of(plain(inputs(2)), 2).backward()
expected = mean_of(gather(local_grads(plain)))
got = local_grads(net)
report(no_sync={
    "first_is_local": all(np.array_equal(a, b) for a, b in zip(after_first, first_local)),
    "first_digests": gather(hashlib.sha256(b"".join(g.tobytes() for g in after_first)).hexdigest()),
    "flags": [flag_inside, ddp.require_backward_grad_sync],
    "max_diff_to_mean_of_sums": max(max_diff(g, e) for g, e in zip(got, expected)),
    "digests": gather(hashlib.sha256(b"".join(g.tobytes() for g in got)).hexdigest()),
    "stats": ddp.communication_stats(),
})


# -- find_unused_parameters: a branch used on one rank only, and a layer no rank uses --
class Branchy(nn.Module):
    def __init__(self, with_unused):
        super().__init__()
        self.trunk = nn.Linear(4, 4)
        self.branch = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        if with_unused:
            self.never = nn.Linear(4, 4)

    def forward(self, x, use_branch):
        h = F.relu(self.trunk(x))
        if use_branch:
            h = h + self.branch(h)
        return self.head(h)


def branchy(with_unused):
    fm.manual_seed(400)
    return Branchy(with_unused).double()


x = inputs(3, features=4)
net = branchy(False)
ddp = DDP(net)  # find_unused_parameters=False
try:
    ddp(x, use_branch=(rank == 0)).sum().backward()
    outcome = "completed"
except RuntimeError as exc:
    outcome = str(exc)
report(unused_false={"outcome": outcome, "in_step_after": gather(rank)})

net = branchy(True)
ddp = DDP(net, find_unused_parameters=True)
plain = branchy(True)
names = [n for n, _ in net.named_parameters()]
rounds = []
for user in (0, 1, None):  # the rank that uses the branch (None: nobody)
    net.zero_grad()
    plain.zero_grad()
    plain.load_state_dict(net.state_dict())
    ddp(x, use_branch=(rank == user)).sum().backward()
    plain(x, use_branch=(rank == user)).sum().backward()
    expected = mean_of(gather(local_grads(plain)))
    got = local_grads(net)
    rounds.append({
        "grad_is_none": {n: g is None for n, g in zip(names, got)},
        "expected_none": {n: e is None for n, e in zip(names, expected)},
        "max_diff": {n: max_diff(g, e) for n, g, e in zip(names, got, expected)},
        "digests": gather(hashlib.sha256(b"".join(g.tobytes() for g in got if g is not None)).hexdigest()),
    })
report(unused_true=rounds)


# -- parameters that differ across ranks: every rank raises at construction, naming the parameter and rank --
cases = {
    "shape": lambda: nn.Sequential(nn.Linear(4, 5 if rank == 0 else 6)),
    "count": lambda: nn.Sequential(nn.Linear(4, 5), *([nn.Linear(5, 2)] if rank == 1 else [])),
    "dtype": lambda: nn.Sequential(nn.Linear(4, 5)).double() if rank == 1 else nn.Sequential(nn.Linear(4, 5)),
    "buffer": lambda: nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3 if rank == 0 else 4, affine=False)),
}
mismatch = {}
for case, make in cases.items():
    try:
        DDP(make())
        mismatch[case] = "no error"
    except RuntimeError as exc:
        mismatch[case] = str(exc)
report(mismatch=mismatch, mismatch_in_step_after=gather(rank))


# -- broadcast_buffers: rank 0's buffers replace every rank's at the start of each training forward --
def buffers_run(flag):
    fm.manual_seed(500)
    net = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5)).double()
    with fm.no_grad():
        net[1].running_mean.fill_(float(rank + 3))
    ddp = DDP(net, broadcast_buffers=flag)
    at_start = gather(digest(net, params=False))
    pre, post = [], []
    net.register_forward_pre_hook(lambda module, args: pre.append(digest(module, params=False)))
    opt = SGD(net.parameters(), lr=0.1)
    for step in range(4):
        xs = fm.tensor(np.random.default_rng([rank, step, 5]).normal(rank * 2.0, 1.0 + rank, size=(6, 6)))
        opt.zero_grad()
        (ddp(xs) ** 2).mean().backward()
        opt.step()
        post.append(digest(net, params=False))
    with fm.no_grad():
        net.eval()
        ddp(xs)  # an evaluation forward broadcasts nothing
    return {"at_start": at_start, "pre": gather(pre), "post": gather(post), "after_eval": gather(digest(net, params=False)),
            "count": int(net[1].num_batches_tracked.item())}


report(buffers={"on": buffers_run(True), "off": buffers_run(False)})


# -- zero_grad(set_to_none=False): gradients accumulate in the bucket views and still average right --
net = small(600)
ddp = DDP(net)
plain = small(600)
opt = SGD(net.parameters(), lr=0.05, momentum=0.9)
steps = []
for step in range(3):
    opt.zero_grad(set_to_none=False)
    plain.zero_grad()
    plain.load_state_dict(net.state_dict())
    loss_of(ddp(inputs(10 + step)), 10 + step).backward()
    loss_of(plain(inputs(10 + step)), 10 + step).backward()
    expected = mean_of(gather(local_grads(plain)))
    views = [
        np.shares_memory(p.grad._data, ddp._buckets[ddp._bucket_of[i]].buffer) for i, p in enumerate(ddp._params)
    ]
    steps.append({
        "max_diff": max(max_diff(g, e) for g, e in zip(local_grads(net), expected)),
        "bucket_views": views,
    })
    opt.step()
# two synchronised backwards without zero_grad in between: the averages add up
opt.zero_grad(set_to_none=False)
plain.zero_grad()
plain.load_state_dict(net.state_dict())
for seed in (20, 21):
    loss_of(ddp(inputs(seed)), seed).backward()
    loss_of(plain(inputs(seed)), seed).backward()
expected = mean_of(gather(local_grads(plain)))
accumulated = max(max_diff(g, e) for g, e in zip(local_grads(net), expected))
report(zero_grad_false={"steps": steps, "accumulated": accumulated, "digests": gather(digest(net)),
                        "grad_scale": max(float(np.abs(g).max()) for g in expected)})

dist.destroy_process_group()
report(done=True)
"""
)

# A construction error nobody catches: the job must end (non-zero, with the message), not hang.
UNCAUGHT_SCRIPT = (
    COMMON
    + """
DDP(nn.Sequential(nn.Linear(4, 5 if rank == 0 else 6)))
report(survived=True)
"""
)

# An odd world: each rank pre-divides by 3 before the sum.
THREE_RANKS_SCRIPT = (
    COMMON
    + """
def make():
    return no_dropout(
        nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Dropout(0.5), nn.Linear(24, 10))
    ).double()


B = 8
fm.manual_seed(700 + rank)
model = make()
ddp = DDP(model)
init = state(model)
opt = Adam(model.parameters(), lr=1e-2)
hashes, grad_diff = [], None
for step in range(5):
    rng = np.random.default_rng([9, step])
    x, y = rng.standard_normal((ws * B, 12)), rng.integers(0, 10, ws * B)
    lo = rank * B
    opt.zero_grad()
    F.cross_entropy(ddp(fm.tensor(x[lo : lo + B])), fm.tensor(y[lo : lo + B])).backward()
    if step == 0:
        plain = make()
        plain.load_state_dict(model.state_dict())
        F.cross_entropy(plain(fm.tensor(x[lo : lo + B])), fm.tensor(y[lo : lo + B])).backward()
        expected = mean_of(gather(local_grads(plain)))
        grad_diff = max(max_diff(g, e) / max(float(np.abs(e).max()), 1e-300) for g, e in zip(local_grads(model), expected))
        grad_digests = gather(hashlib.sha256(b"".join(g.tobytes() for g in local_grads(model))).hexdigest())
    opt.step()
    hashes.append(gather(digest(model)))
result = {"hashes": hashes, "grad_rel_diff": grad_diff, "grad_digests": grad_digests}
if rank == 0:
    ref = make()
    load(ref, init, "float64")
    ropt = Adam(ref.parameters(), lr=1e-2)
    for step in range(5):
        rng = np.random.default_rng([9, step])
        x, y = rng.standard_normal((ws * B, 12)), rng.integers(0, 10, ws * B)
        ropt.zero_grad()
        F.cross_entropy(ref(fm.tensor(x)), fm.tensor(y)).backward()
        ropt.step()
    result["param_diff"] = max(max_diff(a._data, b._data) for a, b in zip(model.parameters(), ref.parameters()))
report(three=result, world=ws)
"""
)


# A world of one over MPI (a plain process: mpi4py's singleton): DDP is then the bare model, exactly.
SINGLETON_SCRIPT = (
    COMMON
    + """
def make():
    fm.manual_seed(3)
    return no_dropout(build_model())


model, bare = make(), make()
ddp = DDP(model)
opts = [Adam(model.parameters(), lr=1e-3), Adam(bare.parameters(), lr=1e-3)]
rng = np.random.default_rng(0)
for step in range(3):
    x, y = fm.tensor(rng.standard_normal((16, 784)).astype(np.float32)), fm.tensor(rng.integers(0, 10, 16))
    for net, opt in zip((ddp, bare), opts):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
report(world=[rank, ws], equal=digest(model) == digest(bare), stats=ddp.communication_stats())
"""
)


@pytest.fixture(scope="module", params=["shared_memory", "mpi_allreduce"])
def job(mpirun, request):
    """The main 2-rank job, once with DDP's buckets in MPI shared memory (the default on one machine) and once
    with MPI_Allreduce (the path across machines)."""
    env = {**ONE_THREAD, "FORGEML_DDP_SHARED_MEMORY": "1" if request.param == "shared_memory" else "0"}
    run = mpirun(RANK_SCRIPT, n=2, env=env, timeout=90, args=(EXAMPLES, STEPS))
    return run.check()


PRIVATE_GRADS_SCRIPT = """
import hashlib, sys
import numpy as np
import forgeml as fm
import forgeml.distributed as dist
from forgeml import nn
from forgeml.distributed import DistributedDataParallel as DDP
from forgeml.nn.utils import clip_grad_norm_
from forgeml.optim import SGD
from mpi_report import report

dist.init_process_group("mpi")
rank = dist.get_rank()
fm.manual_seed(rank)
model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 4))
ddp = DDP(model)
opt = SGD(model.parameters(), lr=0.1)
rng = np.random.default_rng(rank)
hashes, untouched = [], []
for step in range(4):
    opt.zero_grad(set_to_none=step % 2 == 0)
    x = fm.tensor(rng.standard_normal((8, 30)).astype(np.float32))
    nn.functional.cross_entropy(ddp(x), fm.tensor(rng.integers(0, 4, 8))).backward()
    before = [p.grad.numpy().copy() for p in model.parameters()]
    dist.barrier()
    if rank == 1:
        with fm.no_grad():
            for p in model.parameters():
                p.grad.mul_(0.0)  # in place, on this rank's gradients only
    dist.barrier()
    if rank == 0:
        untouched.append(all(np.array_equal(p.grad.numpy(), b) for p, b in zip(model.parameters(), before)))
        for p in model.parameters():  # rank 1 zeroed its own: put the same values on rank 0 for the step
            p.grad._data[...] = 0
    clip_grad_norm_(model.parameters(), 0.5)
    opt.step()
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    everyone = [None, None]
    dist.all_gather_object(everyone, digest)
    hashes.append(everyone)
report(shared=ddp._shared is not None, untouched=untouched, hashes=hashes)
"""


@pytest.mark.parametrize("shared", ["1", "0"])
def test_in_place_changes_to_grad_stay_on_their_rank(mpirun, shared):
    """After backward each rank's .grad is its own memory (in shared memory too): zeroing or clipping them in
    place on one rank leaves the other's alone."""
    env = {**ONE_THREAD, "FORGEML_DDP_SHARED_MEMORY": shared}
    reports = mpirun(PRIVATE_GRADS_SCRIPT, n=2, env=env, timeout=60).check()
    assert reports[0]["shared"] is (shared == "1") and reports[1]["shared"] is (shared == "1")
    assert all(reports[0]["untouched"]), "rank 1's in-place change reached rank 0's gradients"
    assert all(a == b for a, b in reports[0]["hashes"]), "the replicas diverged"


def _all_equal(values):
    return all(v == values[0] for v in values)


# -- parity with one process ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mlp", "bn"])
def test_two_ranks_train_like_one_process_on_the_concatenated_batch(job, name):
    result = job[0][f"parity/{name}"]
    assert result["same_start"], "the float64 run did not start from the float32 run's weights"
    compare = result["compare"]
    floats = {k: c for k, c in compare.items() if "ddp32_ref32" in c}
    assert floats, compare
    for key, c in floats.items():
        assert c["moved"] > 1e-3, f"{key} hardly trained ({c['moved']}): the comparison would prove nothing"
        # float64: the same computation up to summation order
        assert c["ddp64_ref64"] <= 1e-10 * max(c["scale"], 1.0), f"{name} {key} (float64): {c}"
        # float32: within the noise float32 itself brings to this computation (see the module docstring)
        # (with a floor of 4 float32 ulps of the tensor's largest value: a tensor float32 happens to get nearly
        # right would otherwise demand more than float32 can hold)
        noise = max(c["ref32_ref64"], 4 * F32_EPS * c["scale"])
        assert c["ddp32_ref32"] <= 2 * noise, f"{name} {key} (float32): DDP differs more than float32 noise: {c}"
        assert c["ddp32_ref64"] <= 2 * noise, f"{name} {key} (float32 vs float64): {c}"
    for key, c in compare.items():  # num_batches_tracked
        if "equal" in c:
            assert c["equal"] and c["value"] == STEPS, f"{key}: {c}"
    if name == "mlp":  # one process doing DDP's arithmetic gets DDP's bits: the float32 gap is summation order
        assert result["emulated_equal"] and all(result["emulated_equal"].values()), result["emulated_equal"]
    if name == "bn":  # the running statistics are compared too (SyncBatchNorm: statistics of the global batch)
        assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(compare)


@pytest.mark.parametrize("name", ["mlp", "bn"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_replicas_start_from_rank_0_and_never_diverge(job, name, dtype):
    result = job[0][f"parity/{name}"]
    for r in (0, 1):
        assert job[r][f"parity/{name}"][f"{dtype}/hashes"] == result[f"{dtype}/hashes"]
    before, after = result[f"{dtype}/before"], result[f"{dtype}/after"]
    assert before[0] != before[1], "the ranks started equal: the construction broadcast went untested"
    assert after == [before[0], before[0]], "after construction every rank holds rank 0's parameters and buffers"
    hashes = result[f"{dtype}/hashes"]
    assert len(hashes) == STEPS
    for step, per_rank in enumerate(hashes):
        assert _all_equal(per_rank), f"the replicas diverged at step {step + 1}"
    assert len({h[0] for h in hashes}) == STEPS, "the parameters did not change at every step"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradients_are_the_mean_of_the_ranks_own_gradients(job, dtype):
    grads = job[0]["parity/mlp"][f"{dtype}/grads"]
    for r in (0, 1):
        theirs = job[r]["parity/mlp"][f"{dtype}/grads"]
        # g0/2 + g1/2 == (g0 + g1)/2 exactly in binary floating point
        assert theirs["bitwise_equal_to_mean"], theirs["max_diff_to_mean"]
    assert _all_equal(grads["digests"]), "the ranks hold different gradients"


@pytest.mark.parametrize("name", ["mlp", "bn"])
def test_communication_stats(job, name):
    stats = job[0][f"parity/{name}"]["float32/stats"]
    assert stats["backwards"] == STEPS and stats["wait_seconds"] >= 0
    params = {"mlp": 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10, "bn": 20 * 32 + 32 + 32 + 32 * 10 + 10}
    assert stats["bytes"] == STEPS * 4 * params[name]
    if name == "mlp":  # the first bucket is capped at 1 MiB: the 784x512 weight goes on in a bucket of its own
        assert stats["buckets"] == 2
        assert job[0]["parity/mlp"]["float64/stats"]["bytes"] == STEPS * 8 * params[name]


# -- no_sync ---------------------------------------------------------------------------------------
def test_no_sync_accumulates_locally_then_averages_the_sum(job):
    for r in (0, 1):
        result = job[r]["no_sync"]
        assert result["first_is_local"], "inside no_sync the gradient must be this rank's own"
        assert result["flags"] == [False, True]
        assert result["max_diff_to_mean_of_sums"] <= 1e-15
        assert result["stats"]["backwards"] == 1  # only the synchronised backward communicated
    result = job[0]["no_sync"]
    assert result["first_digests"][0] != result["first_digests"][1]
    assert _all_equal(result["digests"])


# -- find_unused_parameters -------------------------------------------------------------------------
def test_an_unused_parameter_without_find_unused_parameters_raises_on_the_rank_that_missed_it(job):
    message = job[1]["unused_false"]["outcome"]
    assert "'branch.weight'" in message and "'branch.bias'" in message, message
    assert "rank 1" in message and "find_unused_parameters=True" in message
    assert "trunk" not in message and "head" not in message
    # rank 0 used every parameter: its backward completes, because rank 1 joined its all-reduces before raising
    assert job[0]["unused_false"]["outcome"] == "completed"
    assert job[0]["unused_false"]["in_step_after"] == [0, 1]


def test_find_unused_parameters_averages_with_zeros_and_leaves_globally_unused_grads_alone(job):
    for r in (0, 1):
        rounds = job[r]["unused_true"]
        for user, result in zip((0, 1, None), rounds):
            assert result["grad_is_none"] == result["expected_none"], (user, result)
            assert result["grad_is_none"]["never.weight"] and result["grad_is_none"]["never.bias"]
            assert result["grad_is_none"]["branch.weight"] is (user is None)
            for name, diff in result["max_diff"].items():
                assert diff is None or diff <= 1e-15, (user, name, diff)
            assert _all_equal(result["digests"])


# -- construction checks ----------------------------------------------------------------------------
def test_different_models_across_ranks_raise_at_construction_on_every_rank(job):
    for r in (0, 1):
        mismatch = job[r]["mismatch"]
        assert "parameter '0.weight' is [5, 4] forgeml.float32 on rank 0" in mismatch["shape"]
        assert "[6, 4] forgeml.float32 on rank 1" in mismatch["shape"]
        assert "rank 1 has 4 parameters, rank 0 has 2" in mismatch["count"]
        assert "'0.weight'" in mismatch["dtype"] and "float64 on rank 1" in mismatch["dtype"]
        assert "buffer '1.running_mean' is [3] forgeml.float32 on rank 0" in mismatch["buffer"]
        assert "[4] forgeml.float32 on rank 1" in mismatch["buffer"]
        assert job[r]["mismatch_in_step_after"] == [0, 1]


def test_an_uncaught_construction_error_ends_the_job_with_the_message(mpirun):
    run = mpirun(UNCAUGHT_SCRIPT, n=2, env=ONE_THREAD, timeout=60, args=(EXAMPLES,))
    assert run.returncode != 0
    assert "parameter '0.weight' is [5, 4]" in run.output and "on rank 1" in run.output
    assert not any(r.get("survived") for r in run.reports.values())


# -- buffers ----------------------------------------------------------------------------------------
def test_broadcast_buffers_gives_every_forward_rank_0s_buffers(job):
    on, off = job[0]["buffers"]["on"], job[0]["buffers"]["off"]
    for result in (on, off):
        assert _all_equal(result["at_start"]), "construction broadcasts the buffers whatever broadcast_buffers says"
    for step in range(4):
        assert on["pre"][0][step] == on["pre"][1][step], f"forward {step + 1} started from different buffers"
        assert on["post"][0][step] != on["post"][1][step]  # each rank's batch statistics differ: the check bites
        if step:
            assert on["pre"][0][step] == on["post"][0][step - 1]
    assert on["after_eval"][0] != on["after_eval"][1], "an evaluation forward must not broadcast"
    assert off["pre"][0][1] != off["pre"][1][1], "broadcast_buffers=False must leave each rank its own buffers"
    assert job[1]["buffers"]["on"]["count"] == job[0]["buffers"]["on"]["count"] == 4


# -- zero_grad(set_to_none=False) -------------------------------------------------------------------
def test_zeroed_grads_accumulate_into_the_buckets_and_average_right(job):
    for r in (0, 1):
        result = job[r]["zero_grad_false"]
        for step, s in enumerate(result["steps"]):
            assert s["max_diff"] <= 1e-15, (step, s)
            assert all(s["bucket_views"]), "after the first backward .grad is a view of its bucket"
        assert result["accumulated"] <= 1e-14 * result["grad_scale"]
        assert _all_equal(result["digests"])
    assert job[1]["done"] and job[0]["done"]


# -- an odd world size ------------------------------------------------------------------------------
def test_three_ranks(mpirun):
    reports = mpirun(THREE_RANKS_SCRIPT, n=3, env=ONE_THREAD, timeout=60, args=(EXAMPLES,)).check()
    three = reports[0]["three"]
    assert all(reports[r]["world"] == 3 for r in range(3))
    for step, per_rank in enumerate(three["hashes"]):
        assert len(per_rank) == 3 and _all_equal(per_rank), f"the replicas diverged at step {step + 1}"
    assert _all_equal(three["grad_digests"])
    assert three["grad_rel_diff"] <= 1e-14  # g/3 summed is (g0 + g1 + g2)/3 up to rounding
    assert three["param_diff"] <= 1e-12


def test_a_world_of_one_over_mpi_is_the_bare_model(mpirun):
    report = mpirun(SINGLETON_SCRIPT, n=1, env=ONE_THREAD, mpiexec=False, timeout=60, args=(EXAMPLES,)).check()[0]
    assert report["world"] == [0, 1]
    assert report["equal"], "in a world of one DDP must train exactly like the bare model"
    assert report["stats"]["backwards"] == 3


# -- a world of one, in this process ----------------------------------------------------------------
class LocalGroup(ProcessGroup):
    """A world of one without MPI: every collective is already complete."""

    name = "local"

    def __init__(self) -> None:
        super().__init__(0, 1)
        self.calls = []

    def all_reduce(self, array, op):
        self.calls.append(("all_reduce", op))
        return CompletedWork(self)

    def broadcast(self, array, src):
        self.calls.append(("broadcast", src))
        return CompletedWork(self)

    def all_gather_object(self, obj):
        return [obj]

    def broadcast_object(self, obj, src):
        return obj


def _mlp(seed=0):
    fm.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_argument_errors():
    group = LocalGroup()
    with pytest.raises(TypeError, match=r"wraps a forgeml.nn.Module, got Tensor"):
        DistributedDataParallel(fm.ones(3), process_group=group)
    for cap in (0, -1.0):
        with pytest.raises(ValueError, match="bucket_cap_mb must be positive"):
            DistributedDataParallel(_mlp(), process_group=group, bucket_cap_mb=cap)
    with pytest.raises(ValueError, match=r"device_ids=\[0\] does not match the module's device cpu"):
        DistributedDataParallel(_mlp(), device_ids=[0], process_group=group)
    with pytest.raises(RuntimeError, match="at least one parameter that requires grad"):
        DistributedDataParallel(nn.ReLU(), process_group=group)
    with pytest.raises(RuntimeError, match="at least one parameter that requires grad"):
        DistributedDataParallel(_mlp().requires_grad_(False), process_group=group)


def test_without_a_process_group_it_says_to_initialize_one():
    assert not dist.is_initialized()
    with pytest.raises(dist.DistributedError, match="init_process_group"):
        DistributedDataParallel(_mlp())


def test_it_is_nn_parallel_distributed_data_parallel():
    assert nn.parallel.DistributedDataParallel is DistributedDataParallel
    assert dist.DistributedDataParallel is DistributedDataParallel


def test_state_dict_has_module_prefixes_and_the_module_has_none():
    model = _mlp()
    ddp = DistributedDataParallel(model, process_group=LocalGroup())
    assert list(ddp.state_dict()) == [f"module.{k}" for k in model.state_dict()]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert ddp.module is model
    assert "world_size=1" in repr(ddp)


def test_a_world_of_one_trains_exactly_like_the_bare_model():
    group = LocalGroup()
    model, bare = _mlp(1), _mlp(1)
    ddp = DistributedDataParallel(model, process_group=group)
    assert ("broadcast", 0) not in group.calls  # nothing to broadcast in a world of one
    opt, bare_opt = fm.optim.Adam(model.parameters(), lr=0.01), fm.optim.Adam(bare.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = fm.tensor(rng.standard_normal((4, 6)).astype(np.float32))
        for net, o in ((ddp, opt), (bare, bare_opt)):
            o.zero_grad()
            (net(x) ** 2).mean().backward()
            o.step()
    for p, q in zip(model.parameters(), bare.parameters()):
        np.testing.assert_array_equal(p._data, q._data)
    assert ddp.communication_stats()["backwards"] == 3
    assert ddp.communication_stats(reset=True)["backwards"] == 3
    assert ddp.communication_stats()["backwards"] == 0


def test_a_world_of_one_with_backward_inputs():
    # backward(inputs=...) runs the post-accumulate hooks too: DDP's end-of-backward callback must still run
    model = _mlp(2)
    ddp = DistributedDataParallel(model, process_group=LocalGroup(), find_unused_parameters=True)
    x = fm.ones(2, 6)
    ddp(x).sum().backward(inputs=[model[2].weight])
    assert model[0].weight.grad is None and model[2].weight.grad is not None
    assert ddp.communication_stats()["backwards"] == 1


class _P:
    """What _plan_buckets reads of a parameter."""

    def __init__(self, n, dtype="float32", device="cpu"):
        self._data = np.zeros(n, dtype=dtype)
        self.dtype, self.device = dtype, device


def test_bucket_plan_first_bucket_small_reverse_order_one_dtype_each():
    quarter = MiB // 4 // 4  # float32 elements in a quarter MiB
    params = [_P(quarter) for _ in range(10)]
    plan = _plan_buckets(params, FIRST_BUCKET_BYTES, 25 * MiB)
    assert plan[0] == [9, 8, 7, 6]  # reverse order; the first bucket holds at most 1 MiB
    assert plan[1] == [5, 4, 3, 2, 1, 0]
    assert sorted(i for b in plan for i in b) == list(range(10))

    plan = _plan_buckets(params, FIRST_BUCKET_BYTES, MiB // 2)
    assert plan == [[9, 8, 7, 6], [5, 4], [3, 2], [1, 0]]

    mixed = [_P(10), _P(10, "float64"), _P(10, "float64"), _P(10), _P(10, device="cuda:0")]
    assert _plan_buckets(mixed, FIRST_BUCKET_BYTES, 25 * MiB) == [[4], [3], [2, 1], [0]]

    huge = [_P(10), _P(2 * MiB), _P(10)]  # a parameter bigger than the cap sits alone
    assert _plan_buckets(huge, FIRST_BUCKET_BYTES, MiB) == [[2], [1], [0]]


def test_buckets_hold_views_shaped_like_the_parameters(monkeypatch):
    monkeypatch.setattr("forgeml.distributed.ddp.FIRST_BUCKET_BYTES", 64)  # so that a small model gets several
    model = _mlp()
    ddp = DistributedDataParallel(model, process_group=LocalGroup(), bucket_cap_mb=100 / MiB)
    assert [[ddp._names[i] for i in b.indices] for b in ddp._buckets] == [
        ["2.bias"],
        ["2.weight"],
        ["0.bias"],
        ["0.weight"],
    ]
    for i, p in enumerate(ddp._params):
        view = ddp._views[i]
        assert view.shape == p._data.shape and view.dtype == p._data.dtype
        assert np.shares_memory(view, ddp._buckets[ddp._bucket_of[i]].buffer)
    (ddp(fm.ones(2, 6)) ** 2).sum().backward()
    for i, p in enumerate(ddp._params):
        assert p.grad._data is ddp._views[i]  # .grad points at the bucket: no copy back


def test_reduce_op_is_sum_of_pre_divided_gradients():
    group = LocalGroup()
    ddp = DistributedDataParallel(_mlp(), process_group=group)
    group.calls.clear()
    ddp(fm.ones(2, 6)).sum().backward()
    assert group.calls == [("all_reduce", ReduceOp.SUM)] * len(ddp._buckets)
