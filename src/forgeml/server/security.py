"""Authentication, rate limiting, body limits and security headers."""

from __future__ import annotations

import hmac
import math
import time
from collections import defaultdict

from fastapi import HTTPException, Request
from pydantic import SecretStr
from starlette.responses import JSONResponse

__all__ = ["BodyLimitMiddleware", "RateLimiter", "SecurityHeadersMiddleware", "api_key_matches", "require_api_key"]

# 'wasm-unsafe-eval' lets the page compile WebAssembly (onnxruntime-web, served from /static) and nothing more:
# eval and inline scripts stay refused.
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


async def require_api_key(request: Request) -> None:
    """With ``FORGEML_API_KEY`` set, every ``/v1`` route needs ``Authorization: Bearer <key>``."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if not api_key_matches(expected, request.headers.get("authorization", "")):
        raise HTTPException(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <FORGEML_API_KEY>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def api_key_matches(expected: SecretStr, authorization: str) -> bool:
    """Whether an ``Authorization`` header's value is ``Bearer <expected>`` (compared in constant time)."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), expected.get_secret_value().encode()
    )


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests, refilled continuously; 429 with Retry-After beyond."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = defaultdict(lambda: (self.capacity, time.monotonic()))

    async def __call__(self, request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        tokens, last = self._buckets[client]
        now = time.monotonic()
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.rate)
            raise HTTPException(
                429,
                f"rate limit of {int(self.capacity)} AI requests a minute reached; retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[client] = (tokens - 1.0, now)


class BodyLimitMiddleware:
    """413 for a request body over the limit (``/v1/datasets`` uploads have their own, larger limit).

    A declared Content-Length over the limit is refused before reading; a body sent
    without one is counted as it arrives and refused once it passes the limit.
    """

    def __init__(self, app, max_body: int, max_upload: int) -> None:
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_upload if scope["path"].startswith("/v1/datasets") else self.max_body
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _too_large(send, f"request body of {int(length)} bytes exceeds the limit of {limit} bytes")
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # FastAPI turns an HTTPException raised while reading into its response
                    raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, counted_receive, send)


async def _too_large(send, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=413)
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeadersMiddleware:
    """Security headers on every response; the content-security policy everywhere but the API docs,
    whose page loads its scripts from a CDN."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with_csp = not scope["path"].startswith(("/docs", "/redoc"))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                if with_csp and b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
