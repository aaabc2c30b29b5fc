"""Structured logs and Prometheus metrics.

Logs are one JSON object a line on the ``forgeml`` loggers. The access log
records method, route template, status and duration, never headers or bodies,
so a bearer token cannot reach it. Metrics live in a registry of the app's own
(several apps in one process, as in tests, do not collide).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["JsonFormatter", "Metrics", "ObservabilityMiddleware", "configure_logging"]

access_log = logging.getLogger("forgeml.server.access")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra}`` on one line."""

    _standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self._standard and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", stream=None) -> None:
    """JSON lines on stderr for ForgeML's loggers (idempotent)."""
    logger = logging.getLogger("forgeml")
    logger.setLevel(level)
    if not any(getattr(h, "_forgeml", False) for h in logger.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._forgeml = True
        logger.addHandler(handler)
    logger.propagate = False


def outcome_label(outcome: str) -> str:
    """A bounded label for an AI call's audit outcome: ``ok``, ``cache hit``, ``invalid output`` or
    ``error: <ErrorType>``, without the free-text detail (which would make one series per message)."""
    head, _, rest = outcome.partition(": ")
    if head == "error" and rest:
        return f"error: {rest.partition(':')[0].strip()[:40]}"
    return head[:40]


class Metrics:
    """The platform's Prometheus series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "forgeml_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "forgeml_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.jobs = Gauge("forgeml_jobs", "training jobs by state", ["state"], registry=r)
        self.ai_calls = Counter(
            "forgeml_ai_calls",
            "AI provider calls by provider, task and outcome",
            ["provider", "task", "outcome"],
            registry=r,
        )
        self.ai_tokens = Counter(
            "forgeml_ai_tokens", "AI tokens by provider and direction", ["provider", "direction"], registry=r
        )
        self.ai_cost = Counter("forgeml_ai_cost_usd", "AI spend in US dollars by provider", ["provider"], registry=r)
        self.job_ai = JobAICollector()
        r.register(self.job_ai)

    def record_ai_call(self, record) -> None:
        """A listener for the orchestrator's audit records."""
        self.ai_calls.labels(record.provider, record.task, outcome_label(record.outcome)).inc()
        if record.input_tokens:
            self.ai_tokens.labels(record.provider, "input").inc(record.input_tokens)
        if record.output_tokens:
            self.ai_tokens.labels(record.provider, "output").inc(record.output_tokens)
        if record.cost_usd:
            self.ai_cost.labels(record.provider).inc(record.cost_usd)


class JobAICollector:
    """The AI calls training jobs made (in their worker processes, stored in the database), as counters:
    ``forgeml_job_ai_calls_total``, ``forgeml_job_ai_tokens_total`` and ``forgeml_job_ai_cost_usd_total``.
    ``update`` is given fresh totals from the database before each scrape."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, int]] = []  # (provider, task, outcome, count)
        self.usage: list[tuple[str, int, int, float]] = []  # (provider, input tokens, output tokens, cost)

    def update(self, calls, usage) -> None:
        self.calls, self.usage = list(calls), list(usage)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        calls = CounterMetricFamily(
            "forgeml_job_ai_calls", "AI provider calls made by training jobs", labels=["provider", "task", "outcome"]
        )
        for provider, task, outcome, count in self.calls:
            calls.add_metric([provider, task, outcome], count)
        tokens = CounterMetricFamily(
            "forgeml_job_ai_tokens", "AI tokens used by training jobs", labels=["provider", "direction"]
        )
        cost = CounterMetricFamily(
            "forgeml_job_ai_cost_usd", "AI spend of training jobs in US dollars", labels=["provider"]
        )
        for provider, input_tokens, output_tokens, dollars in self.usage:
            tokens.add_metric([provider, "input"], input_tokens)
            tokens.add_metric([provider, "output"], output_tokens)
            cost.add_metric([provider], dollars)
        yield from (calls, tokens, cost)


class ObservabilityMiddleware:
    """Pure ASGI (cheap, and safe for streamed responses): counts, times and logs every HTTP request."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "static" if scope["path"].startswith("/static/") else "unmatched"
            )
            method = scope["method"]
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(elapsed)
            if template != "/metrics":
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
