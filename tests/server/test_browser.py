"""The dashboard in a real browser: Chromium (Debian's, driven by Playwright) against a live server.

Every test fails on a console error or an uncaught page error, and leaves a screenshot under
test-output/screenshots/.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .conftest import OUTPUT, ROOT, LiveServer, require_system_program, wait_for_job

SHOTS = OUTPUT / "screenshots"
PROVIDERS = ["openai", "anthropic", "perplexity", "gemini", "xai"]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REFUSED_401 = "the server responded with a status of 401"

expect.set_options(timeout=15_000)


def chromium() -> str:
    path = shutil.which("chromium")
    require_system_program(path is not None, "Chromium (the dashboard tests drive it)", "chromium")
    return path


ORT_WEB = ROOT / "src" / "forgeml" / "server" / "static" / "vendor" / "onnxruntime-web"


def onnxruntime_web() -> None:
    """The dashboard's in-browser inference needs onnxruntime-web in the static folder (`make vendor`)."""
    if not (ORT_WEB / "VERSION").is_file():
        pytest.fail(
            f"onnxruntime-web is not in {ORT_WEB.relative_to(ROOT)}: `make vendor` fetches it from npm "
            "(`make test` and `make run` do it first)"
        )


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One live server (no API key) shared by the module's tests, so a trained model carries over."""
    # one BLAS thread: on a small shared machine a multi-threaded BLAS in the worker slows to a crawl
    # whenever another process competes for the cores (and the browser does)
    live = LiveServer(tmp_path_factory.mktemp("browser") / "data", OUTPUT / "logs" / "test_browser.log")
    live.start()
    yield live
    live.stop()


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.evaluate("window.scrollTo(0, 0)")  # the sticky header belongs at the top of a full-page shot
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def assert_no_errors(self, allowed: tuple[str, ...] = ()) -> None:
        unexpected = [e for e in self.errors if not any(a in e for a in allowed)]
        assert not unexpected, "the dashboard logged errors:\n" + "\n".join(unexpected)


