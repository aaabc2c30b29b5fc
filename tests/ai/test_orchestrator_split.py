"""The orchestrator's call policy one concern at a time (deadline, breaker, budget, send, failure, repair, retry,
validation), and the training context's way from the caller to every analyst (prompt, local advisor, cache)."""

import asyncio
import json
import time
from types import SimpleNamespace
from typing import get_args

import pytest
from pydantic import ValidationError

from forgeml.ai import AIServiceOrchestrator, AISettings, prompts
from forgeml.ai.errors import (
    AuthenticationFailed,
    BadOutput,
    BudgetExceeded,
    CircuitOpen,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from forgeml.ai.local import LocalAdvisor
from forgeml.ai.orchestrator import _SCHEMA_MISFIT, _Call
from forgeml.ai.providers.base import Message, StructuredReply, Usage
from forgeml.ai.resilience import CircuitBreaker
from forgeml.ai.schemas import AnalysisDraft
from forgeml.cli import main
from forgeml.specs import ACTION_NAMES, Action, TrainingContext
from tests.ai.stubs import ScriptedProvider

ANALYSIS = {
    "diagnosis": "overfitting",
    "evidence": ["val loss rose from 0.45 to 0.55"],
    "recommendations": [{"action": {"action": "set_dropout", "p": 0.3}, "rationale": "regularise", "confidence": 0.7}],
}
METRICS = {"train_loss": [1.0, 0.6, 0.4, 0.3, 0.2, 0.15], "val_loss": [1.0, 0.7, 0.5, 0.45, 0.5, 0.55]}
CONTEXT = {
    "optimizer": "adam",
    "learning_rate": 0.001,
    "weight_decay": 0.0005,
    "decoupled_weight_decay": False,
    "batch_size": 64,
    "dropout": None,
    "epochs_done": 6,
    "inputs": {"mean": 120.0, "std": 60.0, "min": 0.0, "max": 255.0, "features": 784},
    "layers": [{"name": "0.weight", "weight_norm": 3.0, "grad_norm": 0.2, "update_ratio": 0.04}],
    "changes": [{"epoch": 3, "action": {"action": "set_dropout", "p": 0.5}, "verdict": "reverted"}],
    "loss_changed_at": [4],
}


def make(providers, **settings):
    base = dict(cache_enabled=False, backoff_base=0.001, backoff_max=0.05, call_timeout=2.0, task_deadline=5.0)
    base.update(settings)
    return AIServiceOrchestrator(AISettings.from_env(env={}, **base), providers={p.name: p for p in providers})


def call_for(provider, *, deadline=None, validate=lambda d, r: d):
    deadline = time.monotonic() + 5.0 if deadline is None else deadline
    return _Call(provider, "analysis", "sys", "user text", AnalysisDraft, validate, deadline, [Message("user", "u")])


def reply(data):
    return StructuredReply(data=data, raw_text=json.dumps(data), model="stub-model", usage=Usage(100, 50))


def half_open(orch, name="anthropic"):
    """Give ``name`` a breaker on a hand-driven clock, tripped and cooled down to half-open."""
    now = [0.0]
    breaker = CircuitBreaker(threshold=1, cooldown=10.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 11.0
    orch._breakers[name] = breaker
    assert breaker.state == "half-open"
    return breaker


# ------------------------------------------------------------------ the deadline
def test_deadline_raises_not_tried_before_any_call_and_the_last_failure_after_one():
    orch = make([stub := ScriptedProvider("anthropic", [ANALYSIS])])
    assert 0 < orch._time_left(call_for(stub)) <= 5.0
    late = call_for(stub, deadline=time.monotonic() - 0.01)
    with pytest.raises(ProviderTimeout) as info:
        orch._time_left(late)
    assert info.value.cause.startswith("not tried: the analysis deadline")
    late.last_error = RateLimited("anthropic", "429")
    with pytest.raises(RateLimited):
        orch._time_left(late)


# ------------------------------------------------------------------ the breaker
def test_permission_from_a_closed_breaker_holds_no_trial():
    orch = make([stub := ScriptedProvider("anthropic", [ANALYSIS])])
    call = call_for(stub)
    orch._take_permission(call)
    assert not call.trial_held


def test_half_open_permission_is_the_one_trial_and_a_retry_within_it_needs_no_second():
    orch = make([stub := ScriptedProvider("anthropic", [ANALYSIS])])
    breaker = half_open(orch)
    call = call_for(stub)
    orch._take_permission(call)
    assert call.trial_held and not breaker.allow()  # the trial is taken
    orch._take_permission(call)  # a retry within the trial: allowed although the breaker would say no
    other = call_for(stub)
    with pytest.raises(CircuitOpen):
        orch._take_permission(other)
    orch._release_trial(call)
    assert not call.trial_held and breaker.allow()


def test_an_open_breaker_refuses_with_its_cause_in_words():
    orch = make([stub := ScriptedProvider("anthropic", [ANALYSIS])], breaker_threshold=1, breaker_cooldown=60)
    orch._breakers["anthropic"].record_failure()
    with pytest.raises(CircuitOpen) as info:
        orch._take_permission(call_for(stub))
    assert info.value.cause.startswith("circuit open")


def _cancelled(stub, orch):
    async def go():
        task = asyncio.ensure_future(
            orch._structured_call(stub, "analysis", "s", "u", AnalysisDraft, lambda d, r: d, time.monotonic() + 5)
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())


@pytest.mark.parametrize(
    ("script", "settings", "raises", "state_after"),
    [
        ([ANALYSIS], {}, None, "closed"),
        ([ProviderUnavailable("anthropic", "503")], {"max_retries": 0}, ProviderUnavailable, "open"),
        ([AuthenticationFailed("anthropic", "401")], {}, AuthenticationFailed, "open"),
        ([{"diagnosis": "sad"}], {}, BadOutput, "half-open"),
        ([BadOutput("anthropic", "not JSON", raw="oops")], {}, BadOutput, "half-open"),
        ([ANALYSIS], {"budget_usd": 0.0, "prices": {"stub-model": (3.0, 15.0)}}, BudgetExceeded, "half-open"),
        ([("sleep", 5.0, ANALYSIS)], {}, "cancel", "half-open"),
    ],
    ids=["answer", "failure", "auth", "invalid-twice", "bad-output-twice", "budget", "cancelled"],
)
def test_a_half_open_trial_is_resolved_on_every_exit_path(script, settings, raises, state_after):
    stub = ScriptedProvider("anthropic", script)
    orch = make([stub], **settings)
    breaker = half_open(orch)
    if raises == "cancel":
        _cancelled(stub, orch)
    else:
        call = orch._structured_call(stub, "analysis", "s", "u", AnalysisDraft, lambda d, r: d, time.monotonic() + 5)
        if raises is None:
            assert asyncio.run(call).diagnosis == "overfitting"
        else:
            with pytest.raises(raises):
                asyncio.run(call)
    assert breaker.state == state_after
    if state_after == "half-open":  # neither success nor failure: the trial is free again
        assert breaker.allow()


# ------------------------------------------------------------------ the budget
def test_budget_refusal_comes_before_the_request_is_sent():
    stub = ScriptedProvider("anthropic", [ANALYSIS])
    orch = make([stub], budget_usd=0.0, prices={"stub-model": (3.0, 15.0)})
    with pytest.raises(BudgetExceeded, match="not calling anthropic"):
        orch._check_budget(call_for(stub))
    with pytest.raises(BudgetExceeded):
        asyncio.run(
            orch._structured_call(stub, "analysis", "s", "u", AnalysisDraft, lambda d, r: d, time.monotonic() + 5)
        )
    assert stub.calls == [] and orch.status()["providers"]["anthropic"]["calls"] == 0
    roomy = make([stub], budget_usd=1.0, prices={"stub-model": (3.0, 15.0)})
    roomy._check_budget(call_for(stub))  # no exception: within budget


# ------------------------------------------------------------------ one request
def test_send_returns_the_reply_or_a_typed_error_and_counts_the_call():
    stub = ScriptedProvider("anthropic", [ANALYSIS, ValueError("Expecting value"), ("sleep", 3.0, ANALYSIS)])
    orch = make([stub])
    answer, error, latency = asyncio.run(orch._send(call_for(stub), 5.0))
    assert error is None and answer.data == ANALYSIS and latency >= 0
    answer, error, _ = asyncio.run(orch._send(call_for(stub), 5.0))
    assert answer is None and isinstance(error, ProviderUnavailable)
    assert error.cause == "invalid response: malformed reply"
    start = time.perf_counter()
    # the deadline's remainder caps the timeout; a client that ignores it is cut off a second later
    answer, error, _ = asyncio.run(orch._send(call_for(stub), 0.1))
    assert answer is None and isinstance(error, ProviderTimeout) and time.perf_counter() - start < 2.0
    assert stub.calls[0]["schema"] == "analysis" and stub.calls[0]["system"] == "sys"
    assert orch.status()["providers"]["anthropic"]["calls"] == 3


# ------------------------------------------------------------------ recording a failure
def test_record_failure_books_stats_tokens_log_and_the_breaker():
    stub = ScriptedProvider("anthropic", [ANALYSIS])
    orch = make([stub], prices={"stub-model": (3.0, 15.0)}, breaker_threshold=5)
    call = call_for(stub)
    bad = BadOutput("anthropic", "not JSON", raw="{oops")
    bad.usage = Usage(1000, 500)  # an unusable reply still cost its tokens
    orch._record_failure(call, bad, 12.0)
    assert call.last_error is bad and orch.ledger.total_usd == pytest.approx((1000 * 3.0 + 500 * 15.0) / 1e6)
    assert orch._breakers["anthropic"].failures == 0  # the service worked; the model answered badly
    record = orch.audit()[0]
    assert record["outcome"].startswith("error: BadOutput") and record["output"] == "{oops"
    assert record["prompt"] == "user text"
    call.trial_held = True
    orch._record_failure(call, ProviderUnavailable("anthropic", "503"), 3.0)
    assert orch._breakers["anthropic"].failures == 1 and not call.trial_held
    status = orch.status()["providers"]["anthropic"]
    assert status["errors"] == 2 and status["consecutive_errors"] == 2 and status["last_error"]


# ------------------------------------------------------------------ the repair decision
def test_repair_happens_once():
    call = call_for(ScriptedProvider("anthropic", [ANALYSIS]))
    assert AIServiceOrchestrator._repair(call, "{bad", "missing diagnosis")
    assert [m.role for m in call.messages] == ["user", "assistant", "user"]
    assert call.messages[1].content == "{bad" and "missing diagnosis" in call.messages[2].content
    assert not AIServiceOrchestrator._repair(call, "{bad again", "still missing")
    assert len(call.messages) == 3


# ------------------------------------------------------------------ the retry decision
def test_retry_delay_honours_retry_after_attempts_and_the_deadline():
    stub = ScriptedProvider("anthropic", [ANALYSIS])
    orch = make([stub], max_retries=2, backoff_base=0.01, backoff_max=1.0)
    call = call_for(stub)
    assert orch._retry_delay(call, RateLimited("anthropic", "429", retry_after=0.4)) == 0.4
    capped = make([stub], max_retries=2, backoff_max=0.25)
    assert capped._retry_delay(call, RateLimited("anthropic", "429", retry_after=30.0)) == 0.25
    assert 0 <= orch._retry_delay(call, ProviderUnavailable("anthropic", "503")) <= 0.01
    assert orch._retry_delay(call, AuthenticationFailed("anthropic", "401")) is None  # not retryable
    assert orch._retry_delay(call, BadOutput("anthropic", "x")) is None
    call.attempt = 2
    assert orch._retry_delay(call, ProviderUnavailable("anthropic", "503")) is None  # retries used up
    soon = call_for(stub, deadline=time.monotonic() + 0.2)
    assert orch._retry_delay(soon, RateLimited("anthropic", "429", retry_after=0.4)) is None  # past the deadline
    assert orch._retry_delay(soon, RateLimited("anthropic", "429", retry_after=0.05)) == 0.05


# ------------------------------------------------------------------ validation
def test_validate_draft_books_the_cost_and_success_or_the_misfit():
    stub = ScriptedProvider("anthropic", [ANALYSIS])
    orch = make([stub], prices={"stub-model": (3.0, 15.0)})
    call = call_for(stub)
    result, invalid = orch._validate_draft(call, reply({"diagnosis": "sad"}), 5.0)
    assert result is None and isinstance(invalid, ValidationError)
    assert isinstance(call.last_error, BadOutput) and call.last_error.cause == _SCHEMA_MISFIT
    assert orch.status()["providers"]["anthropic"]["last_error"] == _SCHEMA_MISFIT
    assert orch.audit()[0]["outcome"].startswith("invalid output") and orch.ledger.total_usd > 0
    call.trial_held = True
    result, invalid = orch._validate_draft(call, reply(ANALYSIS), 5.0)
    assert invalid is None and result.diagnosis == "overfitting" and not call.trial_held
    assert orch.status()["providers"]["anthropic"]["consecutive_errors"] == 0
    assert orch.audit()[0]["outcome"] == "ok"
    task_check = call_for(stub, validate=lambda d, r: (_ for _ in ()).throw(ValueError("no candidate fits")))
    result, invalid = orch._validate_draft(task_check, reply(ANALYSIS), 5.0)
    assert result is None and "no candidate fits" in str(invalid)


# ================================================================== the training context
@pytest.fixture
def local_spy(monkeypatch):
    """Replace the offline advisor's ``analyze`` with one that records its arguments."""
    seen = []

    def analyze(self, *args):
        seen.append(args)
        return SimpleNamespace(diagnosis="misconfigured", evidence=["spied"], recommendations=[])

    monkeypatch.setattr(LocalAdvisor, "analyze", analyze)
    return seen


def test_the_context_reaches_the_remote_prompt_with_reading_instructions():
    stub = ScriptedProvider("anthropic", [ANALYSIS])
    asyncio.run(make([stub]).analyze_model_reasoning("mlp", METRICS, context=CONTEXT))
    system, user = stub.calls[0]["system"], stub.calls[0]["messages"][0][1]
    sent = json.loads(user.split("Training context (JSON): ", 1)[1])
    assert sent["decoupled_weight_decay"] is False and sent["layers"][0]["update_ratio"] == 0.04
    assert sent["changes"][0]["verdict"] == "reverted" and sent["loss_changed_at"] == [4]
    assert "dropout" not in sent and "scheduler" not in sent  # nulls and empties left out
    assert "reason" not in sent["changes"][0]
    for words in ("update_ratio", "switch_optimizer", "reverted", "on_trial", "loss_changed_at", "at most two"):
        assert words in system


def test_every_action_is_explained_with_its_fields():
    help_text = prompts._ACTIONS_HELP
    for cls in get_args(get_args(Action)[0]):
        name = cls.model_fields["action"].default
        entry = help_text.split(f"'action': '{name}'", 1)[1].split("{'action'", 1)[0]
        for field in cls.model_fields:
            if field != "action":
                assert f"'{field}'" in entry, (name, field)
    assert all(f"'action': '{name}'" in help_text for name in ACTION_NAMES)
    assert "'lr_scaling': one of none, linear, sqrt" in help_text


def test_the_consensus_path_sends_the_context_to_every_provider(local_spy):
    anthropic, gemini = ScriptedProvider("anthropic", [ANALYSIS]), ScriptedProvider("gemini", [ANALYSIS])
    merged = asyncio.run(
        make([anthropic, gemini], consensus=True).analyze_model_reasoning("m", METRICS, context=CONTEXT)
    )
    assert "anthropic" in merged.provider and "gemini" in merged.provider
    for stub in (anthropic, gemini):
        assert '"decoupled_weight_decay":false' in stub.calls[0]["messages"][0][1]
    assert isinstance(local_spy[0][2], TrainingContext) and local_spy[0][2].optimizer == "adam"


def test_the_context_reaches_the_local_advisor_validated(local_spy):
    orch = make([ScriptedProvider("anthropic", [ANALYSIS], key=None)])
    result = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS, context=CONTEXT))
    assert result.provider == "local" and result.diagnosis == "misconfigured"
    description, metrics, context = local_spy[0]
    assert description == "mlp" and metrics.val_loss[-1] == 0.55
    assert isinstance(context, TrainingContext) and context.inputs.mean == 120.0
    assert context.changes[0].verdict == "reverted"
    with pytest.raises(ValidationError):
        asyncio.run(orch.analyze_model_reasoning("mlp", METRICS, context={"inputs": {"mean": "big"}}))


