"""ForgeML's optimizers against torch.optim on the same work, in one run.

The parameters of an MLP Linear(784, 512) / Linear(512, 256) / Linear(256, 10)
(535,818 float32 weights), their gradients left by one backward pass of each
framework on the same batch (as in training); workloads:
  * one Adam step (lr 1e-3), and the same with gradients copied in from NumPy arrays
    (torch's for-loop Adam is about twice as fast on NumPy-allocated gradients as on
    its own, so both are shown);
  * one AdamW step (weight_decay 0.01, amsgrad);
  * one SGD step with momentum 0.9;
  * a whole training step of that MLP (batch 128: zero_grad, forward, cross-entropy, backward, Adam step).

Each figure is the median of several repeats (this machine is shared and noisy),
runs alternate between the frameworks, and the ratio is ForgeML / PyTorch
(below 1 means ForgeML is faster). torch.optim runs its default CPU
implementation (the for-loop one). Usage: ``python benchmarks/bench_optim.py [--repeats N]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import forgeml as fm
from harness import measure, print_environment, print_table


def mlp(lib):
    return lib.nn.Sequential(
        lib.nn.Linear(784, 512), lib.nn.ReLU(), lib.nn.Linear(512, 256), lib.nn.ReLU(), lib.nn.Linear(256, 10)
    )


def same_models():
    fmodel, tmodel = mlp(fm), mlp(torch)
    with torch.no_grad():
        for fparam, tparam in zip(fmodel.parameters(), tmodel.parameters()):
            tparam.copy_(torch.from_numpy(fparam.detach().numpy().copy()))
    return fmodel, tmodel


def batch(size: int = 128, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((size, 784)).astype(np.float32), rng.integers(0, 10, size)


def backward_grads(fmodel, tmodel):
    """Gradients as training leaves them: one backward pass of each framework on the same batch."""
    x, y = batch()
    fm.nn.functional.cross_entropy(fmodel(fm.tensor(x)), fm.tensor(y)).backward()
    torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(x)), torch.from_numpy(y)).backward()


def numpy_grads(fmodel, tmodel, seed=0):
    """The same random gradients in both, copied in from NumPy arrays."""
    rng = np.random.default_rng(seed)
    for fparam, tparam in zip(fmodel.parameters(), tmodel.parameters()):
        g = rng.standard_normal(fparam.shape).astype(np.float32)
        fparam.grad = fm.Tensor(g.copy())
        tparam.grad = torch.from_numpy(g.copy())


def step_workload(make_fm, make_torch, grads=backward_grads):
    fmodel, tmodel = same_models()
    grads(fmodel, tmodel)
    fopt, topt = make_fm(fmodel.parameters()), make_torch(tmodel.parameters())
    for _ in range(20):  # warm up: state allocation, thread pools
        fopt.step()
        topt.step()
    return fopt.step, topt.step


def train_workload(size: int = 128):
    fmodel, tmodel = same_models()
    x, y = batch(size)
    fx, fy, tx, ty = fm.tensor(x), fm.tensor(y), torch.from_numpy(x), torch.from_numpy(y)
    fopt = fm.optim.Adam(fmodel.parameters(), lr=1e-4)
    topt = torch.optim.Adam(tmodel.parameters(), lr=1e-4)

    def fm_train():
        fopt.zero_grad()
        fm.nn.functional.cross_entropy(fmodel(fx), fy).backward()
        fopt.step()

    def torch_train():
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
        topt.step()

    for _ in range(5):
        fm_train()
        torch_train()
    return fm_train, torch_train


def build_workloads():
    return {
        "Adam step, MLP 784-512-256-10 (535k params)": (
            *step_workload(lambda ps: fm.optim.Adam(ps, lr=1e-3), lambda ps: torch.optim.Adam(ps, lr=1e-3)),
            100,
        ),
        "Adam step, gradients from NumPy arrays": (
            *step_workload(
                lambda ps: fm.optim.Adam(ps, lr=1e-3), lambda ps: torch.optim.Adam(ps, lr=1e-3), grads=numpy_grads
            ),
            100,
        ),
        "AdamW step (amsgrad), same MLP": (
            *step_workload(
                lambda ps: fm.optim.AdamW(ps, lr=1e-3, amsgrad=True),
                lambda ps: torch.optim.AdamW(ps, lr=1e-3, amsgrad=True),
            ),
            100,
        ),
        "SGD step (momentum 0.9), same MLP": (
            *step_workload(
                lambda ps: fm.optim.SGD(ps, lr=1e-3, momentum=0.9),
                lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9),
            ),
            200,
        ),
        "train step: fwd+bwd+Adam, batch 128": (*train_workload(), 20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per workload; the median is reported")
    args = parser.parse_args()

    print_environment(torch)
    results = measure(build_workloads(), args.repeats)
    print_table(results, args.repeats, 45)


if __name__ == "__main__":
    main()