def open_tab(browser: Browser) -> tuple[Tab, object]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    tab = Tab(page)
    page.on("console", lambda m: tab.errors.append(f"console.error: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(f"page error: {exc}"))
    return tab, context


@pytest.fixture
def tab(browser):
    tab, context = open_tab(browser)
    yield tab
    context.close()


@pytest.fixture(scope="module")
def mnist_model(server) -> dict:
    """A trained digits model: the one test_start_a_job_and_watch_it_live trained, or a fresh one."""
    with server.client() as client:
        models = [m for m in client.get("/v1/models").json() if m["kind"] == "image"]
        if models:
            return models[0]
        job = client.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": 3, "name": "digits"}).json()
        done = wait_for_job(client, job["id"])
        assert done["state"] == "completed", done
        return client.get(f"/v1/models/{done['model_id']}").json()


def plotly_points(page: Page, element_id: str) -> list[list[float]]:
    """The x values of each trace of a plotly chart, read from the element's ``.data``."""
    return page.evaluate(f"() => (document.getElementById('{element_id}').data || []).map(t => Array.from(t.x))")


def draw(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw on #digit-canvas; points are fractions of the canvas (0..1)."""
    box = page.locator("#digit-canvas").bounding_box()
    assert box is not None
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def prediction(page: Page) -> tuple[str, dict[str, float]]:
    expect(page.locator("#prediction .bar-row").first).to_be_visible()
    label = page.locator("#prediction").get_attribute("data-prediction")
    rows = page.locator("#prediction .bar-row")
    probabilities = {
        rows.nth(i).get_attribute("data-class"): float(rows.nth(i).get_attribute("data-probability"))
        for i in range(rows.count())
    }
    return label, probabilities


# ---------------------------------------------------------------------------------------------- tests


def test_dashboard_loads_and_shows_providers_offline(server, tab):
    page = tab.page
    page.goto(server.url + "/")
    providers = page.locator("#providers .provider[data-provider]")
    expect(providers).to_have_count(len(PROVIDERS) + 1)  # the five services and the offline advisor
    for name in PROVIDERS:
        card = page.locator(f'#providers [data-provider="{name}"]')
        expect(card).to_have_attribute("data-configured", "false")
        expect(card.locator(".pill")).to_have_text("not configured")
        expect(card).to_contain_text("offline")
        expect(card).to_contain_text("Latency")
        expect(card).to_contain_text("$0.00")
    expect(page.locator('#providers [data-provider="local"]')).to_contain_text("always on")
    expect(page.locator("#providers-meta")).to_contain_text("0 of 5 configured")
    expect(page.locator("#server-status")).to_have_attribute("data-ok", "true")
    expect(page.locator("#error-banner")).to_be_hidden()
    tab.shot("01-overview")

    # every panel renders, with an empty state where there is nothing yet
    page.click('a[data-nav="datasets"]')
    expect(page.locator("#datasets-list")).to_contain_text("No uploaded datasets yet")
    page.click('a[data-nav="jobs"]')
    expect(page.locator("#job-form")).to_be_visible()
    expect(page.locator("#jobs-list")).to_contain_text("No training jobs yet")
    tab.shot("01-jobs-empty")
    tab.assert_no_errors()


def test_start_a_job_and_watch_it_live(server, tab):
    page = tab.page
    page.goto(server.url + "/#/jobs")
    # the presets' defaults come from GET /v1/jobs/presets
    expect(page.locator("#preset-hint")).to_contain_text("handwritten digits")
    page.select_option("#preset", "mnist_ai_enhanced")
    expect(page.locator("#ai-enabled")).to_be_checked()
    expect(page.locator("#epochs")).to_have_attribute("placeholder", "10")
    page.uncheck("#ai-enabled")  # a preset's AI guidance can be turned off: the request says "ai": null
    assert page.evaluate("async () => (await import('/static/js/jobs.js')).jobRequest().ai") is None
    page.check("#ai-enabled")
    request_processes = "async () => (await import('/static/js/jobs.js')).jobRequest().processes ?? null"
    page.fill("#processes", "2")  # a data-parallel job; 1 (or empty) leaves the server's default of one process
    assert page.evaluate(request_processes) == 2
    page.fill("#processes", "1")
    assert page.evaluate(request_processes) is None
    page.fill("#processes", "")
    page.fill("#job-name", "digits with AI guidance")
    page.fill("#epochs", "3")
    page.fill("#ai-guidance", "1")
    page.fill("#ai-research", "3")
    page.fill("#ai-synthetic", "0")
    page.click("#start-job")

    page.wait_for_url(re.compile(r".*#/jobs/job_\w+$"))
    job_id = page.url.rsplit("/", 1)[1]
    # points arrive over the event stream, epoch by epoch
    page.wait_for_function(
        "() => (document.getElementById('loss-chart').data || [{x: []}])[0].x.length >= 1", timeout=120_000
    )
    expect(page.locator("#job-state")).to_have_text("completed", timeout=120_000)
    page.wait_for_function("() => document.getElementById('loss-chart').data[0].x.length === 3")
    assert plotly_points(page, "loss-chart") == [[1, 2, 3], [1, 2, 3]]  # train and val loss
    assert plotly_points(page, "acc-chart") == [[1, 2, 3], [1, 2, 3]]
    val_accuracy = page.evaluate("() => document.getElementById('acc-chart').data[1].y")
    assert all(0.5 < a <= 1.0 for a in val_accuracy), val_accuracy
    expect(page.locator("#job-progress-text")).to_have_text("3 of 3 epochs")

    # the AI timeline: who said what, whether it applied, with citations as links
    timeline = page.locator("#ai-timeline")
    expect(timeline.locator(".tl-item").first).to_be_visible()
    expect(timeline.locator('.tl-item[data-kind="diagnosis"]').first).to_contain_text("by Offline advisor")
    link = timeline.locator(".citations a").first
    expect(link).to_have_attribute("href", re.compile(r"^https://"))
    expect(link).to_have_attribute("rel", "noopener noreferrer")

    expect(page.locator("#job-model-link")).to_be_visible()
    expect(page.locator("#cancel-job")).to_be_hidden()
    expect(page.locator("#resume-job")).to_be_hidden()
    expect(page.locator("#job-best")).to_have_text(re.compile(r"^\d+\.\d%$"))
    tab.shot("02-job-page")

    page.click('a[data-nav="jobs"]')
    row = page.locator(f'#jobs-list tr[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-state", "completed")
    expect(row).to_contain_text("digits with AI guidance")
    expect(row.locator("td.num")).to_have_text(re.compile(r"^\d+\.\d%$"))
    tab.shot("02-jobs-list")
    tab.assert_no_errors()


def test_draw_a_digit_and_predict(server, tab, mnist_model):
    page = tab.page
    page.goto(f"{server.url}/#/models/{mnist_model['id']}")
    expect(page.locator(f'#models-list [data-model-id="{mnist_model["id"]}"]')).to_have_class(re.compile("is-selected"))
    expect(page.locator("#digit-canvas")).to_be_visible()

    page.click("#predict-btn")  # nothing drawn yet: the person is told what to do
    expect(page.locator("#predict-error")).to_contain_text("Draw a digit")

    # a "1": one thick, slightly slanted vertical stroke
    draw(page, [[(0.53, 0.15), (0.50, 0.5), (0.47, 0.85)]])
    page.click("#predict-btn")
    label, probabilities = prediction(page)
    assert sorted(probabilities) == [str(d) for d in range(10)]
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-3)
    assert label == max(probabilities, key=probabilities.get)
    assert label == "1", probabilities
    expect(page.locator("#prediction .predicted-label")).to_have_text("1")
    tab.shot("03-digit-one")

    # a "0": an ellipse
    page.click("#clear-canvas")
    expect(page.locator("#prediction")).to_be_empty()
    ring = [
        (0.5 + 0.22 * math.sin(t / 24 * 2 * math.pi), 0.5 - 0.33 * math.cos(t / 24 * 2 * math.pi)) for t in range(26)
    ]
    draw(page, [ring])
    page.click("#predict-btn")
    label, probabilities = prediction(page)
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-3)
    assert label == "0", probabilities
    tab.shot("03-digit-zero")
    tab.assert_no_errors()


def test_the_model_runs_in_the_browser_as_on_the_server(server, tab, mnist_model):
    """The "try it" panel runs the model's ONNX export with onnxruntime-web (WebAssembly) after the server's
    prediction: the same class probabilities within 1e-4, each side with its latency."""
    onnxruntime_web()
    page = tab.page
    wasm = []
    page.on("request", lambda r: wasm.append(r.url) if r.url.endswith(".wasm") else None)
    page.goto(f"{server.url}/#/models/{mnist_model['id']}")
    expect(page.locator("#digit-canvas")).to_be_visible()
    expect(page.locator("#prediction-browser")).to_be_hidden()
    # a "7": a bar and a slanted stroke down
    draw(page, [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]])
    page.click("#predict-btn")
    browser_side = page.locator("#prediction-browser")
    expect(browser_side).to_have_attribute("data-state", "done", timeout=60_000)
    both = page.evaluate("() => window.lastPredictions")
    server_side, local = both["server"], both["browser"]
    assert both["modelId"] == mnist_model["id"]
    assert local["classes"] == server_side["classes"] == [str(d) for d in range(10)]
    difference = max(abs(a - b) for a, b in zip(local["probabilities"][0], server_side["probabilities"][0]))
    assert difference <= 1e-4, (local, server_side)
    assert local["prediction"] == server_side["prediction"]
    assert server_side["latencyMs"] > 0 and local["latencyMs"] >= 0 and local["loadMs"] > 0

    # both answers on the page, each with its latency, the browser's bars as the server's
    label, probabilities = prediction(page)
    assert label == server_side["prediction"]
    rows = browser_side.locator(".bar-row")
    in_browser = {
        rows.nth(i).get_attribute("data-class"): float(rows.nth(i).get_attribute("data-probability")) for i in range(10)
    }
    assert max(abs(in_browser[c] - probabilities[c]) for c in probabilities) <= 1e-4, (in_browser, probabilities)
    expect(page.locator("#prediction .answer-source")).to_contain_text("On the server")
    expect(browser_side.locator(".answer-source")).to_contain_text("In this browser")
    expect(browser_side.locator(".answer-source .latency")).to_have_text(re.compile(r"^[\d.,]+ ms$"))
    expect(browser_side.locator(".bar-row")).to_have_count(10)
    expect(browser_side.locator(".agreement")).to_contain_text("Same answer as the server")
    assert browser_side.get_attribute("data-prediction") == label
    assert all(url.startswith(server.url + "/static/vendor/onnxruntime-web/") for url in wasm) and wasm
    tab.shot("09-in-browser-inference")

    # a second digit reuses the loaded session: no second download
    page.click("#clear-canvas")
    expect(browser_side).to_be_hidden()
    draw(page, [[(0.53, 0.15), (0.50, 0.5), (0.47, 0.85)]])
    page.click("#predict-btn")
    expect(browser_side).to_have_attribute("data-state", "done", timeout=30_000)
    again = page.evaluate("() => window.lastPredictions")
    assert again["browser"]["loadMs"] is None and len(wasm) == 1
    difference = max(
        abs(a - b) for a, b in zip(again["browser"]["probabilities"][0], again["server"]["probabilities"][0])
    )
    assert difference <= 1e-4
    tab.assert_no_errors()


def test_in_browser_preprocessing_is_the_servers(server, tab):
    """The browser normalises rows as the server's predictor does, to the last float32 bit, and its softmax
    agrees with the server's (float64)."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = rng.random((3, 5)).round(4)
    mean, std = rng.random(5).tolist(), (rng.random(5) + 0.5).tolist()
    page = tab.page
    page.goto(server.url + "/")
    got = page.evaluate(
        """async ([rows, mean, std]) => {
            const { normalise, softmax } = await import('/static/js/onnx.js');
            const scalar = normalise(rows, { mean: 0.1307, std: 0.3081 });
            const perFeature = normalise(rows, { mean, std });
            return { scalar: Array.from(scalar), perFeature: Array.from(perFeature), soft: softmax(perFeature, 5) };
        }""",
        [rows.tolist(), mean, std],
    )
    x = np.asarray(rows, dtype=np.float32)
    scalar = (x - np.asarray(0.1307, dtype=np.float32)) / np.asarray(0.3081, dtype=np.float32)
    per_feature = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    assert np.array_equal(np.asarray(got["scalar"], dtype=np.float32), scalar.ravel())
    assert np.array_equal(np.asarray(got["perFeature"], dtype=np.float32), per_feature.ravel())
    z = per_feature.astype(np.float64)
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(got["soft"], expected / expected.sum(1, keepdims=True), rtol=1e-12)
    tab.assert_no_errors()


def test_a_profiled_job_shows_its_top_ops(server, tab):
    """A job started with "Profile the first epoch" shows that epoch's top ops on its page."""
    page = tab.page
    page.goto(server.url + "/#/jobs")
    page.select_option("#preset", "mnist_mlp")
    page.fill("#job-name", "profiled digits")
    page.fill("#epochs", "1")
    page.check("#profile")
    assert page.evaluate("async () => (await import('/static/js/jobs.js')).jobRequest().profile") is True
    page.click("#start-job")
    page.wait_for_url(re.compile(r".*#/jobs/job_\w+$"))
    expect(page.locator("#job-state")).to_have_text("completed", timeout=120_000)
    card = page.locator("#job-profile-card")
    expect(card).to_be_visible()
    rows = card.locator("tbody tr")
    expect(rows.first).to_be_visible()
    assert 1 <= rows.count() <= 20
    first = rows.first
    assert int(first.get_attribute("data-calls")) >= 1
    assert float(first.get_attribute("data-self-ms")) <= float(first.get_attribute("data-total-ms")) + 1e-3
    expect(page.locator("#job-profile-meta")).to_contain_text("epoch 1")
    card.scroll_into_view_if_needed()
    tab.shot("10-profiled-job")
    tab.assert_no_errors()


def test_text_model_from_a_custom_spec(server, tab):
    """A small text model (bag of embeddings) started from the form's JSON spec, then tried on two texts."""
    page = tab.page
    page.goto(server.url + "/#/jobs")
    page.select_option("#preset", "custom")
    page.select_option("#job-dataset", "spam")
    expect(page.locator("#model-spec")).to_have_value(re.compile('"Embedding"'))
    page.fill("#max-length", "32")
    page.select_option("#job-dataset", "spam")  # the template follows the token count
    page.fill("#job-name", "spam filter")
    page.fill("#epochs", "2")
    page.fill("#lr", "0.01")
    page.click("#start-job")
    page.wait_for_url(re.compile(r".*#/jobs/job_\w+$"))
    expect(page.locator("#job-state")).to_have_text("completed", timeout=120_000)
    expect(page.locator("#ai-timeline")).to_contain_text("AI guidance is off")
    page.click("#job-model-link")

    expect(page.locator("#try-text")).to_be_visible()
    expect(page.locator("#digit-canvas")).to_be_hidden()
    page.click('[data-sample^="Congratulations"]')
    page.click("#predict-btn")
    label, probabilities = prediction(page)
    assert sorted(probabilities) == ["ham", "spam"]
    assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-3)
    assert label == "spam", probabilities
    expect(page.locator("#prediction .verdict")).to_contain_text("Spam")
    # no tokeniser in JavaScript: the browser side says so instead of answering
    expect(page.locator("#prediction-browser")).to_have_attribute("data-state", "skipped")
    expect(page.locator("#prediction-browser")).to_contain_text("tokeniser")
    tab.shot("05-text-model")
    tab.assert_no_errors()


