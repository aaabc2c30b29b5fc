"""The AI response cache and its audit trail are bounded: TTL, age and row caps, pruned in small batches."""

from __future__ import annotations

import sqlite3

import pytest

from forgeml.ai.cache import ResponseCache

DAY = 86400.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _rows(cache: ResponseCache, table: str) -> int:
    return cache._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_a_fresh_entry_is_served_and_an_expired_one_is_not():
    clock = Clock()
    cache = ResponseCache(None, clock=clock)
    cache.put("k", "analysis", "v", ttl=3600)
    assert cache.get("k") == "v"
    clock.now += 3599
    assert cache.get("k") == "v"
    clock.now += 2
    assert cache.get("k") is None


def test_max_age_caps_a_longer_ttl():
    clock = Clock()
    cache = ResponseCache(None, clock=clock, max_age=DAY)
    cache.put("k", "synthetic_data", "v", ttl=30 * DAY)
    clock.now += DAY - 1
    assert cache.get("k") == "v"
    clock.now += 2
    assert cache.get("k") is None


def test_default_max_age_is_seven_days():
    clock = Clock()
    cache = ResponseCache(None, clock=clock)
    cache.put("k", "t", "v", ttl=365 * DAY)
    clock.now += 7 * DAY + 1
    assert cache.get("k") is None


def test_expired_entries_are_deleted_by_a_sweep_and_fresh_ones_kept():
    clock = Clock()
    cache = ResponseCache(None, clock=clock)
    cache.put("old", "t", "v", ttl=10)
    cache.put("new", "t", "v", ttl=1000)
    clock.now += 11
    assert cache.prune() == 1
    assert _rows(cache, "responses") == 1
    assert cache.get("new") == "v"


def test_expired_entries_are_deleted_every_prune_every_writes_without_a_call_to_prune():
    clock = Clock()
    cache = ResponseCache(None, clock=clock, prune_every=5)
    for i in range(3):
        cache.put(f"old{i}", "t", "v", ttl=10)
    clock.now += 11
    cache.put("a", "t", "v", ttl=1000)
    assert _rows(cache, "responses") == 4  # no sweep yet
    cache.put("b", "t", "v", ttl=1000)  # the fifth write sweeps
    assert _rows(cache, "responses") == 2
    assert cache.get("a") == "v" and cache.get("b") == "v"


def test_expired_entries_on_disk_are_deleted_at_start_up(tmp_path):
    clock = Clock()
    path = tmp_path / "ai_cache.sqlite"
    cache = ResponseCache(path, clock=clock)
    cache.put("old", "t", "v", ttl=10)
    cache.put("new", "t", "v", ttl=1000)
    cache.close()
    clock.now += 11
    reopened = ResponseCache(path, clock=clock)
    assert _rows(reopened, "responses") == 1
    assert reopened.get("new") == "v"
    reopened.close()


def test_the_entry_cap_holds_after_every_insert_and_the_oldest_go_first():
    clock = Clock()
    cache = ResponseCache(None, clock=clock, max_entries=50, prune_every=1000)
    for i in range(500):
        clock.now += 1
        cache.put(f"k{i}", "t", str(i), ttl=DAY)
        assert _rows(cache, "responses") <= 50
    assert len(cache) == 50
    assert cache.get("k449") is None
    assert cache.get("k450") == "450" and cache.get("k499") == "499"


def test_replacing_a_key_does_not_count_twice():
    clock = Clock()
    cache = ResponseCache(None, clock=clock, max_entries=3)
    for key in ["a", "b", "c"]:
        clock.now += 1
        cache.put(key, "t", key, ttl=DAY)
    for _ in range(5):
        clock.now += 1
        cache.put("c", "t", "c2", ttl=DAY)
    assert {k: cache.get(k) for k in "abc"} == {"a": "a", "b": "b", "c": "c2"}


def test_audit_rows_are_capped_and_aged_out():
    clock = Clock()
    cache = ResponseCache(None, clock=clock, audit_max_rows=20, audit_max_age=10 * DAY, prune_every=1000)
    for i in range(100):
        cache.add_audit({"time": clock(), "i": i})
        assert cache.audit_count() <= 20
    assert [r["i"] for r in cache.audit(limit=3)] == [99, 98, 97]
    clock.now += 5 * DAY
    cache.add_audit({"time": clock(), "i": 100})
    clock.now += 6 * DAY  # the first 100 are now 11 days old, the last one 6
    cache.prune()
    assert [r["i"] for r in cache.audit(limit=100)] == [100]


def test_an_audit_record_without_a_time_takes_the_clock():
    clock = Clock()
    cache = ResponseCache(None, clock=clock, audit_max_age=DAY)
    cache.add_audit({"task": "x"})
    clock.now += DAY + 1
    cache.prune()
    assert cache.audit_count() == 0


def test_pruning_is_bounded_per_sweep(tmp_path):
    # a file left far over its limits (written by a build without them) shrinks a batch at a time
    path = tmp_path / "ai_cache.sqlite"
    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, task TEXT, created REAL, expires REAL, value TEXT)")
    db.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, record TEXT)")
    db.executemany(
        "INSERT INTO responses VALUES (?, 't', ?, ?, 'v')", [(f"k{i}", 1000.0 + i, 2000.0) for i in range(1000)]
    )
    db.executemany("INSERT INTO audit (time, record) VALUES (?, '{}')", [(1000.0 + i,) for i in range(1000)])
    db.commit()
    db.close()

    clock = Clock(now=5000.0)  # every response has expired; no audit row is too old
    cache = ResponseCache(path, clock=clock, audit_max_rows=100, prune_batch=300, prune_every=1000)
    assert _rows(cache, "responses") == 700  # start-up deleted one batch
    assert _rows(cache, "audit") == 700
    assert cache.prune() == 600
    assert cache.prune() == 600
    assert _rows(cache, "responses") == 100
    assert _rows(cache, "audit") == 100
    assert cache.prune() == 100  # the last expired responses
    assert cache.prune() == 0
    assert _rows(cache, "responses") == 0 and _rows(cache, "audit") == 100
    # the oldest audit rows went first
    assert cache._db.execute("SELECT MIN(time) FROM audit").fetchone()[0] == 1900.0
    cache.close()


def test_a_write_far_over_the_cap_deletes_at_most_one_batch():
    clock = Clock()
    cache = ResponseCache(None, clock=clock, max_entries=1000, prune_batch=10, prune_every=10_000)
    for i in range(1000):
        clock.now += 1
        cache.put(f"k{i}", "t", "v", ttl=DAY)
    cache.max_entries = 100  # as if reopened with a smaller cap
    cache.put("x", "t", "v", ttl=DAY)
    assert len(cache) == 1001 - 10


def test_the_sweeps_use_indexes():
    cache = ResponseCache(None)
    names = {r[0] for r in cache._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"responses_created", "responses_expires", "audit_time"} <= names
    plan = " ".join(
        str(r) for r in cache._db.execute("EXPLAIN QUERY PLAN SELECT key FROM responses WHERE expires < 1 LIMIT 5")
    )
    assert "responses_expires" in plan


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_entries": 0},
        {"audit_max_rows": 0},
        {"prune_every": 0},
        {"prune_batch": 0},
        {"max_age": 0},
        {"audit_max_age": -1},
    ],
)
def test_bad_limits_are_rejected_with_their_name(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ResponseCache(None, **kwargs)
