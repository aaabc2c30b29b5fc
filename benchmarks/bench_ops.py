"""ForgeML against PyTorch on the same work, in one run: per-op overhead and a BLAS-bound matmul.

Two workloads, each forward + backward:
  * chain:  10 elementwise ops on a 64-element float32 tensor (per-op overhead);
  * matmul: 1024x1024 @ 1024x1024 float32 (BLAS-bound).

Each figure is the median of several repeats (this machine is shared and noisy),
runs alternate between the frameworks, and the ratio is ForgeML / PyTorch
(below 1 means ForgeML is faster). Usage: ``python benchmarks/bench_ops.py [--repeats N]``.

A last section times the chain under each framework's profiler: ForgeML with
no profiler before any has run, inside ``forgeml.profiler.profile()``, and with
no profiler after one has run (the off-cost: nothing stays on the op path), and
PyTorch without and inside ``torch.profiler.profile()``. Each profiled figure is
a batch of chains inside one profiler, divided by the chains (start, stop and
event bookkeeping included; reading the results afterwards is not). The garbage
collector runs between figures, so that one framework's leftovers do not land
in the other's.
"""

from __future__ import annotations

import argparse
import gc
import statistics

import numpy as np
import torch

import forgeml as fm
from harness import measure, print_environment, print_table, time_per_call


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


def measure_profiler(repeats: int, fm_before: float, chains: int = 200, batches: int = 5) -> None:
    """Per-chain time of the chain workload with the profilers off and on (see the module docstring);
    ``fm_before`` is the chain figure of the main table, taken before any profiler ran."""
    rng = np.random.default_rng(0)
    small = rng.standard_normal(64).astype(np.float32)
    fx = fm.tensor(small, requires_grad=True)
    tx = torch.tensor(small, requires_grad=True)

    def steps(x):
        def step():
            x.grad = None
            chain(x).backward()

        def batch():
            for _ in range(chains):
                step()

        return step, batch

    fm_step, fm_batch = steps(fx)
    torch_step, torch_batch = steps(tx)

    def fm_profiled():
        with fm.profiler.profile():
            fm_batch()

    def torch_profiled():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
            torch_batch()

    fm_profiled()  # warm both profilers up
    torch_profiled()
    workloads = {
        "forgeml, inside profile()": (fm_profiled, chains),
        "forgeml, no profiler (after one ran)": (fm_step, 1),
        "pytorch, no profiler": (torch_step, 1),
        "pytorch, inside torch.profiler.profile()": (torch_profiled, chains),
    }
    figures = {name: [] for name in workloads}
    for _ in range(repeats):
        for name, (fn, per_call) in workloads.items():
            calls = batches if per_call > 1 else chains * batches
            gc.collect()  # a profiler leaves many objects behind: collect them before the next figure, not during it
            figures[name].append(time_per_call(fn, calls) / per_call)
    medians = {"forgeml, no profiler (the table's chain figure)": fm_before}
    medians.update((name, statistics.median(v)) for name, v in figures.items())
    torch_off = medians["pytorch, no profiler"]
    print("\nprofiler cost, chain of 10 ops, 64 elements (fwd+bwd), per chain (x: against the same framework off):")
    for name, value in medians.items():
        base = fm_before if name.startswith("forgeml") else torch_off
        print(f"  {name:48s} {value * 1e6:9.2f} us  x{value / base:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per workload; the median is reported")
    args = parser.parse_args()

    print_environment(torch)
    results = measure(build_workloads(), args.repeats)
    print_table(results, args.repeats, 45)
    measure_profiler(args.repeats, results["chain of 10 ops, 64 elements (fwd+bwd)"]["forgeml"])


if __name__ == "__main__":
    main()