def test_bad_spec_is_shown_and_cancel_resume(server, tab):
    page = tab.page
    page.goto(server.url + "/#/jobs")
    page.select_option("#preset", "custom")
    page.fill(
        "#model-spec",
        '{"input_shape": [784], "layers": [{"type": "Linear", "args": {"in_features": 784, "out_features": 3}}]}',
    )
    page.click("#start-job")
    expect(page.locator("#job-form-error")).to_contain_text("[10]")  # names what the task needs
    page.fill("#model-spec", "{not json")
    page.click("#start-job")
    expect(page.locator("#job-form-error")).to_contain_text("not valid JSON")

    page.select_option("#preset", "mnist_mlp")
    page.fill("#epochs", "200")
    page.click("#start-job")
    page.wait_for_url(re.compile(r".*#/jobs/job_\w+$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-state")).to_have_text("running", timeout=60_000)
    page.click("#cancel-job")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=60_000)
    expect(page.locator("#resume-job")).to_be_visible()
    tab.shot("06-cancelled")
    page.click("#resume-job")
    expect(page.locator("#job-state")).to_have_text(re.compile("queued|running"))
    expect(page.locator("#cancel-job")).to_be_visible()
    page.click("#cancel-job")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=60_000)
    with server.client() as client:
        assert wait_for_job(client, job_id)["state"] == "cancelled"
    # console errors: the two refused job requests (422) are expected, nothing else
    tab.assert_no_errors(allowed=("the server responded with a status of 422",))


