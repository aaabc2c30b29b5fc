"""The five remote providers against a fake server on loopback, through the real SDKs (no network)."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import time

import pytest
from pydantic import BaseModel, ValidationError

from forgeml.ai.errors import (
    AuthenticationFailed,
    BadOutput,
    NotConfigured,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from forgeml.ai.models import PRICES, PROVIDER_DEFAULTS, build_provider, config_from_env, price_for, provider_classes
from forgeml.ai.providers._common import (
    decode_free_form_objects,
    encode_free_form_objects,
    parse_json_object,
    response_json_schema,
    retry_after_seconds,
)
from forgeml.ai.providers.anthropic import AnthropicProvider
from forgeml.ai.providers.base import Message, ProviderConfig
from forgeml.ai.providers.gemini import GeminiProvider
from forgeml.ai.schemas import AnalysisDraft, ArchitectureDraft, ResearchDraft

from .fake_providers import (
    DEFAULT_CITATIONS,
    DEFAULT_COST,
    DEFAULT_SEARCH_RESULTS,
    FakeProviderServer,
    answer,
    answer_text,
    http_error,
    malformed_body,
    slow,
)

KEY = "sk-test-Zq8NmX3vT1cKp9LwR4sY"  # what the fake server must see, and no message may show
NAMES = ("openai", "anthropic", "perplexity", "gemini", "xai")


class Verdict(BaseModel):
    """A small response model with what real ones have: a required field, an optional one, and a dict."""

    label: str
    score: float
    tags: dict[str, int] = {}
    note: str | None = None


GOOD = {"label": "overfitting", "score": 0.8, "tags": {"epochs": 12}, "note": None}


@pytest.fixture
def server():
    with FakeProviderServer() as srv:
        yield srv


def make(server: FakeProviderServer, name: str, *, model: str | None = None, key: str | None = KEY, timeout=5.0):
    config = ProviderConfig(
        name=name, api_key=key, base_url=server.base_url(name), model=model or f"{name}-test-model", timeout=timeout
    )
    return build_provider(name, config)


def ask(provider, schema=Verdict, *, timeout=5.0, max_output_tokens=1000):
    """Run one ``complete`` call in a fresh event loop and close the SDK client afterwards."""

    async def go():
        try:
            return await provider.complete(
                system="You are a careful ML engineer. Answer in JSON.",
                messages=[Message("user", "Diagnose this run."), Message("assistant", "{}"), Message("user", "Again.")],
                schema=schema,
                schema_name=schema.__name__,
                timeout=timeout,
                max_output_tokens=max_output_tokens,
            )
        finally:
            await provider.aclose()

    return asyncio.run(go())


def sent_schema(name: str, body: dict) -> dict:
    """The JSON schema inside a recorded request body, wherever the protocol puts it."""
    if name == "anthropic":
        fmt = body["output_config"]["format"]
        assert fmt["type"] == "json_schema"
        return fmt["schema"]
    if name == "gemini":
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        return body["generationConfig"]["responseJsonSchema"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Verdict"
    assert fmt["json_schema"]["strict"] is False  # strict mode cannot express dicts and optional fields
    return fmt["json_schema"]["schema"]


def auth_key(name: str, request) -> str | None:
    """The key as the SDK sent it: ``Authorization: Bearer`` (OpenAI-style and, in anthropic 2.x, Anthropic),
    ``x-api-key``, or Gemini's ``x-goog-api-key`` / ``?key=``."""
    if name == "gemini":
        return request.header("x-goog-api-key") or (request.query.get("key") or [None])[0]
    bearer = request.header("authorization")
    if bearer and bearer.startswith("Bearer "):
        return bearer[len("Bearer ") :]
    return request.header("x-api-key")


