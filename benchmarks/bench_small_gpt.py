"""A small GPT (nanoGPT's shape) training step: ForgeML against PyTorch in one run, single-threaded.

The model is written once, against a ``torch``-like module, and built twice: with ``torch`` and with
``forgeml`` (only the import differs). Causal self-attention from one fused q/k/v Linear, a registered
lower-triangular mask buffer, GELU MLP, pre-LayerNorm residual blocks, learned position embeddings and
the token embedding tied to the output head; AdamW(lr=1e-3), dropout 0, float32, batches of random
character ids. Both start from the same weights (PyTorch's, copied through the state_dict), and the
first step's loss is printed for both as a check that they compute the same thing.

One step is ``zero_grad``, forward, cross-entropy, backward, ``optimizer.step()``. Both libraries run on
one thread (``torch.set_num_threads(1)``; ``OPENBLAS_NUM_THREADS=1`` and ``OMP_NUM_THREADS=1`` are set
before NumPy loads, unless already set), which is where per-op overhead shows. The configurations:
``issue`` (2 layers, 2 heads, 64 dims, block 32, batch 16: the one the issue measured at 1.66x) and
``nano`` (4 layers, 4 heads, 128 dims, block 64, batch 16). Prints median ms per step of each and the
ratio ForgeML / PyTorch (target: at most 1.2).

Usage: ``python benchmarks/bench_small_gpt.py [--repeats 7] [--steps 20] [--configs issue,nano] [--json F]``
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import forgeml  # noqa: E402
from harness import measure, print_environment, print_table, write_json  # noqa: E402

CONFIGS = {  # n_layer, n_head, n_embd, block_size, batch
    "issue": (2, 2, 64, 32, 16),
    "nano": (4, 4, 128, 64, 16),
}
VOCAB = 65  # a character-level vocabulary (tiny Shakespeare's size)


def build_gpt(lib, n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int = VOCAB):
    """nanoGPT's model, written for ``lib`` (``torch`` or ``forgeml``)."""
    nn, F = lib.nn, lib.nn.functional

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(n_embd, 3 * n_embd)
            self.c_proj = nn.Linear(n_embd, n_embd)
            self.register_buffer("bias", lib.tril(lib.ones(block_size, block_size)).view(1, 1, block_size, block_size))

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(n_embd, dim=2)
            k = k.view(B, T, n_head, C // n_head).transpose(1, 2)
            q = q.view(B, T, n_head, C // n_head).transpose(1, 2)
            v = v.view(B, T, n_head, C // n_head).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.c_proj(y)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(n_embd, 4 * n_embd)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * n_embd, n_embd)

        def forward(self, x):
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(n_embd)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(n_embd)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab_size, n_embd)
            self.wpe = nn.Embedding(block_size, n_embd)
            self.h = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
            self.wte.weight = self.lm_head.weight  # weight tying

        def forward(self, idx, targets):
            _, t = idx.size()
            pos = lib.arange(0, t, dtype=lib.long)
            x = self.wte(idx) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    return GPT()


def build_workload(config: str):
    """``(forgeml_step, torch_step, first losses)`` for one configuration, from the same weights and data."""
    n_layer, n_head, n_embd, block, batch = CONFIGS[config]
    torch.manual_seed(0)
    theirs = build_gpt(torch, n_layer, n_head, n_embd, block)
    ours = build_gpt(forgeml, n_layer, n_head, n_embd, block)
    ours.load_state_dict({k: forgeml.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, size=(batch, block + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    tx, ty = torch.tensor(x), torch.tensor(y)
    fx, fy = forgeml.tensor(x), forgeml.tensor(y)
    t_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-3)
    f_opt = forgeml.optim.AdamW(ours.parameters(), lr=1e-3)

    def step(model, opt, xs, ys):
        opt.zero_grad(set_to_none=True)
        loss = model(xs, ys)
        loss.backward()
        opt.step()
        return loss

    first = (float(step(ours, f_opt, fx, fy).item()), float(step(theirs, t_opt, tx, ty).item()))
    return (lambda: step(ours, f_opt, fx, fy)), (lambda: step(theirs, t_opt, tx, ty)), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per framework (median reported)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round")
    parser.add_argument("--configs", default="issue,nano", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print_environment(torch)
    workloads, first_losses = {}, {}
    for config in args.configs.split(","):
        n_layer, n_head, n_embd, block, batch = CONFIGS[config]
        name = f"{config}: {n_layer} layers, {n_head} heads, {n_embd} dims, block {block}, batch {batch}"
        ours, theirs, first_losses[name] = build_workload(config)
        workloads[name] = (ours, theirs, args.steps)
    for name, (ours_loss, torch_loss) in first_losses.items():
        print(f"first loss, {name}: forgeml {ours_loss:.6f}  torch {torch_loss:.6f}")
    results = measure(workloads, args.repeats)
    print_table(results, args.repeats, width=70)
    if args.json:
        write_json(args.json, {"results": results, "first_losses": first_losses, "steps": args.steps})


if __name__ == "__main__":
    main()
