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
import os
import platform
import statistics
import time

import numpy as np
import torch

import forgeml as fm


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


def time_per_call(fn, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def measure(workloads, repeats: int):
    results = {name: {"forgeml": [], "torch": []} for name in workloads}
    for _ in range(repeats):
        for name, (fm_fn, torch_fn, number) in workloads.items():
            results[name]["forgeml"].append(time_per_call(fm_fn, number))
            results[name]["torch"].append(time_per_call(torch_fn, number))
    return {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}


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

    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    threads = torch.get_num_threads()
    print(f"numpy {np.__version__}, torch {torch.__version__} (threads: {threads}), forgeml {fm.__version__}")
    env = {name: os.environ.get(name, "(unset)") for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print("env: " + " ".join(f"{k}={v}" for k, v in env.items()))
    results = measure(build_workloads(), args.repeats)
    print(f"\n{'workload':45s} {'forgeml':>12s} {'pytorch':>12s} {'ratio':>7s}")
    for name, r in results.items():
        f, t = r["forgeml"], r["torch"]
        unit, scale = ("us", 1e6) if f < 1e-3 else ("ms", 1e3)
        print(f"{name:45s} {f * scale:9.1f} {unit} {t * scale:9.1f} {unit} {f / t:7.2f}")
    print(f"\nmedians of {args.repeats} repeats; ratio = forgeml / pytorch (lower is better for forgeml)")


if __name__ == "__main__":
    main()
