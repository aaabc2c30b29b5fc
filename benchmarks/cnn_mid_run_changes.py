"""What one change in the middle of a run does to the CNN scenario of ``bench_ai_guidance.py``: the experiments
behind the advisor changing the CNN's rate at the start rather than in the middle of the run.

Each variant trains the scenario's recipe (``ai_scenarios.cnn_scenario``: Adam 1e-3, batch 64, 10 epochs) for
seeds 0, 1 and 2 with plain ``Trainer``s and applies its changes after the given epochs; it prints the test
accuracy of each seed and the mean. A variant is ``change@epoch`` items joined by ``+``:

- ``lrF@K``: the learning rate times F after epoch K (``lr2@2``; ``lr3@0``: from the start);
- ``dropP@K``: every Dropout's probability set to P after epoch K (``drop0.1@2``);
- ``cosine@K``: from epoch K on, a cosine from the current rate down to 1% of it over the remaining epochs;
- ``none``: the recipe unchanged.

Usage: ``OPENBLAS_NUM_THREADS=1 python benchmarks/cnn_mid_run_changes.py [VARIANT ...]``
(default: ``none cosine@6 lr2@2 lr2@4 lr3@2 drop0.1@2 lr2@2+drop0.1@2``).
"""

from __future__ import annotations

import argparse
import math
import statistics

import bench_ai_guidance as bench
import forgeml as fm
from ai_scenarios import load_scenario, set_dropout
from forgeml.optim import lr_scheduler
from forgeml.training import Trainer

DEFAULT_VARIANTS = ["none", "cosine@6", "lr2@2", "lr2@4", "lr3@2", "drop0.1@2", "lr2@2+drop0.1@2"]
SEEDS = (0, 1, 2)


def parse(variant: str) -> dict[int, list[str]]:
    """``lr2@2+drop0.1@2`` -> ``{2: ['lr2', 'drop0.1']}``; ``none`` -> ``{}``."""
    changes: dict[int, list[str]] = {}
    if variant == "none":
        return changes
    for item in variant.split("+"):
        what, _, after = item.partition("@")
        if not after.isdigit() or not what.startswith(("lr", "drop", "cosine")):
            raise SystemExit(f"bad variant item {item!r}: lrF@K, dropP@K or cosine@K")
        changes.setdefault(int(after), []).append(what)
    return changes


def apply(change: str, trainer: Trainer, model, epochs_left: int, steps_per_epoch: int) -> None:
    if change.startswith("lr"):
        for group in trainer.optimizer.param_groups:
            group["lr"] *= float(change[2:])
    elif change.startswith("drop"):
        set_dropout(model, float(change[4:]))
    else:  # cosine over the remaining epochs, per step, from the current rate to 1% of it
        steps = epochs_left * steps_per_epoch
        for group in trainer.optimizer.param_groups:
            group["initial_lr"] = group["lr"]

        def cosine(t: int) -> float:
            return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t / max(1, steps))))

        trainer.scheduler = lr_scheduler.LambdaLR(trainer.optimizer, cosine)
        trainer.scheduler_interval = "step"


def run(scenario, variant: str, seed: int) -> float:
    changes = parse(variant)
    fm.manual_seed(seed)
    model = scenario.model()
    trainer = Trainer(model, scenario.make_optimizer(model))
    train_loader, val_loader = bench._loaders(scenario, scenario.batch_size)
    done = 0
    for after in [*sorted(k for k in changes if k < scenario.epochs), scenario.epochs]:
        if after > done:
            trainer.fit(train_loader, val_loader, epochs=after - done)
            done = after
        for change in changes.get(after, []) if after < scenario.epochs else []:
            apply(change, trainer, model, scenario.epochs - after, len(train_loader))
    return bench._test(model, scenario)["accuracy"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", default=DEFAULT_VARIANTS)
    args = parser.parse_args(argv)
    variants = args.variants or DEFAULT_VARIANTS
    for variant in variants:
        parse(variant)  # every variant checked before the first run
    scenario = load_scenario("cnn")
    bench.warm_up(scenario)
    for variant in variants:
        accuracies = [run(scenario, variant, seed) for seed in SEEDS]
        per_seed = ", ".join(f"{a * 100:.2f}%" for a in accuracies)
        print(f"{variant:20s} mean {statistics.mean(accuracies) * 100:.2f}%  (seeds {per_seed})", flush=True)


if __name__ == "__main__":
    main()
