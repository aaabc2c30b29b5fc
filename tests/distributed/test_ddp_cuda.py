"""DDP and DistributedTrainer with CUDA tensors over MPI, on the CuPy stand-in (``tests/checked_cuda.py``).

The stand-in refuses NumPy calls on device arrays and host arrays in device arithmetic, so these jobs show
that DDP's buckets, copies and broadcasts, SyncBatchNorm, and the trainer's metric sums compute through the
arrays' own namespace (MPI stages CUDA buffers through the host; NCCL would take them directly). A real GPU
run is tools/device_check.sh's NCCL step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import hashlib, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from forgeml.backend import device as backend_device
from tests.checked_cuda import namespace
backend_device.use_cuda_namespace(namespace, device_count=1)

import forgeml as fm
import forgeml.distributed as dist
from forgeml import nn
from forgeml.data import TensorDataset
from forgeml.distributed import DistributedDataParallel as DDP, DistributedTrainer
from forgeml.optim import Adam
from forgeml.training import AIEnhancedConfig
from mpi_report import report

dist.init_process_group("mpi")
rank = dist.get_rank()

def build(seed, sync):
    fm.manual_seed(seed)
    # no bias before the BatchNorm: its true gradient is zero, and Adam turns rounding noise there into +-lr steps
    net = nn.Sequential(nn.Linear(12, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    return (nn.SyncBatchNorm.convert_sync_batchnorm(net) if sync else net).to("cuda")

rng = np.random.default_rng(0)
x_all = rng.standard_normal((16, 12)).astype(np.float32)
y_all = rng.integers(0, 3, 16)
model, reference = build(rank, True), build(0, False)  # the reference: plain BatchNorm on the whole batch
ddp = DDP(model)
reference.load_state_dict(model.state_dict())
opt, ref_opt = Adam(model.parameters(), lr=1e-2), Adam(reference.parameters(), lr=1e-2)
for step in range(5):
    opt.zero_grad()
    mine = slice(rank * 8, rank * 8 + 8)
    x, y = fm.tensor(x_all[mine], device="cuda"), fm.tensor(y_all[mine], device="cuda")
    nn.functional.cross_entropy(ddp(x), y).backward()
    opt.step()
    ref_opt.zero_grad()
    xs, ys = fm.tensor(x_all, device="cuda"), fm.tensor(y_all, device="cuda")
    nn.functional.cross_entropy(reference(xs), ys).backward()
    ref_opt.step()
on_device = all(p.device.type == "cuda" and p.grad.device.type == "cuda" for p in model.parameters())
diff = max(float(abs(a.detach().cpu().numpy() - b.detach().cpu().numpy()).max())
           for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
digests = [None, None]
dist.all_gather_object(digests, digest)

fm.manual_seed(1)
data = TensorDataset(fm.tensor(rng.standard_normal((64, 12)).astype(np.float32)), fm.tensor(rng.integers(0, 3, 64)))
net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
config = AIEnhancedConfig(optimization_guidance_frequency=100, research_update_interval=100)
trainer = DistributedTrainer(net, Adam(net.parameters(), lr=1e-2), "mpi", config, batch_size=8, device="cuda")
metrics = trainer.fit(data, data, epochs=2)
report(on_device=on_device, diff=diff, digests=digests, shared=ddp._shared is not None,
       history=[[m["train_loss"], m["val_loss"]] for m in metrics.history],
       evaluated=trainer.evaluate(data)["samples"])
"""


def test_ddp_and_the_trainer_on_cuda_tensors_over_mpi(mpirun):
    reports = mpirun(SCRIPT, n=2, env=ONE_THREAD, timeout=90, args=(ROOT,)).check()
    for r in (0, 1):
        got = reports[r]
        assert got["on_device"], "parameters and gradients must stay on the device"
        assert got["shared"] is False, "CUDA buckets go through the process group, not host shared memory"
        assert got["diff"] < 1e-5, "two ranks must train like one process on the whole batch"
        assert got["digests"][0] == got["digests"][1]
        assert got["evaluated"] == 64
    assert reports[0]["history"] == reports[1]["history"]
    assert np.isfinite(np.asarray(reports[0]["history"])).all()
