"""The orchestrator with the real SDK clients against the fake provider server: the whole path, no network."""

import asyncio

import pytest

from forgeml.ai import AIServiceOrchestrator, AISettings
from tests.ai.fake_providers import FakeProviderServer, answer, http_error

KEYS = {
    "OPENAI_API_KEY": "sk-openai-secret",
    "ANTHROPIC_API_KEY": "sk-ant-secret",
    "PERPLEXITY_API_KEY": "pplx-secret",
    "GEMINI_API_KEY": "gem-secret",
    "XAI_API_KEY": "xai-secret",
}
ANALYSIS = {
    "diagnosis": "plateau",
    "evidence": ["val loss changed by less than 0.1% over 5 epochs"],
    "recommendations": [
        {
            "action": {"action": "scale_learning_rate", "factor": 0.5},
            "rationale": "escape the plateau",
            "confidence": 0.6,
        }
    ],
}
METRICS = {"train_loss": [0.5, 0.45, 0.449, 0.449, 0.449], "val_loss": [0.6, 0.55, 0.55, 0.55, 0.55]}


@pytest.fixture
def server():
    with FakeProviderServer() as srv:
        yield srv


def orchestrator(server, **overrides):
    env = dict(KEYS)
    for name in ("openai", "anthropic", "perplexity", "gemini", "xai"):
        env[f"FORGEML_{name.upper()}_BASE_URL"] = server.base_url(name)
    settings = AISettings.from_env(
        env=env,
        cache_enabled=False,
        call_timeout=3.0,
        task_deadline=10.0,
        backoff_base=0.01,
        backoff_max=0.1,
        **overrides,
    )
    return AIServiceOrchestrator(settings)


async def _run(orch, coro_fn):
    try:
        return await coro_fn(orch)
    finally:
        await orch.aclose()


def test_analysis_through_anthropic_with_fallback_to_gemini(server):
    server.script("anthropic", http_error(503), http_error(503))
    server.script("gemini", answer(ANALYSIS))
    orch = orchestrator(server, max_retries=1)
    result = asyncio.run(_run(orch, lambda o: o.analyze_model_reasoning("mlp", METRICS)))
    assert result.provider == "gemini" and result.diagnosis == "plateau"
    assert len(server.requests_for("anthropic")) == 2  # one try and one retry, no SDK retries
    body = server.requests_for("gemini")[0].body
    assert "plateau" in str(body) or "generationConfig" in body or "generation_config" in str(body)
    assert result.attempts[0].outcome == "failed"


def test_research_keeps_perplexity_sources(server):
    insights = {
        "insights": [
            {"technique": "AdamW", "summary": "decouple decay", "applies_when": "overfitting", "citations": []}
        ]
    }
    server.script("perplexity", answer(insights))
    orch = orchestrator(server)
    result = asyncio.run(
        _run(orch, lambda o: o.get_latest_research_insights("computer_vision", diagnosis="overfitting"))
    )
    assert result.provider == "perplexity"
    assert result.search_results and result.citations
    urls = [c.url for c in result.citations]
    assert "https://arxiv.org/abs/1711.05101" in urls
    assert orch.ledger.by_provider["perplexity"].cost_usd > 0


def test_synthetic_data_from_openai_is_validated(server):
    server.script(
        "openai", answer({"samples": [{"features": [0.15, 0.2], "label": 0}, {"features": [9e9, 1.0], "label": 1}]})
    )
    orch = orchestrator(server)
    sample = [[0.1, 0.2, 0], [0.2, 0.1, 0], [0.9, 0.8, 1], [0.8, 0.9, 1]]
    result = asyncio.run(_run(orch, lambda o: o.generate_synthetic_data("classifier", sample, 2)))
    assert result.provider == "openai" and result.accepted == 1 and result.rejected == 1
    request = server.requests_for("openai")[0]
    assert request.header("authorization") == "Bearer sk-openai-secret"
    assert request.body["model"] == orch.settings.providers["openai"].model


def test_architecture_from_xai_and_secrets_stay_out_of_status(server):
    spec = {"layers": [{"type": "Linear", "args": {"in_features": 20, "out_features": 3}}]}
    server.script("xai", answer({"candidates": [{"spec": spec, "rationale": "linear baseline"}]}))
    orch = orchestrator(server)
    result = asyncio.run(_run(orch, lambda o: o.suggest_architectures("tabular mlp", None, 20, 3, k=1)))
    assert result.provider == "xai" and result.candidates[0].spec.layers[0].args["out_features"] == 3
    status = orchestrator(server).status()
    assert status["providers"]["xai"]["configured"]
    for secret in KEYS.values():
        assert secret not in str(status)