def test_the_old_two_argument_call_still_works(local_spy):
    stub = ScriptedProvider("anthropic", [ProviderUnavailable("anthropic", "503"), ANALYSIS])
    orch = make([stub], max_retries=0)
    assert asyncio.run(orch.analyze_model_reasoning("mlp", METRICS)).provider == "local"
    assert local_spy[0][2] is None
    assert asyncio.run(orch.analyze_model_reasoning("mlp", METRICS)).provider == "anthropic"
    assert "Training context" not in stub.calls[1]["messages"][0][1]
    assert "loss_changed_at" not in stub.calls[1]["system"]


def test_the_context_is_part_of_the_cache_key():
    stub = ScriptedProvider("anthropic", [ANALYSIS])
    orch = make([stub], cache_enabled=True)
    other = {**CONTEXT, "decoupled_weight_decay": True}
    first = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS, context=CONTEXT))
    second = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS, context=other))
    plain = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS))
    assert not first.cached and not second.cached and not plain.cached and len(stub.calls) == 3
    again = asyncio.run(orch.analyze_model_reasoning("mlp", METRICS, context=TrainingContext(**CONTEXT)))
    assert again.cached and len(stub.calls) == 3  # the same context, as a dict or validated, shares the answer


def test_new_actions_and_more_than_two_recommendations_are_accepted():
    answer = {
        "diagnosis": "misconfigured",
        "evidence": ["Adam with coupled L2 decay", "inputs have mean 120"],
        "recommendations": [
            {"action": {"action": "switch_optimizer", "name": "adamw"}, "rationale": "decouple", "confidence": 0.8},
            {"action": {"action": "standardize_inputs"}, "rationale": "raw pixels", "confidence": 0.7},
            {"action": {"action": "set_lr_schedule", "kind": "warmup_cosine", "warmup_epochs": 1}, "rationale": "w"},
            {"action": {"action": "set_batch_size", "n": 128, "lr_scaling": "sqrt"}, "rationale": "b"},
            {"action": {"action": "find_learning_rate", "steps": 50}, "rationale": "range test"},
        ],
    }
    for rec in answer["recommendations"]:
        rec.setdefault("confidence", 0.4)
    stub = ScriptedProvider("anthropic", [answer])
    result = asyncio.run(make([stub]).analyze_model_reasoning("mlp", METRICS, context=CONTEXT))
    assert result.provider == "anthropic" and result.diagnosis == "misconfigured" and len(stub.calls) == 1
    actions = [r.action for r in result.recommendations]
    assert [a.action for a in actions] == [
        "switch_optimizer",
        "standardize_inputs",
        "set_lr_schedule",
        "set_batch_size",
        "find_learning_rate",
    ]
    assert actions[0].keep_state and actions[3].lr_scaling == "sqrt" and actions[4].steps == 50


