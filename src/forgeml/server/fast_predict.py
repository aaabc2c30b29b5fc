"""A short way through the server for its busiest request: a few rows through a small model already loaded.

Through the route, a prediction from the MNIST model cost about a millisecond of the server's CPU, and less
than half of it was the prediction: the rest was FastAPI's routing, request wrapping, dependency solving and
response validation. Under load that millisecond is the latency (32 clients wait on one core), so :class:`PredictShortcut`
answers ``POST /v1/models/{id}/predict`` itself when every check the route would make passes on the fast
path, and hands anything else to the app, with the body it has read, unchanged:

- the route is the one the app would choose, with exactly the dependencies this module knows
  (the API key check and the declared media type; ``HTTPBearer`` only documents the key), and no
  dependency override is set (tests and embedders use them);
- the API key, when one is set, matches (:func:`forgeml.server.security.api_key_matches`), and the body is
  declared JSON (:func:`forgeml.server.body.declared_media_type_error`);
- the body validates as a :class:`~forgeml.server.schemas.PredictRequest`, within ``max_predict_batch`` rows;
- the model is loaded, cheap for this batch, and not busy (:meth:`Predictor.predict` with ``wait=False``).

Everything else is answered by the route as before: a missing key's 401, a 415, a 413 found while reading, a
422 in FastAPI's shape, a model still to load (thread pool), a big batch, an unexpected error. The answer it gives
is the route's: the same JSON bytes (the response model serialised by pydantic, as FastAPI does) and the
same headers; the middleware around it (observability, body limit, security headers) sees the same
request, labelled with the same route. ``ServerSettings.fast_predict`` turns it off.
"""

from __future__ import annotations

import logging
import re

from pydantic import ValidationError

from .body import declared_media_type_error, require_declared_media_type
from .schemas import PredictRequest, PredictResponse
from .security import api_key_matches

__all__ = ["PREDICT_ROUTE", "PredictShortcut"]

PREDICT_ROUTE = "/v1/models/{model_id}/predict"
_PREDICT_PATH = re.compile(r"/v1/models/([^/]+)/predict")
_JSON_HEADERS = (b"content-type", b"application/json")

log = logging.getLogger("forgeml.server")


class PredictShortcut:
    """Pure ASGI middleware: answers eligible predictions itself, passes every other request on.

    ``router`` is the models router and ``dependencies`` the ones the app includes it with; when the predict
    route or those dependencies hold a check this module does not make, the shortcut stays off (``enabled``)."""

    def __init__(self, app, router, dependencies) -> None:
        self.app = app
        self.enabled = _only_known_checks(router, dependencies)
        if not self.enabled:
            log.warning("the predict shortcut is off: the route has dependencies it does not check")
        self.route = None  # the app's predict route, learnt from the first prediction the app answers

    async def __call__(self, scope, receive, send):
        match = _PREDICT_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST" or not self.enabled:
            return await self.app(scope, receive, send)
        app = scope.get("app")
        if self.route is None or app is None or app.dependency_overrides or not app.state.settings.fast_predict:
            return await self._pass_on(scope, receive, send)
        if not _allowed(app.state.settings, scope["headers"]):
            return await self.app(scope, receive, send)  # nothing read yet: the app answers 401/415
        try:
            body, complete = await _read_body(receive)
        except Exception as exc:  # noqa: BLE001 - e.g. BodyLimitMiddleware's 413 while reading: the route answers it
            return await self.app(scope, _raising(exc), send)
        if not complete:  # the client went away while sending
            return None
        answer = self._answer(app.state, match.group(1), body)
        if answer is None:
            return await self.app(scope, _replay(body, receive), send)
        scope["route"] = self.route  # observability labels the request with the route, as the app does
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode()), _JSON_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": answer})
        return None

    async def _pass_on(self, scope, receive, send):
        """The app answers; the first prediction it routes tells which route object it labels them with."""
        await self.app(scope, receive, send)
        if self.route is None:
            route = scope.get("route")
            if getattr(route, "path", None) == PREDICT_ROUTE:
                self.route = route

    @staticmethod
    def _answer(state, model_id: str, body: bytes) -> bytes | None:
        """The JSON the route would answer, or None where the route must answer (anything but the plain case)."""
        if getattr(state, "device_error", None) or not body:
            return None
        try:
            request = PredictRequest.model_validate_json(body)
        except ValidationError:
            return None
        if len(request.inputs) > state.settings.max_predict_batch:
            return None
        try:
            result = state.predictors.predict_inline(model_id, request.inputs)
            if result is None:  # not loaded, too big a batch, or busy on another thread: the route waits for it
                return None
            classes, predictions, probabilities = result
            answer = PredictResponse(
                model_id=model_id, classes=classes, predictions=predictions, probabilities=probabilities
            )
            return answer.model_dump_json().encode()
        except Exception:  # noqa: BLE001 - the route answers it with its own handling (an InputError's 422...)
            return None


def _allowed(settings, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the route's checks pass: the API key (when one is set) and a body declared JSON."""
    if settings.api_key is not None and not api_key_matches(
        settings.api_key, _header(headers, b"authorization", b"").decode("latin-1")
    ):
        return False
    content_type = _header(headers, b"content-type")
    return (
        content_type is not None
        and declared_media_type_error("application/json", content_type.decode("latin-1")) is None
    )


def _header(headers: list[tuple[bytes, bytes]], name: bytes, default: bytes | None = None) -> bytes | None:
    """A header's first value, as the route reads it (Starlette's ``Headers.get``); ASGI names are lower case."""
    for key, value in headers:
        if key == name:
            return value
    return default


def _only_known_checks(router, dependencies) -> bool:
    """True when the predict route of ``router`` has no dependencies of its own, nor has ``router``, and
    ``dependencies`` (those the app includes ``router`` with) are the API key check, the media type check and,
    with a key, ``HTTPBearer`` (which only documents it): the checks :func:`_allowed` makes."""
    from fastapi.security import HTTPBearer

    from .security import require_api_key

    routes = [r for r in router.routes if getattr(r, "path", None) == PREDICT_ROUTE and "POST" in r.methods]
    if len(routes) != 1 or routes[0].dependencies or router.dependencies:
        return False
    calls = [d.dependency for d in dependencies]
    known = {require_api_key, require_declared_media_type}
    return known <= set(calls) and all(call in known or isinstance(call, HTTPBearer) for call in calls)


async def _read_body(receive) -> tuple[bytes, bool]:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks), True


def _replay(body: bytes, receive):
    """``receive`` for the app after the body was read here: the body once, then the client's own messages."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _raising(exc: Exception):
    """``receive`` for the app when reading the body here failed: the same failure, where the route reads it."""

    async def receive():
        raise exc

    return receive
