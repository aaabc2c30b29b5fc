"""Scenario 1 of the ForgeML seed: an MLP classifier trained on real MNIST digits.

The model is the seed's, layer for layer, built with the seed's builder form;
the optimizer is Adam(lr=0.001, weight_decay=0.01). It trains on the bundled
8,000-digit training split and reports accuracy on the 2,000-digit test split.
Pixels are standardised with MNIST's usual mean and std (torchvision's
``Normalize((0.1307,), (0.3081,))``) and the learning rate follows a cosine
annealing schedule over the epochs: with Adam's L2 weight decay of 0.01 both
are needed to pass 95% (PyTorch with the same recipe lands in the same place).

    python examples/mnist_mlp.py [--epochs 15] [--batch-size 64] [--checkpoint mnist.safetensors]
"""

from __future__ import annotations

import argparse

import numpy as np

import forgeml as fm
from forgeml.data import DataLoader, TensorDataset
from forgeml.data.datasets import MNIST
from forgeml.nn import CrossEntropyLoss, Dropout, Linear, ReLU, Sequential
from forgeml.optim import Adam
from forgeml.optim.lr_scheduler import CosineAnnealingLR
from forgeml.training import Trainer

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def build_model() -> Sequential:
    """The seed's network: 784 -> 512 -> 256 -> 10 with ReLU and Dropout(0.2), Xavier-normal weights, zero biases."""
    model = (
        Sequential()
        .add(Linear(784, 512, True))
        .add(ReLU())
        .add(Dropout(0.2))
        .add(Linear(512, 256, True))
        .add(ReLU())
        .add(Dropout(0.2))
        .add(Linear(256, 10, True))
    )
    return xavier_linears(model)


def xavier_linears(model):
    """The seed's initialisation (not PyTorch's default): every Linear gets Xavier-normal weights and a zero bias."""
    for module in model.modules():
        if isinstance(module, fm.nn.Linear):
            fm.nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                fm.nn.init.zeros_(module.bias)
    return model


def load_split(split: str, limit: int | None = None) -> TensorDataset:
    """A bundled MNIST split as standardised float32 vectors of 784 pixels and int64 labels."""
    digits = MNIST(split, flatten=True)
    pixels = digits.data[:limit].reshape(-1, 784).astype(np.float32) / 255.0
    standardised = ((pixels - MNIST_MEAN) / MNIST_STD).astype(np.float32)
    return TensorDataset(fm.tensor(standardised), fm.tensor(digits.targets[:limit].astype(np.int64)))


def main(epochs: int = 15, batch_size: int = 64, seed: int = 0, progress: bool = True, checkpoint=None) -> float:
    fm.manual_seed(seed)
    train = load_split("train")
    test = load_split("test")
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=512)

    model = build_model()
    optimizer = Adam(model.parameters(), lr=0.001, weight_decay=0.01)
    scheduler = CosineAnnealingLR(optimizer, T_max=epochs)
    trainer = Trainer(model, optimizer, CrossEntropyLoss(), scheduler=scheduler, progress=progress, log=print)
    print(f"training {model.num_parameters():,} parameters on {len(train):,} digits, testing on {len(test):,}")
    trainer.fit(train_loader, test_loader, epochs=epochs)
    accuracy = trainer.evaluate(test_loader)["accuracy"]
    print(f"test accuracy: {accuracy:.2%}")
    if checkpoint:
        fm.save(model.state_dict(), checkpoint)
        print(f"saved the weights to {checkpoint}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="where to save the trained weights (safetensors)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.seed, not args.no_progress, args.checkpoint)