def test_event_stream_reconnects_with_last_event_id(server, tab, mnist_model):
    """A stream that drops after the first epoch is picked up again from there (fetch + Last-Event-ID)."""
    job_id = mnist_model["job_id"]
    with server.client() as client, client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        blocks = "".join(response.iter_text()).split("\n\n")
    first_epoch = next(i for i, b in enumerate(blocks) if b.startswith("event: epoch"))
    partial = "\n\n".join(blocks[: first_epoch + 1]) + "\n\n"
    resume_from = re.search(r"^id: (\S+)$", blocks[first_epoch], re.M).group(1)
    epochs = sum(b.startswith("event: epoch") for b in blocks)

    sent: list[str | None] = []

    def events(route, request):
        sent.append(request.headers.get("last-event-id"))
        if len(sent) == 1:  # the first connection ends after one epoch, as if the network dropped it
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=partial)
        else:
            route.continue_()

    page = tab.page
    page.route("**/events", events)
    page.goto(f"{server.url}/#/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("completed")
    page.wait_for_function(f"() => document.getElementById('loss-chart').data[0].x.length === {epochs}")
    assert sent[:2] == [None, resume_from]
    assert plotly_points(page, "loss-chart")[0] == list(range(1, epochs + 1))  # nothing twice, nothing lost
    tab.assert_no_errors()


def ai_event(epoch: int, kind: str, provider: str, **fields) -> dict:
    return {"time": 0.0, "epoch": epoch, "requested_epoch": epoch, "task": "analysis", "kind": kind, "provider": provider,
            "action": None, "applied": False, "reason": "", "before": None, "after": None, "rationale": "",
            "confidence": None, "citations": [], **fields}  # fmt: skip


def test_ai_timeline_shows_what_was_recommended_by_whom_and_if_applied(server, tab, mnist_model):
    """Every kind of AI event, served as a stream, renders with its provider, outcome, change and citations."""
    job_id = mnist_model["job_id"]
    with server.client() as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
    job.update(ai_enabled=True, history=None, events=None)
    paper = {
        "title": "Cyclical Learning Rates",
        "url": "https://arxiv.org/abs/1506.01186",
        "arxiv_id": None,
        "year": 2017,
    }
    events = [
        ai_event(1, "diagnosis", "anthropic", reason="underfitting: train loss still falling fast"),
        ai_event(
            1,
            "recommendation",
            "anthropic",
            action={"action": "scale_learning_rate", "factor": 0.5},
            applied=True,
            before=0.001,
            after=0.0005,
            reason="applied",
            rationale="the loss oscillates",
            confidence=0.8,
        ),
        ai_event(
            1,
            "recommendation",
            "gemini",
            action={"action": "set_dropout", "p": 0.9},
            reason="refused: dropout 0.9 is outside (0.0, 0.6)",
        ),
        ai_event(
            2,
            "insight",
            "perplexity",
            task="research",
            reason="One-cycle schedule",
            rationale="warm up, then anneal",
            citations=[paper],
        ),
        ai_event(2, "provider_error", "", task="synthetic_data", reason="TimeoutError: no answer; training continues"),
    ]
    blocks = [f"event: state\ndata: {json.dumps(job)}"]
    blocks += [f"event: ai_event\nid: 0-{i}\ndata: {json.dumps(e)}" for i, e in enumerate(events, 1)]
    blocks.append(f"event: end\ndata: {json.dumps(job)}")
    body = "\n\n".join(blocks) + "\n\n"
    page = tab.page
    page.route(
        "**/events",
        lambda route: route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body),
    )
    page.goto(f"{server.url}/#/jobs/{job_id}")
    items = page.locator("#ai-timeline .tl-item")
    expect(items).to_have_count(len(events))
    applied = items.nth(1)
    expect(applied).to_contain_text("Scale the learning rate by 0.5")
    expect(applied).to_contain_text("by Anthropic")
    expect(applied).to_contain_text("0.001 → 0.0005")
    expect(applied).to_contain_text("confidence 80%")
    expect(applied.locator(".pill")).to_have_text("applied")
    expect(items.nth(2).locator(".pill")).to_have_text("refused")
    expect(items.nth(2)).to_contain_text("by Google Gemini")
    expect(items.nth(3).locator(".citations a")).to_have_attribute("href", paper["url"])
    expect(items.nth(4).locator(".pill")).to_have_text("error")
    tab.shot("08-ai-timeline")
    page.select_option("#timeline-filter", "recommendation")
    expect(page.locator("#ai-timeline .tl-item:visible")).to_have_count(2)
    tab.assert_no_errors()


