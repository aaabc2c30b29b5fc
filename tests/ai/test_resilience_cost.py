"""Backoff timing, the circuit breaker's states, and the cost ledger's arithmetic."""

import random

import pytest

from forgeml.ai.cost import CostLedger
from forgeml.ai.resilience import CircuitBreaker, backoff_delay


def test_backoff_honours_retry_after_and_caps_it():
    assert backoff_delay(0, 0.5, 20.0, retry_after=3.0) == 3.0
    assert backoff_delay(5, 0.5, 20.0, retry_after=120.0) == 20.0


def test_backoff_is_exponential_with_full_jitter():
    rng = random.Random(0)
    for attempt in range(6):
        ceiling = min(8.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 8.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # the jitter spans the whole window


def test_breaker_opens_half_opens_and_closes():
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown=10.0, clock=lambda: now[0])
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.5
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record_failure()
    assert breaker.state == "open"  # a failed trial opens it again at once
    now[0] = 21.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0


def test_ledger_prices_records_and_budget():
    ledger = CostLedger({"m": (2.0, 10.0), "big": (15.0, 75.0)}, budget_usd=0.02)
    assert ledger.record("p", "m", 1000, 1000, None) == pytest.approx(0.012)
    assert ledger.record("q", "x", 0, 0, 0.003) == pytest.approx(0.003)  # the provider's own figure wins
    assert ledger.total_usd == pytest.approx(0.015)
    assert ledger.price("m-2026-05-01") == (2.0, 10.0)
    assert ledger.price("unknown") == (15.0, 75.0)  # priced like the most expensive: budgets stay safe
    assert ledger.can_afford("m", prompt_chars=400, max_output_tokens=100)
    assert not ledger.can_afford("m", prompt_chars=400, max_output_tokens=1000)
    assert CostLedger({}, None).can_afford("anything", 10**9, 10**9)
