"""ForgeML against PyTorch on the same work, in one run: per-op overhead and a BLAS-bound matmul.

Two workloads, each forward + backward:
  * chain:  10 elementwise ops on a 64-element float32 tensor (per-op overhead);
  * matmul: 1024x1024 @ 1024x1024 float32 (BLAS-bound).

Each figure is the median of several repeats (this machine is shared and noisy),
runs alternate between the frameworks, and the ratio is ForgeML / PyTorch
(below 1 means ForgeML is faster). Usage: ``python benchmarks/bench_ops.py [--repeats N]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import forgeml as fm
from harness import measure, print_environment, print_table


def chain(x):
    y = x * 1.5
    y = y + 0.5
    y = y.tanh()
    y = y * x
    y = y - 0.25
    y = y.sigmoid()
    y = y.exp()
    y = y / 3.0
    y = y.relu()
    return y.sum()


def build_workloads():
    rng = np.random.default_rng(0)
    small = rng.standard_normal(64).astype(np.float32)
    fx = fm.tensor(small, requires_grad=True)
    tx = torch.tensor(small, requires_grad=True)

    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    b = rng.standard_normal((1024, 1024)).astype(np.float32)
    fa, fb = fm.tensor(a, requires_grad=True), fm.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)

    def fm_chain():
        fx.grad = None
        chain(fx).backward()

    def torch_chain():
        tx.grad = None
        chain(tx).backward()

    def fm_matmul():
        fa.grad = fb.grad = None
        (fa @ fb).sum().backward()

    def torch_matmul():
        ta.grad = tb.grad = None
        (ta @ tb).sum().backward()

    # Warm both up (first calls pay for imports, allocator growth and thread pools).
    for fn in (fm_chain, torch_chain):
        for _ in range(200):
            fn()
    for fn in (fm_matmul, torch_matmul):
        for _ in range(3):
            fn()
    return {
        "chain of 10 ops, 64 elements (fwd+bwd)": (fm_chain, torch_chain, 2000),
        "matmul 1024x1024 float32 (fwd+bwd)": (fm_matmul, torch_matmul, 5),
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