def test_an_interrupted_job_says_it_was_interrupted_not_failed(server, tab, mnist_model):
    """A job the server stopped under (state ``interrupted``) reads as resumable, never as a failure."""
    with server.client() as client:
        job = client.get(f"/v1/jobs/{mnist_model['job_id']}").json()
    job.update(
        state="interrupted",
        model_id=None,
        error="the server stopped while this job was unfinished; resume it to continue",
    )
    stream = f"event: state\ndata: {json.dumps(job)}\n\nevent: end\ndata: {json.dumps(job)}\n\n"
    page = tab.page
    page.route(
        "**/events",
        lambda route: route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=stream),
    )
    page.route(f"**/v1/jobs/{job['id']}", lambda route: route.fulfill(status=200, json=job))
    page.goto(f"{server.url}/#/jobs/{job['id']}")
    expect(page.locator("#job-state")).to_have_text("interrupted")
    expect(page.locator("#job-error")).to_have_text(
        "This job was interrupted (the server stopped); resume it to continue."
    )
    expect(page.locator("#resume-job")).to_be_visible()
    tab.shot("08b-interrupted")
    tab.assert_no_errors()


CSV = "f1,f2,f3,label\n" + "\n".join(
    f"{a:.3f},{b:.3f},{a - b:.3f},{'yes' if a > b else 'no'}"
    for a, b in ((i % 17 / 17, i % 11 / 11) for i in range(200))
)


