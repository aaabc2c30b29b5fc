"""Typed errors of the AI layer. The orchestrator decides what to retry from the type.

Each :class:`ProviderError` carries ``cause``: what went wrong in a few words from a fixed vocabulary
("401 unauthorized: the API key was rejected", "429 rate limited", "connection refused", "timed out
after 30 s", "invalid response: not JSON"). It never holds text a server sent, so it is safe to show on
the dashboard, in a job's event log and in the status API; ``detail`` keeps the server's (redacted)
message for the audit trail.
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = [
    "AIError",
    "AuthenticationFailed",
    "BadOutput",
    "BudgetExceeded",
    "CircuitOpen",
    "NotConfigured",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "connection_cause",
    "status_words",
]


def status_words(status: int) -> str:
    """An HTTP status in words: ``"503 service unavailable"``, ``"529 overloaded"``, ``"499 error"``."""
    if status == 529:
        return "529 overloaded"  # Anthropic's "overloaded_error"
    try:
        return f"{status} {HTTPStatus(status).phrase.lower()}"
    except ValueError:
        return f"{status} {'server error' if status >= 500 else 'error'}"


def connection_cause(exc: BaseException | None) -> str:
    """Why a connection failed, in words, from an exception and the ones it was raised from:
    ``"connection refused"``, ``"host not found"``, ``"connection reset"``, ``"connection closed by the
    server"`` or ``"connection failed"``."""
    import socket

    seen, chain = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "host not found"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
    text = " ".join(str(e) for e in chain).lower()
    for needle, words in (
        ("refused", "connection refused"),
        ("name or service not known", "host not found"),
        ("nodename nor servname", "host not found"),
        ("getaddrinfo", "host not found"),
        ("reset by peer", "connection reset"),
        ("disconnected", "connection closed by the server"),
        ("remoteprotocolerror", "connection closed by the server"),
        ("incomplete", "connection closed by the server"),
    ):
        if needle in text:
            return words
    names = " ".join(type(e).__name__.lower() for e in chain)
    if "remoteprotocol" in names:
        return "connection closed by the server"
    return "connection failed"


class AIError(Exception):
    """Base class of every error raised by ``forgeml.ai``."""


class ProviderError(AIError):
    """A provider call failed. ``retryable`` says whether trying the same provider again may help."""

    retryable = False

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        cause: str | None = None,
    ):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.detail = message
        self.retry_after = retry_after
        self.status = status
        self.cause = cause or self._default_cause()

    def _default_cause(self) -> str:
        return status_words(self.status) if self.status else "request failed"


class NotConfigured(ProviderError):
    """No API key (or the provider is disabled): skipped without a call."""

    def _default_cause(self) -> str:
        return "not configured"


class AuthenticationFailed(ProviderError):
    """The provider rejected the key (401/403): not retried."""

    def _default_cause(self) -> str:
        return f"{status_words(self.status)}: the API key was rejected" if self.status else "the API key was rejected"


class RateLimited(ProviderError):
    """HTTP 429; ``retry_after`` holds the server's Retry-After in seconds when it sent one."""

    retryable = True

    def _default_cause(self) -> str:
        return "429 rate limited"


class ProviderUnavailable(ProviderError):
    """HTTP 5xx or a connection failure."""

    retryable = True

    def _default_cause(self) -> str:
        return status_words(self.status) if self.status else "connection failed"


class ProviderTimeout(ProviderError):
    """The call did not finish within its timeout (``timeout`` seconds, when known)."""

    retryable = True

    def __init__(self, provider: str, message: str, *, timeout: float | None = None, **kwargs):
        self.timeout = timeout
        super().__init__(provider, message, **kwargs)

    def _default_cause(self) -> str:
        if self.status:
            return status_words(self.status)
        return f"timed out after {self.timeout:g} s" if self.timeout is not None else "timed out"


class BadOutput(ProviderError):
    """The model answered, but not with JSON that fits the schema. ``raw`` is what it said."""

    def __init__(self, provider: str, message: str, *, raw: str = "", **kwargs):
        super().__init__(provider, message, **kwargs)
        self.raw = raw

    def _default_cause(self) -> str:
        return "invalid response"


class CircuitOpen(ProviderError):
    """The provider's circuit breaker is open after repeated failures; calls are skipped until it cools down."""

    def _default_cause(self) -> str:
        return "circuit open"


class BudgetExceeded(AIError):
    """The configured spending budget is used up; remote calls stop and the offline advisor answers."""