# ----------------------------------------------------------------- good answers
@pytest.mark.parametrize("name", NAMES)
def test_good_answer_is_parsed_with_usage(server, name):
    server.script(name, answer(GOOD, usage=(321, 54)))
    reply = ask(make(server, name))
    assert reply.data == GOOD
    assert Verdict.model_validate(reply.data).tags == {"epochs": 12}
    assert json.loads(reply.raw_text) == GOOD
    assert reply.usage.input_tokens == 321
    assert reply.usage.output_tokens == 54
    assert reply.model == f"{name}-test-model"
    assert len(server.requests_for(name)) == 1


@pytest.mark.parametrize("name", NAMES)
def test_request_carries_model_key_schema_and_messages(server, name):
    ask(make(server, name, model="teacher-9000"), max_output_tokens=777)
    (request,) = server.requests_for(name)
    body = request.body
    assert auth_key(name, request) == KEY
    schema = sent_schema(name, body)
    assert {"label", "score", "tags", "note"} <= set(schema["properties"])
    assert "label" in schema["required"]
    text = json.dumps(body)
    assert "careful ML engineer" in text and "Diagnose this run." in text and "Again." in text
    if name == "gemini":
        assert request.path.endswith("/v1beta/models/teacher-9000:generateContent")
        assert body["generationConfig"]["maxOutputTokens"] == 777
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    else:
        assert body["model"] == "teacher-9000"
        limit = {"anthropic": "max_tokens", "perplexity": "max_tokens"}.get(name, "max_completion_tokens")
        assert body[limit] == 777


def test_each_provider_calls_its_own_endpoint(server):
    for name in NAMES:
        ask(make(server, name))
    paths = {r.route: r.path for r in server.requests}
    assert paths == {
        "openai": "/openai/v1/chat/completions",
        "xai": "/xai/v1/chat/completions",
        "perplexity": "/perplexity/chat/completions",
        "anthropic": "/anthropic/v1/messages",
        "gemini": "/gemini/v1beta/models/gemini-test-model:generateContent",
    }


def test_non_openai_providers_do_not_get_openai_account_headers(server, monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-should-stay-home")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-should-stay-home")
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "Authorization: Bearer sk-the-openai-key")
    for name in ("openai", "xai", "perplexity"):
        ask(make(server, name))
    headers = {r.route: r.headers for r in server.requests}
    assert headers["openai"].get("openai-organization") == "org-should-stay-home"
    for name in ("xai", "perplexity"):
        assert "openai-organization" not in headers[name]
        assert "openai-project" not in headers[name]
        assert headers[name]["authorization"] == f"Bearer {KEY}"


def test_sdk_environment_variables_do_not_redirect_calls_or_swap_keys(server, monkeypatch):
    for var, value in {
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "OPENAI_API_KEY": "sk-from-env",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "ANTHROPIC_API_KEY": "sk-ant-from-env",
        "GOOGLE_API_KEY": "google-from-env",
        "GOOGLE_GENAI_USE_VERTEXAI": "true",
        "GOOGLE_GENAI_API_VERSION": "v1",
    }.items():
        monkeypatch.setenv(var, value)
    for name in NAMES:
        assert ask(make(server, name)).data == {"ok": True}
    assert {r.route for r in server.requests} == set(NAMES)
    for request in server.requests:
        assert auth_key(request.route, request) == KEY
    assert server.requests_for("gemini")[0].path.startswith("/gemini/v1beta/")


# ----------------------------------------------------------------- failures map to typed errors
@pytest.mark.parametrize("name", NAMES)
def test_429_is_rate_limited_with_retry_after_and_not_retried(server, name):
    server.script(name, http_error(429, "slow down", retry_after="7"))
    with pytest.raises(RateLimited) as info:
        ask(make(server, name))
    assert info.value.retry_after == 7.0
    assert info.value.status == 429
    assert info.value.retryable
    assert len(server.requests_for(name)) == 1  # the SDK did not retry behind the orchestrator's back


def test_retry_after_as_http_date(server):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.script("openai", http_error(429, retry_after=when))
    with pytest.raises(RateLimited) as info:
        ask(make(server, "openai"))
    assert 20 <= info.value.retry_after <= 31


