"""AIServiceOrchestrator: routing, fallbacks, retries, breaker, budget, cache, repair, consensus, concurrency."""

import asyncio
import math
import time

import pytest

from forgeml.ai import AIServiceOrchestrator, AISettings
from forgeml.ai.errors import AuthenticationFailed, ProviderUnavailable, RateLimited
from forgeml.specs import ModelSpec
from tests.ai.stubs import ScriptedProvider

ANALYSIS = {
    "diagnosis": "overfitting",
    "evidence": ["val loss rose from 0.40 to 0.55 while train loss fell"],
    "recommendations": [
        {"action": {"action": "set_dropout", "p": 0.3}, "rationale": "regularise", "confidence": 0.7},
        {"action": {"action": "scale_learning_rate", "factor": 0.5}, "rationale": "smaller steps", "confidence": 0.5},
    ],
}
PLATEAU = {
    "diagnosis": "plateau",
    "evidence": ["loss flat"],
    "recommendations": [
        {"action": {"action": "scale_learning_rate", "factor": 0.1}, "rationale": "shake it", "confidence": 0.6}
    ],
}
METRICS = {"train_loss": [1.0, 0.6, 0.4, 0.3, 0.2, 0.15], "val_loss": [1.0, 0.7, 0.5, 0.45, 0.5, 0.55]}
SAMPLE = [[0.1, 0.2, 0], [0.2, 0.1, 0], [0.15, 0.25, 0], [0.9, 0.8, 1], [0.8, 0.95, 1], [0.85, 0.9, 1]]


def make(providers, **settings):
    base = dict(cache_enabled=False, backoff_base=0.001, backoff_max=0.05, call_timeout=2.0, task_deadline=5.0)
    base.update(settings)
    s = AISettings.from_env(env={}, **base)
    return AIServiceOrchestrator(s, providers={p.name: p for p in providers})


def run(coro):
    return asyncio.run(coro)


def test_no_keys_means_the_offline_advisor_answers_every_task_and_says_why():
    orch = make(
        [ScriptedProvider(n, [ANALYSIS], key=None) for n in ("openai", "anthropic", "gemini", "perplexity", "xai")]
    )
    analysis = run(orch.analyze_model_reasoning("mlp", METRICS))
    assert analysis.provider == "local" and analysis.offline and analysis.model == "offline-advisor"
    assert [(a.provider, a.outcome) for a in analysis.attempts] == [
        ("anthropic", "not_configured"),
        ("gemini", "not_configured"),
        ("local", "answered"),
    ]
    research = run(orch.get_latest_research_insights("computer_vision"))
    assert research.offline and research.insights and research.citations
    synthetic = run(orch.generate_synthetic_data("classifier", SAMPLE, 10))
    assert synthetic.offline and synthetic.accepted == len(synthetic.samples) > 0
    arch = run(orch.suggest_architectures("mlp", None, 784, 10, k=2))
    assert arch.offline and len(arch.candidates) == 2


def test_fallback_after_retries_goes_to_the_next_provider():
    anthropic = ScriptedProvider("anthropic", [ProviderUnavailable("anthropic", "503")])
    gemini = ScriptedProvider("gemini", [ANALYSIS])
    orch = make([anthropic, gemini], max_retries=2)
    result = run(orch.analyze_model_reasoning("mlp", METRICS))
    assert result.provider == "gemini" and result.diagnosis == "overfitting"
    assert len(anthropic.calls) == 3  # the first try and two retries
    assert result.attempts[0].provider == "anthropic" and result.attempts[0].outcome == "failed"
    assert "ProviderUnavailable" in result.attempts[0].detail
    assert result.attempts[1].outcome == "answered"


def test_rate_limits_honour_retry_after_then_succeed():
    limited = RateLimited("anthropic", "429", retry_after=0.15)
    anthropic = ScriptedProvider("anthropic", [limited, limited, ANALYSIS])
    orch = make([anthropic], max_retries=3, backoff_max=1.0)
    start = time.perf_counter()
    result = run(orch.analyze_model_reasoning("mlp", METRICS))
    assert result.provider == "anthropic"
    assert time.perf_counter() - start >= 0.3
    assert len(anthropic.calls) == 3


def test_authentication_failures_are_not_retried():
    anthropic = ScriptedProvider("anthropic", [AuthenticationFailed("anthropic", "401")])
    orch = make([anthropic], max_retries=3)
    result = run(orch.analyze_model_reasoning("mlp", METRICS))
    assert len(anthropic.calls) == 1 and result.provider == "local"


def test_circuit_breaker_opens_then_recovers_after_cooldown():
    anthropic = ScriptedProvider("anthropic", [ProviderUnavailable("anthropic", "500")] * 3 + [ANALYSIS])
    orch = make([anthropic], max_retries=0, breaker_threshold=3, breaker_cooldown=0.2)
    for _ in range(3):
        assert run(orch.analyze_model_reasoning("mlp", METRICS, use_cache=False)).provider == "local"
    assert orch.status()["providers"]["anthropic"]["breaker"] == "open"
    skipped = run(orch.analyze_model_reasoning("mlp", METRICS, use_cache=False))
    assert skipped.attempts[0].outcome == "circuit_open" and len(anthropic.calls) == 3
    time.sleep(0.25)
    recovered = run(orch.analyze_model_reasoning("mlp", METRICS, use_cache=False))
    assert recovered.provider == "anthropic"
    assert orch.status()["providers"]["anthropic"]["breaker"] == "closed"


