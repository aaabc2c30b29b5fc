"""Scenario 1 training throughput and memory: ForgeML against PyTorch, each in its own subprocess.

The seed's MNIST model (Linear(784,512) ReLU Dropout(0.2) Linear(512,256) ReLU
Dropout(0.2) Linear(256,10)) trained with Adam(lr=1e-3, weight_decay=0.01) and
cross-entropy on the bundled MNIST training digits, float32, for a fixed number
of steps at batch sizes 64 and 256. Both sides fetch batches the same way (one
fancy-index into the preloaded arrays per batch, from one shuffled order), so
the figure is the framework's own forward/backward/update speed. Each run is a
fresh subprocess that imports only its own framework; it reports samples/s over
the timed steps (after warm-up) and its peak RSS. Runs alternate between the
frameworks; medians over ``--repeats`` runs are printed with the ratios.

With ``--device cuda`` both frameworks train on the GPU (ForgeML through CuPy,
PyTorch through its CUDA build) with the data set and the batch indices on the
device, the clock read after a device synchronisation, and the peak GPU memory
(each framework's own allocator statistics) reported instead of the RSS; the
default batch size is then 1024.

Usage: ``python benchmarks/bench_mlp.py [--steps 300] [--repeats 3] [--device cpu|cuda] [--batch-sizes 64 256]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

WARMUP_STEPS = 20


def _data():
    from forgeml.data.datasets import MNIST

    train = MNIST("train", flatten=True)
    images = (train.data.reshape(len(train.data), -1).astype(np.float32) / 255.0).astype(np.float32)
    return images, train.targets.astype(np.int64)


def _order(n_samples: int, batch: int, steps: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    needed = (steps + WARMUP_STEPS) * batch
    reps = -(-needed // n_samples)
    return np.concatenate([rng.permutation(n_samples) for _ in range(reps)])[:needed].reshape(-1, batch)


def run_forgeml(images, labels, batches, device):
    import forgeml as fm
    from forgeml import nn
    from forgeml.optim import Adam

    fm.manual_seed(0)
    model = (
        nn.Sequential()
        .add(nn.Linear(784, 512))
        .add(nn.ReLU())
        .add(nn.Dropout(0.2))
        .add(nn.Linear(512, 256))
        .add(nn.ReLU())
        .add(nn.Dropout(0.2))
        .add(nn.Linear(256, 10))
    )
    model.to(device)
    optimizer = Adam(model.parameters(), lr=0.001, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = fm.from_numpy(images).to(device), fm.from_numpy(labels).to(device)
    index_batches = [fm.from_numpy(b).to(device) for b in batches]

    def step(idx):
        optimizer.zero_grad()
        loss = loss_fn(model(x_all[idx]), y_all[idx])
        loss.backward()
        optimizer.step()
        return loss

    if device == "cuda":
        fm.cuda.reset_peak_memory_stats()
        result = _timed(step, index_batches, lambda loss: loss.item(), fm.cuda.synchronize)
        result["peak_device_mb"] = fm.cuda.max_memory_allocated() / 2**20
        return result
    return _timed(step, index_batches, lambda loss: loss.item())


def run_torch(images, labels, batches, device):
    import torch

    torch.manual_seed(0)
    from harness import torch_seed_mlp

    model = torch_seed_mlp(torch)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all, y_all = torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)
    index_batches = [torch.from_numpy(b).to(device) for b in batches]

    def step(idx):
        optimizer.zero_grad()
        loss = loss_fn(model(x_all[idx]), y_all[idx])
        loss.backward()
        optimizer.step()
        return loss

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        result = _timed(step, index_batches, lambda loss: loss.item(), torch.cuda.synchronize)
        result["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return result
    return _timed(step, index_batches, lambda loss: loss.item())


def _timed(step, batches, read_loss, synchronize=lambda: None):
    for idx in batches[:WARMUP_STEPS]:
        step(idx)
    synchronize()
    timed = batches[WARMUP_STEPS:]
    start = time.perf_counter()
    for idx in timed:
        loss = step(idx)
    final = read_loss(loss)
    synchronize()
    elapsed = time.perf_counter() - start
    return {"samples_per_second": len(timed) * len(timed[0]) / elapsed, "final_loss": final}


def worker(framework: str, batch: int, steps: int, device: str) -> None:
    images, labels = _data()
    batches = _order(len(images), batch, steps)
    result = (run_forgeml if framework == "forgeml" else run_torch)(images, labels, batches, device)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 64 256 (cpu), 1024 (cuda)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--worker", choices=["forgeml", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.batch, args.steps, args.device)
        return
    batch_sizes = args.batch_sizes or ([1024] if args.device == "cuda" else [64, 256])
    memory_key, memory_name = ("peak_device_mb", "GPU mem") if args.device == "cuda" else ("peak_rss_mb", "RSS")

    from harness import print_environment

    print_environment()
    print(f"device: {args.device}")
    print(f"{args.steps} timed steps after {WARMUP_STEPS} warm-up steps; medians of {args.repeats} runs\n")
    print(
        f"{'batch':>5s} {'forgeml samples/s':>18s} {'pytorch samples/s':>18s} {'ratio':>6s} "
        f"{'forgeml ' + memory_name:>15s} {'pytorch ' + memory_name:>15s} {'ratio':>6s}"
    )
    for batch in batch_sizes:
        runs = {"forgeml": [], "torch": []}
        for _ in range(args.repeats):
            for framework in ("forgeml", "torch"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        framework,
                        "--batch",
                        str(batch),
                        "--steps",
                        str(args.steps),
                        "--device",
                        args.device,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[framework].append(json.loads(out.stdout.strip().splitlines()[-1]))
        f_sps = statistics.median(r["samples_per_second"] for r in runs["forgeml"])
        t_sps = statistics.median(r["samples_per_second"] for r in runs["torch"])
        f_mem = statistics.median(r[memory_key] for r in runs["forgeml"])
        t_mem = statistics.median(r[memory_key] for r in runs["torch"])
        print(
            f"{batch:5d} {f_sps:18,.0f} {t_sps:18,.0f} {f_sps / t_sps:6.2f} "
            f"{f_mem:12.0f} MB {t_mem:12.0f} MB {f_mem / t_mem:6.2f}"
        )
    print(
        f"\nthroughput ratio = forgeml / pytorch (higher is better for forgeml); {memory_name} ratio = forgeml / pytorch "
        "(lower is better)"
    )


if __name__ == "__main__":
    main()
