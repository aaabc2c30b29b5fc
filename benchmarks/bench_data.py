"""ForgeML's DataLoader against PyTorch's on the same data, in one run: one shuffled epoch, batch 64.

Workloads (the bundled MNIST train split: 8,000 images):
  * tensors:  TensorDataset of float32 [8000, 1, 28, 28] images and int64 labels, in both frameworks;
    ForgeML gathers each batch with one fancy index per tensor, PyTorch fetches and stacks 64 samples;
  * mnist:    ForgeML's MNIST dataset (uint8 storage, converted to float per batch) against the
    PyTorch TensorDataset above;
  * per-item: both frameworks fetch sample by sample and collate (a custom collate_fn forces
    ForgeML onto that path), the cost the vectorised path avoids.

Each figure is the median of several repeats, runs alternate between the frameworks, and the ratio
is ForgeML / PyTorch (below 1 means ForgeML is faster). Usage: ``python benchmarks/bench_data.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.utils.data as tud

import forgeml as fm
from forgeml.data import DataLoader, TensorDataset, default_collate
from forgeml.data.datasets import MNIST
from harness import print_environment


def per_item_collate(samples):
    return default_collate(samples)


def run_epoch(loader) -> int:
    n = 0
    for _, y in loader:
        n += len(y)
    return n


def build_workloads(batch_size: int):
    mnist = MNIST("train")
    images = (mnist.data.astype(np.float32) / np.float32(255)).reshape(-1, 1, 28, 28)
    labels = mnist.targets
    fm_tensors = TensorDataset(fm.tensor(images), fm.tensor(labels))
    torch_tensors = tud.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    fm.manual_seed(0)
    torch.manual_seed(0)
    torch_loader = tud.DataLoader(torch_tensors, batch_size=batch_size, shuffle=True)
    return {
        "tensors: TensorDataset epoch": (
            DataLoader(fm_tensors, batch_size=batch_size, shuffle=True),
            torch_loader,
        ),
        "mnist: MNIST (uint8 -> float) epoch": (DataLoader(mnist, batch_size=batch_size, shuffle=True), torch_loader),
        "per-item: fetch + collate epoch": (
            DataLoader(fm_tensors, batch_size=batch_size, shuffle=True, collate_fn=per_item_collate),
            torch_loader,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per workload; the median is reported")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    print_environment(torch)
    workloads = build_workloads(args.batch_size)
    times = {name: {"forgeml": [], "torch": []} for name in workloads}
    for ours, theirs in workloads.values():  # warm-up
        assert run_epoch(ours) == run_epoch(theirs) == 8000
    for _ in range(args.repeats):
        for name, (ours, theirs) in workloads.items():
            for key, loader in (("forgeml", ours), ("torch", theirs)):
                start = time.perf_counter()
                run_epoch(loader)
                times[name][key].append(time.perf_counter() - start)
    print(
        f"\n{'workload (8000 samples, batch ' + str(args.batch_size) + ')':45s} {'forgeml':>10s} {'pytorch':>10s} {'ratio':>7s}"
    )
    for name, r in times.items():
        f, t = statistics.median(r["forgeml"]), statistics.median(r["torch"])
        print(f"{name:45s} {f * 1e3:7.1f} ms {t * 1e3:7.1f} ms {f / t:7.2f}")
    print(f"\nmedians of {args.repeats} repeats; ratio = forgeml / pytorch (lower is better for forgeml)")


if __name__ == "__main__":
    main()
