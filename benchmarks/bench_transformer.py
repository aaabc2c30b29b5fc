"""One TransformerEncoderLayer, forward + backward: ForgeML against PyTorch in one run.

d_model 256, 4 heads, feed-forward 1024, batch 32, sequence 128, float32,
dropout off (both frameworks in training mode otherwise), same weights and
inputs. Prints both times and the ratio ForgeML / PyTorch (below 1: ForgeML
is faster; throughput ratio = 1 / time ratio).

Usage: ``python benchmarks/bench_transformer.py [--repeats 7] [--torch-threads N]``
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import forgeml as fm
from forgeml import nn
from harness import measure, print_environment, print_table

D_MODEL, HEADS, FF, BATCH, SEQ = 256, 4, 1024, 32, 128


def build_workloads():
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoderLayer(D_MODEL, HEADS, FF, dropout=0.0, batch_first=True)
    ours = nn.TransformerEncoderLayer(D_MODEL, HEADS, FF, dropout=0.0)
    ours.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((BATCH, SEQ, D_MODEL)).astype(np.float32)
    fx, tx = fm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    mask = np.zeros((BATCH, SEQ), dtype=bool)
    mask[::2, SEQ - 16 :] = True  # half the batch has 16 padding positions
    f_mask, t_mask = fm.tensor(mask), torch.tensor(mask)

    def fm_step(kpm=None):
        fx.grad = None
        ours.zero_grad()
        ours(fx, src_key_padding_mask=kpm).sum().backward()

    def torch_step(kpm=None):
        tx.grad = None
        theirs.zero_grad()
        theirs(tx, src_key_padding_mask=kpm).sum().backward()

    out_f = ours(fx).detach().numpy()
    out_t = theirs(tx).detach().numpy()
    assert np.allclose(out_f, out_t, atol=1e-4), "the two layers disagree"
    for _ in range(2):
        fm_step()
        torch_step()
    return {
        "encoder layer fwd+bwd (no mask)": (fm_step, torch_step, 3),
        "encoder layer fwd+bwd (key padding mask)": (lambda: fm_step(f_mask), lambda: torch_step(t_mask), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per workload; the median is reported")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print_environment(torch)
    results = measure(build_workloads(), args.repeats)
    print_table(results, args.repeats, 45)


if __name__ == "__main__":
    main()