# ------------------------------------------------------------------ the REST route and the CLI
def test_the_analyze_route_passes_the_context_on():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from forgeml.server.routers.ai import router

    seen = []

    class Orchestrator:
        async def analyze_model_reasoning(self, description, metrics, *, context=None):
            seen.append(context)
            return await make([]).analyze_model_reasoning(description, metrics, context=context)

    app = FastAPI()
    app.include_router(router)
    app.state.orchestrator = Orchestrator()
    with TestClient(app) as client:
        body = {"model_description": "mlp", "performance_metrics": METRICS, "context": CONTEXT}
        assert client.post("/v1/ai/analyze", json=body).status_code == 200
        assert TrainingContext.model_validate(seen[0]) == TrainingContext.model_validate(CONTEXT)
        assert client.post("/v1/ai/analyze", json={"model_description": "mlp"}).status_code == 200
        assert seen[1] is None
        bad = {"model_description": "mlp", "context": {"layers": [{"weight_norm": 1.0}]}}
        assert client.post("/v1/ai/analyze", json=bad).status_code == 422
        schema = client.get("/openapi.json").json()["components"]["schemas"]["AnalyzeRequest"]
        assert "context" in schema["properties"]


def test_the_cli_reads_a_context_inline_or_from_a_file(tmp_path, monkeypatch, capsys, local_spy):
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PERPLEXITY_API_KEY", "GEMINI_API_KEY", "XAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FORGEML_AI_CACHE", "0")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    context = tmp_path / "context.json"
    context.write_text(json.dumps(CONTEXT))
    assert main(["ai", "analyze", str(metrics), "--context", str(context)]) == 0
    assert json.loads(capsys.readouterr().out)["diagnosis"] == "misconfigured"
    assert main(["ai", "analyze", str(metrics), "--context", '{"optimizer": "sgd"}']) == 0
    assert local_spy[0][2].inputs.std == 60.0 and local_spy[1][2].optimizer == "sgd"
    assert main(["ai", "analyze", str(metrics), "--context", '{"batch_size": "many"}']) == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["ai", "analyze", str(metrics), "--context", str(tmp_path / "nope.json")]) == 2