def test_budget_stops_remote_calls_before_they_are_sent():
    anthropic = ScriptedProvider("anthropic", [ANALYSIS])
    orch = make([anthropic], budget_usd=0.0, prices={"stub-model": (3.0, 15.0)})
    result = run(orch.analyze_model_reasoning("mlp", METRICS))
    assert result.provider == "local" and anthropic.calls == []
    assert result.attempts[0].outcome == "budget_exceeded"
    roomy = make([ScriptedProvider("anthropic", [ANALYSIS])], budget_usd=1.0, prices={"stub-model": (3.0, 15.0)})
    assert run(roomy.analyze_model_reasoning("mlp", METRICS)).provider == "anthropic"
    spent = roomy.status()["spent_usd"]
    assert spent == pytest.approx((1000 * 3.0 + 500 * 15.0) / 1e6)


def test_cache_answers_identical_requests(tmp_path):
    anthropic = ScriptedProvider("anthropic", [ANALYSIS])
    orch = make([anthropic], cache_enabled=True, cache_dir=tmp_path)
    first = run(orch.analyze_model_reasoning("mlp", METRICS))
    second = run(orch.analyze_model_reasoning("mlp", METRICS))
    assert not first.cached and second.cached and len(anthropic.calls) == 1
    assert second.recommendations == first.recommendations
    third = run(orch.analyze_model_reasoning("mlp", METRICS, use_cache=False))
    assert not third.cached and len(anthropic.calls) == 2
    assert (tmp_path / "ai_cache.sqlite").exists()
    other = make([ScriptedProvider("anthropic", [ANALYSIS])], cache_enabled=True, cache_dir=tmp_path)
    assert run(other.analyze_model_reasoning("mlp", METRICS)).cached  # persisted on disk
    assert any(r["cache_hit"] for r in other.audit())


def test_bad_output_gets_one_repair_request_then_falls_through():
    bad = {"diagnosis": "sad", "recommendations": []}
    anthropic = ScriptedProvider("anthropic", [bad, ANALYSIS])
    orch = make([anthropic])
    result = run(orch.analyze_model_reasoning("mlp", METRICS))
    assert result.provider == "anthropic"
    repair = anthropic.calls[1]["messages"]
    assert repair[1][0] == "assistant" and repair[2][0] == "user" and "could not be used" in repair[2][1]
    stubborn = ScriptedProvider("anthropic", [bad])
    gemini = ScriptedProvider("gemini", [PLATEAU])
    result = run(make([stubborn, gemini]).analyze_model_reasoning("mlp", METRICS))
    assert len(stubborn.calls) == 2 and result.provider == "gemini"
    assert "validation" in result.attempts[0].detail


def test_consensus_merges_analyses():
    anthropic = ScriptedProvider("anthropic", [ANALYSIS])
    gemini = ScriptedProvider("gemini", [PLATEAU])
    orch = make([anthropic, gemini], consensus=True)
    merged = run(orch.analyze_model_reasoning("mlp", METRICS))
    assert "anthropic" in merged.provider and "gemini" in merged.provider and "local" in merged.provider
    lr = [r for r in merged.recommendations if r.action.action == "scale_learning_rate"]
    assert len(lr) == 1 and lr[0].action.factor == 0.5  # the more conservative of 0.5 and 0.1
    assert "agreed by" in lr[0].rationale and lr[0].confidence > 0.5
    assert merged.diagnosis in ("overfitting", "plateau")


def test_comprehensive_enhancement_runs_the_three_tasks_concurrently():
    slow = ("sleep", 0.4, None)
    openai = ScriptedProvider("openai", [("sleep", 0.4, {"samples": [{"features": [0.12, 0.2], "label": 0}]})])
    anthropic = ScriptedProvider("anthropic", [("sleep", 0.4, ANALYSIS)])
    perplexity = ScriptedProvider(
        "perplexity",
        [("sleep", 0.4, {"insights": [{"technique": "AdamW", "summary": "s", "applies_when": "w", "citations": []}]})],
        extras={
            "citations": ["https://arxiv.org/abs/1711.05101"],
            "search_results": [{"title": "AdamW", "url": "https://arxiv.org/abs/1711.05101", "date": "2019-01-04"}],
        },
    )
    del slow
    orch = make([openai, anthropic, perplexity])
    start = time.perf_counter()
    results = run(orch.comprehensive_enhancement("mlp", SAMPLE, METRICS, target_count=1))
    assert isinstance(results, tuple) and len(results) == 3
    synthetic, analysis, research = results
    elapsed = time.perf_counter() - start
    assert elapsed < 0.9, f"took {elapsed:.2f}s: the three calls did not overlap"
    assert synthetic.provider == "openai" and analysis.provider == "anthropic" and research.provider == "perplexity"
    assert research.search_results[0]["date"] == "2019-01-04"
    assert [c.url for c in research.citations] == ["https://arxiv.org/abs/1711.05101"]
    assert research.citations[0].year == 2019


