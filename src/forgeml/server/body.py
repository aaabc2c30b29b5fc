"""Request bodies: JSON validated straight from its bytes, for the routes where parsing dominates, and the
415 for a body in another media type than the route reads.

FastAPI reads a JSON body with ``json.loads`` and then validates the Python objects; for ``/predict``'s
rows of numbers that is most of the request's CPU time. Pydantic's JSON mode validates the bytes in one
pass, several times faster. A route that uses :func:`read_json` declares no body parameter and documents
its body with :func:`json_body`; it answers every bad body as FastAPI would (422 in FastAPI's shape, 400
for a body that is not UTF-8), because the slow path below is FastAPI's own.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose handler calls :func:`read_json` with ``model``: the required JSON
    request body (also what ``require_declared_media_type`` reads to answer another media type with 415)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def read_json(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; bad bodies raise what FastAPI raises for a ``model`` parameter."""
    raw = await request.body()
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        pass
    # A bad body: FastAPI's own parse and validation, for its exact answers (JSON mode words some errors
    # otherwise, "a valid array" for "a valid list"), and for the rare text only json.loads reads
    try:
        parsed = json.loads(raw)  # as FastAPI: bytes, their encoding detected
    except UnicodeDecodeError:
        raise HTTPException(400, "There was an error parsing the body") from None
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([{**error, "ctx": {"error": exc.msg}}]) from None
    try:
        return model.model_validate(parsed, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as exc:
        raise _in_body(exc) from None


def _in_body(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])


def declared_media_type_error(expected: str, declared: str) -> str | None:
    """Why a body declared ``declared`` (a Content-Type) is not in the media type ``expected``; None when it is
    (JSON also as ``application/<anything>+json``)."""
    media_type = declared.partition(";")[0].strip().lower()
    if expected == "application/json":
        ok = media_type == "application/json" or (
            media_type.startswith("application/") and media_type.endswith("+json")
        )
    else:
        ok = media_type == expected
    return None if ok else f"the request body must be {expected}, not {media_type or 'untyped'}"


async def require_declared_media_type(request: Request) -> None:
    """415 for a body in another media type than the route reads: JSON, or ``multipart/form-data`` for an
    upload. (FastAPI itself reads a JSON route's body only when it is declared JSON, and answered another
    with a 422 saying the body is not an object, which hid the cause.)"""
    expected = _body_media_type(request.scope.get("route"))
    if expected is None:  # the route reads no body
        return
    declared = request.headers.get("content-type")
    if declared is None:
        has_body = request.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in request.headers
        if not has_body:
            return  # nothing sent: the route's validation names the missing body or fields
        raise HTTPException(415, f"the request body needs 'Content-Type: {expected}'")
    error = declared_media_type_error(expected, declared)
    if error is not None:
        raise HTTPException(415, error)


def _body_media_type(route) -> str | None:
    """The media type ``route`` reads its body in: its body parameter's, or the one its ``openapi_extra``
    documents (a route that reads its own body, :func:`~forgeml.server.body.read_json`); None for no body."""
    field = getattr(route, "body_field", None)
    if field is not None:
        return getattr(field.field_info, "media_type", "application/json")
    documented = ((getattr(route, "openapi_extra", None) or {}).get("requestBody") or {}).get("content") or {}
    return next(iter(documented), None)
