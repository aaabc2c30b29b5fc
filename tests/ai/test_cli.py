"""The ``forgeml ai`` commands, offline (no keys): they answer through the offline advisor."""

import json

import pytest

from forgeml.cli import main

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PERPLEXITY_API_KEY", "GEMINI_API_KEY", "XAI_API_KEY")


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch, tmp_path):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FORGEML_AI_CACHE", "0")


def test_status_lists_every_provider_without_keys(capsys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")
    assert main(["ai", "status"]) == 0
    out = capsys.readouterr().out
    status = json.loads(out)
    assert set(status["providers"]) == {"openai", "anthropic", "perplexity", "gemini", "xai", "local"}
    assert status["providers"]["anthropic"]["configured"] and not status["providers"]["openai"]["configured"]
    assert "sk-ant-secret-value" not in out


def test_research_answers_with_citations(capsys):
    assert main(["ai", "research", "how do I stop overfitting?", "--domain", "computer_vision"]) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["provider"] == "local" and response["offline"]
    assert response["insights"] and all(i["citations"] for i in response["insights"])


def test_analyze_reads_a_metrics_file(tmp_path, capsys):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"train_loss": [1.0, 2.0, 8.0, "NaN"], "val_loss": [1.0, 2.5, 9.0, "NaN"]}))
    assert main(["ai", "analyze", str(path), "--description", "mlp lr=0.1"]) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["diagnosis"] == "diverging"
    records = tmp_path / "epochs.json"
    records.write_text(json.dumps([{"train_loss": 1.0, "val_loss": 1.1}, {"train_loss": 0.8, "val_loss": 0.9}]))
    assert main(["ai", "analyze", str(records)]) == 0
    assert main(["ai", "analyze", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
