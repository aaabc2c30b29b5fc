"""Structured logs and Prometheus metrics.

Logs are one JSON object a line on the ``forgeml`` loggers. The access log
records method, route template, status and duration, never headers or bodies,
so a bearer token cannot reach it. Metrics live in a registry of the app's own
(several apps in one process, as in tests, do not collide).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "AICallsPruner",
    "JsonFormatter",
    "Metrics",
    "ObservabilityMiddleware",
    "configure_logging",
    "job_ai_totals",
    "prune_ai_calls",
]

access_log = logging.getLogger("forgeml.server.access")
log = logging.getLogger("forgeml.server.observability")
AI_CALLS_PRUNE_EVERY = 600.0  # seconds between two sweeps of the ai_calls table (AICallsPruner)


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


# ------------------------------------------------------------- the AI calls of training jobs, in the database
def job_ai_totals(db) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, int, int, float]]]:
    """Totals of the AI calls training jobs made: ``(provider, task, outcome, calls)`` rows, and
    ``(provider, input tokens, output tokens, cost)`` by provider. The ``ai_calls`` rows still kept and the
    roll-up of those pruned (``ai_call_totals``) are summed in one statement, so a prune that commits meanwhile
    never makes a call count twice or not at all."""
    from sqlalchemy import func, literal, select, union_all

    from .db import AICallRow, AICallTotalRow

    kept = select(
        AICallRow.provider.label("provider"),
        AICallRow.task.label("task"),
        AICallRow.outcome.label("outcome"),
        literal(1).label("calls"),
        AICallRow.input_tokens.label("input_tokens"),
        AICallRow.output_tokens.label("output_tokens"),
        AICallRow.cost_usd.label("cost_usd"),
    )
    pruned = select(
        AICallTotalRow.provider,
        AICallTotalRow.task,
        AICallTotalRow.outcome,
        AICallTotalRow.calls,
        AICallTotalRow.input_tokens,
        AICallTotalRow.output_tokens,
        AICallTotalRow.cost_usd,
    )
    both = union_all(kept, pruned).subquery()
    query = select(
        both.c.provider,
        both.c.task,
        both.c.outcome,
        func.sum(both.c.calls),
        func.sum(both.c.input_tokens),
        func.sum(both.c.output_tokens),
        func.sum(both.c.cost_usd),
    ).group_by(both.c.provider, both.c.task, both.c.outcome)
    with db.session() as s:
        rows = s.execute(query).all()
    calls, usage = [], {}
    for provider, task, outcome, n, tokens_in, tokens_out, cost in rows:
        calls.append((provider, task, outcome, int(n or 0)))
        total = usage.setdefault(provider, [0, 0, 0.0])
        total[0] += int(tokens_in or 0)
        total[1] += int(tokens_out or 0)
        total[2] += float(cost or 0.0)
    return calls, [(p, i, o, c) for p, (i, o, c) in usage.items()]


def prune_ai_calls(db, max_rows: int, max_age: float, *, batch: int = 5000, now: float | None = None) -> int:
    """Delete the ``ai_calls`` rows beyond the newest ``max_rows`` or older than ``max_age`` seconds, after
    adding them into ``ai_call_totals`` (by provider, task and outcome: calls, tokens, cost), so the job totals
    ``/metrics`` reports never drop. Returns how many rows went.

    Each transaction deletes at most ``batch`` rows with ``DELETE ... RETURNING`` and adds what it deleted to
    the totals before it commits: a row is either still in ``ai_calls`` or counted in the totals, never both,
    even with several processes pruning at once (PostgreSQL skips the rows another transaction deleted;
    SQLite runs one writer at a time)."""
    if max_rows < 1 or not max_age > 0:
        raise ValueError(f"prune_ai_calls: max_rows must be >= 1 and max_age > 0, got {max_rows} and {max_age}")
    from sqlalchemy import delete, or_, select

    from .db import AICallRow

    cutoff = (time.time() if now is None else now) - max_age
    deleted = 0
    while True:
        # the id of the max_rows-th newest row: everything older than it is surplus (none when fewer rows)
        newest_kept = select(AICallRow.id).order_by(AICallRow.id.desc()).offset(max_rows - 1).limit(1).scalar_subquery()
        doomed = (
            select(AICallRow.id)
            .where(or_(AICallRow.created < cutoff, AICallRow.id < newest_kept))
            .order_by(AICallRow.id)
            .limit(batch)
        )
        statement = (
            delete(AICallRow)
            .where(AICallRow.id.in_(doomed))
            .returning(
                AICallRow.provider,
                AICallRow.task,
                AICallRow.outcome,
                AICallRow.input_tokens,
                AICallRow.output_tokens,
                AICallRow.cost_usd,
            )
        )
        with db.session() as s:
            rows = s.execute(statement.execution_options(synchronize_session=False)).all()
            if rows:
                _add_to_totals(s, rows)
        deleted += len(rows)
        if len(rows) < batch:
            return deleted


class AICallsPruner:
    """Runs :func:`prune_ai_calls` in a thread at start and every ``every`` seconds (default
    :data:`AI_CALLS_PRUNE_EVERY`) while the server runs: ``start()`` on its event loop, ``await stop()``.
    A sweep that fails (the database away) is logged and tried again at the next one."""

    def __init__(self, db, max_rows: int, max_age: float, every: float | None = None) -> None:
        self.db, self.max_rows, self.max_age = db, max_rows, max_age
        self.every = AI_CALLS_PRUNE_EVERY if every is None else every
        self.pruned = 0  # rows pruned since start
        self._task: asyncio.Task | None = None

    def start(self) -> AICallsPruner:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="forgeml-ai-calls-pruner")
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                n = await asyncio.to_thread(prune_ai_calls, self.db, self.max_rows, self.max_age)
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("pruning ai_calls failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            else:
                self.pruned += n
                if n:
                    log.info("pruned ai_calls", extra={"rows": n})
            await asyncio.sleep(self.every)


def _add_to_totals(session, rows) -> None:
    """Add deleted ``ai_calls`` rows to ``ai_call_totals`` (an upsert per provider, task and outcome)."""
    from .db import AICallTotalRow

    sums: dict[tuple[str, str, str], list] = {}
    for provider, task, outcome, tokens_in, tokens_out, cost in rows:
        total = sums.setdefault((provider, task, outcome), [0, 0, 0, 0.0])
        total[0] += 1
        total[1] += int(tokens_in or 0)
        total[2] += int(tokens_out or 0)
        total[3] += float(cost or 0.0) if math.isfinite(cost or 0.0) else 0.0
    values = [
        {
            "provider": p,
            "task": t,
            "outcome": o,
            "calls": n,
            "input_tokens": i,
            "output_tokens": out,
            "cost_usd": c,
            "updated": time.time(),
        }
        for (p, t, o), (n, i, out, c) in sums.items()
    ]
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        table = AICallTotalRow.__table__
        statement = insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.provider, table.c.task, table.c.outcome],
            set_={
                "calls": table.c.calls + statement.excluded.calls,
                "input_tokens": table.c.input_tokens + statement.excluded.input_tokens,
                "output_tokens": table.c.output_tokens + statement.excluded.output_tokens,
                "cost_usd": table.c.cost_usd + statement.excluded.cost_usd,
                "updated": statement.excluded.updated,
            },
        )
        session.execute(statement, values)
        return
    for v in values:  # another database: read, then add (the DELETE before holds the rows it counted)
        row = session.get(AICallTotalRow, (v["provider"], v["task"], v["outcome"]), with_for_update=True)
        if row is None:
            session.add(AICallTotalRow(**v))
        else:
            row.calls += v["calls"]
            row.input_tokens += v["input_tokens"]
            row.output_tokens += v["output_tokens"]
            row.cost_usd += v["cost_usd"]
            row.updated = v["updated"]


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
