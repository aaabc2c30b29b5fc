"""Scenario 2 of the ForgeML seed: a small transformer classifies real e-mail as ham or spam.

The seed's stack: an embedding of the words, sinusoidal positions, two
transformer encoder layers, mean pooling over the real (non-padding) tokens and
a linear classifier, trained with AdamW on the bundled SpamAssassin corpus.
For comparison it also trains a bag-of-words logistic regression over the same
vocabulary (a strong baseline on spam) and prints both.

    python examples/text_transformer.py [--epochs 3] [--max-length 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import forgeml as fm
from forgeml import nn
from forgeml.data import DataLoader
from forgeml.data.datasets import SpamAssassin
from forgeml.data.text import TextClassificationDataset
from forgeml.optim import AdamW
from forgeml.training import Trainer


def load_corpus(max_length: int = 256, max_size: int = 20_000, limit: int | None = None):
    """Train and test splits as encoded datasets sharing the training split's vocabulary."""
    train_raw, test_raw = SpamAssassin("train"), SpamAssassin("test")
    train_texts, train_labels = train_raw.texts[:limit], train_raw.labels[:limit]
    train = TextClassificationDataset(train_texts, train_labels, min_freq=2, max_size=max_size, max_length=max_length)
    test = TextClassificationDataset(
        test_raw.texts[:limit], test_raw.labels[:limit], vocab=train.vocab, max_length=max_length
    )
    return train, test


def build_transformer(vocab_size: int, embed_dim: int = 64, heads: int = 2, hidden: int = 128, layers: int = 2):
    """Embedding -> positions -> 2 encoder layers -> masked mean pooling -> Linear(embed_dim, 2)."""
    model = nn.Sequential(
        nn.EmbeddingLayer(vocab_size, embed_dim, padding_idx=0),
        nn.PositionalEncoding(embed_dim, max_len=1024, dropout=0.1),
        nn.TransformerEncoder(
            nn.TransformerEncoderLayer(embed_dim, heads, hidden, dropout=0.1, activation="gelu", batch_first=True),
            layers,
        ),
        nn.SequencePool("mean"),
        nn.Linear(embed_dim, 2),
    )
    return xavier_linears(model)


def xavier_linears(model):
    """The seed's initialisation (not PyTorch's default): every Linear gets Xavier-normal weights and a zero bias."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def build_bag_of_words(vocab_size: int):
    """Logistic regression on term frequencies: a per-word weight per class, averaged over the words."""
    return xavier_linears(
        nn.Sequential(nn.Embedding(vocab_size, 2, padding_idx=0), nn.SequencePool("mean"), nn.Linear(2, 2))
    )


def spam_scores(trainer: Trainer, loader) -> dict:
    """Accuracy and precision/recall/F1 on the spam class (label 1)."""
    predictions, targets = [], []
    for ids, mask, labels in loader:
        out = trainer.predict(nn.MaskedBatch(ids, mask))
        predictions.append(out.numpy().argmax(1))
        targets.append(labels.numpy())
    pred, true = np.concatenate(predictions), np.concatenate(targets)
    tp = int(((pred == 1) & (true == 1)).sum())
    precision = tp / max(int((pred == 1).sum()), 1)
    recall = tp / max(int((true == 1).sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float((pred == true).mean()), "precision": precision, "recall": recall, "f1": f1}


def train(model, train_set, test_set, epochs: int, lr: float, batch_size: int, progress: bool, name: str):
    optimizer = AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    trainer = Trainer(model, optimizer, nn.CrossEntropyLoss(), max_grad_norm=1.0, progress=progress, log=print)
    start = time.perf_counter()
    print(f"\n{name}: {model.num_parameters():,} parameters")
    trainer.fit(DataLoader(train_set, batch_size=batch_size, shuffle=True), epochs=epochs)
    scores = spam_scores(trainer, DataLoader(test_set, batch_size=128))
    scores["seconds"] = time.perf_counter() - start
    print(
        f"{name}: test accuracy {scores['accuracy']:.2%}, spam precision {scores['precision']:.2%}, "
        f"recall {scores['recall']:.2%}, F1 {scores['f1']:.3f} ({scores['seconds']:.0f} s)"
    )
    return scores


def main(epochs: int = 3, max_length: int = 256, seed: int = 0, progress: bool = True, baseline: bool = True) -> dict:
    fm.manual_seed(seed)
    train_set, test_set = load_corpus(max_length)
    spam_share = float(np.mean(train_set.labels))
    print(
        f"SpamAssassin: {len(train_set):,} training and {len(test_set):,} test e-mails ({spam_share:.0%} spam), "
        f"vocabulary of {len(train_set.vocab):,} words, up to {max_length} tokens each"
    )
    results = {
        "transformer": train(
            build_transformer(len(train_set.vocab)), train_set, test_set, epochs, 1e-3, 32, progress, "transformer"
        )
    }
    if baseline:
        fm.manual_seed(seed)
        bow = build_bag_of_words(len(train_set.vocab))
        results["bag_of_words"] = train(
            bow, train_set, test_set, epochs * 3, 5e-2, 32, progress, "bag-of-words logistic regression"
        )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    main(args.epochs, args.max_length, args.seed, not args.no_progress, not args.no_baseline)
