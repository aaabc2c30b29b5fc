"""One TransformerEncoderLayer, forward + backward: ForgeML against PyTorch in one run.

On the CPU (default): d_model 256, 4 heads, feed-forward 1024, batch 32,
sequence 128. With ``--device cuda``: d_model 512, 8 heads, feed-forward 2048,
batch 64, sequence 256, each step ending with a device synchronisation, plus
the same layer under float16 and bfloat16 autocast (``forgeml.autocast`` and
``torch.autocast``) to show what mixed precision buys on each framework.
float32 weights and inputs, dropout off (both frameworks in training mode
otherwise), same weights and inputs. Prints both times and the ratio ForgeML /
PyTorch (below 1: ForgeML is faster; throughput ratio = 1 / time ratio).

Usage: ``python benchmarks/bench_transformer.py [--repeats 7] [--device cpu|cuda] [--torch-threads N]``
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np
import torch

import forgeml as fm
from forgeml import nn
from harness import measure, print_environment, print_table

SIZES = {"cpu": (256, 4, 1024, 32, 128), "cuda": (512, 8, 2048, 64, 256)}  # d_model, heads, ff, batch, seq


def _autocast(lib, device, dtype_name):
    if dtype_name is None:
        return contextlib.nullcontext()
    return lib.autocast(device, dtype=getattr(lib, dtype_name))


def build_workloads(device: str, amp_dtypes):
    d_model, heads, ff, batch, seq = SIZES[device]
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True)
    ours = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True)
    ours.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    theirs.to(device)
    ours.to(device)
    x = np.random.default_rng(0).standard_normal((batch, seq, d_model)).astype(np.float32)
    fx = fm.tensor(x).to(device).requires_grad_()
    tx = torch.tensor(x, device=device, requires_grad=True)
    mask = np.zeros((batch, seq), dtype=bool)
    mask[::2, seq - 16 :] = True  # half the batch has 16 padding positions
    f_mask, t_mask = fm.tensor(mask).to(device), torch.tensor(mask, device=device)
    fm_sync = fm.cuda.synchronize if device == "cuda" else (lambda: None)
    torch_sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fm_step(kpm=None, amp=None):
        fx.grad = None
        ours.zero_grad()
        with _autocast(fm, device, amp):
            out = ours(fx, src_key_padding_mask=kpm)
        out.float().sum().backward()
        fm_sync()

    def torch_step(kpm=None, amp=None):
        tx.grad = None
        theirs.zero_grad()
        with _autocast(torch, device, amp):
            out = theirs(tx, src_key_padding_mask=kpm)
        out.float().sum().backward()
        torch_sync()

    out_f = ours(fx).detach().cpu().numpy()
    out_t = theirs(tx).detach().cpu().numpy()
    assert np.allclose(out_f, out_t, atol=1e-4), "the two layers disagree"
    workloads = {
        "encoder layer fwd+bwd (no mask)": (fm_step, torch_step, 3),
        "encoder layer fwd+bwd (key padding mask)": (lambda: fm_step(f_mask), lambda: torch_step(t_mask), 3),
    }
    for name in amp_dtypes:
        workloads[f"encoder layer fwd+bwd, autocast {name}"] = (
            lambda n=name: fm_step(amp=n),
            lambda n=name: torch_step(amp=n),
            3,
        )
    for fm_fn, torch_fn, _ in workloads.values():
        for _ in range(2):
            fm_fn()
            torch_fn()
    return workloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per workload; the median is reported")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    print_environment(torch)
    d_model, heads, ff, batch, seq = SIZES[args.device]
    print(f"device: {args.device}; d_model {d_model}, {heads} heads, ff {ff}, batch {batch}, seq {seq}")
    amp_dtypes = ["float16", "bfloat16"] if args.device == "cuda" else []
    results = measure(build_workloads(args.device, amp_dtypes), args.repeats)
    print_table(results, args.repeats, 50)
    if amp_dtypes:
        base = results["encoder layer fwd+bwd (no mask)"]
        for name in amp_dtypes:
            r = results[f"encoder layer fwd+bwd, autocast {name}"]
            print(
                f"autocast {name} speed-up over float32: forgeml {base['forgeml'] / r['forgeml']:.2f}x, "
                f"pytorch {base['torch'] / r['torch']:.2f}x"
            )


if __name__ == "__main__":
    main()
