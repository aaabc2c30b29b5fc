"""DataLoader worker processes against in-process loading, on a dataset with a Python transform per sample.

Each ``__getitem__`` runs a pure-Python transform costing about 0.2 ms (a
small numerical loop on the sample); batches of 64 are collated by the default
collate. Printed: the time per epoch in-process (``num_workers=0``) and with
``--workers`` worker processes, and their ratio; PyTorch's DataLoader on the
same dataset, for reference, when ``torch`` is installed.

Usage: ``python benchmarks/bench_dataloader.py [--samples 2048] [--workers 2] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from forgeml.data import DataLoader, Dataset
from harness import print_environment


def transform(row: np.ndarray, iters: int) -> np.ndarray:
    """A deliberately Python-level augmentation: a running blend over the sample, ``iters`` times."""
    values = row.tolist()
    acc = 0.0
    for _ in range(iters):
        for i, v in enumerate(values):
            acc = 0.9 * acc + 0.1 * v
            values[i] = v + 1e-3 * acc
    return np.asarray(values, dtype=np.float32)


class SlowDataset(Dataset):
    """``samples`` rows of 32 floats; ``__getitem__`` transforms one row in Python (about 0.2 ms)."""

    def __init__(self, samples: int, iters: int) -> None:
        self.x = np.random.default_rng(0).standard_normal((samples, 32)).astype(np.float32)
        self.iters = iters

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return transform(self.x[i], self.iters), i % 10


def calibrate(target_s: float = 2e-4) -> int:
    """The number of transform iterations that costs about ``target_s`` per sample on this machine."""
    row = np.zeros(32, dtype=np.float32)
    start = time.perf_counter()
    for _ in range(200):
        transform(row, 10)
    per_iter = (time.perf_counter() - start) / 2000
    return max(1, round(target_s / per_iter))


def epoch_time(loader, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _batch in loader:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print_environment()
    iters = calibrate()
    ds = SlowDataset(args.samples, iters)
    start = time.perf_counter()
    for i in range(200):
        ds[i]
    per_sample = (time.perf_counter() - start) / 200
    print(f"dataset: {args.samples} samples, transform {per_sample * 1e3:.3f} ms per sample, batch 64")

    serial = epoch_time(DataLoader(ds, batch_size=64), args.repeats)
    workers = epoch_time(DataLoader(ds, batch_size=64, num_workers=args.workers, persistent_workers=True), args.repeats)
    print(f"forgeml  num_workers=0: {serial:.3f} s/epoch")
    print(f"forgeml  num_workers={args.workers}: {workers:.3f} s/epoch (persistent workers)")
    print(f"ratio in-process / workers: {serial / workers:.2f}x")
    try:
        import torch.utils.data as tud
    except ImportError:
        return
    t_serial = epoch_time(tud.DataLoader(ds, batch_size=64), args.repeats)
    t_workers = epoch_time(
        tud.DataLoader(ds, batch_size=64, num_workers=args.workers, persistent_workers=True), args.repeats
    )
    print(f"pytorch  num_workers=0: {t_serial:.3f} s/epoch, num_workers={args.workers}: {t_workers:.3f} s/epoch")
    print(f"ratio forgeml / pytorch with workers: {workers / t_workers:.2f}x")


if __name__ == "__main__":
    main()