def test_synthetic_samples_are_checked_before_use():
    reply = {
        "samples": [
            {"features": [0.12, 0.18], "label": 0},
            {"features": [0.12], "label": 0},
            {"features": [0.5, math.nan], "label": 1},
            {"features": [0.5, 0.5], "label": 7},
            {"features": [50.0, 0.5], "label": 1},
            {"features": [0.88, 0.9], "label": 1},
        ]
    }
    openai = ScriptedProvider("openai", [reply])
    result = run(make([openai]).generate_synthetic_data("classifier", SAMPLE, 6))
    assert result.provider == "openai" and result.requested == 6
    assert result.accepted == 2 and result.rejected == 4
    reasons = " | ".join(r.reason for r in result.rejections)
    assert "2 features" not in reasons and "has 1 features" in reasons
    assert "non-finite" in reasons and "label 7" in reasons and "plausible range" in reasons
    assert "nan" not in str(result.model_dump())


def test_synthetic_requests_are_capped_and_the_cut_reported():
    openai = ScriptedProvider("openai", [{"samples": [{"features": [0.1, 0.2], "label": 0}] * 3}])
    result = run(
        make([openai], max_synthetic=50, remote_chunk=3, max_remote_calls=2).generate_synthetic_data(
            "classifier", SAMPLE, 80
        )
    )
    assert any("capped at 50" in n for n in result.notes)
    assert any("asked openai for 6 samples" in n for n in result.notes)
    assert len(openai.calls) == 2


def test_architecture_candidates_that_do_not_fit_are_dropped():
    good = {
        "layers": [
            {"type": "Linear", "args": {"in_features": 784, "out_features": 64}},
            {"type": "ReLU"},
            {"type": "Linear", "args": {"in_features": 64, "out_features": 10}},
        ]
    }
    wrong_out = {"layers": [{"type": "Linear", "args": {"in_features": 784, "out_features": 5}}]}
    unknown = {"layers": [{"type": "Quantum", "args": {}}]}
    xai = ScriptedProvider(
        "xai",
        [
            {
                "candidates": [
                    {"spec": good, "rationale": "wider"},
                    {"spec": wrong_out, "rationale": "x"},
                    {"spec": unknown, "rationale": "y"},
                ]
            }
        ],
    )
    result = run(make([xai]).suggest_architectures("mlp", None, 784, 10, k=3))
    assert result.provider == "xai" and len(result.candidates) == 1
    assert isinstance(result.candidates[0].spec, ModelSpec)
    reasons = [d.reason for d in result.dropped]
    assert any("task needs [10]" in r for r in reasons) and any("unknown layer type" in r for r in reasons)


def test_deadline_falls_back_to_local():
    anthropic = ScriptedProvider("anthropic", [("sleep", 3.0, ANALYSIS)])
    orch = make([anthropic], call_timeout=0.2, task_deadline=0.5, max_retries=5)
    start = time.perf_counter()
    result = run(orch.analyze_model_reasoning("mlp", METRICS))
    assert result.provider == "local" and time.perf_counter() - start < 2.0


def test_status_and_audit_never_reveal_keys():
    secret = "sk-live-VERY-SECRET-123"
    anthropic = ScriptedProvider("anthropic", [ANALYSIS], key=secret)
    orch = make([anthropic])
    run(orch.analyze_model_reasoning("mlp", METRICS))
    status = orch.status()
    assert status["providers"]["anthropic"]["configured"] and status["providers"]["anthropic"]["calls"] == 1
    assert status["providers"]["anthropic"]["base_url_host"] == "stub.example"
    assert secret not in str(status) and secret not in str(orch.audit()) and secret not in repr(orch.settings)
    assert orch.audit()[0]["provider"] == "anthropic" and orch.audit()[0]["outcome"] == "ok"


def test_settings_from_env_and_routes():
    env = {
        "ANTHROPIC_API_KEY": "k",
        "FORGEML_ANTHROPIC_MODEL": "my-model",
        "FORGEML_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "FORGEML_AI_ROUTE_ANALYSIS": "gemini,anthropic",
        "FORGEML_AI_BUDGET_USD": "2.5",
        "FORGEML_XAI_ENABLED": "0",
    }
    s = AISettings.from_env(env=env)
    assert s.providers["anthropic"].configured and s.providers["anthropic"].model == "my-model"
    assert s.providers["openai"].base_url == "http://127.0.0.1:9/v1" and not s.providers["openai"].configured
    assert s.route("analysis") == ["gemini", "anthropic", "local"] and s.budget_usd == 2.5
    assert not s.providers["xai"].enabled
    with pytest.raises(ValueError, match="FORGEML_AI_BUDGET_USD"):
        AISettings.from_env(env={"FORGEML_AI_BUDGET_USD": "lots"})