def test_429_without_retry_after(server):
    server.script("anthropic", http_error(429))
    with pytest.raises(RateLimited) as info:
        ask(make(server, "anthropic"))
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("name", NAMES)
def test_5xx_is_unavailable_and_not_retried(server, name, status):
    server.script(name, http_error(status))
    with pytest.raises(ProviderUnavailable) as info:
        ask(make(server, name))
    assert info.value.status == status
    assert info.value.retryable
    assert len(server.requests_for(name)) == 1


@pytest.mark.parametrize("name", NAMES)
def test_401_is_authentication_failed_and_never_shows_the_key(server, name):
    server.script(name, http_error(401, f"Incorrect API key provided: {KEY}."))
    provider = make(server, name)
    with pytest.raises(AuthenticationFailed) as info:
        ask(provider)
    err = info.value
    assert err.status == 401 and not err.retryable
    for text in (str(err), repr(err), err.detail, repr(provider), repr(provider.config), str(provider.config)):
        assert KEY not in text
    assert "***" in err.detail  # the echoed key was redacted, the rest of the message kept
    assert len(server.requests_for(name)) == 1


@pytest.mark.parametrize("name", NAMES)
def test_403_is_authentication_failed(server, name):
    server.script(name, http_error(403, "forbidden"))
    with pytest.raises(AuthenticationFailed):
        ask(make(server, name))


@pytest.mark.parametrize("name", NAMES)
def test_other_4xx_is_a_plain_provider_error(server, name):
    server.script(name, http_error(400, "response_format is invalid"))
    with pytest.raises(ProviderError) as info:
        ask(make(server, name))
    assert type(info.value) is ProviderError and not info.value.retryable
    assert "response_format is invalid" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_slow_answer_beyond_the_timeout_is_provider_timeout(server, name):
    server.script(name, slow(2.0, answer(GOOD)))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        ask(make(server, name), timeout=0.15)
    assert time.monotonic() - started < 2.0
    assert info.value.retryable
    assert len(server.requests_for(name)) == 1


@pytest.mark.parametrize("name", NAMES)
def test_slow_answer_within_the_timeout_arrives(server, name):
    server.script(name, slow(0.1, answer(GOOD)))
    assert ask(make(server, name), timeout=3.0).data == GOOD


@pytest.mark.parametrize("name", NAMES)
def test_invalid_json_is_bad_output_with_raw_text(server, name):
    text = "Sure! Here is the analysis: {label: overfitting,"
    server.script(name, answer_text(text, usage=(40, 12)))
    with pytest.raises(BadOutput) as info:
        ask(make(server, name))
    assert info.value.raw == text
    assert not info.value.retryable
    assert info.value.usage.output_tokens == 12  # the spend is still known


@pytest.mark.parametrize("name", NAMES)
def test_truncated_reply_is_bad_output(server, name):
    text = '{"label": "overfitting", "score": 0.'
    server.script(name, answer_text(text, truncated=True))
    with pytest.raises(BadOutput, match="cut off") as info:
        ask(make(server, name))
    assert info.value.raw == text


@pytest.mark.parametrize("name", NAMES)
def test_json_that_is_not_an_object_is_bad_output(server, name):
    server.script(name, answer_text("[1, 2, 3]"))
    with pytest.raises(BadOutput, match="JSON object") as info:
        ask(make(server, name))
    assert info.value.raw == "[1, 2, 3]"


@pytest.mark.parametrize("name", NAMES)
def test_schema_violating_json_is_returned_for_the_orchestrator_to_validate(server, name):
    wrong = {"label": 5, "tags": "many"}
    server.script(name, answer(wrong))
    reply = ask(make(server, name))
    assert reply.data == wrong
    with pytest.raises(ValidationError):
        Verdict.model_validate(reply.data)


