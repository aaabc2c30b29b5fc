"""The runnable examples work end to end."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_regression_learns(capsys):
    final = _load("demo_regression").main(epochs=300)
    assert final < 0.05  # the variance of the target is about 0.52
    printed = capsys.readouterr().out
    first = float(printed.splitlines()[0].split()[-1])
    assert first > 10 * final


def test_short_mnist_training_reaches_well_above_chance():
    """A few hundred Adam steps of the seed's model on real digits: far above the 10% of chance."""
    import forgeml as fm
    from forgeml.data import DataLoader
    from forgeml.optim import Adam
    from forgeml.training import Trainer

    example = _load("mnist_mlp")
    fm.manual_seed(0)
    train = example.load_split("train", limit=4000)
    test = example.load_split("test")
    model = example.build_model()
    trainer = Trainer(model, Adam(model.parameters(), lr=0.001, weight_decay=0.01))
    trainer.fit(DataLoader(train, batch_size=20, shuffle=True), epochs=1)  # 200 steps
    assert trainer.global_step == 200
    assert trainer.evaluate(DataLoader(test, batch_size=500))["accuracy"] > 0.85


def test_short_text_transformer_training_on_a_slice_of_the_corpus():
    """Scenario 2's stack on 600 e-mails, 64 tokens each, four epochs: well above the 70% of always saying ham."""
    import forgeml as fm
    from forgeml.data import DataLoader
    from forgeml.optim import AdamW
    from forgeml.training import Trainer

    example = _load("text_transformer")
    fm.manual_seed(0)
    train, test = example.load_corpus(max_length=64, max_size=3000, limit=600)
    model = example.build_transformer(len(train.vocab), embed_dim=32, heads=2, hidden=64)
    trainer = Trainer(model, AdamW(model.parameters(), lr=3e-3))
    trainer.fit(DataLoader(train, batch_size=32, shuffle=True), epochs=4)
    scores = example.spam_scores(trainer, DataLoader(test, batch_size=100))
    assert scores["accuracy"] > 0.85 and scores["f1"] > 0.7


def test_mnist_ai_enhanced_example_runs_with_the_offline_advisor(monkeypatch):
    import asyncio

    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PERPLEXITY_API_KEY", "GEMINI_API_KEY", "XAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FORGEML_AI_CACHE", "0")
    metrics = asyncio.run(_load("mnist_ai_enhanced").main(epochs=2, synthetic_ratio=0.05, progress=False))
    assert len(metrics.history) == 2 and metrics.final_test["accuracy"] > 0.85
    assert metrics.synthetic is not None and metrics.synthetic.provider == "local"
