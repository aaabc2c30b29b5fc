"""JSON request bodies validated straight from their bytes, for the routes where parsing dominates.

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
