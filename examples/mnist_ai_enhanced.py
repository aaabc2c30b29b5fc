"""Scenario 1 with AI guidance: the seed's MNIST classifier trained by ``AIEnhancedTrainer``.

With no API key set the offline advisor is the teacher; set OPENAI_API_KEY,
ANTHROPIC_API_KEY, PERPLEXITY_API_KEY (and GEMINI_API_KEY, XAI_API_KEY) to use
the real services. The configuration is the seed's: synthetic data at 30% of
the training set, research every 10 epochs, optimisation guidance every 5.

    python examples/mnist_ai_enhanced.py [--epochs 15] [--lr 0.001]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import forgeml as fm
from forgeml.optim import Adam
from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_mlp import build_model, load_split


async def main(epochs: int = 15, lr: float = 0.001, synthetic_ratio: float = 0.3, seed: int = 0, progress: bool = True):
    fm.manual_seed(seed)
    train, test = load_split("train"), load_split("test")
    model = build_model()
    config = AIEnhancedConfig(
        openai_enabled=True,
        anthropic_enabled=True,
        perplexity_enabled=True,
        synthetic_data_ratio=synthetic_ratio,
        research_update_interval=10,
        optimization_guidance_frequency=5,
        domain="computer_vision",
        model_description="MLP 784-512-256-10 with ReLU and Dropout(0.2) classifying MNIST digits",
    )
    trainer = AIEnhancedTrainer(
        model, Adam(model.parameters(), lr=lr, weight_decay=0.01), config, batch_size=64, progress=progress, log=print
    )
    status = trainer.orchestrator.status()["providers"]
    configured = [name for name, info in status.items() if info["configured"] and name != "local"]
    print(f"AI providers configured: {', '.join(configured) or 'none (the offline advisor teaches)'}")
    metrics = await trainer.train_with_ai_guidance(train, test, epochs=epochs, test_data=test)
    print("\n" + metrics.summary())
    await trainer.orchestrator.aclose()
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--synthetic-ratio", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.epochs, args.lr, args.synthetic_ratio, args.seed, not args.no_progress))