def test_upload_a_csv_and_train_on_it(server, tab):
    page = tab.page
    page.goto(server.url + "/#/datasets")
    page.set_input_files(
        "#dataset-file", files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": b"a,b\n1,x\n2,y\n"}]
    )
    expect(page.locator("#dataset-target")).to_have_value("b")  # the last column is proposed
    page.select_option("#dataset-target", "a")
    page.click("#upload-dataset")
    expect(page.locator("#dataset-form-error")).to_be_visible()  # the server's reason, shown in the form

    page.set_input_files(
        "#dataset-file", files=[{"name": "points.csv", "mimeType": "text/csv", "buffer": CSV.encode()}]
    )
    expect(page.locator("#dataset-target option")).to_have_count(4)
    expect(page.locator("#dataset-target")).to_have_value("label")
    page.click("#upload-dataset")
    card = page.locator("#datasets-list .dataset").first
    expect(card).to_contain_text("points.csv")
    expect(card).to_contain_text("200 rows · 3 features · 2 classes")
    expect(page.locator("#dataset-form-error")).to_be_hidden()
    tab.shot("07-datasets")

    dataset_id = card.get_attribute("data-dataset-id")
    card.get_by_role("button", name="Train a model on it").click()
    expect(page.locator("#job-form")).to_be_visible()
    expect(page.locator("#preset")).to_have_value("custom")
    expect(page.locator("#job-dataset")).to_have_value(dataset_id)
    spec = page.locator("#model-spec").input_value()
    assert '"in_features": 3' in spec and '"out_features": 2' in spec, spec
    tab.assert_no_errors(allowed=("the server responded with a status of 422",))


