"""Typed errors of the AI layer. The orchestrator decides what to retry from the type."""

from __future__ import annotations

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
]


class AIError(Exception):
    """Base class of every error raised by ``forgeml.ai``."""


class ProviderError(AIError):
    """A provider call failed. ``retryable`` says whether trying the same provider again may help."""

    retryable = False

    def __init__(self, provider: str, message: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.detail = message
        self.retry_after = retry_after
        self.status = status


class NotConfigured(ProviderError):
    """No API key (or the provider is disabled): skipped without a call."""


class AuthenticationFailed(ProviderError):
    """The provider rejected the key (401/403): not retried."""


class RateLimited(ProviderError):
    """HTTP 429; ``retry_after`` holds the server's Retry-After in seconds when it sent one."""

    retryable = True


class ProviderUnavailable(ProviderError):
    """HTTP 5xx or a connection failure."""

    retryable = True


class ProviderTimeout(ProviderError):
    """The call did not finish within its timeout."""

    retryable = True


class BadOutput(ProviderError):
    """The model answered, but not with JSON that fits the schema. ``raw`` is what it said."""

    def __init__(self, provider: str, message: str, *, raw: str = "", **kwargs):
        super().__init__(provider, message, **kwargs)
        self.raw = raw


class CircuitOpen(ProviderError):
    """The provider's circuit breaker is open after repeated failures; calls are skipped until it cools down."""


class BudgetExceeded(AIError):
    """The configured spending budget is used up; remote calls stop and the offline advisor answers."""