@pytest.mark.parametrize("name", NAMES)
def test_a_response_outside_the_protocol_is_unavailable(server, name):
    server.script(name, malformed_body())
    with pytest.raises(ProviderUnavailable):
        ask(make(server, name))


@pytest.mark.parametrize("name", NAMES)
def test_connection_refused_is_unavailable(server, name):
    config = ProviderConfig(name=name, api_key=KEY, base_url="http://127.0.0.1:9", model="m")
    with pytest.raises(ProviderUnavailable):
        ask(build_provider(name, config), timeout=2.0)


@pytest.mark.parametrize("name", NAMES)
def test_without_a_key_nothing_is_sent(server, name):
    provider = make(server, name, key=None)
    assert not provider.configured
    with pytest.raises(NotConfigured, match=PROVIDER_DEFAULTS[name]["key_env"]):
        ask(provider)
    disabled = build_provider(name, provider.config.model_copy(update={"api_key": KEY, "enabled": False}))
    with pytest.raises(NotConfigured, match="disabled"):
        ask(disabled)
    assert server.requests == []


# ----------------------------------------------------------------- Perplexity's sources and cost
def test_perplexity_keeps_search_results_citations_and_reported_cost(server):
    results = [dict(r, extra_field={"kept": True}) for r in DEFAULT_SEARCH_RESULTS]
    server.script("perplexity", answer({"insights": []}, search_results=results))
    reply = ask(make(server, "perplexity"), schema=ResearchDraft)
    assert reply.extras["search_results"] == results  # every field of every result, in order
    assert reply.extras["citations"] == DEFAULT_CITATIONS
    assert reply.usage.reported_cost_usd == pytest.approx(DEFAULT_COST["total_cost"])


def test_perplexity_older_responses_with_citations_only(server):
    server.script(
        "perplexity", answer({"insights": []}, search_results=None, cost=None, citations=["https://a.example/1"])
    )
    reply = ask(make(server, "perplexity"), schema=ResearchDraft)
    assert reply.extras == {"citations": ["https://a.example/1"]}
    assert reply.usage.reported_cost_usd is None


def test_perplexity_cost_as_a_bare_number_and_as_parts(server):
    server.script(
        "perplexity",
        answer({"insights": []}, cost=0.0125),
        answer({"insights": []}, cost={"input_tokens_cost": 0.001, "request_cost": 0.005}),
    )
    assert ask(make(server, "perplexity"), schema=ResearchDraft).usage.reported_cost_usd == pytest.approx(0.0125)
    assert ask(make(server, "perplexity"), schema=ResearchDraft).usage.reported_cost_usd == pytest.approx(0.006)


def test_perplexity_schema_is_sent_without_refs(server):
    ask(make(server, "perplexity"), schema=AnalysisDraft)
    sent = server.requests_for("perplexity")[0].body["response_format"]["json_schema"]["schema"]
    assert "$ref" not in json.dumps(sent) and "$defs" not in sent
    assert "set_dropout" in json.dumps(sent)


@pytest.mark.parametrize("name", ["openai", "xai", "anthropic", "gemini"])
def test_other_providers_report_no_sources_or_cost(server, name):
    reply = ask(make(server, name))
    assert reply.extras == {}
    assert reply.usage.reported_cost_usd is None


# ----------------------------------------------------------------- schemas per provider
def _objects(node):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def test_anthropic_schema_is_closed_and_dicts_come_back_as_objects(server):
    spec = {"layers": [{"type": "Linear", "args": {"in_features": 4, "out_features": 3}}]}
    server.script("anthropic", answer({"candidates": [{"spec": json.dumps(spec), "rationale": "small"}]}))
    reply = ask(make(server, "anthropic"), schema=ArchitectureDraft)
    assert reply.data["candidates"][0]["spec"] == spec
    assert ArchitectureDraft.model_validate(reply.data).candidates[0].spec == spec
    sent = server.requests_for("anthropic")[0].body["output_config"]["format"]["schema"]
    objects = list(_objects(sent))
    assert objects and all(o.get("additionalProperties") is False for o in objects)
    assert sent["$defs"]["CandidateDraft"]["properties"]["spec"]["type"] == "string"


