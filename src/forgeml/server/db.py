"""Persistence: SQLAlchemy 2 tables for jobs, their epochs and AI events, datasets and models.

SQLite in the data directory by default; ``FORGEML_DATABASE_URL`` selects
another database (PostgreSQL). Artifacts (checkpoints, weights, uploads) are
files in the data directory; rows hold their paths relative to it. Rows never
hold a secret.

A database server that restarts is survived: pooled connections are checked
before use (``pool_pre_ping``), and :meth:`Database.run` runs a transaction
again on a new connection while the server is away (up to
:data:`RECONNECT_SECONDS`); the workers store their epochs through it.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text, create_engine, event, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = [
    "AICallRow",
    "AICallTotalRow",
    "AIEventRow",
    "Base",
    "Database",
    "DatasetRow",
    "EpochRow",
    "JobRow",
    "ModelRow",
    "new_id",
]

JOB_STATES = ("queued", "running", "completed", "failed", "cancelled", "interrupted")
RECONNECT_SECONDS = 60.0  # how long Database.run retries a transaction whose database server went away
log = logging.getLogger("forgeml.server.db")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def json_safe(value):
    """Non-finite floats as the strings the API uses ("NaN", "Infinity", "-Infinity"), at any depth.
    Every JSON column is written through it, so metrics with a NaN loss store on PostgreSQL too."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _json_dumps(obj) -> str:
    """Strict JSON for JSON columns: PostgreSQL's ``json`` type rejects the bare NaN and Infinity tokens."""
    return json.dumps(json_safe(obj), default=str, allow_nan=False)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the validated JobCreate, as JSON
    epochs: Mapped[int] = mapped_column(Integer)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    best_val_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    checkpoint: Mapped[str | None] = mapped_column(String(400), nullable=True)
    model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # EnhancedTrainingMetrics extras
    created: Mapped[float] = mapped_column(Float, default=time.time)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)


class EpochRow(Base):
    __tablename__ = "epochs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Float, default=time.time)


class AIEventRow(Base):
    __tablename__ = "ai_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    event: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Float, default=time.time)


class AICallRow(Base):
    """One AI provider call made by a training job's worker (provider, task, outcome, usage; never a prompt
    or a key), so that ``/metrics`` counts the calls jobs make as well as the API's own."""

    __tablename__ = "ai_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(64))  # observability.outcome_label: bounded, no free text
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created: Mapped[float] = mapped_column(Float, default=time.time, index=True)


class AICallTotalRow(Base):
    """The ``ai_calls`` rows pruned so far (``FORGEML_AI_CALLS_MAX_ROWS``, ``FORGEML_AI_CALLS_MAX_AGE``), summed
    by provider, task and outcome before they were deleted, so that ``/metrics`` keeps counting them
    (:func:`forgeml.server.observability.prune_ai_calls`)."""

    __tablename__ = "ai_call_totals"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(64), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    updated: Mapped[float] = mapped_column(Float, default=time.time)


class DatasetRow(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(400))
    target: Mapped[str] = mapped_column(String(200))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Float, default=time.time)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "image", "text" or "tabular"
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    weights: Mapped[str] = mapped_column(String(400))
    extras: Mapped[dict[str, Any]] = mapped_column(JSON)  # vocabulary path, class names, input normalisation
    created: Mapped[float] = mapped_column(Float, default=time.time)


class Database:
    """An engine and a session factory; ``create_all`` makes the tables (idempotent)."""

    def __init__(self, url: str) -> None:
        # pool_pre_ping: a pooled connection that a restarted database server dropped is replaced, not used
        kwargs: dict = {"json_serializer": _json_dumps, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.url = url
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):

            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(connection, _record):  # concurrent readers with one writer (server + workers)
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self):
        """A session that commits when the block ends and rolls back on an error."""
        with self._sessions() as session, session.begin():
            yield session

    def lost_connection(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a lost or refused connection to the database server (restarted, unreachable for a
        while): worth a retry. SQLite, a file, loses no connection; its "locked" waits in ``busy_timeout``."""
        if not isinstance(exc, DBAPIError):
            return False
        if exc.connection_invalidated:
            return True
        return self.engine.dialect.name != "sqlite" and isinstance(exc, OperationalError | InterfaceError)

    def run(self, work, *, retry_seconds: float | None = None):
        """``work(session)`` in a transaction (committed when it returns); its result. When the connection to the
        database server is lost (a PostgreSQL restart), the whole transaction runs again on a new connection,
        for up to ``retry_seconds`` (default :data:`RECONNECT_SECONDS`), then the error is raised. ``work`` may
        run more than once: it must leave nothing behind outside the session until :meth:`run` returns."""
        wait = RECONNECT_SECONDS if retry_seconds is None else retry_seconds
        deadline, delay, attempt = time.monotonic() + wait, 0.1, 0
        while True:
            try:
                with self.session() as s:
                    return work(s)
            except DBAPIError as exc:
                attempt += 1
                left = deadline - time.monotonic()
                if not self.lost_connection(exc) or left <= 0:
                    raise
                if attempt == 1:
                    log.warning(
                        "lost the database connection (%s); retrying for up to %.0f s", type(exc).__name__, wait
                    )
                time.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    def get(self, model, key):
        with self.session() as s:
            return s.get(model, key)

    def all(self, statement):
        with self.session() as s:
            return list(s.scalars(statement))

    def dispose(self) -> None:
        self.engine.dispose()


__all__ += ["JOB_STATES", "Session", "select"]
