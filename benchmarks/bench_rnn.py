"""A word-level language model's recurrent core, forward + backward: ForgeML against PyTorch in one run.

``nn.LSTM(200, 200, num_layers=2)`` over a (sequence 35, batch 20) float32
input with a given initial state (the PTB "small" setting), dropout off, same
weights and inputs in both frameworks; the loss is the sum of the output and
the final states. GRU and tanh-RNN layers of the same size are timed too.
Both run single-threaded by default (``torch.set_num_threads(1)`` and
``OPENBLAS_NUM_THREADS=1`` unless already set), as the issue asks. Prints both
times and the ratio ForgeML / PyTorch (below 1: ForgeML is faster).

Usage: ``python benchmarks/bench_rnn.py [--repeats 7] [--threads 1]``
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":  # the BLAS reads its thread count when NumPy loads
    _threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
    for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)

import numpy as np
import torch

import forgeml as fm
from forgeml import nn
from harness import measure, print_environment, print_table

SEQ, BATCH, SIZE, LAYERS = 35, 20, 200, 2


def _workload(kind: str):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(SIZE, SIZE, num_layers=LAYERS)
    ours = getattr(nn, kind)(SIZE, SIZE, num_layers=LAYERS)
    ours.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SEQ, BATCH, SIZE)).astype(np.float32)
    states = [rng.standard_normal((LAYERS, BATCH, SIZE)).astype(np.float32) for _ in range(2)]
    fx, tx = fm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    f_hx = tuple(fm.tensor(s) for s in states) if kind == "LSTM" else fm.tensor(states[0])
    t_hx = tuple(torch.tensor(s) for s in states) if kind == "LSTM" else torch.tensor(states[0])

    def step(model, x, hx):
        def run():
            out, hidden = model(x, hx)
            loss = out.sum()
            for h in hidden if kind == "LSTM" else (hidden,):
                loss = loss + h.sum()
            model.zero_grad()
            loss.backward()

        return run

    return step(ours, fx, f_hx), step(theirs, tx, t_hx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="threads for PyTorch and the BLAS (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print_environment(torch)
    workloads = {}
    for kind in ("LSTM", "GRU", "RNN"):
        ours, theirs = _workload(kind)
        ours(), theirs()  # warm-up
        workloads[f"{kind}(200, 200, 2 layers), seq 35 x batch 20, fwd+bwd"] = (ours, theirs, 5)
    print_table(measure(workloads, args.repeats), args.repeats, width=56)


if __name__ == "__main__":
    main()
