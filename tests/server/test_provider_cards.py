"""A provider card on the dashboard says why its circuit is open: the cause of the last error in words, how
many failed in a row, and when it retries; ``GET /v1/ai/status`` carries the same, documented in the
OpenAPI. A live server whose Anthropic key the (fake) provider rejects, in a real browser."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.ai.fake_providers import FakeProviderServer, http_error

from .conftest import OUTPUT, LiveServer, wait_for_job
from .test_browser import browser, tab  # noqa: F401 - the browser fixtures

SECRET = "sk-ant-DASHBOARD-SECRET-4242"
METRICS = {"train_loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.85]}


@pytest.fixture(scope="module")
def rejecting():
    """The fake provider server, answering every Anthropic call with 401 (echoing the key, as some do)."""
    with FakeProviderServer() as fake:
        fake.set_default("anthropic", http_error(401, f"invalid x-api-key: {SECRET}"))
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory, rejecting):
    live = LiveServer(
        tmp_path_factory.mktemp("cards") / "data",
        OUTPUT / "logs" / "test_provider_cards.log",
        ANTHROPIC_API_KEY=SECRET,
        FORGEML_ANTHROPIC_BASE_URL=rejecting.base_url("anthropic"),
        FORGEML_AI_BREAKER_THRESHOLD="3",
        FORGEML_AI_BREAKER_COOLDOWN="3600",
        FORGEML_AI_CACHE="0",
    )
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def opened(server, rejecting) -> dict:
    """Four analyses: three rejected calls open Anthropic's breaker, the fourth skips it. The last answer's
    attempts, the status and the OpenAPI document after them."""
    with server.client() as client:
        for _ in range(4):
            answer = client.post("/v1/ai/analyze", json={"model_description": "mlp", "performance_metrics": METRICS})
            assert answer.status_code == 200 and answer.json()["provider"] == "local"
        return {
            "skipped": answer.json()["attempts"][0],
            "status": client.get("/v1/ai/status").json(),
            "openapi": client.get("/openapi.json").json(),
            "calls": len(rejecting.requests_for("anthropic")),
        }


def test_the_status_api_says_why_the_circuit_is_open(opened):
    skipped, status = opened["skipped"], opened["status"]
    assert opened["calls"] == 3
    assert skipped["outcome"] == "circuit_open"
    assert skipped["detail"].startswith("circuit open: 401 unauthorized: the API key was rejected (3 errors in a row)")
    anthropic = status["providers"]["anthropic"]
    assert anthropic["breaker"] == "open" and anthropic["consecutive_errors"] == 3 and anthropic["errors"] == 3
    assert anthropic["last_error"] == "401 unauthorized: the API key was rejected"
    assert time.time() + 3500 < anthropic["retry_at"] < time.time() + 3601
    assert status["providers"]["openai"]["last_error"] is None
    assert SECRET not in str(status) and SECRET not in str(skipped)

    # the response model is in the OpenAPI, its fields documented
    schema = opened["openapi"]
    ref = schema["paths"]["/v1/ai/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ref["$ref"].endswith("/AIStatus")
    fields = schema["components"]["schemas"]["ProviderStatus"]["properties"]
    for name in ("last_error", "last_error_at", "consecutive_errors", "retry_at", "breaker"):
        assert fields[name].get("description"), name
    assert "401 unauthorized" in fields["last_error"]["description"]


def test_the_card_says_why_the_circuit_is_open(server, opened, tab):  # noqa: F811
    anthropic = opened["status"]["providers"]["anthropic"]
    page = tab.page
    page.goto(server.url + "/")
    card = page.locator('#providers [data-provider="anthropic"]')
    expect(card.locator(".pill")).to_have_text("circuit open")
    note = card.locator(".provider-note")
    expect(note).to_have_attribute("data-cause", "401 unauthorized: the API key was rejected")
    expect(note).to_contain_text("circuit open: 401 unauthorized: the API key was rejected (3 errors in a row)")
    expect(note).to_contain_text("retrying after")
    # the time in the browser's clock: within a second of the same instant formatted here
    shown = note.inner_text().rsplit("retrying after ", 1)[1].strip()
    retry = time.strftime("%H:%M:%S", time.localtime(anthropic["retry_at"]))
    apart = abs(_seconds(shown) - _seconds(retry))
    assert len(shown) == 8 and min(apart, 86400 - apart) <= 1
    expect(card.locator(".stat.bad dd")).to_have_text("3")  # the errors count
    expect(page.locator('#providers [data-provider="openai"] .pill')).to_have_text("not configured")
    assert SECRET not in page.content()
    tab.shot("provider-card-circuit-open")
    tab.assert_no_errors()


def test_the_job_page_says_which_provider_failed_and_who_answered(server, opened, tab):  # noqa: F811
    """A job on that server: its worker's Anthropic calls are rejected too, and its event log (and so the job
    page) says so before the offline advisor's advice."""
    rows = "\n".join(f"{i % 7 / 7:.3f},{i % 5 / 5:.3f},{'yes' if i % 7 > 3 else 'no'}" for i in range(120))
    with server.client() as client:
        dataset = client.post(
            "/v1/datasets",
            files={"file": ("cards.csv", f"a,b,label\n{rows}".encode(), "text/csv")},
            data={"target": "label"},
        ).json()
        spec = {"input_shape": [2], "layers": [{"type": "Linear", "args": {"in_features": 2, "out_features": 2}}]}
        body = {
            "model": spec,
            "dataset": dataset["id"],
            "epochs": 2,
            "batch_size": 16,
            "ai": {"optimization_guidance_frequency": 1, "research_update_interval": 100, "wait_for_ai": True},
        }
        job = wait_for_job(client, client.post("/v1/jobs", json=body).json()["id"])
        assert job["state"] == "completed", job
        events = client.get(f"/v1/jobs/{job['id']}").json()["events"]
    sentence = (
        "the configured provider (anthropic) failed: anthropic 401 unauthorized: the API key was rejected; "
        "the offline advisor answered instead"
    )
    notes = [e for e in events if e["kind"] == "provider_error"]
    assert notes and notes[0]["reason"] == sentence and notes[0]["provider"] == "local"
    assert all(e["reason"].startswith("the configured provider (anthropic) failed: anthropic ") for e in notes)

    page = tab.page
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    item = page.locator('#ai-timeline .tl-item[data-kind="provider_error"]').first
    expect(item).to_contain_text(sentence)
    expect(item).to_contain_text("by Offline advisor")
    assert SECRET not in page.content()
    tab.shot("job-provider-fallback")
    tab.assert_no_errors()


def _seconds(hms: str) -> int:
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + s