def test_anthropic_decodes_dicts_inside_unions(server):
    action = {"action": "switch_scheduler", "name": "CosineAnnealingLR", "params": {"T_max": 50}}
    encoded = dict(action, params=json.dumps(action["params"]))
    rec = {"action": encoded, "rationale": "plateau", "confidence": 0.7}
    server.script("anthropic", answer({"diagnosis": "plateau", "evidence": [], "recommendations": [rec]}))
    reply = ask(make(server, "anthropic"), schema=AnalysisDraft)
    assert reply.data["recommendations"][0]["action"] == action
    assert AnalysisDraft.model_validate(reply.data).recommendations[0].action.params == {"T_max": 50}


def test_gemini_schema_uses_only_documented_keywords(server):
    ask(make(server, "gemini"), schema=AnalysisDraft)
    sent = server.requests_for("gemini")[0].body["generationConfig"]["responseJsonSchema"]
    text = json.dumps(sent)
    for keyword in ('"const"', '"default"', '"discriminator"', '"exclusiveMinimum"', '"exclusiveMaximum"'):
        assert keyword not in text
    assert sent["$defs"]["SetDropout"]["properties"]["action"]["enum"] == ["set_dropout"]
    assert GeminiProvider.output_schema(AnalysisDraft) == sent


def test_union_tags_are_required_in_every_schema():
    schema = response_json_schema(AnalysisDraft)
    for name in ("SetDropout", "EarlyStop", "SwitchScheduler"):
        assert "action" in schema["$defs"][name]["required"]
    assert "discriminator" not in json.dumps(schema)


def test_free_form_round_trip_leaves_other_strings_alone():
    schema = response_json_schema(AnalysisDraft)
    encoded = encode_free_form_objects(schema)
    assert encoded["$defs"]["SwitchScheduler"]["properties"]["params"]["type"] == "string"
    data = {
        "diagnosis": "noisy",
        "evidence": ['{"looks": "like json"}'],
        "recommendations": [{"action": {"action": "set_dropout", "p": 0.3}, "rationale": "{}", "confidence": 0.5}],
    }
    assert decode_free_form_objects(data, schema) == data
    assert AnthropicProvider.output_schema(AnalysisDraft)[1] == schema


# ----------------------------------------------------------------- parsing and headers, directly
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('<think>first I consider {x}</think>\n{"a": 1}', {"a": 1}),
        ('Here you go:\n{"a": {"b": [1, 2]}}\nDone.', {"a": {"b": [1, 2]}}),
    ],
)
def test_json_is_found_in_common_wrappers(text, expected):
    assert parse_json_object("p", text) == expected


@pytest.mark.parametrize("text", ["", "   ", "no json here", '{"a": 1', "null", '"a string"'])
def test_non_objects_are_bad_output(text):
    with pytest.raises(BadOutput) as info:
        parse_json_object("p", text)
    assert info.value.raw == text


def test_retry_after_forms():
    assert retry_after_seconds({"Retry-After": "12"}) == 12.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"Retry-After": email.utils.formatdate(time.time() - 60, usegmt=True)}) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None


# ----------------------------------------------------------------- defaults table and factory
def test_defaults_table_covers_every_provider_with_a_price():
    classes = provider_classes()
    assert set(classes) == set(NAMES) == set(PROVIDER_DEFAULTS)
    for name, cls in classes.items():
        defaults = PROVIDER_DEFAULTS[name]
        assert cls.name == name
        assert cls.default_model == defaults["model"]
        assert cls.default_base_url == defaults["base_url"].rstrip("/")
        assert cls.key_env == defaults["key_env"]
        p_in, p_out = PRICES[defaults["model"]]
        assert 0 < p_in <= p_out
    assert price_for("gpt-6.1-terra", {"gpt-6.1-terra": (9.0, 9.0)}) == (9.0, 9.0)
    assert price_for("no-such-model") is None