def test_in_browser_helpers(server, tab):
    """The event-stream parser and the MNIST-style centring, run in the page's own modules."""
    page = tab.page
    page.goto(server.url + "/")
    events = page.evaluate(
        """async () => {
            const { parseEvents } = await import('/static/js/sse.js');
            const text = 'event: epoch\\r\\nid: 1-0\\r\\ndata: {"epoch": 1}\\r\\n\\r\\n: keep-alive\\n\\nevent: ai_event\\nid: 1-1\\ndata: {"kind"';
            const [first, rest] = parseEvents(text);
            const [second] = parseEvents(rest + ': "insight"}\\n\\n');
            return [...first, ...second];
        }"""
    )
    assert events == [
        {"event": "epoch", "id": "1-0", "data": '{"epoch": 1}'},
        {"event": "ai_event", "id": "1-1", "data": '{"kind": "insight"}'},
    ]
    # a small blob drawn in a corner comes out scaled to a 20-pixel box, centred by mass in 28x28
    box = page.evaluate(
        """async () => {
            const { DigitPad } = await import('/static/js/digit.js');
            const canvas = document.createElement('canvas');
            canvas.width = canvas.height = 280;
            const pad = new DigitPad(canvas, null);
            const ctx = canvas.getContext('2d');
            ctx.fillStyle = '#fff';
            ctx.fillRect(10, 20, 30, 60);
            const px = pad.pixels();
            let mass = 0, mx = 0, my = 0, x0 = 28, x1 = -1, y0 = 28, y1 = -1;
            px.forEach((v, i) => {
                const x = i % 28, y = Math.floor(i / 28);
                mass += v; mx += (x + 0.5) * v; my += (y + 0.5) * v;
                if (v > 0.05) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
            });
            return { n: px.length, max: Math.max(...px), cx: mx / mass, cy: my / mass, w: x1 - x0 + 1, h: y1 - y0 + 1 };
        }"""
    )
    assert box["n"] == 784 and 0.99 <= box["max"] <= 1.0
    assert box["h"] == 20 and box["w"] == 10, box
    assert abs(box["cx"] - 14) <= 0.5 and abs(box["cy"] - 14) <= 0.5, box
    tab.assert_no_errors()


