"""The FastAPI application: ``create_app(settings)`` wires the database, the job pool, the AI
orchestrator, the routers, the dashboard and the middleware."""

from __future__ import annotations

import errno
import logging
import math
import mimetypes
import re
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .body import require_declared_media_type
from .db import Database
from .fast_predict import PredictShortcut
from .jobs import JobManager
from .observability import AICallsPruner, Metrics, ObservabilityMiddleware, configure_logging
from .predictor import PredictorCache
from .routers import ai, datasets, jobs, models, ops
from .schemas import ErrorOut
from .security import BodyLimitMiddleware, RateLimiter, SecurityHeadersMiddleware, require_api_key
from .settings import DeviceUnavailableError, ServerSettings
from .storage import disk_full_message, is_disk_full

__all__ = ["create_app"]

log = logging.getLogger("forgeml.server")
STATIC = Path(__file__).parent / "static"
# onnxruntime-web's runtime (static/vendor): browsers compile .wasm in a stream only when it is served as
# application/wasm, and import .mjs only as JavaScript; some systems' MIME tables know neither
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".mjs")


def plotly_bundle() -> Path:
    """plotly.js as shipped inside the installed ``plotly`` Python package (never a copy of our own)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(settings: ServerSettings | None = None, *, orchestrator=None) -> FastAPI:
    """The platform's app. ``settings`` default to :meth:`ServerSettings.from_env`; ``orchestrator``
    (an :class:`~forgeml.ai.AIServiceOrchestrator`) defaults to one built from the environment."""
    settings = settings or ServerSettings.from_env()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        state = app.state
        state.db = Database(settings.db_url)
        try:
            state.device, state.device_error = settings.resolved_device(), None
        except DeviceUnavailableError as exc:  # readiness reports it; jobs and predictions fail with it
            state.device, state.device_error = None, str(exc)
            log.warning("device unavailable", extra={"error": state.device_error})
        state.device_label = describe_device(state.device) if state.device else None  # readyz reports it
        state.jobs = JobManager(
            state.db,
            settings.data_dir,
            settings.workers,
            nice=settings.worker_nice,
            threads=settings.blas_threads_per_worker,
            device=state.device or settings.device,
            memory_limit=settings.worker_memory_limit_bytes,
        )
        interrupted = state.jobs.start()
        state.predictors = PredictorCache(settings.data_dir, device=state.device or "cpu")
        own_orchestrator = orchestrator is None
        if own_orchestrator:
            from ..ai import AIServiceOrchestrator

            state.orchestrator = AIServiceOrchestrator(cache_dir=settings.data_dir)
        else:
            state.orchestrator = orchestrator
        state.orchestrator.listeners.append(metrics.record_ai_call)
        # ai_calls (the AI calls of training jobs) kept bounded; what is pruned is rolled up for /metrics
        state.ai_calls_pruner = AICallsPruner(state.db, settings.ai_calls_max_rows, settings.ai_calls_max_age).start()
        log.info(
            "started",
            extra={"data_dir": str(settings.data_dir), "interrupted_jobs": interrupted, "device": state.device},
        )
        try:
            yield
        finally:
            await state.ai_calls_pruner.stop()
            state.jobs.shutdown()
            state.orchestrator.listeners.remove(metrics.record_ai_call)
            if own_orchestrator:
                await state.orchestrator.aclose()
            state.db.dispose()
            log.info("stopped")

    app = FastAPI(
        title="ForgeML",
        version=_version(),
        summary="Train, watch and use models, with AI services as teachers.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.jobs = None
    app.state.device, app.state.device_error, app.state.device_label = None, None, None

    # With an API key, the /v1 routes declare bearer authentication in the OpenAPI (HTTPBearer only documents
    # it: require_api_key checks the key); their 401 is documented either way, as the ONNX route and /metrics do.
    guarded, guarded_responses = [Depends(require_api_key)], {401: UNAUTHORIZED}
    if settings.api_key is not None:
        guarded = [Security(BEARER), *guarded]
    typed = [Depends(require_declared_media_type)]  # after the key check: a stranger learns nothing of the body
    ai_limit = RateLimiter(settings.ai_rate_limit)
    # models first: a request is matched against the routes in order, and /predict is the busiest
    checked = [*guarded, *typed]
    for router in (models.router, jobs.router, datasets.router):
        app.include_router(router, dependencies=checked, responses=guarded_responses)
    app.include_router(
        ai.router,
        dependencies=[*guarded, Depends(ai_limit), *typed],
        responses={**guarded_responses, 429: RATE_LIMITED},
    )
    app.include_router(ops.router)
    app.openapi = _with_body_errors(app)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/vendor/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(plotly_bundle(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each bad input, and a NaN or an out-of-range number (1e400) in it cannot
        # be written as JSON: that turned a 422 into a 500. Such numbers are echoed as strings ("nan", "inf").
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:
            # the router's Allow names the methods of one route on the path (POST for /v1/jobs, which GET
            # serves too): every method the OpenAPI gives the path is named
            methods = _documented_methods(request.app.openapi(), request.url.path)
            if methods:
                exc = StarletteHTTPException(
                    405, exc.detail, headers={**(exc.headers or {}), "Allow": ", ".join(methods)}
                )
        return await http_exception_handler(request, exc)

    async def storage_or_database(request: Request, exc: Exception) -> JSONResponse:
        """A write to the full data directory (where SQLite lives by default): 507; the database server away (a
        PostgreSQL restart): 503. Answered here, not as a 500 (which also drops the client's connection)."""
        if is_disk_full(exc):
            log.warning("no space left on device", extra={"path": request.url.path, "error": str(exc)[:300]})
            detail = disk_full_message("writing to the data directory", "nothing was changed: free space and retry")
            return JSONResponse({"detail": detail}, status_code=507)
        database = getattr(request.app.state, "db", None)
        if database is not None and database.lost_connection(exc):
            log.warning("database unavailable", extra={"path": request.url.path, "error": type(exc).__name__})
            detail = "the database is unavailable (restarting or unreachable); retry in a few seconds"
            return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})
        raise exc  # anything else: the 500 below

    app.add_exception_handler(OSError, storage_or_database)
    app.add_exception_handler(DBAPIError, storage_or_database)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)

    # innermost: the middleware below sees its answers as the route's
    app.add_middleware(PredictShortcut, router=models.router, dependencies=checked)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return app


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="APIKey",
    description="FORGEML_API_KEY, sent as 'Authorization: Bearer <key>'; required on every /v1 route when set",
)
UNAUTHORIZED = {
    "model": ErrorOut,
    "description": "FORGEML_API_KEY is set and the request lacks it, or has another key.",
    "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
}
RATE_LIMITED = {
    "model": ErrorOut,
    "description": "This client passed the AI rate limit (FORGEML_AI_RATE_LIMIT requests a minute).",
    "headers": {
        "Retry-After": {"description": "seconds until the next request is allowed", "schema": {"type": "integer"}}
    },
}
# What every route that reads a body may answer besides its own codes (added to the OpenAPI by
# _with_body_errors): FastAPI's 400 for a body it cannot read (not UTF-8, a broken multipart form),
# BodyLimitMiddleware's 413, and require_declared_media_type's 415.
BODY_ERRORS = {
    "400": "The body could not be read: not UTF-8 text, or a malformed multipart form.",
    "413": "The body is over the limit (FORGEML_MAX_BODY_BYTES; FORGEML_MAX_UPLOAD_BYTES for uploads).",
    "415": "The body is not in the media type the route reads (its Content-Type is another, or missing).",
}