def test_config_from_env_and_overrides():
    env = {"XAI_API_KEY": KEY, "FORGEML_XAI_MODEL": "grok-test", "FORGEML_XAI_BASE_URL": "http://localhost:8000/v1"}
    config = config_from_env("xai", env=env)
    assert config.configured and config.model == "grok-test" and config.base_url == "http://localhost:8000/v1"
    assert config.api_key.get_secret_value() == KEY
    assert KEY not in repr(config) and KEY not in config.model_dump_json()
    plain = config_from_env("gemini", env={})
    assert not plain.configured and plain.model == PROVIDER_DEFAULTS["gemini"]["model"]
    assert config_from_env("openai", env={}, model="gpt-x").model == "gpt-x"
    with pytest.raises(ValueError, match="unknown provider"):
        config_from_env("nope", env={})


def test_build_provider_checks_names():
    config = ProviderConfig(name="openai", api_key=KEY, model="m")
    assert build_provider("openai", config).base_url == PROVIDER_DEFAULTS["openai"]["base_url"]
    with pytest.raises(ValueError, match="unknown provider"):
        build_provider("local", config)
    with pytest.raises(ValueError, match="not 'xai'"):
        build_provider("xai", config)


def test_reprs_never_show_the_key():
    for name in NAMES:
        provider = build_provider(name, ProviderConfig(name=name, api_key=KEY, model="m"))
        assert KEY not in repr(provider) and KEY not in str(provider)
        assert KEY not in repr(provider.config) and KEY not in str(provider.config.model_dump())


# The first loop's SDK client is abandoned unclosed (its loop is gone), which Python reports when collected.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("name", NAMES)
def test_one_provider_serves_calls_from_successive_event_loops(server, name):
    provider = make(server, name)

    async def once(close: bool):
        try:
            return await provider.complete(
                system="s", messages=[Message("user", "u")], schema=Verdict, schema_name="Verdict", timeout=5.0
            )
        finally:
            if close:
                await provider.aclose()

    server.script(name, answer(GOOD), answer(GOOD), answer(GOOD))
    assert asyncio.run(once(close=False)).data == GOOD  # its client stays behind, bound to a loop now closed
    assert asyncio.run(once(close=True)).data == GOOD  # a new loop gets a new SDK client, not the dead pool
    assert asyncio.run(once(close=False)).data == GOOD
    asyncio.run(provider.aclose())  # from yet another loop: the old client is dropped, nothing raises
    assert len(server.requests_for(name)) == 3
    gc.collect()  # report the abandoned clients here, under this test's filters


def test_two_providers_warming_up_at_once_never_see_a_half_imported_sdk(tmp_path, monkeypatch):
    """A set-up review and a synthetic-data request warm up together: the second must wait for the first's
    import to finish, not find the module half-initialised in sys.modules and go on (CI saw "partially
    initialized module 'google.genai.errors'" under load)."""
    import sys

    from forgeml.ai.providers.base import RemoteProvider

    (tmp_path / "slow_sdk_for_test.py").write_text("import time\ntime.sleep(0.5)\nREADY = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_sdk_for_test", raising=False)

    class Slow(RemoteProvider):
        name, key_env, default_model = "slow", "SLOW_KEY", "m"
        sdk_modules = ("slow_sdk_for_test",)

        async def complete(self, *args, **kwargs):  # pragma: no cover - never called
            raise AssertionError

    first, second = (Slow(ProviderConfig(name="slow", model="m")) for _ in range(2))

    async def both():
        started = asyncio.create_task(first.warm_up())
        await asyncio.sleep(0.15)  # the first import is under way: the module is in sys.modules, half done
        assert "slow_sdk_for_test" in sys.modules
        await second.warm_up()
        ready = getattr(sys.modules["slow_sdk_for_test"], "READY", False)
        await started
        return ready

    assert asyncio.run(both()) is True
