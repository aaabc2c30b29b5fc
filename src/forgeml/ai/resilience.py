"""Retry timing and a circuit breaker per provider."""

from __future__ import annotations

import random
import time

__all__ = ["CircuitBreaker", "backoff_delay"]


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None, rng=random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's Retry-After when it sent one,
    else exponential backoff with full jitter, ``uniform(0, min(cap, base * 2**attempt))``."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, cap) if cap else retry_after
    return rng.uniform(0.0, min(cap, base * (2**attempt)))


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures; after ``cooldown`` seconds one trial
    call is let through (half-open): success closes the breaker, failure opens it again."""

    def __init__(self, threshold: int, cooldown: float, clock=time.monotonic) -> None:
        self.threshold, self.cooldown, self.clock = threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def release_trial(self) -> None:
        """End a half-open trial that neither succeeded nor failed (an unusable answer, a cancelled call): the
        breaker stays half-open and the next call may be the trial."""
        self._trial_in_flight = False

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_in_flight = False

    def seconds_until_retry(self) -> float | None:
        """While open, how long until a trial call is let through; None when the breaker is not open."""
        if self.opened_at is None:
            return None
        return max(0.0, self.cooldown - (self.clock() - self.opened_at))

    def record_failure(self) -> None:
        self._trial_in_flight = False
        self.failures += 1
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = self.clock()
