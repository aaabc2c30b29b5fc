"""``/v1/jobs``: start, list, inspect, cancel and resume training jobs, and follow them live (SSE)."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from sqlalchemy import func

from .. import limits
from ..db import AIEventRow, DatasetRow, EpochRow, JobRow, new_id, select
from ..schemas import JobCreate, JobOut, error_responses, preset_catalogue
from ..settings import DeviceUnavailableError, resolve_device

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

TERMINAL = ("completed", "failed", "cancelled", "interrupted")
BUILTIN = {"mnist": ([784], 10), "spam": (None, 2)}  # spam's input is [max_length] token ids


NO_JOB = {404: "No job has this id."}
# OpenAPI links from a job (created, or first in the list) to the operations on it, for clients and for
# stateful testing (tests/server/test_schemathesis.py follows them)
JOB_LINKS = {
    "GetJob": {"operationRef": "#/paths/~1v1~1jobs~1{job_id}/get", "parameters": {"job_id": "$response.body#/id"}},
    "CancelJob": {
        "operationRef": "#/paths/~1v1~1jobs~1{job_id}~1cancel/post",
        "parameters": {"job_id": "$response.body#/id"},
    },
    "ResumeJob": {
        "operationRef": "#/paths/~1v1~1jobs~1{job_id}~1resume/post",
        "parameters": {"job_id": "$response.body#/id"},
    },
    "JobEvents": {
        "operationRef": "#/paths/~1v1~1jobs~1{job_id}~1events/get",
        "parameters": {"job_id": "$response.body#/id"},
    },
}


# One event of /events (OpenAPI 3.1: an event stream's schema describes each of its events)
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["state", "epoch", "ai_event", "end"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "state and end: the job, as the list gives it; epoch: the epoch's metrics; ai_event: the "
            "AI event",
        },
        "id": {"type": "string", "description": "'<epoch>-<event>': send it as Last-Event-ID to resume after it"},
    },
    "required": ["event", "data"],
}


def _links_to_first(links: dict) -> dict:
    """``links`` (from one item) as links from a list response to its first item."""
    return {
        name: {**link, "parameters": {k: v.replace("#/", "#/0/") for k, v in link["parameters"].items()}}
        for name, link in links.items()
    }


def job_out(job: JobRow, *, detail: bool = False, history=None, events=None) -> JobOut:
    summary = dict(job.summary) if detail and job.summary else None
    profile = summary.pop("profile", None) if summary else None  # stored in the summary, answered on its own
    return JobOut(
        id=job.id,
        name=job.name,
        state=job.state,
        epochs=job.epochs,
        epochs_done=job.epochs_done,
        best_val_accuracy=job.best_val_accuracy,
        error=job.error,
        model_id=job.model_id,
        dataset=job.request.get("dataset", ""),
        ai_enabled=job.request.get("ai") is not None,
        processes=job.request.get("processes", 1),
        created=job.created,
        started=job.started,
        finished=job.finished,
        request=job.request if detail else None,
        history=history,
        events=events,
        summary=summary or None,
        profile=profile,
    )


def _task_of(db, body: JobCreate) -> tuple[list[int], int]:
    if body.dataset in BUILTIN:
        shape, classes = BUILTIN[body.dataset]
        return (shape or [body.max_length]), classes
    row = db.get(DatasetRow, body.dataset)
    if row is None:
        raise RequestValidationError(
            [
                {
                    "loc": ["body", "dataset"],
                    "msg": f"no dataset {body.dataset!r}: use 'mnist', 'spam' or an uploaded dataset's id",
                    "type": "value_error",
                }
            ]
        )
    return [row.summary["features"]], row.summary["num_classes"]


def _check_model(db, body: JobCreate) -> None:
    """422 naming the layer when the spec does not map the dataset's inputs to its classes."""
    shape, classes = _task_of(db, body)
    try:
        body.model.check_task(shape, classes)
    except ValueError as exc:
        message = str(exc)
        loc = ["body", "model", "layers"]
        index = _layer_index(message)
        raise RequestValidationError(
            [{"loc": [*loc, index] if index is not None else ["body", "model"], "msg": message, "type": "value_error"}]
        ) from None
    if body.dataset == "spam" and body.model.layers[0].type not in ("Embedding", "EmbeddingLayer"):
        raise RequestValidationError(
            [
                {
                    "loc": ["body", "model", "layers", 0],
                    "msg": "a text dataset needs an Embedding first layer",
                    "type": "value_error",
                }
            ]
        )


