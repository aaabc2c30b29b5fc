"""ForgeML against PyTorch on a small convolutional network, in one run (forward + backward).

Workload: a batch of 64 MNIST-sized images (64x1x28x28 float32) through
Conv2d(1, 16, 3, padding=1) -> ReLU -> MaxPool2d(2) -> Conv2d(16, 32, 3, padding=1),
then ``.sum().backward()``: gradients for both convolutions' weights and biases.
Both frameworks start from the same weights.

Each figure is the median of several repeats (this machine is shared and noisy),
runs alternate between the frameworks, and the ratio is ForgeML / PyTorch
(below 1 means ForgeML is faster). Usage: ``python benchmarks/bench_conv.py [--repeats N]``;
for a single-threaded comparison run
``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_conv.py --torch-threads 1``. On a machine with few
cores that one is the steadier figure: with several threads each, NumPy's OpenBLAS pool and torch's
OpenMP pool spin-wait after their own calls and slow the other framework down in this one process.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import forgeml as fm
from harness import measure, print_environment, print_table


def make_net(lib):
    nn = lib.nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1))


def build_workloads(batch: int):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    torch.manual_seed(0)
    t_net = make_net(torch)
    f_net = make_net(fm)
    f_net.load_state_dict({k: v.detach().numpy().copy() for k, v in t_net.state_dict().items()})
    fx, tx = fm.tensor(images), torch.tensor(images)

    def fm_step():
        f_net.zero_grad()
        f_net(fx).sum().backward()

    def torch_step():
        t_net.zero_grad()
        t_net(tx).sum().backward()

    def fm_forward():
        with fm.no_grad():
            f_net(fx)

    def torch_forward():
        with torch.no_grad():
            t_net(tx)

    # Same weights, same input: the two must agree before their speed means anything.
    fm_step()
    torch_step()
    for (name, p), tp in zip(f_net.named_parameters(), t_net.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-3, atol=1e-2, err_msg=name)
    # Warm both up (first calls pay for imports, allocator growth and thread pools).
    for fn in (fm_step, torch_step, fm_forward, torch_forward):
        for _ in range(3):
            fn()
    return {
        f"conv-relu-pool-conv, batch {batch} (fwd+bwd)": (fm_step, torch_step, 10),
        f"conv-relu-pool-conv, batch {batch} (fwd, no_grad)": (fm_forward, torch_forward, 10),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per workload; the median is reported")
    parser.add_argument("--batch", type=int, default=64, help="images per batch")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch.set_num_threads (match OPENBLAS_NUM_THREADS for numpy)"
    )
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    print_environment(torch)
    results = measure(build_workloads(args.batch), args.repeats)
    print_table(results, args.repeats, 50)


if __name__ == "__main__":
    main()
