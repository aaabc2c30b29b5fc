"""Shared pieces of the benchmarks: timing, alternating repeats with medians, the report.

Every benchmark runs ForgeML and PyTorch on the same work in one process (or,
for bench_mlp.py, in paired subprocesses) and reports both figures and their
ratio; nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np

ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS")


def time_per_call(fn, number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def measure(workloads, repeats: int) -> dict:
    """Median seconds per call for each workload ``name: (forgeml_fn, torch_fn, calls)``, alternating the two."""
    results = {name: {"forgeml": [], "torch": []} for name in workloads}
    for _ in range(repeats):
        for name, (fm_fn, torch_fn, number) in workloads.items():
            results[name]["forgeml"].append(time_per_call(fm_fn, number))
            results[name]["torch"].append(time_per_call(torch_fn, number))
    return {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}


def environment(torch_module=None) -> dict:
    """What :func:`print_environment` prints, as a dict for a benchmark's JSON report."""
    import forgeml as fm

    env = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "forgeml": fm.__version__,
        "env": {name: os.environ.get(name) for name in ENV_VARS},
    }
    if torch_module is not None:
        env["torch"] = torch_module.__version__
        env["torch_threads"] = torch_module.get_num_threads()
    return env


def print_environment(torch_module=None) -> None:
    """The machine, library versions and the BLAS environment variables, as the README quotes them."""
    env = environment(torch_module)
    print(f"machine: {env['machine']}, {env['cpus']} cpus, Python {env['python']}")
    versions = f"numpy {env['numpy']}, forgeml {env['forgeml']}"
    if torch_module is not None:
        versions += f", torch {env['torch']} (threads: {env['torch_threads']})"
    print(versions)
    print("env: " + " ".join(f"{name}={'(unset)' if value is None else value}" for name, value in env["env"].items()))


def write_json(path, report: dict) -> None:
    """Write a benchmark's results (``--json PATH``), with the environment under ``"environment"`` unless the
    report has one already; say where."""
    from pathlib import Path

    report = {**report, "environment": report.get("environment") or environment()}
    Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def print_table(results: dict, repeats: int, width: int = 50) -> None:
    """One row per workload: both times (µs or ms) and the ForgeML / PyTorch ratio."""
    print(f"\n{'workload':{width}s} {'forgeml':>12s} {'pytorch':>12s} {'ratio':>7s}")
    for name, r in results.items():
        f, t = r["forgeml"], r["torch"]
        unit, scale = ("us", 1e6) if f < 1e-3 else ("ms", 1e3)
        print(f"{name:{width}s} {f * scale:9.2f} {unit} {t * scale:9.2f} {unit} {f / t:7.2f}")
    print(f"\nmedians of {repeats} repeats; ratio = forgeml / pytorch (lower is better for forgeml)")


def torch_seed_mlp(torch_module):
    """The seed's MNIST MLP in PyTorch (784-512-256-10, ReLU, Dropout(0.2)), as examples/mnist_mlp.build_model."""
    nn = torch_module.nn
    return nn.Sequential(
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(256, 10),
    )


def training_step(model, optimizer, loss_fn):
    """``step(x, y)``: one zero_grad/forward/loss/backward/step of the usual loop, returning the loss (works for
    ForgeML and PyTorch alike)."""

    def step(x, y):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step