def _check_limits(db, settings, body: JobCreate, *, epochs: int | None = None, where=("body",), what="the job"):
    """422 when the job's estimate (forgeml.server.limits: parameters, memory, samples) is over one of this
    server's limits; each error's ``loc`` names the field to change, its message the estimate, the limit and
    the setting that raises it (also in ``ctx``)."""
    shape, _ = _task_of(db, body)
    row = None if body.dataset in BUILTIN else db.get(DatasetRow, body.dataset)
    train_rows, test_rows = limits.dataset_size(body, None if row is None else row.summary)
    try:
        estimate = limits.estimate_job(body, shape, train_rows, test_rows=test_rows, epochs=epochs)
    except (TypeError, ValueError, ArithmeticError):  # an argument the model cannot be built with either: the
        return  # worker fails the job saying why
    exceeded = limits.check_job(estimate, settings, what=what)
    if exceeded:
        raise RequestValidationError(
            [
                {
                    "loc": [*where, e.field],
                    "msg": e.message,
                    "type": "value_error",
                    "ctx": {"setting": e.variable, "limit": e.limit, "estimate": e.estimate},
                }
                for e in exceeded
            ]
        )


def _check_resume_limits(db, settings, job: JobRow) -> None:
    """A resumed job, against limits that may have been lowered since it started: 422 with ``loc``
    ``["request", field]`` (the field of the job's stored request). A request that no longer validates, or
    whose dataset is gone, is left to the worker, which fails the job saying why."""
    from pydantic import ValidationError

    try:
        body = JobCreate.model_validate(job.request)
        epochs_left = max(0, (body.epochs or 0) - (job.epochs_done or 0))
        _check_limits(db, settings, body, epochs=epochs_left, where=("request",), what=f"resuming job {job.id}")
    except RequestValidationError as exc:
        if any(error.get("loc", [None])[0] == "request" for error in exc.errors()):
            raise
    except (ValidationError, ValueError, KeyError, TypeError):
        pass


def _layer_index(message: str) -> int | None:
    import re

    match = re.search(r"layer (\d+)", message)
    return int(match.group(1)) if match else None


