"""The three training scenarios of ``bench_ai_guidance.py``: data, model builders, recipes and AI configs.

Each scenario fixes its data (train / validation / test, the validation split
the last 1/8 of the training split under a seeded permutation, the same for
every arm and seed), a model builder that takes a dropout probability (every
``Dropout`` layer gets it, so a tuner can search it), the recipe's optimizer,
batch size and epoch count, and the :class:`AIEnhancedConfig` the guided arm
uses.

- ``seed``: the seed's Scenario 1 verbatim. examples/mnist_mlp.py's
  ``build_model()`` (784-512-256-10, ReLU, Dropout 0.2, Xavier init),
  Adam(lr=0.001, weight_decay=0.01), batch 64, 15 epochs, on RAW pixels
  (x / 255 in [0, 1], not standardised). Bundled MNIST: 7,000 train, 1,000
  validation, 2,000 test digits.
- ``cnn``: Conv(1->8, 3x3)-BN-ReLU-MaxPool-Conv(8->16, 3x3)-BN-ReLU-MaxPool-
  Flatten-Dropout(0.25)-Linear(784, 10) on [N, 1, 28, 28] images standardised
  as torchvision does (mean 0.1307, std 0.3081); Adam(lr=1e-3), no weight
  decay, batch 64, 10 epochs, guidance every 2. 3,500 train, 500 validation
  (from the first 4,000 bundled training digits), 2,000 test digits.
- ``spam``: examples/text_transformer.py's transformer (embedding 64, 2
  encoder layers, 2 heads, FFN 128, dropout 0.1) on the bundled SpamAssassin
  corpus cut to the first 1,700 training mails (``load_corpus(limit=1700)``:
  1,488 train, 212 validation) and 64 tokens per mail; AdamW(lr=1e-3,
  weight_decay=0.01), batch 32, no gradient clipping, 8 epochs, guidance every
  2; test: the 1,178 test mails.

``limit`` (smoke runs) cuts every split further, to at most ``limit``
training samples (validation and test scaled alike).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import forgeml as fm
from forgeml import nn
from forgeml.data import Subset, TensorDataset
from forgeml.data.datasets import MNIST
from forgeml.optim import Adam, AdamW

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from mnist_mlp import build_model as build_seed_mlp
from text_transformer import build_transformer, load_corpus

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
SPLIT_SEED = 1234  # the permutation that picks the validation split: fixed, whatever the run's seed
VAL_FRACTION = 1 / 8
SCENARIOS = ("seed", "cnn", "spam")


@dataclass
class Scenario:
    """One benchmark scenario: data, a model builder with a dropout knob, the recipe and the AI config."""

    name: str
    title: str
    train: Any
    val: Any
    test: Any
    build: Callable[[float], nn.Module]  # dropout -> a fresh model (weights drawn from ForgeML's generator)
    dropout: float  # the recipe's dropout
    make_optimizer: Callable[[nn.Module], Any]
    batch_size: int
    epochs: int
    ai_config: Callable[[], Any]  # -> AIEnhancedConfig
    plateau_patience: int  # ReduceLROnPlateau(factor=0.5, patience=...)
    early_stop_patience: int  # EarlyStopping(val_loss, patience=...)
    sizes: dict = field(default_factory=dict)

    def model(self) -> nn.Module:
        """The recipe's model."""
        return self.build(self.dropout)


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Every ``Dropout`` layer of ``model`` gets probability ``p``."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = float(p)
    return model


def split_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: the last ``VAL_FRACTION`` of a permutation seeded with ``SPLIT_SEED``."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = max(1, round(n * VAL_FRACTION))
    return np.sort(order[: n - n_val]), np.sort(order[n - n_val :])


def _mnist_arrays(split: str, n: int | None, images: bool) -> tuple[np.ndarray, np.ndarray]:
    digits = MNIST(split)
    x = digits.data[:n].astype(np.float32) / 255.0  # raw pixels in [0, 1]
    x = x.reshape(len(x), 1, 28, 28) if images else x.reshape(len(x), 784)
    return x, digits.targets[:n].astype(np.int64)


def _tensor_split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> TensorDataset:
    return TensorDataset(fm.tensor(np.ascontiguousarray(x[idx])), fm.tensor(y[idx]))


def _mnist_data(n_train: int | None, n_test: int | None, images: bool, standardise: bool):
    x, y = _mnist_arrays("train", n_train, images)
    xt, yt = _mnist_arrays("test", n_test, images)
    if standardise:
        x = ((x - MNIST_MEAN) / MNIST_STD).astype(np.float32)
        xt = ((xt - MNIST_MEAN) / MNIST_STD).astype(np.float32)
    tr, va = split_indices(len(x))
    return _tensor_split(x, y, tr), _tensor_split(x, y, va), TensorDataset(fm.tensor(xt), fm.tensor(yt))


def _cut(limit: int | None, n: int) -> int:
    """``n`` training samples, or ``limit`` when smaller (a smoke run)."""
    return n if limit is None else min(n, limit)