def test_api_key_modal(tmp_path, browser):
    key = "fk-browser-test-key-0123456789"
    live = LiveServer(tmp_path / "data", OUTPUT / "logs" / "test_browser_api_key.log", FORGEML_API_KEY=key)
    live.start()
    tab, context = open_tab(browser)
    try:
        page = tab.page
        page.goto(live.url + "/")
        modal = page.locator("#api-key-modal")
        expect(modal).to_be_visible()
        expect(page.locator("#providers .provider")).to_have_count(0)

        page.fill("#api-key-input", "not-the-key")
        page.click("#api-key-save")
        expect(page.locator("#api-key-error")).to_contain_text("refused")
        expect(modal).to_be_visible()
        tab.shot("04-api-key-refused")

        page.fill("#api-key-input", key)
        page.click("#api-key-save")
        expect(modal).to_be_hidden()
        expect(page.locator("#providers .provider[data-provider]")).to_have_count(len(PROVIDERS) + 1)
        assert page.evaluate("() => sessionStorage.getItem('forgeml.apiKey')") == key
        expect(page.locator("#forget-key")).to_be_visible()

        # later calls carry the key: no second prompt
        page.click('a[data-nav="jobs"]')
        expect(page.locator("#jobs-list")).to_contain_text("No training jobs yet")
        page.click('a[data-nav="models"]')
        expect(page.locator("#models-list")).to_contain_text("No models yet")
        expect(modal).to_be_hidden()
        expect(page.locator("#error-banner")).to_be_hidden()
        tab.shot("04-api-key-accepted")
        # the first calls and the wrong key were answered 401, as they should be; nothing else
        tab.assert_no_errors(allowed=(REFUSED_401,))
    finally:
        context.close()
        live.stop()
