"""Scenario 2 with AI guidance: the spam transformer trained by ``AIEnhancedTrainer``.

The seed configures research updates every 5 epochs for this scenario; guidance
(analysis of the metric history) comes every 2 epochs here. With no API key the
offline advisor teaches; with keys, the real services do.

    python examples/text_ai_enhanced.py [--epochs 6] [--max-length 128]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import forgeml as fm
from forgeml.data import DataLoader
from forgeml.optim import AdamW
from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_transformer import build_transformer, load_corpus, spam_scores


async def main(epochs: int = 6, max_length: int = 128, seed: int = 0, progress: bool = True):
    fm.manual_seed(seed)
    train, test = load_corpus(max_length)
    model = build_transformer(len(train.vocab))
    config = AIEnhancedConfig(
        research_update_interval=5,
        optimization_guidance_frequency=2,
        domain="nlp",
        model_description="transformer encoder (2 layers, 64 dims, 2 heads) classifying e-mail as ham or spam",
    )
    trainer = AIEnhancedTrainer(
        model,
        AdamW(model.parameters(), lr=1e-3, weight_decay=0.01),
        config,
        batch_size=32,
        max_grad_norm=1.0,
        progress=progress,
        log=print,
    )
    metrics = await trainer.train_with_ai_guidance(
        DataLoader(train, batch_size=32, shuffle=True), DataLoader(test, batch_size=128), epochs=epochs
    )
    scores = spam_scores(trainer, DataLoader(test, batch_size=128))
    print("\n" + metrics.summary())
    print(f"test accuracy {scores['accuracy']:.2%}, spam F1 {scores['f1']:.3f}")
    await trainer.orchestrator.aclose()
    return metrics, scores


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.epochs, args.max_length, args.seed, not args.no_progress))