def _documented_methods(schema: dict, path: str) -> list[str]:
    """The methods the OpenAPI ``schema`` documents for ``path`` (a request's, its parameters filled in)."""
    methods = set()
    for template, operations in schema.get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods.update(method.upper() for method in operations if method in HTTP_METHODS)
    return sorted(methods)


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _with_body_errors(app: FastAPI):
    """``app.openapi`` with :data:`BODY_ERRORS` documented on every operation that has a request body."""
    generate, completed = app.openapi, []

    def openapi() -> dict:
        schema = generate()  # FastAPI's: cached on the app until its routes change, and completed in place once
        if completed and completed[-1] is schema:
            return schema
        completed[:] = [schema]
        error = {"$ref": "#/components/schemas/ErrorOut"}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorOut", ErrorOut.model_json_schema())
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if "requestBody" not in operation:
                    continue
                responses = operation.setdefault("responses", {})
                for code, description in BODY_ERRORS.items():
                    responses.setdefault(
                        code, {"description": description, "content": {"application/json": {"schema": error}}}
                    )
        return schema

    return openapi


def _json_safe(value):
    """``value`` (JSON-like) with every non-finite float replaced by its name as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("forgeml")
    except PackageNotFoundError:
        return "0+unknown"


def describe_device(device: str) -> str:
    """``device`` in words for people: ``'cpu'``, or ``'cuda:0 (NVIDIA H100 80GB HBM3)'`` when the name is known."""
    if not device.startswith("cuda"):
        return device
    try:
        from .. import cuda

        return f"{device} ({cuda.get_device_name(device)})"
    except Exception:  # noqa: BLE001 - the name is a courtesy
        return device


def port_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not listen on ``host:port`` (a port in use, a host not of this machine), or None.

    Checked before ``serve`` says it is serving; the socket is bound as uvicorn binds it (SO_REUSEADDR)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        reason = "it is in use" if getattr(exc, "errno", None) == errno.EADDRINUSE else exc.strerror or str(exc)
        return (
            f"cannot listen on {host}:{port}: {reason}. Choose another port: forgeml serve --port N "
            "(or FORGEML_PORT=N; make run PORT=N)"
        )
    return None


def serve(settings: ServerSettings) -> None:
    """Run the platform with uvicorn until interrupted (``forgeml serve``)."""
    import uvicorn

    settings.check_exposure()
    try:
        device = settings.resolved_device()
    except DeviceUnavailableError as exc:
        raise SystemExit(f"refusing to start: {exc}") from None
    problem = port_problem(settings.host, settings.port)
    if problem is not None:
        raise SystemExit(f"refusing to start: {problem}")
    configure_logging()
    from ..ai.settings import AISettings

    ai_settings = AISettings.from_env()
    configured = [name for name, cfg in ai_settings.providers.items() if cfg.api_key is not None and cfg.enabled]
    url = f"http://{'localhost' if settings.host in ('127.0.0.1', '::1') else settings.host}:{settings.port}"
    print(f"ForgeML is serving at {url}  (API docs: {url}/docs)", flush=True)
    print(
        f"AI providers configured: {', '.join(configured) if configured else 'none (the offline advisor answers)'}",
        flush=True,
    )
    print(
        f"data directory: {settings.data_dir.resolve()}; API key {'required' if settings.api_key else 'not set'}",
        flush=True,
    )
    how = "FORGEML_DEVICE=auto" if settings.device == "auto" else f"device {settings.device}"
    print(f"training and predictions run on {describe_device(device)} ({how})", flush=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning", access_log=False)