def _scaled(limit: int | None, n_train: int, n_other: int) -> int | None:
    """Validation/test size scaled with a training ``limit``."""
    if limit is None or limit >= n_train:
        return n_other
    return max(64, round(n_other * limit / n_train))


def seed_scenario(limit: int | None = None) -> Scenario:
    n = _cut(limit, 8000)
    train, val, test = _mnist_data(n, _scaled(limit, 8000, 2000), images=False, standardise=False)

    def config():
        from forgeml.training import AIEnhancedConfig

        return AIEnhancedConfig(
            openai_enabled=True,
            anthropic_enabled=True,
            perplexity_enabled=True,
            synthetic_data_ratio=0.3,
            research_update_interval=10,
            optimization_guidance_frequency=5,
            domain="computer_vision",
            model_description="MLP 784-512-256-10 with ReLU and Dropout(0.2) classifying MNIST digits",
            wait_for_ai=True,
        )

    return Scenario(
        name="seed",
        title="Scenario 1: seed MLP, raw MNIST pixels",
        train=train,
        val=val,
        test=test,
        build=lambda p: set_dropout(build_seed_mlp(), p),
        dropout=0.2,
        make_optimizer=lambda m: Adam(m.parameters(), lr=0.001, weight_decay=0.01),
        batch_size=64,
        epochs=15,
        ai_config=config,
        plateau_patience=2,
        early_stop_patience=3,
        sizes={"train": len(train), "val": len(val), "test": len(test), "inputs": "784 raw pixels in [0, 1]"},
    )


def build_cnn(dropout: float = 0.25) -> nn.Sequential:
    """Two conv blocks (8 and 16 channels, 3x3, BatchNorm, ReLU, 2x2 max-pool) and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(16 * 7 * 7, 10),
    )


def cnn_scenario(limit: int | None = None, epochs: int = 10) -> Scenario:
    n = _cut(limit, 4000)
    train, val, test = _mnist_data(n, _scaled(limit, 4000, 2000), images=True, standardise=True)

    def config():
        from forgeml.training import AIEnhancedConfig

        return AIEnhancedConfig(
            synthetic_data_ratio=0.0,
            research_update_interval=10,
            optimization_guidance_frequency=2,
            domain="computer_vision",
            model_description="CNN (2 conv blocks 8/16 channels with BatchNorm, max-pool, dropout 0.25) on MNIST",
            wait_for_ai=True,
        )

    return Scenario(
        name="cnn",
        title="Scenario 2: small CNN, standardised MNIST",
        train=train,
        val=val,
        test=test,
        build=build_cnn,
        dropout=0.25,
        make_optimizer=lambda m: Adam(m.parameters(), lr=1e-3),
        batch_size=64,
        epochs=epochs,
        ai_config=config,
        plateau_patience=1,
        early_stop_patience=2,
        sizes={"train": len(train), "val": len(val), "test": len(test), "inputs": "[1, 28, 28] standardised"},
    )


SPAM_MAILS, SPAM_MAX_LENGTH = 1700, 64


def spam_scenario(limit: int | None = None, epochs: int = 8) -> Scenario:
    mails = _cut(limit, SPAM_MAILS)
    corpus, test = load_corpus(max_length=SPAM_MAX_LENGTH, limit=mails)
    if limit is not None and limit < SPAM_MAILS:
        test = Subset(test, np.arange(_scaled(limit, SPAM_MAILS, len(test))))
    tr, va = split_indices(len(corpus))
    train, val = Subset(corpus, tr), Subset(corpus, va)
    vocab_size = len(corpus.vocab)

    def config():
        from forgeml.training import AIEnhancedConfig

        return AIEnhancedConfig(
            synthetic_data_ratio=0.0,
            research_update_interval=10,
            optimization_guidance_frequency=2,
            domain="nlp",
            model_description="transformer encoder (2 layers, 64 dims, 2 heads) classifying e-mail as ham or spam",
            wait_for_ai=True,
        )

    return Scenario(
        name="spam",
        title="Scenario 3: spam transformer, SpamAssassin",
        train=train,
        val=val,
        test=test,
        build=lambda p: set_dropout(build_transformer(vocab_size), p),
        dropout=0.1,
        make_optimizer=lambda m: AdamW(m.parameters(), lr=1e-3, weight_decay=0.01),
        batch_size=32,
        epochs=epochs,
        ai_config=config,
        plateau_patience=1,
        early_stop_patience=2,
        sizes={
            "train": len(train),
            "val": len(val),
            "test": len(test),
            "inputs": f"up to {SPAM_MAX_LENGTH} tokens, vocabulary {vocab_size:,}",
        },
    )


def load_scenario(name: str, limit: int | None = None, epochs: int | None = None) -> Scenario:
    """The scenario ``name`` (``seed``, ``cnn`` or ``spam``); ``epochs`` overrides its epoch count."""
    if name == "seed":
        scenario = seed_scenario(limit)
    elif name == "cnn":
        scenario = cnn_scenario(limit)
    elif name == "spam":
        scenario = spam_scenario(limit)
    else:
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")
    if epochs is not None:
        scenario.epochs = epochs
    return scenario
