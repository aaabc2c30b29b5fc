"""A fake AI-provider server on loopback, speaking the wire protocols the official SDKs use.

One real HTTP server (``ThreadingHTTPServer`` on 127.0.0.1, a free port, in a
daemon thread) serves five routes, each under its own path prefix so a test
points a real SDK client at it through ``ProviderConfig.base_url``:

==========  ==================================  ==================================================
route       base URL (``server.base_url(r)``)   endpoint the SDK calls
==========  ==================================  ==================================================
openai      ``{url}/openai/v1``                 ``POST /openai/v1/chat/completions``
xai         ``{url}/xai/v1``                    ``POST /xai/v1/chat/completions``
perplexity  ``{url}/perplexity``                ``POST /perplexity/chat/completions`` (+ sources, cost)
anthropic   ``{url}/anthropic``                 ``POST /anthropic/v1/messages``
gemini      ``{url}/gemini``                    ``POST /gemini/v1beta/models/{model}:generateContent``
==========  ==================================  ==================================================

Each route is scripted with a queue of actions (``server.script("openai",
answer({...}), http_error(429, retry_after="3"))``); when its queue is empty a
route plays its default (a small well-formed answer). Every request is
recorded (path, query, headers, JSON body) in ``server.requests``.

Use it as a context manager, or through a pytest fixture that starts and stops it::

    with FakeProviderServer() as server:
        server.script("anthropic", answer({"ok": True}))
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "DEFAULT_CITATIONS",
    "DEFAULT_COST",
    "DEFAULT_SEARCH_RESULTS",
    "ROUTES",
    "Action",
    "FakeProviderServer",
    "RecordedRequest",
    "answer",
    "answer_text",
    "http_error",
    "malformed_body",
    "slow",
]

ROUTES = ("openai", "xai", "perplexity", "anthropic", "gemini")
_OPENAI_STYLE = ("openai", "xai", "perplexity")

DEFAULT_CITATIONS = ["https://arxiv.org/abs/1711.05101", "https://arxiv.org/abs/1608.03983"]
DEFAULT_SEARCH_RESULTS = [
    {
        "title": "Decoupled Weight Decay Regularization",
        "url": "https://arxiv.org/abs/1711.05101",
        "date": "2017-11-14",
        "last_updated": "2019-01-04",
        "snippet": "L2 regularization and weight decay are not identical for adaptive gradient methods.",
    },
    {
        "title": "SGDR: Stochastic Gradient Descent with Warm Restarts",
        "url": "https://arxiv.org/abs/1608.03983",
        "date": "2016-08-13",
    },
]
DEFAULT_COST = {"input_tokens_cost": 0.0003, "output_tokens_cost": 0.0015, "request_cost": 0.006, "total_cost": 0.0078}
_UNSET: Any = object()


# ----------------------------------------------------------------- actions
@dataclass(frozen=True)
class Action:
    """What the server does with one request. Build these with the helpers below."""

    kind: str  # "answer" (a model reply carrying ``text``), "error" (an HTTP error), "raw" (any body)
    text: str = ""
    status: int = 200
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncated: bool = False
    usage: tuple[int, int] = (17, 9)
    extras: dict[str, Any] = field(default_factory=dict)  # Perplexity: citations, search_results, cost
    content_type: str = "application/json"


def answer(obj: Any, *, delay: float = 0.0, usage: tuple[int, int] = (17, 9), **extras: Any) -> Action:
    """A well-formed reply whose model output is ``json.dumps(obj)``.

    For Perplexity, ``citations=``, ``search_results=`` and ``cost=`` replace
    the defaults; pass ``None`` to leave a field out of the response.
    """
    return Action(kind="answer", text=json.dumps(obj), delay=delay, usage=usage, extras=extras)


def answer_text(text: str, *, truncated: bool = False, delay: float = 0.0, usage: tuple[int, int] = (17, 9)) -> Action:
    """A well-formed reply whose model output is ``text`` verbatim (e.g. invalid JSON); ``truncated`` marks it
    as cut off at the token limit (finish reason ``length`` / ``max_tokens`` / ``MAX_TOKENS``)."""
    return Action(kind="answer", text=text, truncated=truncated, delay=delay, usage=usage)


def http_error(
    status: int,
    message: str = "",
    *,
    retry_after: str | None = None,
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> Action:
    """An HTTP error in the route's own error format; ``retry_after`` sets the Retry-After header."""
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["Retry-After"] = retry_after
    return Action(
        kind="error", status=status, message=message or f"fake error {status}", headers=all_headers, delay=delay
    )


def malformed_body(body: str = "<html><body>502 Bad Gateway</body></html>", status: int = 200) -> Action:
    """A response that is not the protocol at all (an HTML page from a proxy, say)."""
    return Action(kind="raw", text=body, status=status, content_type="text/html")


def slow(seconds: float, then: Action) -> Action:
    """``then``, but only after ``seconds`` (the server waits; a client with a shorter timeout gives up)."""
    return replace(then, delay=seconds)


# ----------------------------------------------------------------- requests
@dataclass
class RecordedRequest:
    route: str | None
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or the raw text when it was not JSON
    received_at: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


