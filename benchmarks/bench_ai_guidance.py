"""What AI guidance gains on Scenario 1, measured: plain training against the offline advisor.

The seed's MNIST model, Adam(weight_decay=0.01), batch 64, bundled digits
(standardised), the same seed and data for every run. Two pairs: a good start
(lr 0.001) and a deliberately bad one (lr 0.05). Each pair trains once with the
plain ``Trainer`` and once with ``AIEnhancedTrainer`` and the offline advisor
(no keys; guidance every ``--every`` epochs, research every 10, no synthetic
data, answers applied at the next epoch boundary). Printed per run: final and
best validation accuracy, the first epoch reaching 95%, wall time, and the
changes the advisor applied.

Usage: ``python benchmarks/bench_ai_guidance.py [--epochs 15] [--every 3]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import forgeml as fm
from forgeml.data import DataLoader
from forgeml.optim import Adam
from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer, Trainer
from harness import print_environment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from mnist_mlp import build_model, load_split


def run(lr: float, guided: bool, epochs: int, every: int, seed: int, train, test) -> dict:
    fm.manual_seed(seed)
    model = build_model()
    optimizer = Adam(model.parameters(), lr=lr, weight_decay=0.01)
    start = time.perf_counter()
    if guided:
        config = AIEnhancedConfig(
            optimization_guidance_frequency=every,
            research_update_interval=10,
            domain="computer_vision",
            model_description="MLP 784-512-256-10 with ReLU and Dropout(0.2) on MNIST",
            wait_for_ai=True,
        )
        trainer = AIEnhancedTrainer(model, optimizer, config, batch_size=64)
        metrics = trainer.fit(train, test, epochs=epochs)
        history = metrics.history
        changes = [f"e{e.epoch}:{e.action['action']}" for e in metrics.events if e.applied and e.action]
    else:
        trainer = Trainer(model, optimizer)
        trainer.fit(DataLoader(train, batch_size=64, shuffle=True), DataLoader(test, batch_size=512), epochs=epochs)
        history = [m.as_dict() for m in trainer.history]
        changes = []
    seconds = time.perf_counter() - start
    accuracies = [h["val_accuracy"] for h in history]
    reached = next((h["epoch"] for h in history if h["val_accuracy"] >= 0.95), None)
    return {
        "final": accuracies[-1],
        "best": max(accuracies),
        "epochs_to_95": reached,
        "seconds": seconds,
        "per_epoch": seconds / len(history),
        "epochs": len(history),
        "changes": changes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--every", type=int, default=3, help="optimization_guidance_frequency")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("FORGEML_AI_CACHE", "0")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PERPLEXITY_API_KEY", "GEMINI_API_KEY", "XAI_API_KEY"):
        os.environ.pop(key, None)  # the offline advisor, by design
    print_environment()
    print(f"{args.epochs} epochs, guidance every {args.every}, seed {args.seed}\n")
    train, test = load_split("train"), load_split("test")
    print(
        f"{'start':>10s} {'training':>9s} {'final acc':>10s} {'best acc':>9s} {'epochs to 95%':>14s} {'epochs':>7s} {'time':>7s} {'s/epoch':>8s}  changes applied"
    )
    for lr in (0.001, 0.05):
        for guided in (False, True):
            r = run(lr, guided, args.epochs, args.every, args.seed, train, test)
            label = "good 1e-3" if lr == 0.001 else "bad 5e-2"
            print(
                f"{label:>10s} {'advisor' if guided else 'plain':>9s} {r['final']:10.2%} {r['best']:9.2%} "
                f"{r['epochs_to_95'] or '-'!s:>14s} {r['epochs']:7d} {r['seconds']:6.1f}s {r['per_epoch']:7.2f}s  "
                f"{', '.join(r['changes']) or '-'}"
            )


if __name__ == "__main__":
    main()
