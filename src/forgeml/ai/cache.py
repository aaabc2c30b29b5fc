"""An on-disk cache of AI responses (SQLite), and the persisted audit trail beside it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["ResponseCache", "request_key"]


def request_key(task: str, payload: dict) -> str:
    """A stable key for a request: the task and its canonical JSON."""
    canonical = json.dumps({"task": task, "payload": payload}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Responses by request key, each with an expiry; ``path=None`` keeps them in memory only.

    Both tables are bounded. A response is served until its own TTL or ``max_age`` runs out, whichever
    comes first, and at most ``max_entries`` are kept (the oldest written go first). The audit trail
    keeps at most ``audit_max_rows`` rows no older than ``audit_max_age`` seconds. Expired rows are
    deleted at start-up and every ``prune_every`` writes, and a write over a cap deletes the oldest
    row(s); no delete removes more than ``prune_batch`` rows, so no single call pays for a big one (a
    table found far over its cap, or full of expired rows, shrinks by a batch per sweep). ``clock``
    (seconds, ``time.time`` by default) is there for tests.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        max_entries: int = 10_000,
        max_age: float = 7 * 86400,
        audit_max_rows: int = 100_000,
        audit_max_age: float = 90 * 86400,
        prune_every: int = 100,
        prune_batch: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (
            ("max_entries", max_entries),
            ("audit_max_rows", audit_max_rows),
            ("prune_every", prune_every),
            ("prune_batch", prune_batch),
        ):
            if value < 1:
                raise ValueError(f"ResponseCache: {name} must be an integer >= 1, got {value!r}")
        for name, value in (("max_age", max_age), ("audit_max_age", audit_max_age)):
            if not value > 0:
                raise ValueError(f"ResponseCache: {name} must be a number of seconds > 0, got {value!r}")
        self.path = path
        self.max_entries = int(max_entries)
        self.max_age = float(max_age)
        self.audit_max_rows = int(audit_max_rows)
        self.audit_max_age = float(audit_max_age)
        self.prune_every = int(prune_every)
        self.prune_batch = int(prune_batch)
        self._clock = clock
        self._writes = 0  # writes since the last sweep
        self._n_responses = 0  # row counts, refreshed by each sweep, kept up to date by each write
        self._n_audit = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        if path is not None:
            # callers run on an event loop: a write must not wait for an fsync (WAL with NORMAL syncs at
            # checkpoints only; a crash can lose the last cached answers, never corrupt the file)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, task TEXT, created REAL, expires REAL, value TEXT)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, record TEXT)"
            )
            # the sweeps find the oldest and the expired rows through these, without a table scan
            self._db.execute("CREATE INDEX IF NOT EXISTS responses_created ON responses (created)")
            self._db.execute("CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires)")
            self._db.execute("CREATE INDEX IF NOT EXISTS audit_time ON audit (time)")
        self.prune()

    def get(self, key: str) -> str | None:
        now = self._clock()
        with self._lock:
            row = self._db.execute("SELECT value, expires, created FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None or row[1] < now or row[2] < now - self.max_age:
            return None  # an expired row stays until the next sweep deletes it
        return row[0]

    def put(self, key: str, task: str, value: str, ttl: float) -> None:
        now = self._clock()
        with self._lock, self._db:
            known = self._db.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, task, created, expires, value) VALUES (?, ?, ?, ?, ?)",
                (key, task, now, now + min(ttl, self.max_age), value),
            )
            self._n_responses += not known
            self._trim_responses()
            sweep = self._count_write()
        if sweep:
            self.prune()

    def add_audit(self, record: dict) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO audit (time, record) VALUES (?, ?)",
                (record.get("time", self._clock()), json.dumps(record)),
            )
            self._n_audit += 1
            self._trim_audit()
            sweep = self._count_write()
        if sweep:
            self.prune()

    def audit(self, limit: int = 100) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def __len__(self) -> int:
        """How many responses are stored (expired ones not yet swept included)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def audit_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]

    def prune(self) -> int:
        """One bounded sweep; returns how many rows it deleted.

        Each of its deletes (responses past their TTL, responses past ``max_age``, audit rows past
        ``audit_max_age``, the surplus over each cap) removes at most ``prune_batch`` rows."""
        now = self._clock()
        batch = self.prune_batch
        deleted = 0
        with self._lock, self._db:
            cur = self._db.execute(
                "DELETE FROM responses WHERE key IN (SELECT key FROM responses WHERE expires < ? LIMIT ?)",
                (now, batch),
            )
            deleted += cur.rowcount
            cur = self._db.execute(
                "DELETE FROM responses WHERE key IN (SELECT key FROM responses WHERE created < ? LIMIT ?)",
                (now - self.max_age, batch),
            )
            deleted += cur.rowcount
            cur = self._db.execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < ? LIMIT ?)",
                (now - self.audit_max_age, batch),
            )
            deleted += cur.rowcount
            # recount at each sweep, so rows written by another process sharing the file are counted too
            self._n_responses = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            self._n_audit = self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
            deleted += self._trim_responses() + self._trim_audit()
        return deleted

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- internals
    def _trim_responses(self) -> int:
        """Delete the oldest responses over ``max_entries`` (at most ``prune_batch``); the caller holds the lock."""
        surplus = min(self._n_responses - self.max_entries, self.prune_batch)
        if surplus <= 0:
            return 0
        cur = self._db.execute(
            "DELETE FROM responses WHERE key IN (SELECT key FROM responses ORDER BY created LIMIT ?)", (surplus,)
        )
        self._n_responses -= cur.rowcount
        return cur.rowcount

    def _trim_audit(self) -> int:
        """Delete the oldest audit rows over ``audit_max_rows`` (at most ``prune_batch``); the caller holds the lock."""
        surplus = min(self._n_audit - self.audit_max_rows, self.prune_batch)
        if surplus <= 0:
            return 0
        cur = self._db.execute("DELETE FROM audit WHERE id IN (SELECT id FROM audit ORDER BY id LIMIT ?)", (surplus,))
        self._n_audit -= cur.rowcount
        return cur.rowcount

    def _count_write(self) -> bool:
        """Count one write (the caller holds the lock); True when it is time for a sweep."""
        self._writes += 1
        if self._writes < self.prune_every:
            return False
        self._writes = 0
        return True