# ----------------------------------------------------------------- protocol bodies
def _openai_body(route: str, request: RecordedRequest, action: Action) -> dict[str, Any]:
    prompt, completion = action.usage
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": (request.body or {}).get("model", "unknown"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": action.text, "refusal": None},
                "finish_reason": "length" if action.truncated else "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    if route == "perplexity":
        citations = action.extras.get("citations", DEFAULT_CITATIONS)
        results = action.extras.get("search_results", DEFAULT_SEARCH_RESULTS)
        cost = action.extras.get("cost", DEFAULT_COST)
        if citations is not None:
            body["citations"] = citations
        if results is not None:
            body["search_results"] = results
        body["usage"]["search_context_size"] = "low"
        if cost is not None:
            body["usage"]["cost"] = cost
    return body


def _anthropic_body(request: RecordedRequest, action: Action) -> dict[str, Any]:
    prompt, completion = action.usage
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": (request.body or {}).get("model", "unknown"),
        "content": [{"type": "text", "text": action.text}],
        "stop_reason": "max_tokens" if action.truncated else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }


def _gemini_body(model: str, action: Action) -> dict[str, Any]:
    prompt, completion = action.usage
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": action.text}]},
                "finishReason": "MAX_TOKENS" if action.truncated else "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
        },
        "modelVersion": model,
        "responseId": "fake-response",
    }


_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip
_ANTHROPIC_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}  # fmt: skip


def _error_body(route: str, action: Action) -> dict[str, Any]:
    if route == "anthropic":
        kind = _ANTHROPIC_TYPE.get(action.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": action.message}}
    if route == "gemini":
        status = _GOOGLE_STATUS.get(action.status, "UNKNOWN")
        return {"error": {"code": action.status, "message": action.message, "status": status}}
    return {"error": {"message": action.message, "type": "fake_error", "code": str(action.status)}}


# ----------------------------------------------------------------- server
class FakeProviderServer:
    """The fake server. ``start()``/``stop()`` or ``with FakeProviderServer() as server:``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Action]] = {route: deque() for route in ROUTES}
        self._defaults: dict[str, Action] = {route: answer({"ok": True}) for route in ROUTES}
        self._stopping = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._httpd = ThreadingHTTPServer((host, 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> FakeProviderServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.005}, name="fake-providers", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers that are waiting out a delay
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # addresses
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def base_url(self, route: str) -> str:
        """What to put in ``ProviderConfig.base_url`` for ``route``."""
        suffix = {"openai": "/openai/v1", "xai": "/xai/v1", "perplexity": "/perplexity", "anthropic": "/anthropic",
                  "gemini": "/gemini"}  # fmt: skip
        return self.url + suffix[route]

    # scripting
    def script(self, route: str, *actions: Action) -> None:
        """Queue ``actions`` for the next requests to ``route``, in order."""
        with self._lock:
            self._queues[route].extend(actions)

    def set_default(self, route: str, action: Action) -> None:
        """What ``route`` does once its queue is empty."""
        with self._lock:
            self._defaults[route] = action

    def requests_for(self, route: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.route == route]

    def _next(self, route: str) -> Action:
        with self._lock:
            queue = self._queues[route]
            return queue.popleft() if queue else self._defaults[route]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # dispatch: returns (status, headers, body bytes)
    def _respond(self, request: RecordedRequest) -> tuple[int, dict[str, str], bytes, float]:
        route = request.route
        model = None
        if request.method != "POST" or route is None:
            return _json(404, {"error": {"message": f"no such endpoint: {request.method} {request.path}"}}, 0.0)
        rest = request.path[len(route) + 1 :]
        if route in ("openai", "xai"):
            ok = rest == "/v1/chat/completions"
        elif route == "perplexity":
            ok = rest == "/chat/completions"
        elif route == "anthropic":
            ok = rest == "/v1/messages"
        else:
            ok = rest.startswith("/v1beta/models/") and rest.endswith(":generateContent")
            model = rest[len("/v1beta/models/") : -len(":generateContent")]
        if not ok:
            return _json(404, _error_body(route, http_error(404, f"no such endpoint: {request.path}")), 0.0)
        action = self._next(route)
        if action.kind == "raw":
            headers = {"Content-Type": action.content_type, **action.headers}
            return action.status, headers, action.text.encode(), action.delay
        if action.kind == "error":
            status, headers, body, _ = _json(action.status, _error_body(route, action), 0.0)
            return status, {**headers, **action.headers}, body, action.delay
        if route in _OPENAI_STYLE:
            payload = _openai_body(route, request, action)
        elif route == "anthropic":
            payload = _anthropic_body(request, action)
        else:
            payload = _gemini_body(model or "unknown", action)
        status, headers, body, _ = _json(200, payload, 0.0)
        return status, {**headers, **action.headers}, body, action.delay


def _json(status: int, payload: Any, delay: float) -> tuple[int, dict[str, str], bytes, float]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode(), delay


def _make_handler(server: FakeProviderServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            raw = self._read_body()
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            first = path.strip("/").split("/", 1)[0]
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            request = RecordedRequest(
                route=first if first in ROUTES else None,
                method=self.command,
                path=path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                received_at=time.monotonic(),
            )
            server._record(request)
            status, headers, payload, delay = server._respond(request)
            if delay and server._stopping.wait(delay):
                self.close_connection = True
                return
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                self.close_connection = True

        do_POST = _handle
        do_GET = _handle

    return Handler
