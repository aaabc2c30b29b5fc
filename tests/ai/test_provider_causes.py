"""A failed provider call says why in words (``ProviderError.cause``): in the status the dashboard draws, in a
task's ``attempts``, and in the one sentence a training job's event log gets (:func:`describe_attempts`).
Never with a key in it, never with text a server sent."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from forgeml.ai import AIServiceOrchestrator, AISettings, AIStatus, describe_attempts
from forgeml.ai.errors import (
    AuthenticationFailed,
    BadOutput,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    connection_cause,
    status_words,
)
from forgeml.specs import ProviderAttempt
from tests.ai.fake_providers import Action, FakeProviderServer, answer, answer_text, http_error, malformed_body, slow
from tests.ai.stubs import ScriptedProvider

KEYS = {
    "OPENAI_API_KEY": "sk-openai-SECRET-1234",
    "ANTHROPIC_API_KEY": "sk-ant-SECRET-5678",
    "PERPLEXITY_API_KEY": "pplx-SECRET-9012",
    "GEMINI_API_KEY": "gem-SECRET-3456",
    "XAI_API_KEY": "xai-SECRET-7890",
}
ANALYSIS = {
    "diagnosis": "plateau",
    "evidence": ["val loss flat for 3 epochs"],
    "recommendations": [
        {"action": {"action": "scale_learning_rate", "factor": 0.5}, "rationale": "escape it", "confidence": 0.6}
    ],
}
METRICS = {"train_loss": [0.5, 0.45, 0.449, 0.449], "val_loss": [0.6, 0.55, 0.55, 0.55]}


def closed_port() -> int:
    """A loopback port nothing listens on (a connection to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wire_orchestrator(server, *, env=None, **overrides):
    values = dict(KEYS)
    for name in ("openai", "anthropic", "perplexity", "gemini", "xai"):
        values[f"FORGEML_{name.upper()}_BASE_URL"] = server.base_url(name)
    values.update(env or {})
    base = dict(
        cache_enabled=False,
        call_timeout=2.0,
        task_deadline=15.0,
        max_retries=0,
        backoff_base=0.01,
        backoff_max=0.05,
        routes={"analysis": ["anthropic", "local"]},
    )
    base.update(overrides)
    return AIServiceOrchestrator(AISettings.from_env(env=values, **base))


def analyse(orch):
    async def go():
        try:
            return await orch.analyze_model_reasoning("mlp", METRICS, use_cache=False)
        finally:
            await orch.aclose()

    return asyncio.run(go())


def assert_no_secret(text: str) -> None:
    for key in KEYS.values():
        assert key not in text
    assert "SECRET" not in text


# ------------------------------------------------------------------ the causes, per failure
def test_causes_in_words_from_types_and_statuses():
    assert AuthenticationFailed("a", "x", status=401).cause == "401 unauthorized: the API key was rejected"
    assert AuthenticationFailed("a", "x", status=403).cause == "403 forbidden: the API key was rejected"
    assert RateLimited("a", "x", status=429, retry_after=3).cause == "429 rate limited"
    assert ProviderUnavailable("a", "x", status=503).cause == "503 service unavailable"
    assert ProviderUnavailable("a", "x", status=529).cause == "529 overloaded"
    assert ProviderUnavailable("a", "x").cause == "connection failed"
    assert ProviderTimeout("a", "x", timeout=30.0).cause == "timed out after 30 s"
    assert ProviderTimeout("a", "x", status=408).cause == "408 request timeout"
    assert BadOutput("a", "x").cause == "invalid response"
    assert ProviderError("a", "x", status=404).cause == "404 not found"
    assert ProviderError("a", "x", cause="my words").cause == "my words"
    assert status_words(599) == "599 server error" and status_words(499) == "499 error"


def test_connection_causes_follow_the_exception_chain():
    def chained(outer: Exception, inner: Exception) -> Exception:
        try:
            try:
                raise inner
            except type(inner) as exc:
                raise outer from exc
        except type(outer) as exc:
            return exc

    assert connection_cause(chained(RuntimeError("Connection error."), ConnectionRefusedError(111, "x"))) == (
        "connection refused"
    )
    assert connection_cause(chained(RuntimeError("oops"), socket.gaierror(-2, "Name or service not known"))) == (
        "host not found"
    )
    assert connection_cause(OSError("[Errno 104] Connection reset by peer")) == "connection reset"
    assert connection_cause(RuntimeError("Server disconnected without sending a response.")) == (
        "connection closed by the server"
    )
    assert connection_cause(RuntimeError("something else")) == "connection failed"


@pytest.mark.parametrize(
    ("route_action", "cause"),
    [
        (http_error(401, "invalid x-api-key sk-ant-SECRET-5678"), "401 unauthorized: the API key was rejected"),
        (http_error(429, retry_after="0"), "429 rate limited"),
        (http_error(503, "upstream says sk-ant-SECRET-5678"), "503 service unavailable"),
        (http_error(529, "Overloaded"), "529 overloaded"),
        (slow(3.0, answer(ANALYSIS)), "timed out after 0.5 s"),
        (answer_text("{not json at all"), "invalid response: not JSON"),
        (answer({"diagnosis": "happy", "recommendations": "none"}), "invalid response: did not fit the schema"),
        (malformed_body(), "invalid response: not a Messages reply"),
        (Action(kind="raw", text="", status=200), "invalid response: malformed reply"),
        (Action(kind="raw", text='{"content": 5, "stop_reason": "end_turn"}'), "invalid response: malformed reply"),
    ],
)
def test_each_failure_reaches_the_status_and_the_attempts_in_words(route_action, cause):
    with FakeProviderServer() as server:
        server.set_default("anthropic", route_action)
        timeout = 0.5 if route_action.delay else 5.0
        orch = wire_orchestrator(server, call_timeout=timeout)
        result = analyse(orch)
        status = orch.status()
    assert result.provider == "local"  # the offline advisor answered instead
    failed = result.attempts[0]
    assert failed.provider == "anthropic" and failed.outcome == "failed"
    assert failed.detail.startswith(cause + " | ")
    anthropic = status["providers"]["anthropic"]
    assert anthropic["last_error"] == cause
    assert anthropic["consecutive_errors"] >= 1 and anthropic["last_error_at"] <= time.time()
    sentence = describe_attempts(result.attempts)
    assert sentence == (
        f"the configured provider (anthropic) failed: anthropic {cause}; the offline advisor answered instead"
    )
    AIStatus.model_validate(status)
    assert_no_secret(repr(status) + repr(result.model_dump()) + sentence)


def test_a_refused_connection_says_so():
    with FakeProviderServer() as server:
        orch = wire_orchestrator(server, env={"FORGEML_ANTHROPIC_BASE_URL": f"http://127.0.0.1:{closed_port()}"})
        result = analyse(orch)
        assert orch.status()["providers"]["anthropic"]["last_error"] == "connection refused"
    assert result.attempts[0].detail.startswith("connection refused | ")


def test_an_open_circuit_reports_its_cause_count_and_retry_time():
    with FakeProviderServer() as server:
        server.set_default("anthropic", http_error(401))
        orch = wire_orchestrator(server, breaker_threshold=3, breaker_cooldown=120.0)

        async def go():
            try:
                return [await orch.analyze_model_reasoning("mlp", METRICS, use_cache=False) for _ in range(4)]
            finally:
                await orch.aclose()

        before = time.time()
        results = asyncio.run(go())
        status = orch.status()["providers"]["anthropic"]
        assert len(server.requests_for("anthropic")) == 3  # the fourth was skipped
    assert status["breaker"] == "open"
    assert status["last_error"] == "401 unauthorized: the API key was rejected"
    assert status["consecutive_errors"] == 3 and status["errors"] == 3
    assert before + 119 <= status["retry_at"] <= time.time() + 121
    skipped = results[-1].attempts[0]
    assert skipped.outcome == "circuit_open"
    when = time.strftime("%H:%M:%S", time.localtime(status["retry_at"]))
    assert skipped.detail == (
        f"circuit open: 401 unauthorized: the API key was rejected (3 errors in a row), retrying after {when}"
    )
    assert describe_attempts(results[-1].attempts) == (
        f"the configured provider (anthropic) failed: anthropic {skipped.detail}; the offline advisor answered instead"
    )


def test_a_success_resets_the_count_and_keeps_the_last_cause():
    anthropic = ScriptedProvider("anthropic", [RateLimited("anthropic", "slow down", status=429), ANALYSIS])
    orch = AIServiceOrchestrator(
        AISettings.from_env(env={}, cache_enabled=False, backoff_base=0.001, backoff_max=0.01, max_retries=1),
        providers={"anthropic": anthropic},
    )
    result = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    status = orch.status()["providers"]["anthropic"]
    assert result.provider == "anthropic" and describe_attempts(result.attempts) is None  # a retry is no fallback
    assert status["last_error"] == "429 rate limited" and status["consecutive_errors"] == 0
    assert status["breaker"] == "closed" and status["retry_at"] is None


def test_a_client_that_breaks_on_a_reply_falls_back_instead_of_failing_the_task():
    class Broken(ScriptedProvider):
        async def complete(self, **kwargs):
            self.calls.append(kwargs)
            raise RuntimeError("the SDK fell over on sk-SECRET-KEY-0000")

    broken = Broken("anthropic", [ANALYSIS], key="sk-SECRET-KEY-0000")
    orch = AIServiceOrchestrator(
        AISettings.from_env(env={}, cache_enabled=False, max_retries=2), providers={"anthropic": broken}
    )
    result = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    assert result.provider == "local" and len(broken.calls) == 1  # not retried: not a known transient failure
    assert result.attempts[0].detail.startswith("unexpected error (RuntimeError) | ")
    assert "sk-SECRET-KEY-0000" not in result.attempts[0].detail
    assert orch.status()["providers"]["anthropic"]["last_error"] == "unexpected error (RuntimeError)"


def test_a_missing_sdk_falls_back_naming_it():
    class NoSDK(ScriptedProvider):
        async def complete(self, **kwargs):
            raise ImportError('anthropic is needed for this provider but is not installed; pip install "forgeml[ai]"')

    orch = AIServiceOrchestrator(
        AISettings.from_env(env={}, cache_enabled=False), providers={"anthropic": NoSDK("anthropic", [ANALYSIS])}
    )
    result = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    assert result.provider == "local"
    assert result.attempts[0].detail.startswith("its SDK is not installed | ProviderError: ImportError: ")
    assert 'pip install "forgeml[ai]"' in result.attempts[0].detail


# ------------------------------------------------------------------ the sentence a job's event log gets
def test_describe_attempts_names_each_provider_and_who_answered():
    def a(provider, outcome, detail=""):
        return ProviderAttempt(provider=provider, outcome=outcome, detail=detail)

    failed_both = [
        a("anthropic", "failed", "401 unauthorized: the API key was rejected | AuthenticationFailed: ..."),
        a("openai", "failed", "connection refused | ProviderUnavailable: connection failed: ..."),
        a("local", "answered", "the offline advisor"),
    ]
    assert describe_attempts(failed_both) == (
        "the configured providers (anthropic, openai) failed: anthropic 401 unauthorized: the API key was "
        "rejected; openai connection refused; the offline advisor answered instead"
    )
    next_one = [a("anthropic", "failed", "429 rate limited | RateLimited: ..."), a("gemini", "answered")]
    assert describe_attempts(next_one) == "anthropic 429 rate limited; gemini answered instead"
    unconfigured = [a("anthropic", "not_configured", "no API key (ANTHROPIC_API_KEY)"), a("local", "answered")]
    assert describe_attempts(unconfigured) is None  # the offline advisor by design, not a fallback
    assert describe_attempts([a("anthropic", "answered")]) is None
    budget = [a("anthropic", "budget_exceeded", "budget used up (budget of $0.01 ...)"), a("local", "answered")]
    assert describe_attempts(budget) == (
        "the configured provider (anthropic) failed: anthropic budget used up; the offline advisor answered instead"
    )


def test_a_degraded_answer_is_not_cached(tmp_path):
    anthropic = ScriptedProvider("anthropic", [ProviderUnavailable("anthropic", "down", status=503), ANALYSIS])
    orch = AIServiceOrchestrator(
        AISettings.from_env(env={}, cache_dir=tmp_path, max_retries=0), providers={"anthropic": anthropic}
    )
    first = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    second = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    third = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    assert first.provider == "local" and not first.cached
    assert second.provider == "anthropic" and not second.cached  # asked again, not served the fallback
    assert third.cached and third.provider == "anthropic"
    orch.cache.close()


# ------------------------------------------------------------------ the trainer's event log
def test_a_training_run_records_the_fallback_and_why():
    np = pytest.importorskip("numpy")
    import forgeml as fm
    from forgeml import nn, optim
    from forgeml.data import TensorDataset
    from forgeml.training import AIEnhancedConfig, AIEnhancedTrainer

    anthropic = ScriptedProvider("anthropic", [AuthenticationFailed("anthropic", "bad key", status=401)])
    gemini = ScriptedProvider(
        "gemini", [ProviderUnavailable("gemini", "connection failed", cause="connection refused")]
    )
    orch = AIServiceOrchestrator(
        AISettings.from_env(env={}, cache_enabled=False, max_retries=0, backoff_base=0.001),
        providers={"anthropic": anthropic, "gemini": gemini},
    )
    fm.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = TensorDataset(fm.tensor(x), fm.tensor(y))
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    config = AIEnhancedConfig(optimization_guidance_frequency=1, research_update_interval=100, wait_for_ai=True)
    trainer = AIEnhancedTrainer(model, optim.Adam(model.parameters(), lr=0.01), config, orchestrator=orch)
    trainer.log = lambda message: None
    out = trainer.fit(data, data, epochs=2)
    notes = [e for e in out.events if e.kind == "provider_error"]
    # the set-up review before the first epoch, then the analysis after epoch 1 (none after the last epoch)
    assert [(e.requested_epoch, e.task) for e in notes] == [(0, "setup"), (1, "analysis")]
    assert all(e.provider == "local" and not e.applied for e in notes)
    assert notes[0].reason == (
        "the configured providers (anthropic, gemini) failed: anthropic 401 unauthorized: the API key was "
        "rejected; gemini connection refused; the offline advisor answered instead"
    )
    diagnoses = [e for e in out.events if e.kind == "diagnosis"]
    assert [e.provider for e in diagnoses] == ["local", "local"]


# ------------------------------------------------------------------ the breaker's half-open trial
def _opened(script, **settings):
    anthropic = ScriptedProvider("anthropic", [ProviderUnavailable("anthropic", "down", status=503)] * 3 + script)
    base = dict(cache_enabled=False, max_retries=0, breaker_threshold=3, breaker_cooldown=0.1, task_deadline=5.0)
    orch = AIServiceOrchestrator(
        AISettings.from_env(env={}, **{**base, **settings}), providers={"anthropic": anthropic}
    )
    for _ in range(3):
        asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    assert orch.status()["providers"]["anthropic"]["breaker"] == "open"
    time.sleep(0.15)
    assert orch.status()["providers"]["anthropic"]["breaker"] == "half-open"
    return orch, anthropic


def test_a_half_open_trial_answered_with_bad_output_does_not_wedge_the_breaker():
    bad = {"diagnosis": "sad", "recommendations": []}
    orch, anthropic = _opened([bad, bad, ANALYSIS])
    trial = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    assert trial.provider == "local" and len(anthropic.calls) == 5  # the trial and its repair request
    assert trial.attempts[0].detail.startswith("invalid response: did not fit the schema | ")
    again = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    assert again.provider == "anthropic"  # a new trial was let through, and closed the breaker
    assert orch.status()["providers"]["anthropic"]["breaker"] == "closed"


def test_a_cancelled_half_open_trial_does_not_wedge_the_breaker():
    orch, _ = _opened([("sleep", 5.0, ANALYSIS), ANALYSIS])

    async def cancel_the_trial():
        task = asyncio.ensure_future(orch.analyze_model_reasoning("mlp", METRICS))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await orch.analyze_model_reasoning("mlp", METRICS)

    assert asyncio.run(cancel_the_trial()).provider == "anthropic"


def test_a_budget_refusal_in_a_half_open_trial_does_not_wedge_the_breaker():
    orch, _ = _opened([ANALYSIS], prices={"stub-model": (3.0, 15.0)})
    orch.settings = orch.settings.model_copy(update={"budget_usd": 0.0})
    orch.ledger.budget_usd = 0.0  # the budget is spent: the trial is refused before it is sent
    assert asyncio.run(orch.analyze_model_reasoning("mlp", METRICS)).attempts[0].outcome == "budget_exceeded"
    orch.settings = orch.settings.model_copy(update={"budget_usd": None})
    orch.ledger.budget_usd = None
    assert asyncio.run(orch.analyze_model_reasoning("mlp", METRICS)).provider == "anthropic"