def _get_job(db, job_id: str) -> JobRow:
    job = db.get(JobRow, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job


def _check_device(device: str) -> None:
    """422 when the job names a device this server does not have (before anything is queued)."""
    try:
        resolve_device(device)
    except DeviceUnavailableError as exc:
        raise RequestValidationError([{"loc": ["body", "device"], "msg": str(exc), "type": "value_error"}]) from None


def _check_processes(processes: int, cap: int) -> None:
    """422 when the job asks for more processes than this server allows, or for several without MPI."""

    def refuse(message: str):
        raise RequestValidationError([{"loc": ["body", "processes"], "msg": message, "type": "value_error"}])

    if processes > cap:
        refuse(
            f"processes must be at most {cap} on this server (its max_processes, FORGEML_MAX_PROCESSES); "
            f"got {processes}"
        )
    if processes > 1:
        from ..worker import mpi_unavailable

        reason = mpi_unavailable()
        if reason is not None:
            refuse(f"a job on {processes} processes needs MPI, which this server lacks: {reason}")


@router.post("", status_code=201, response_model=JobOut, responses={201: {"links": JOB_LINKS}})
async def create_job(request: Request, body: JobCreate) -> JobOut:
    """Start a training job from a preset (``{"preset": "mnist_mlp"}``) or a full spec."""
    db, manager = request.app.state.db, request.app.state.jobs
    await run_in_threadpool(_check_model, db, body)
    if body.device is not None:
        _check_device(body.device)
    _check_processes(body.processes, request.app.state.settings.max_processes)
    await run_in_threadpool(_check_limits, db, request.app.state.settings, body)
    job = JobRow(
        id=new_id("job"), name=body.name, state="queued", request=body.model_dump(mode="json"), epochs=body.epochs
    )

    def insert():
        with db.session() as s:
            s.add(job)

    await run_in_threadpool(insert)
    manager.submit(job.id)
    return job_out(job)


@router.get("", response_model=list[JobOut], responses={200: {"links": _links_to_first(JOB_LINKS)}})
async def list_jobs(request: Request, limit: int = 100) -> list[JobOut]:
    """The latest jobs, newest first."""
    db = request.app.state.db
    rows = await run_in_threadpool(
        db.all, select(JobRow).order_by(JobRow.created.desc()).limit(max(1, min(limit, 1000)))
    )
    return [job_out(j) for j in rows]


def _detail(db, job_id: str) -> JobOut:
    job = _get_job(db, job_id)
    # the JSON columns alone: building an ORM object per epoch took half of this route's time on long jobs
    history = db.all(select(EpochRow.metrics).where(EpochRow.job_id == job_id).order_by(EpochRow.id))
    events = db.all(select(AIEventRow.event).where(AIEventRow.job_id == job_id).order_by(AIEventRow.id))
    return job_out(job, detail=True, history=history, events=events)


@router.get("/presets")
async def presets() -> dict:
    """The presets a job can start from with one field, with their defaults (each can be overridden)."""
    return preset_catalogue()


@router.get(
    "/{job_id}",
    response_model=JobOut,
    responses={
        200: {
            "links": {
                "GetModel": {
                    "operationRef": "#/paths/~1v1~1models~1{model_id}/get",
                    "parameters": {"model_id": "$response.body#/model_id"},
                    "description": "the model the job trained (model_id is null until it completes)",
                }
            }
        },
        **error_responses(NO_JOB),
    },
)
async def get_job(request: Request, job_id: str) -> JobOut:
    """A job with its request, per-epoch history, AI events and summary."""
    return await run_in_threadpool(_detail, request.app.state.db, job_id)


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses=error_responses(
        {**NO_JOB, 409: "The job is over already (completed, failed, cancelled or interrupted)."}
    ),
)
async def cancel_job(request: Request, job_id: str) -> JobOut:
    """A queued job ends cancelled without training; a running one stops between batches (a job on several
    processes at its next epoch boundary); resume continues from the last finished epoch."""
    db, manager = request.app.state.db, request.app.state.jobs
    job = await run_in_threadpool(_get_job, db, job_id)
    if job.state in TERMINAL:
        raise HTTPException(409, f"job {job_id} is already {job.state}")
    await run_in_threadpool(manager.cancel, job_id)
    return job_out(await run_in_threadpool(_get_job, db, job_id))


@router.post(
    "/{job_id}/resume",
    response_model=JobOut,
    responses=error_responses({**NO_JOB, 409: "The job is queued, running or completed: nothing to resume."}),
)
async def resume_job(request: Request, job_id: str) -> JobOut:
    """Continue an interrupted, cancelled or failed job from its last checkpoint."""
    db, manager = request.app.state.db, request.app.state.jobs
    job = await run_in_threadpool(_get_job, db, job_id)
    if job.state not in ("interrupted", "cancelled", "failed"):
        raise HTTPException(409, f"job {job_id} is {job.state}; only interrupted, cancelled or failed jobs resume")
    await run_in_threadpool(_check_resume_limits, db, request.app.state.settings, job)
    await run_in_threadpool(manager.resume, job_id)
    return job_out(await run_in_threadpool(_get_job, db, job_id))


