"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from .. import observability
from ..db import JOB_STATES
from ..security import require_api_key
from .jobs import count_by_state

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready: the body says which check failed (same shape as the 200)."}},
)
async def readyz(request: Request):
    """The database answers, the job pool is running (not being replaced after a worker died) and the device is
    usable; 503 otherwise. ``device`` says where training jobs and predictions run (``cpu`` or ``cuda:N``, with the GPU's name when known)."""
    state = request.app.state
    checks = {}
    try:

        def ping():
            with state.db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        await run_in_threadpool(ping)
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure
        checks["database"] = f"error: {type(exc).__name__}"
    # "ok"; "stopped"; or, after a worker process died, not ready until its replacement pool answers
    checks["jobs"] = await run_in_threadpool(state.jobs.health) if state.jobs is not None else "stopped"
    error = getattr(state, "device_error", None)
    checks["device"] = f"error: {error}" if error else "ok"
    ready = all(v == "ok" for v in checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
        "device": getattr(state, "device_label", None),
    }
    return JSONResponse(body, status_code=200 if ready else 503)


def job_ai_totals(db):
    """Totals of the AI calls training jobs stored: by (provider, task, outcome), and usage by provider; the rows
    still in ``ai_calls`` and the roll-up of those pruned (:func:`~forgeml.server.observability.job_ai_totals`)."""
    return observability.job_ai_totals(db)


async def require_metrics_key(request: Request) -> None:
    """``/metrics`` behind the API key when ``metrics_require_key`` is set (``FORGEML_METRICS_REQUIRE_KEY``)."""
    if request.app.state.settings.metrics_require_key:
        await require_api_key(request)


@router.get(
    "/metrics",
    dependencies=[Depends(require_metrics_key)],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "the metrics in Prometheus text format"},
        401: {
            "description": "missing or wrong API key: only when FORGEML_METRICS_REQUIRE_KEY is true and "
            "FORGEML_API_KEY is set; send 'Authorization: Bearer <FORGEML_API_KEY>'"
        },
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests by route and status with latency histograms, jobs by state,
    AI calls by provider and outcome, tokens and cost.

    Open by default. With ``FORGEML_METRICS_REQUIRE_KEY=true`` and an API key set (``FORGEML_API_KEY``), it
    needs ``Authorization: Bearer <key>`` like the ``/v1`` routes, and answers 401 without it."""
    state = request.app.state
    counts, (calls, usage) = await run_in_threadpool(lambda: (count_by_state(state.db), job_ai_totals(state.db)))
    for job_state in JOB_STATES:
        state.metrics.jobs.labels(job_state).set(counts.get(job_state, 0))
    state.metrics.job_ai.update(calls, usage)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