def _new_rows(db, job_id: str, after_epoch: int, after_event: int):
    with db.session() as s:
        job = s.get(JobRow, job_id)
        epochs = list(
            s.scalars(
                select(EpochRow).where(EpochRow.job_id == job_id, EpochRow.id > after_epoch).order_by(EpochRow.id)
            )
        )
        events = list(
            s.scalars(
                select(AIEventRow)
                .where(AIEventRow.job_id == job_id, AIEventRow.id > after_event)
                .order_by(AIEventRow.id)
            )
        )
        return job, epochs, events


def _sse(event: str, data, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data, default=str)}")
    return "\n".join(lines) + "\n\n"


def _resume_point(last_event_id: str | None) -> tuple[int, int]:
    try:
        a, b = (last_event_id or "0-0").split("-")
        return int(a), int(b)
    except ValueError:
        return 0, 0


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,  # no media type of its own: the errors stay documented as JSON
    responses={
        200: {
            "description": "The job's events, as Server-Sent Events.",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        },
        **error_responses(NO_JOB),
    },
)
async def job_events(request: Request, job_id: str, poll: float = 0.25):
    """Server-Sent Events: ``state`` on connect and on each change, ``epoch`` per finished epoch, ``ai_event``
    per AI event, in order, then ``end`` when the job is over. Every stored epoch and AI event is sent before
    the terminal ``state`` (``completed``, ``failed``, ``cancelled``, ``interrupted``), which is the last event
    before ``end``. ``Last-Event-ID`` resumes a dropped stream."""
    db = request.app.state.db
    await run_in_threadpool(_get_job, db, job_id)
    after_epoch, after_event = _resume_point(request.headers.get("last-event-id"))
    poll = min(max(poll, 0.05), 5.0)

    async def stream():
        nonlocal after_epoch, after_event
        last_state = None
        rows_since_state = False
        idle = 0.0

        def rows_sse(epochs, events) -> list[str]:
            nonlocal after_epoch, after_event
            out = []
            # in training order: an epoch's metrics, then the AI events at its end
            merged = sorted([(r.epoch, 0, r.id, r) for r in epochs] + [(r.epoch, 1, r.id, r) for r in events])
            for _, is_event, _, row in merged:
                if is_event:
                    after_event = row.id
                    out.append(_sse("ai_event", row.event, f"{after_epoch}-{after_event}"))
                else:
                    after_epoch = row.id
                    out.append(_sse("epoch", row.metrics, f"{after_epoch}-{after_event}"))
            return out

        while True:
            # the job is read before its rows, and a worker commits an epoch's rows before the job's final
            # state: a terminal state read here means every row it follows is visible to this read too
            job, epochs, events = await run_in_threadpool(_new_rows, db, job_id, after_epoch, after_event)
            terminal = job.state in TERMINAL
            if last_state is None or (job.state != last_state and not terminal):
                last_state, rows_since_state = job.state, False  # on connect, and each change while it runs
                yield _sse("state", job_out(job).model_dump(mode="json"))
            for message in rows_sse(epochs, events):
                rows_since_state = True
                yield message
            if terminal:
                while True:  # flush every row not sent yet (however it was committed) before the final state
                    _, epochs, events = await run_in_threadpool(_new_rows, db, job_id, after_epoch, after_event)
                    messages = rows_sse(epochs, events)
                    if not messages:
                        break
                    rows_since_state = True
                    for message in messages:
                        yield message
                if job.state != last_state or rows_since_state:
                    yield _sse("state", job_out(job).model_dump(mode="json"))
                yield _sse("end", job_out(job).model_dump(mode="json"))
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(poll)
            idle += poll
            if idle >= 15:  # a comment keeps proxies from closing an idle stream
                idle = 0.0
                yield ": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def count_by_state(db) -> dict[str, int]:
    with db.session() as s:
        return dict(s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all())
